"""What the daemon says of its databases as it runs: the start-up progress line until every
database is backed up, the ``event=status`` summary every minute (one line per database
while they are few; for a thousand, one line of counts plus the databases that are not
well), and how often the status file is rewritten."""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from collections.abc import Iterable

from .follower import Follower, FollowerStatus

log = logging.getLogger("bottomless.daemon")

SUMMARY_EVERY = 60.0  # seconds between summaries
STARTING_EVERY = 5.0  # seconds between start-up progress lines
DETAILED = 20  # up to this many databases, a summary line each
UNWELL_SHOWN = 10  # databases named in a fleet's summary (lagging, retrying, failed)
LAGGING = 10.0  # seconds of lag that name a database in a fleet's summary
STATUS_EVERY = 1.0  # seconds between status file rewrites, per 100 databases (at most 10 s)


def summary_line(status: FollowerStatus) -> str:
    """The periodic ``event=status`` log line of one database."""
    return (f"db={status.db_name} event=status state={status.state} "
            f"generation={status.generation} frames_shipped={status.frames_shipped} "
            f"generations_started={status.generations_started} "
            f"lag_seconds={status.lag_seconds():.1f} checkpoints={status.checkpoints} "
            f"last_error={status.last_error!r}")


def fleet_line(statuses: list[FollowerStatus]) -> str:
    """One ``event=status`` line for many databases: how many in each state, the worst lag,
    what they shipped."""
    states = Counter(s.state for s in statuses)
    lag = max((s.lag_seconds() for s in statuses), default=0.0)
    counts = " ".join(f"{state}={n}" for state, n in sorted(states.items()))
    return (f"event=status databases={len(statuses)} {counts} lag_max_seconds={lag:.1f} "
            f"frames_shipped={sum(s.frames_shipped for s in statuses)} "
            f"generations_started={sum(s.generations_started for s in statuses)}")


def unwell(statuses: list[FollowerStatus]) -> list[FollowerStatus]:
    """The databases a fleet's summary names: not running, or lagging."""
    return [s for s in statuses
            if s.state not in ("running", "stopped") or s.lag_seconds() >= LAGGING]


class Reporter:
    """The daemon's periodic lines, from the followers as they are."""

    def __init__(self, followers: Iterable[Follower]) -> None:
        self.followers = followers
        now = time.monotonic()
        self._began = now
        self._summary_at = now
        self._starting_at = now
        self._status_at = -STATUS_EVERY
        self._started = False  # every database backed up once

    def status_due(self, now: float) -> bool:
        """Is the status file to be rewritten now? (Every second for up to 100 databases,
        less often for more: it is rewritten whole.)"""
        every = min(10.0, STATUS_EVERY * max(1.0, len(list(self.followers)) / 100))
        if now - self._status_at < every:
            return False
        self._status_at = now
        return True

    def tick(self, now: float) -> None:
        if not self._started and now - self._starting_at >= STARTING_EVERY:
            self._starting_at = now
            self._starting(now)
        if now - self._summary_at >= SUMMARY_EVERY:
            self._summary_at = now
            self.summary()

    def _starting(self, now: float) -> None:
        statuses = [f.status for f in self.followers]
        waiting = [s for s in statuses if s.generation is None and s.state != "failed"]
        if waiting:
            log.info("event=starting backed_up=%d of %d databases (%.0fs)",
                     len(statuses) - len(waiting), len(statuses), now - self._began)
            return
        self._started = True
        log.info("event=started_all databases=%d seconds=%.1f: every database backed up",
                 len(statuses), now - self._began)

    def summary(self) -> None:
        statuses = [f.status for f in self.followers]
        if len(statuses) <= DETAILED:
            for s in statuses:
                log.info(summary_line(s))
            return
        log.info(fleet_line(statuses))
        named = unwell(statuses)
        for s in named[:UNWELL_SHOWN]:
            log.info(summary_line(s))
        if len(named) > UNWELL_SHOWN:
            log.info("event=status and %d more databases lagging or not running",
                     len(named) - UNWELL_SHOWN)


def raise_open_files_limit() -> None:
    """A follower keeps a few descriptors open per database (the database, its -wal and
    -shm, its locks): raise the soft limit to the hard one, as Litestream does."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("event=open_files_limit error=%r", str(exc))
