"""A randomized application for the crash test (tests/test_crash_pitr.py).

    python tests/random_writer.py DB LOG SECONDS SEED

Commit n (n = 1, 2, ...) is a transaction whose operations are a pure function of (SEED, n,
the state after commit n-1): ``plan(model, seed, n)``. The database therefore tells which
commit it holds (``meta.n``), and the test rebuilds the exact expected state for any n by
replaying ``plan``/``Model.apply`` from commit 0 (``init_db``). Rows are
``t(id, ver, v)``: ``ver`` is the commit that last wrote the row and ``v`` is
``value(id, ver, length)``, so a row is checked byte for byte without storing it.

Everything else the writer does is random but does not change the content: checkpoints of
every mode (some with a short busy timeout, so that they fail with SQLITE_BUSY, ignored),
``wal_autocheckpoint`` at random small values, closing and reopening the connection, pauses.

LOG gets one line per event, flushed at once:

    c N T_BEFORE T_AFTER BYTES commit N: time.time() just before COMMIT and after it returned,
                               and the bytes of row values it wrote
    k MODE RESULT T            an application checkpoint (RESULT: busy,log,ckpt or an error)
    a N T                      wal_autocheckpoint set to N
    r T                        connection closed and reopened
"""

from __future__ import annotations

import argparse
import bisect
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

SMALL = (8, 400)  # bytes of an ordinary row's value
BIG_TXN = (1 << 20, 5 << 20)  # bytes written by a big transaction
BIG_CHANCE = 0.012  # of a commit being a big transaction
BIG_ROW = (2_000, 60_000)  # bytes of one row of a big transaction (overflow pages)
TARGET_BYTES = 8 << 20  # past this much live data, transactions delete more than they add
AUTOCHECKPOINTS = (0, 1, 2, 5, 10, 20, 50, 100, 1000)
CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
WRITE_BUSY_MS = 20_000  # the replicator's checkpoint holds the write lock for milliseconds


def value(row_id: int, ver: int, length: int) -> bytes:
    """The content of row ``row_id`` as written by commit ``ver``."""
    return random.Random(f"{row_id}/{ver}").randbytes(length)


@dataclass
class Model:
    """The table's content, without the bytes: id -> (ver, length)."""

    rows: dict[int, tuple[int, int]] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)  # the keys of rows, ascending
    next_id: int = 1
    n: int = 0
    live_bytes: int = 0

    def apply(self, n: int, ops: list[tuple[str, int, int]]) -> None:
        for op, row_id, length in ops:
            if op == "del":
                self.live_bytes -= self.rows.pop(row_id)[1]
                del self.ids[bisect.bisect_left(self.ids, row_id)]
            else:
                if op == "ins":
                    assert row_id == self.next_id
                    self.next_id += 1
                    self.ids.append(row_id)
                else:
                    self.live_bytes -= self.rows[row_id][1]
                self.rows[row_id] = (n, length)
                self.live_bytes += length
        self.n = n


def plan(model: Model, seed: int, n: int) -> list[tuple[str, int, int]]:
    """The operations of commit ``n`` on top of ``model`` (the state after n-1):
    ("ins", id, length), ("upd", id, length), ("del", id, 0)."""
    rng = random.Random(f"{seed}:{n}")
    ops: list[tuple[str, int, int]] = []
    next_id = model.next_id
    existing = model.ids
    touched: set[int] = set()
    shrink = model.live_bytes > TARGET_BYTES
    if rng.random() < BIG_CHANCE:  # a big transaction: 1-5 MB of large rows
        budget = rng.randint(*BIG_TXN)
        while budget > 0:
            length = rng.randint(*BIG_ROW)
            if existing and rng.random() < 0.3:
                row_id = rng.choice(existing)
                if row_id not in touched:
                    touched.add(row_id)
                    ops.append(("upd", row_id, length))
                    budget -= length
                    continue
            ops.append(("ins", next_id, length))
            next_id += 1
            budget -= length
    else:
        for _ in range(rng.randint(1, 50)):
            r = rng.random()
            if existing and r < (0.45 if shrink else 0.12):
                row_id = rng.choice(existing)
                if row_id not in touched:
                    touched.add(row_id)
                    ops.append(("del", row_id, 0))
                continue
            if existing and r < (0.7 if shrink else 0.35):
                row_id = rng.choice(existing)
                if row_id not in touched:
                    touched.add(row_id)
                    ops.append(("upd", row_id, rng.randint(*SMALL)))
                continue
            ops.append(("ins", next_id, rng.randint(*SMALL)))
            next_id += 1
    if shrink:  # also drop a few of the oldest rows, big ones go this way
        for row_id in existing[:rng.randint(1, 6)]:
            if row_id not in touched:
                touched.add(row_id)
                ops.append(("del", row_id, 0))
    return ops


