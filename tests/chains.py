"""Drive the daemon's replicator in-process, step by step, with a clock the test controls:
generations that restore through their parents, made by our own checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bottomless_core import catalog
from bottomless_core.database import ReadLock
from bottomless_core.replicator import (
    CheckpointOutcome,
    ReplicateOptions,
    ReplicateResult,
    Replicator,
)
from bottomless_core.store.base import ObjectStore
from bottomless_core.store.s3 import S3Store
from tests.helpers import dump_conn, insert_rows, open_wal_db

T0 = 1_700_000_000.0


class Driver:
    """What the Follower does each poll, one call at a time."""

    def __init__(self, db: Path, storage: ObjectStore, db_name: str | None = None) -> None:
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


def build_chain(db: Path, storage: S3Store, children: int,
                ) -> tuple[list[tuple[float, dict]], list]:
    """G0 (snapshot, batches at 0 and 10 s), then ``children`` generations made by our
    checkpoints at k*100+20 s, each shipping batches at k*100+50 and k*100+110 (the latter just
    before the next checkpoint). Returns the states with the times of the syncs that shipped
    them, and the generation ids, newest first."""
    conn = open_wal_db(db)
    d = Driver(db, storage)
    states: list[tuple[float, dict]] = []
    insert_rows(conn, 30)
    assert d.at(0).sync().new_generation
    states.append((0, dump_conn(conn)))
    insert_rows(conn, 5, start=1000)
    d.at(10).sync()
    states.append((10, dump_conn(conn)))
    for k in range(1, children + 1):
        d.at(k * 100 + 20).checkpoint()
        insert_rows(conn, 5, start=k * 10_000)  # the first write of the new WAL cycle
        result = d.at(k * 100 + 50).sync()
        assert result.new_generation and result.snapshotless, result
        states.append((k * 100 + 50, dump_conn(conn)))
        insert_rows(conn, 5, start=k * 10_000 + 500, size=3000)
        d.at(k * 100 + 110).sync()
        states.append((k * 100 + 110, dump_conn(conn)))
    d.close()
    conn.close()
    gens = list(catalog.list_generations(storage, db.name))
    assert len(gens) == children + 1
    return states, gens
