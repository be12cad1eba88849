"""Drive the daemon's replicator in-process, step by step, with a clock the test controls:
generations that restore through their parents, made by our own checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bottomless_core.database import ReadLock
from bottomless_core.replicator import (
    CheckpointOutcome,
    ReplicateOptions,
    ReplicateResult,
    Replicator,
)
from bottomless_core.storage import Storage

T0 = 1_700_000_000.0


class Driver:
    """What the Follower does each poll, one call at a time."""

    def __init__(self, db: Path, storage: Storage, db_name: str | None = None) -> None:
        self.now = T0
        self.replicator = Replicator(db, storage, db_name,
                                     ReplicateOptions(clock=lambda: self.now))
        self.lock = ReadLock(db)

    def at(self, seconds: float) -> Driver:
        self.now = T0 + seconds
        return self

    def sync(self) -> ReplicateResult:
        self.lock.acquire()
        result = self.replicator.sync(self.lock)
        if result.uploaded_anything:
            self.lock.renew()
        return result

    def checkpoint(self, pin: bool = False) -> CheckpointOutcome:
        outcome = self.replicator.checkpoint(self.lock, pin=pin)
        assert outcome.done, outcome
        self.replicator.ship_tail()
        return outcome

    def close(self) -> None:
        self.replicator.close()
        self.lock.close()


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


def iso(seconds: float) -> str:
    return when(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
