"""Helpers shared by the tests: databases written by sqlite3 and ways to compare them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal_db(path: Path, page_size: int = 4096, autocheckpoint: int = 0) -> sqlite3.Connection:
    """A connection to a new WAL-mode database, as an application would hold it."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
    return conn


def insert_rows(conn: sqlite3.Connection, n: int, start: int = 0, size: int = 100,
                table: str = "t") -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO {table}(id, v) VALUES (?, ?)",
                     ((start + i, f"{start + i:08d}" + "x" * max(0, size - 8))
                      for i in range(n)))
    conn.execute("COMMIT")


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read through SQLite (opens read-only, creates nothing)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        conn.close()


def dump_conn(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


def integrity(path: Path) -> str:
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