def init_db(path: Path, page_size: int) -> tuple[float, float]:
    """Commit 0: the schema and meta.n = 0, in WAL mode. Returns its (before, after) times."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL)")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ver INTEGER NOT NULL, v BLOB NOT NULL)")
    conn.execute("INSERT INTO meta VALUES (0, 0)")
    before = time.time()
    conn.execute("COMMIT")
    after = time.time()
    conn.close()
    return before, after


class Writer:
    def __init__(self, db: Path, log_path: Path, seed: int) -> None:
        self.db = db
        self.seed = seed
        self.rng = random.Random(f"{seed}:writer")  # what does not change the content
        self.log = open(log_path, "a")  # noqa: SIM115 - closed in run()
        self.model = Model()
        self.conn = self._open()

    def _event(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=WRITE_BUSY_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout={WRITE_BUSY_MS}")
        auto = self.rng.choice(AUTOCHECKPOINTS)
        conn.execute(f"PRAGMA wal_autocheckpoint={auto}")
        self._event(f"a {auto} {time.time():.6f}")
        return conn

    def commit(self, n: int) -> None:
        ops = plan(self.model, self.seed, n)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op, row_id, length in ops:
                if op == "del":
                    conn.execute("DELETE FROM t WHERE id = ?", (row_id,))
                elif op == "ins":
                    conn.execute("INSERT INTO t (id, ver, v) VALUES (?, ?, ?)",
                                 (row_id, n, value(row_id, n, length)))
                else:
                    conn.execute("UPDATE t SET ver = ?, v = ? WHERE id = ?",
                                 (n, value(row_id, n, length), row_id))
            conn.execute("UPDATE meta SET n = ? WHERE id = 0", (n,))
            before = time.time()
            conn.execute("COMMIT")
            after = time.time()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.model.apply(n, ops)
        self._event(f"c {n} {before:.6f} {after:.6f} {sum(op[2] for op in ops)}")

    def checkpoint(self) -> None:
        mode = self.rng.choice(CHECKPOINT_MODES)
        busy = self.rng.choice((0, 10, 50, 200))
        try:
            self.conn.execute(f"PRAGMA busy_timeout={busy}")
            row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            result = ",".join(str(x) for x in row)
        except sqlite3.OperationalError as exc:  # SQLITE_BUSY / locked: ignored, as an app does
            result = "error:" + str(exc).replace(" ", "_")
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={WRITE_BUSY_MS}")
        self._event(f"k {mode} {result} {time.time():.6f}")

    def reopen(self) -> None:
        self.conn.close()
        self._event(f"r {time.time():.6f}")
        self.conn = self._open()

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        n = 0
        rng = self.rng
        try:
            while time.monotonic() < end:
                n += 1
                for attempt in range(5):
                    try:
                        self.commit(n)
                        break
                    except sqlite3.OperationalError:  # busy for 20 s: should not happen
                        if attempt == 4:
                            raise
                r = rng.random()
                if r < 0.04:
                    self.checkpoint()
                elif r < 0.05:
                    self.reopen()
                elif r < 0.06:
                    auto = rng.choice(AUTOCHECKPOINTS)
                    self.conn.execute(f"PRAGMA wal_autocheckpoint={auto}")
                    self._event(f"a {auto} {time.time():.6f}")
                pause = rng.random()
                if pause < 0.5:
                    time.sleep(rng.uniform(0, 0.02))
                elif pause < 0.53:
                    time.sleep(rng.uniform(0.1, 0.6))
        finally:
            self.conn.close()
            self.log.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("db", type=Path)
    p.add_argument("log", type=Path)
    p.add_argument("seconds", type=float)
    p.add_argument("seed", type=int)
    args = p.parse_args()
    Writer(args.db, args.log, args.seed).run(args.seconds)


if __name__ == "__main__":
    main()
