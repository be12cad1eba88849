"""User-given dates and times (python-dateutil), always turned into aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from dateutil import parser

from .errors import ConfigError


def parse_utc_time(text: str) -> datetime:
    """Parse ``2024-05-01``, ``2024-05-01T08:00Z``, ``2024-05-01 08:00:00+02:00``...

    A time without a zone is taken as UTC.
    """
    try:
        when = parser.isoparse(text.strip())
    except ValueError:
        try:
            when = parser.parse(text)
        except (ValueError, OverflowError):
            raise ConfigError(f"cannot parse date/time {text!r} "
                              "(examples: 2024-05-01, 2024-05-01T08:00:00Z)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

