"""Signals in the middle of a large transfer: nothing large is left behind, on disk or in the
bucket, and what a killed run leaves is cleaned up by the next one (issue 11, item 7)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottomless_core import catalog
from bottomless_core.store.s3 import S3Store
from bottomless_core.tempfiles import host_tag
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, insert_rows, integrity, open_wal_db
from tests.procs import DEADLINE, cli_env, cli_proc, one_error_line, poll
from tests.test_daemon import Daemon

MB = 1 << 20


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """~60 MB of incompressible rows, checkpointed into the main file (no WAL): its snapshot
    is a multipart upload (> 16 MiB) even compressed."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                 "WHERE x < 60000) INSERT INTO t SELECT x, randomblob(1000) FROM c")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert db.stat().st_size > 55 * MB
    return db


@pytest.fixture
def proxy(s3: SeaweedServer) -> Iterator[Proxy]:
    """A slow link: the 60 MB snapshot takes ~20 s up and ~5 s down."""
    p = Proxy(s3.port, latency=0.02, upload_rate=3 * MB, download_rate=12 * MB)
    yield p
    p.close()


def _uploads(storage: S3Store) -> list[dict]:
    """Unfinished multipart uploads in the bucket (asked of the server directly)."""
    return storage._client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


def _temp_files(directory: Path, name: str) -> list[str]:
    """Temporary files beside the database ``name`` (hidden ``.NAME.*``), whatever their
    naming scheme, except the replicator's lock file (kept, empty, on purpose)."""
    pattern = re.compile(re.escape(f".{name}.") + r"(?!bottomless-lock$).+$")
    return sorted(n for n in os.listdir(directory) if pattern.match(n))


def _start_replicate(run: Cli, proxy: Proxy, db: Path,
                     storage: S3Store) -> subprocess.Popen[str]:
    """``replicate --once`` through the slow proxy, returned once its snapshot upload is under
    way (the server lists the multipart upload)."""
    env = cli_env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint)
    p = cli_proc(env, "-d", str(db), "replicate", "--once")
    poll("the multipart upload of the snapshot",
         lambda: _uploads(storage) or p.poll() is not None)
    assert p.poll() is None, p.communicate()
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_snapshot_upload(run: Cli, tmp_path: Path, storage: S3Store,
                                           big_db: Path, proxy: Proxy, sig: int) -> None:
    p = _start_replicate(run, proxy, big_db, storage)
    assert _temp_files(tmp_path, "app.db")  # the snapshot being uploaded
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=DEADLINE)
    assert _temp_files(tmp_path, "app.db") == []
    assert _uploads(storage) == []
    assert p.returncode == 128 + sig, stderr
    one_error_line(stderr)
    assert catalog.newest_generation(storage, "app.db") is None  # nothing half-written
    # the next run backs it up as if nothing happened
    out = run("-d", str(big_db), "replicate", "--once")
    assert "new generation" in out.stdout


def test_next_run_cleans_up_after_a_killed_one(run: Cli, tmp_path: Path, storage: S3Store,
                                               big_db: Path, proxy: Proxy) -> None:
    p = _start_replicate(run, proxy, big_db, storage)
    p.kill()  # no chance to clean up
    p.wait(DEADLINE)
    left = _temp_files(tmp_path, "app.db")
    assert left
    assert (tmp_path / left[0]).stat().st_size > 16 * MB
    assert _uploads(storage)
    # the next run removes the dead run's file and aborts its upload
    out = run("-d", str(big_db), "replicate", "--once")
    assert "new generation" in out.stdout
    assert _temp_files(tmp_path, "app.db") == []
    assert _uploads(storage) == []
    restored = tmp_path / "restored.db"
    run("--db-name", "app.db", "restore", "-o", str(restored))
    assert integrity(restored) == "ok"
    assert restored.read_bytes() == big_db.read_bytes()


def test_sigterm_during_a_restore_download(run: Cli, tmp_path: Path, storage: S3Store,
                                           big_db: Path, proxy: Proxy) -> None:
    run("-d", str(big_db), "replicate", "--once")
    target = tmp_path / "target.db"
    conn = open_wal_db(target)
    insert_rows(conn, 10)
    conn.close()
    before = target.read_bytes()
    env = cli_env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint)
    p = cli_proc(env, "--db-name", "app.db", "-d", str(target), "restore", "--force")

    def downloading() -> bool:
        return any((tmp_path / n).stat().st_size > 4 * MB
                   for n in _temp_files(tmp_path, "target.db")) or p.poll() is not None

    poll("the snapshot download", downloading)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=DEADLINE)
    assert _temp_files(tmp_path, "target.db") == []
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".restoring")]
    assert target.read_bytes() == before  # untouched
    assert p.returncode == 128 + signal.SIGTERM, stderr
    one_error_line(stderr)
    assert len(dump(target)["t"]) == 10


@pytest.mark.parametrize("how", ["once", "daemon"])
@pytest.mark.parametrize("linked", [False, True], ids=["plain", "symlink"])
def test_a_later_run_removes_a_dead_runs_files(run: Cli, tmp_path: Path, how: str,
                                               linked: bool) -> None:
    """Temporary files are written beside the real database file; whoever cleans up after a
    dead run must look there too, when -d is a symlink with another name."""
    real = tmp_path / "real"
    real.mkdir()
    target = real / "data.db"
    path = tmp_path / "app.db" if linked else target
    if linked:
        path.symlink_to(target)
    conn = open_wal_db(path)
    insert_rows(conn, 10)
    conn.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = real / f".data.db.bottomless-{host_tag()}-{dead.pid}-0123abcd.snapshot"
    stale.write_bytes(b"x" * 4096)
    if how == "once":
        run("-d", str(path), "replicate", "--once")
    else:
        d = Daemon(["-d", str(path)], cli_env(run), tmp_path)
        try:
            poll("the daemon's first backup", lambda: d.caught_up_after(0))
            d.signal()
            assert d.wait() == 0, d.text()
        finally:
            d.kill()
    assert not stale.exists()
