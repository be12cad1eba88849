"""Shared pieces of the benchmarks: a server, a bucket, a database of a given size."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer


def make_bucket(server: SeaweedServer, name: str) -> S3Store:
    storage = S3Store(StorageConfig(server.endpoint, name, "us-east-1", server.access_key,
                                    server.secret_key))
    storage.create_bucket()
    return storage


def fill(db: Path, megabytes: int, start: int = 0, autocheckpoint: int = 1000,
         row_size: int = 1000) -> sqlite3.Connection:
    """Write about ``megabytes`` of rows (compressible text, like most app data)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    rows = megabytes * 1_000_000 // row_size
    for chunk in range(0, rows, 5000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?)",
                         ((start + i, f"{start + i:012d} " + os.urandom(row_size // 4).hex()
                           [: row_size // 2] + " lorem ipsum" * (row_size // 24))
                          for i in range(chunk, min(rows, chunk + 5000))))
        conn.execute("COMMIT")
    return conn


def run_cli(env: dict[str, str], *args: str) -> tuple[float, int]:
    """Run bottomless-cli in a child process; return (seconds, peak RSS in MiB)."""
    code = ("import resource, sys, time; from bottomless_cli.main import cli\n"
            "t = time.perf_counter()\n"
            "try:\n    cli(prog_name='bottomless-cli', args=sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, **env},
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[-2]), int(out[-1])


def mb(n: int) -> float:
    return n / 1_000_000


def now() -> float:
    return time.perf_counter()
