"""The daemon's --retention: generations that no point of the window needs go, and a restore
at the very edge of the window still works afterwards."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from bottomless_core import catalog
from bottomless_core.database import ReadLock
from bottomless_core.follower import Follower, FollowOptions
from bottomless_core.replicator import ReplicateOptions, Replicator
from bottomless_core.store.s3 import S3Store
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, open_wal_db

DAY = 86_400.0
WINDOW = 7 * DAY


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_retention_keeps_the_whole_window_restorable(run: Cli, tmp_path: Path,
                                                      storage: S3Store) -> None:
    now = time.time()
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    clock = [now - 10 * DAY]
    r = Replicator(db, storage, options=ReplicateOptions(clock=lambda: clock[0]))
    lock = ReadLock(db)
    states: dict[str, dict] = {}
    # three generations with a snapshot each (the app checkpoints between them), at 10, 8
    # and 6 days ago, each with a later batch
    for name, start in (("a", 10.0), ("b", 8.0), ("c", 6.0)):
        insert_rows(conn, 5, start=int(start * 1000))
        clock[0] = now - start * DAY
        lock.acquire()
        assert r.sync(lock).new_generation
        lock.release()
        insert_rows(conn, 5, start=int(start * 1000) + 500)
        clock[0] = now - (start - 0.5) * DAY
        lock.acquire()
        r.sync(lock)
        lock.release()
        states[name] = dump_conn(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    lock.close()
    r.close()
    gens = list(catalog.list_generations(storage, "app.db"))  # c, b, a
    assert len(gens) == 3
    follower = Follower(Replicator(db, storage),
                        FollowOptions(interval=0.05, retention=WINDOW, retention_every=0.0))
    follower._retention_due = 0.0
    try:
        assert follower.step()
    finally:
        follower._lock.close()
        follower.replicator.close()
    conn.close()
    left = list(catalog.list_generations(storage, "app.db"))
    # a is gone; b covers the window's start (7 days ago) and stays; c and the daemon's own
    # newest stay
    assert gens[2] not in left and gens[1] in left and gens[0] in left
    assert follower.status.generations_removed == 1
    edge = now - WINDOW
    out = tmp_path / "edge.db"
    run("--db-name", "app.db", "restore", "-o", str(out), "--utc-time", _iso(edge))
    assert dump(out) == states["b"]
    out.unlink()
    run("--db-name", "app.db", "restore", "-o", str(out), "--utc-time", _iso(now - 5 * DAY))
    assert dump(out) == states["c"]
