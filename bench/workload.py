"""The side-by-side benchmarks' databases and writers (bench/sidebyside.py).

The databases carry a table ``t(id INTEGER PRIMARY KEY, updated INTEGER, v TEXT)`` with an index
on ``updated``; every row a writer touches gets a unique marker ``@@NNNNNNNNN@@`` in ``v``, so
that the uploaded objects can be decoded afterwards to see exactly when each commit reached the
bucket (bench/trackers.py). The writer runs in its own process:
``python -m bench.workload update|burst ...`` (``run_writer``), and logs when each commit
returned (``read_commits``).
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

PAGE_SIZE = 4096
MARKER = re.compile(rb"@@(\d{9})@@")
ROW_CHARS = 900  # v: 13-char prefix (id or marker), 400 hex chars of random bytes, lorem ipsum
UPDATED_BASE = 10**12


def row_text(prefix: str, rng: random.Random) -> str:
    """A compressible row of ROW_CHARS characters (zstd takes it to about a quarter)."""
    lorem = (" lorem ipsum dolor sit amet" * 20)[: ROW_CHARS - 13 - 400]
    return prefix + rng.randbytes(200).hex() + lorem


def build_database(path: Path, megabytes: float, seed: int = 1) -> int:
    """A WAL-mode database of about ``megabytes`` (page size 4096); returns its row count."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, updated INTEGER NOT NULL, "
                 "v TEXT NOT NULL)")
    rows = 0
    chunk = max(100, min(20_000, target // ROW_CHARS // 100))
    index_share = 0.03  # the index on `updated` adds about this much, built at the end
    while rows == 0 or (conn.execute("PRAGMA page_count").fetchone()[0] * PAGE_SIZE
                        < target * (1 - index_share)):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                         ((i, i, row_text(f"{i:012d} ", rng))
                          for i in range(rows + 1, rows + chunk + 1)))
        conn.execute("COMMIT")
        rows += chunk
    conn.execute("CREATE INDEX t_updated ON t(updated)")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return rows


def table_checksum(path: Path) -> tuple[int, str]:
    """(rows, SHA-256 over every row of t in id order)."""
    h = hashlib.sha256()
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    n = 0
    for rid, updated, v in conn.execute("SELECT id, updated, v FROM t ORDER BY id"):
        h.update(f"{rid}|{updated}|{v}\n".encode())
        n += 1
    conn.close()
    return n, h.hexdigest()


def read_commits(path: Path) -> list[dict[int, float]]:
    """The writer's log: per database index, marker -> commit time."""
    out: list[dict[int, float]] = [{}, {}]
    for line in path.read_text().splitlines():
        marker, db, t = line.split()
        out[int(db)][int(marker)] = float(t)
    return out


# -- the writer process ----------------------------------------------------------------------

def _update_writer(a: str, b: str, out: str, rows: int, rate: float, seconds: float,
                   seed: int) -> None:
    """Same random-row updates to both databases in lockstep, each its own transaction."""
    conns = [sqlite3.connect(p, isolation_level=None, timeout=120) for p in (a, b)]
    n = int(rate * seconds)
    rng = random.Random(seed)
    ids = rng.sample(range(1, rows + 1), n)  # each row once: its marker is never overwritten
    log: list[str] = []
    start = time.time()
    for i, rid in enumerate(ids):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)  # pacing the writer, not synchronisation
        v = row_text(f"@@{i:09d}@@", rng)
        for d in ((0, 1) if i % 2 == 0 else (1, 0)):
            conns[d].execute("UPDATE t SET updated = ?, v = ? WHERE id = ?",
                             (UPDATED_BASE + i, v, rid))
            log.append(f"{i} {d} {time.time():.6f}")
    for c in conns:
        c.close()
    Path(out).write_text("\n".join(log) + "\n")


def _burst_writer(a: str, b: str, out: str, megabytes: float, txn_mb: float,
                  seed: int) -> None:
    """``megabytes`` of new rows in ``txn_mb`` transactions, as fast as possible, to both
    databases (alternating which goes first)."""
    conns = [sqlite3.connect(p, isolation_level=None, timeout=120) for p in (a, b)]
    rng = random.Random(seed)
    per_txn = max(1, int(txn_mb * 1_000_000 / ROW_CHARS))
    log: list[str] = []
    for k in range(max(1, round(megabytes / txn_mb))):
        rows = [(UPDATED_BASE + k, row_text(f"@@{k:09d}@@", rng)) for _ in range(per_txn)]
        for d in ((0, 1) if k % 2 == 0 else (1, 0)):
            conns[d].execute("BEGIN")
            conns[d].executemany("INSERT INTO t(updated, v) VALUES (?, ?)", rows)
            conns[d].execute("COMMIT")
            log.append(f"{k} {d} {time.time():.6f}")
    for c in conns:
        c.close()
    Path(out).write_text("\n".join(log) + "\n")


def run_writer(kind: str, *args: object) -> None:
    subprocess.run([sys.executable, "-m", "bench.workload", kind, *map(str, args)],
                   check=True)


if __name__ == "__main__":
    if sys.argv[1] == "update":
        _update_writer(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                       float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]))
    elif sys.argv[1] == "burst":
        _burst_writer(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]),
                      float(sys.argv[6]), int(sys.argv[7]))
    else:
        raise SystemExit(f"unknown writer {sys.argv[1]!r}")
