"""The README's demo: a full round trip against a local S3 server that the demo starts itself.

    python -m bottomless_cli.demo                  # against SeaweedFS
    python -m bottomless_cli.demo --backend file   # against a directory (-e file:///...)

Starts SeaweedFS on 127.0.0.1 (credentials enforced), or uses a temporary directory as the
bucket, writes an SQLite database, runs ``bottomless-cli replicate --once``, deletes the
database, ``restore``s it and compares.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bottomless_core.store.config import StorageConfig
from bottomless_core.store.files import FileStore
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer

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


@contextlib.contextmanager
def _bucket(backend: str, tmp: Path) -> Iterator[dict[str, str]]:
    """Create the bucket "demo"; yield the environment that points bottomless-cli at it."""
    if backend == "file":
        root = tmp / "backups"
        FileStore(root, "demo").create_bucket()
        print(f"bucket directory {root / 'demo'}")
        yield {**os.environ, "LIBSQL_BOTTOMLESS_ENDPOINT": root.as_uri(),
               "LIBSQL_BOTTOMLESS_BUCKET": "demo"}
        return
    with SeaweedServer() as s3:
        print(f"SeaweedFS S3 server on {s3.endpoint}")
        S3Store(StorageConfig(s3.endpoint, "demo", "us-east-1", s3.access_key,
                              s3.secret_key)).create_bucket()
        yield {**os.environ, **s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": "demo"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bottomless_cli.demo",
                                     description="A backup and restore round trip.")
    parser.add_argument("--backend", choices=("s3", "file"), default="s3",
                        help="s3: a local SeaweedFS server (default); file: a temporary "
                             "directory (-e file:///...)")
    args = parser.parse_args(argv)
    with (tempfile.TemporaryDirectory(prefix="bottomless-demo-") as tmp,
          _bucket(args.backend, Path(tmp)) as env):
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
