"""User-given dates, times and durations, always turned into aware UTC datetimes.

The rules are strict on purpose: a guessed date (``30`` read as the 30th of this month, ``PST``
silently read as UTC) is worse than an error, above all for ``rm --older-than``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dateutil.parser import isoparse

from .errors import ConfigError

ISO_EXAMPLES = "2024-05-01, 2024-05-01T08:00:00Z or 2024-05-01T10:00:00+02:00"
DURATION_EXAMPLES = "30d, 12h, 90m, 45s, 2w or 1d12h"

# What isoparse may see: a dash-separated date, then optionally a time with colons (seconds and
# a fraction optional) and a zone. isoparse alone also takes 2024, 20240501, 2024-W18,
# 2024-05-01T0800 and any character between date and time.
_ISO = re.compile(r"""
    \d{4}-\d{2}-\d{2}                          # date: YYYY-MM-DD
    (?: [Tt\ ] \d{2}:\d{2}                     # time: HH:MM
        (?: :\d{2} (?: [.,]\d{1,9} )? )?       #   :SS, .fraction
        (?: [Zz] | [+-]\d{2} (?: :?\d{2} )? )? #   Z, +HH, +HHMM, +HH:MM
    )?
    """, re.VERBOSE | re.ASCII)

_DURATION_UNITS = ("w", "d", "h", "m", "s")
_DURATION = re.compile("".join(rf"(?:(?P<{u}>\d+){u})?" for u in _DURATION_UNITS), re.ASCII)
_DURATION_ARGS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def _parse_iso(text: str) -> datetime | None:
    """The UTC datetime of an ISO 8601 string; None if it is not one of the accepted forms."""
    if not _ISO.fullmatch(text):
        return None
    try:
        when = isoparse(text)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(f"cannot parse date/time {text!r}: {exc}") from None


def _parse_duration(text: str) -> timedelta | None:
    """The timedelta of a duration string; None if it is not shaped like one."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        return None
    try:
        duration = timedelta(**{_DURATION_ARGS[u]: int(n) for u, n in match.groupdict().items()
                                if n is not None})
    except (OverflowError, ValueError):  # ValueError: more digits than int() takes
        raise ConfigError(f"duration {text!r} is too long") from None
    if duration <= timedelta(0):
        raise ConfigError(f"duration {text!r} must be positive (e.g. {DURATION_EXAMPLES})")
    return duration


def parse_utc_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date and time into an aware UTC datetime.

    Accepted: ``YYYY-MM-DD`` (midnight), then optionally ``T`` or a space and ``HH:MM``,
    ``HH:MM:SS`` or ``HH:MM:SS.fff`` (``,`` also allowed; up to 9 digits, kept to the
    microsecond), then optionally ``Z`` or an offset ``+HH``, ``+HHMM``, ``+HH:MM``, which is
    converted to UTC. No zone means UTC; ``24:00`` is the midnight that ends the day (``T``,
    ``Z`` may be lower case; a zone needs a time).

    Everything else is refused with a ConfigError, among it forms dateutil's isoparse would
    take: ``2024``, ``2024-05``, ``20240501``, ``2024-W18``, ``2024-05-01T08``,
    ``2024-05-01T0800``; also zone names (PST, CET, UTC), ``05/01/2024``, words
    (``yesterday``) and bare numbers.
    """
    stripped = text.strip()
    when = _parse_iso(stripped)
    if when is None:
        raise ConfigError(f"cannot parse date/time {text!r}: give an ISO 8601 date/time such as "
                          f"{ISO_EXAMPLES} (no zone means UTC)")
    return when


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration: whole numbers with units w, d, h, m, s in that order.

    ``30d``, ``12h``, ``90m``, ``45s``, ``2w``, ``1d12h``. Units are lower case (``m`` is
    minutes); no spaces inside, no fractions, no signs.
    """
    duration = _parse_duration(text.strip())
    if duration is None:
        raise ConfigError(f"cannot parse duration {text!r}: give a number with a unit such as "
                          f"{DURATION_EXAMPLES}")
    return duration


def parse_older_than(text: str, now: datetime | None = None) -> datetime:
    """The UTC instant meant by ``--older-than`` / ``--newer-than``.

    Either a duration back from ``now`` (default: the current time; a naive ``now`` is taken as
    UTC), as in parse_duration, or an ISO 8601 date/time, as in parse_utc_time.
    """
    stripped = text.strip()
    duration = _parse_duration(stripped)
    if duration is not None:
        now = datetime.now(UTC) if now is None else now
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        try:
            return now - duration
        except OverflowError:
            raise ConfigError(f"duration {text!r} reaches before year 1") from None
    when = _parse_iso(stripped)
    if when is None:
        hint = f" (a number needs a unit, e.g. {stripped}d for days)" if stripped.isdigit() else ""
        raise ConfigError(f"cannot parse date/time or duration {text!r}{hint}: give an ISO "
                          "8601 date/time such as 2024-05-01T08:00:00Z or a duration "
                          "such as 30d or 12h")
    return when


def format_utc(when: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (a naive datetime is taken as UTC), the year always in
    four digits: strftime's %Y writes year 1 as "1"."""
    when = when.astimezone(UTC) if when.tzinfo is not None else when
    return f"{when.year:04d}-{when:%m-%d %H:%M:%S}"
