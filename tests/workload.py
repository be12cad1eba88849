"""The workload of the reliability tests: an application whose every committed state is
known, and a bucket holding one database in every shape the format has.

The *golden* bucket (``build_golden``), from oldest to newest:

- ``Z``: what an interrupted ``rm`` leaves: a generation with nothing but ``.changecounter``,
  covered by the tombstone ``DB.tombstone``.
- ``A``: a generation with a snapshot (made by the daemon's replicator, on a clock the test
  controls), seed batches, then batches shipped at T0+10 and T0+20.
- ``B``: a generation without a snapshot after the daemon's checkpoint at T0+25 (``.dep`` ->
  A with ``parent-frames``), batches at T0+30 and T0+40.
- ``B2``: the same after the checkpoint at T0+45 (``.dep`` -> B), batches at T0+50, T0+60.
- ``C``: a generation with a snapshot made by ``replicate --once`` (real clock) after the
  application checkpointed the WAL away (``.dep`` -> B2 with ``base: snapshot``), its seed
  batches, then one more ship.

Rows: ``t(id, v)``, 400 rows of ~200 bytes over ~20 leaf pages, all in the main file before
A. Each phase updates its own range of rows (A: 0..59, B: 100..159, B2: 200..259, C:
300..359 and appends), so a database rebuilt from the wrong pieces (a snapshot or a ``.dep``
of another generation) can still be a well-formed database: only its content tells.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from bottomless_cli.main import cli
from bottomless_core import catalog, layout
from bottomless_core.database import ReadLock
from bottomless_core.replicator import ReplicateOptions, Replicator
from tests.faults import digest_conn

T0 = 1_700_000_000.0
BATCH_FRAMES = 4  # --max-batch-frames everywhere: several batches per ship
ROWS = 400


def utc(seconds: float) -> str:
    """An ISO time for --utc-time."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class App:
    """The application: one connection; the digest of every committed state."""

    def __init__(self, db: Path, rows: int = ROWS) -> None:
        self.db = db
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA page_size=4096")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.history: list[str] = []
        self.commits = 0
        if rows:
            self.conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO t VALUES (?, ?)",
                                  ((i, f"{i:06d}-0-" + "x" * 190) for i in range(rows)))
            self.conn.execute("COMMIT")
            self.checkpoint()
        self.record()

    def record(self) -> str:
        d = digest_conn(self.conn)
        if not self.history or self.history[-1] != d:
            self.history.append(d)
        return d

    @property
    def state(self) -> str:
        return self.history[-1]

    def update(self, lo: int, hi: int, n: int = 1) -> str:
        """``n`` transactions, each rewriting the rows lo..hi-1 (a few pages)."""
        for _ in range(n):
            self.commits += 1
            self.conn.execute("BEGIN")
            self.conn.executemany("UPDATE t SET v = ? WHERE id = ?",
                                  ((f"{i:06d}-{self.commits}-" + "y" * 180, i)
                                   for i in range(lo, hi)))
            self.conn.execute("COMMIT")
            self.record()
        return self.state

    def append(self, n: int, size: int = 300) -> str:
        self.commits += 1
        start = self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM t").fetchone()[0]
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO t VALUES (?, ?)",
                              ((start + i, f"{start + i:06d}-{self.commits}-" + "z" * size)
                               for i in range(n)))
        self.conn.execute("COMMIT")
        return self.record()

    def checkpoint(self) -> None:
        """The application's own checkpoint: the WAL is copied back and restarted."""
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0

    def close(self) -> None:
        self.conn.close()


class Driver:
    """The daemon's replicator, one call at a time, on a clock the test sets (as
    tests/chains.py, with small batches)."""

    def __init__(self, db: Path, storage: Any, db_name: str) -> None:
        self.now = T0
        self.replicator = Replicator(db, storage, db_name,
                                     ReplicateOptions(clock=lambda: self.now,
                                                      max_batch_frames=BATCH_FRAMES))
        self.lock = ReadLock(db)

    def at(self, seconds: float) -> Driver:
        self.now = T0 + seconds
        return self

    def sync(self) -> Any:
        self.lock.acquire()
        result = self.replicator.sync(self.lock)
        if result.uploaded_anything:
            self.lock.renew()
        return result

    def checkpoint(self) -> None:
        outcome = self.replicator.checkpoint(self.lock)
        assert outcome.done, outcome
        self.replicator.ship_tail()

    def close(self) -> None:
        self.replicator.close()
        self.lock.close()


