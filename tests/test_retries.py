"""Throttling and 5xx answers are retried with backoff; when they persist, one clear line."""

from __future__ import annotations

from pathlib import Path

from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, open_wal_db


def test_slowdown_is_retried(run: Cli, tmp_path: Path, s3: SeaweedServer) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    throttler = Proxy(s3.port)
    throttler.arm(lambda n: "503" if n <= 3 else None)
    try:
        run("-e", throttler.endpoint, "-d", str(db), "replicate", "--once")
        assert len(throttler.fired) == 3  # three 503s answered, and still a success
    finally:
        throttler.close()
    expected = dump_conn(conn)
    conn.close()
    out = tmp_path / "restored.db"
    run("--db-name", "app.db", "restore", "-o", str(out))
    assert dump(out) == expected


def test_persistent_slowdown_is_one_clear_error(run: Cli, tmp_path: Path,
                                                s3: SeaweedServer) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    throttler = Proxy(s3.port)
    throttler.arm(lambda n: "503")
    try:
        result = run("-e", throttler.endpoint, "-d", str(db), "replicate", "--once", code=1,
                     env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "2"})
        assert 3 <= len(throttler.fired) <= 4  # one attempt and two retries (it may reconnect)
    finally:
        throttler.close()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: S3 endpoint"), result.stderr
    # (the bucket check is a listing: its answer's body names the S3 error)
    assert "kept failing (SlowDown)" in lines[0] and "3 attempts" in lines[0]
    conn.close()
