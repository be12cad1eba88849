"""The README's demo: a full round trip against a local S3 server that the demo starts itself.

    python -m bottomless_cli.demo

Starts SeaweedFS on 127.0.0.1 (credentials enforced), writes an SQLite database, runs
``bottomless-cli replicate --once``, deletes the database, ``restore``s it and compares.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from bottomless_core.seaweed import SeaweedServer
from bottomless_core.storage import Storage, StorageConfig

ROWS = 20_000


def _cli(env: dict[str, str], *args: str) -> None:
    print(f"$ bottomless-cli {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "bottomless_cli.main", *args], env=env, check=True)


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        conn.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bottomless-demo-") as tmp, SeaweedServer() as s3:
        print(f"SeaweedFS S3 server on {s3.endpoint}")
        Storage(StorageConfig(s3.endpoint, "demo", "us-east-1", s3.access_key,
                              s3.secret_key)).create_bucket()
        env = {**os.environ, **s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": "demo"}
        db = Path(tmp) / "app.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INT, kind TEXT)")
        with conn:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO users(name, email) VALUES (?, ?)",
                             ((f"user{i}", f"user{i}@example.com") for i in range(ROWS)))
        _cli(env, "-d", str(db), "replicate", "--once")
        with conn:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events(user_id, kind) VALUES (?, ?)",
                             ((i % ROWS, "login") for i in range(ROWS // 2)))
        _cli(env, "-d", str(db), "replicate", "--once")
        before = _counts(db)
        conn.close()
        _cli(env, "-d", str(db), "ls", "-v")
        print(f"$ rm {db.name}")
        db.unlink()
        _cli(env, "-d", str(db), "restore")
        after = _counts(db)
        print(f"rows before: {before}")
        print(f"rows after:  {after}")
        if before != after:
            print("MISMATCH", file=sys.stderr)
            return 1
        print("round trip OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