@dataclass
class Golden:
    """A bucket holding database ``name`` as described in the module docstring, and what a
    restore of it must give."""

    name: str
    db: Path
    gens: dict[str, uuid.UUID]  # "Z", "A", "B", "B2", "C"
    final: dict[str, str]  # generation label -> digest of its last state
    timeline: list[tuple[float, str]]  # (from this unix time on, restore --utc-time gives)
    history: set[str]  # every committed state
    first_state: dict[str, str]  # generation label -> digest of the state it starts from
    points: dict[str, float] = field(default_factory=dict)  # named --utc-time moments

    def at(self, t: float) -> str | None:
        """The digest ``restore --utc-time t`` must give (None: no generation then)."""
        times = [x for x, _ in self.timeline]
        i = bisect_right(times, t)
        return self.timeline[i - 1][1] if i else None

    def label(self, gen: uuid.UUID) -> str:
        return next(k for k, v in self.gens.items() if v == gen)


def run_cli(env: dict[str, str], *args: str) -> Result:
    """bottomless-cli in this process (its exit code and output, exceptions caught)."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def build_golden(storage: Any, env: dict[str, str], workdir: Path, name: str) -> Golden:
    """Write the golden bucket for database ``name`` (``env``: bottomless-cli's environment
    for the same bucket, direct to the server)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "golden.db"
    app = App(db)
    timeline: list[tuple[float, str]] = []
    final: dict[str, str] = {}
    first: dict[str, str] = {}
    app.update(0, 10)  # seed frames: in the WAL when A's snapshot is taken
    d = Driver(db, storage, name)
    first["A"] = app.state
    assert d.at(0).sync().new_generation
    timeline.append((T0, app.state))
    app.update(0, 20, 3)
    d.at(10).sync()
    timeline.append((T0 + 10, app.state))
    app.update(20, 60, 2)
    d.at(20).sync()
    timeline.append((T0 + 20, app.state))
    final["A"] = first["B"] = app.state
    d.at(25).checkpoint()
    app.update(100, 120)  # the first write of the next WAL cycle
    r = d.at(30).sync()
    assert r.new_generation and r.snapshotless, r
    timeline.append((T0 + 30, app.state))
    app.update(120, 160, 2)
    d.at(40).sync()
    timeline.append((T0 + 40, app.state))
    final["B"] = first["B2"] = app.state
    d.at(45).checkpoint()
    app.update(200, 220)
    r = d.at(50).sync()
    assert r.new_generation and r.snapshotless, r
    timeline.append((T0 + 50, app.state))
    app.update(220, 260, 2)
    d.at(60).sync()
    timeline.append((T0 + 60, app.state))
    final["B2"] = app.state
    d.close()
    # cron after the application checkpointed: a generation with a snapshot, .dep -> B2
    app.checkpoint()
    app.update(300, 330, 2)
    first["C"] = app.state
    res = run_cli(env, "-d", str(db), "--db-name", name, "replicate", "--once",
                  "--max-batch-frames", str(BATCH_FRAMES))
    assert res.exit_code == 0 and "new generation" in res.stdout, (res.stdout, res.stderr)
    c = catalog.newest_generation(storage, name)
    assert c is not None
    created = layout.generation_time(c).timestamp()
    timeline.append((created, app.state))
    app.update(330, 360, 2)
    app.append(15)
    res = run_cli(env, "-d", str(db), "--db-name", name, "replicate", "--once",
                  "--max-batch-frames", str(BATCH_FRAMES))
    assert res.exit_code == 0 and "shipped" in res.stdout, (res.stdout, res.stderr)
    g = catalog.describe_generation(storage, name, c)
    timeline.append((max(k.timestamp for k, _ in g.batches), app.state))
    final["C"] = app.state
    # an interrupted rm: Z keeps only its .changecounter, the tombstone covers it
    z = layout.new_generation_id(int((T0 - 100) * 1e9))
    storage.put(layout.object_key(name, z, layout.CHANGE_COUNTER), b"\0\0\0\1")
    storage.put(layout.tombstone_key(name),
                layout.encode_tombstone(math.floor(layout.generation_time(z).timestamp())))
    gens = list(catalog.list_generations(storage, name))
    assert len(gens) == 5, gens
    labels = dict(zip(("C", "B2", "B", "A", "Z"), gens, strict=True))
    assert labels["C"] == c
    history = set(app.history)
    app.close()
    golden = Golden(name, db, labels, final, sorted(timeline), history, first)
    golden.points = {"A": T0 + 15, "B": T0 + 35, "B2": T0 + 55, "C": created + 0.001}
    return golden
