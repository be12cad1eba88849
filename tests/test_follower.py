"""The daemon's loop in-process: every failure is retried and reported, not only S3's."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from bottomless_core import replicator as replicator_module
from bottomless_core.follower import Follower, FollowOptions
from bottomless_core.replicator import Replicator
from bottomless_core.store.s3 import S3Store
from tests.conftest import Cli
from tests.helpers import dump, insert_rows, open_wal_db
from tests.procs import poll


def test_a_full_disk_is_retried_and_reported(run: Cli, tmp_path: Path, storage: S3Store,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    real = replicator_module.write_snapshot
    failures = [2]

    def no_space(*args: object, **kwargs: object) -> object:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replicator_module, "write_snapshot", no_space)
    follower = Follower(Replicator(db, storage), FollowOptions(interval=0.05))
    try:
        for _ in range(2):
            assert follower.step() is False
            assert follower.status.state == "retrying"
            assert "No space left on device" in (follower.status.last_error or "")
            assert follower.status.behind_since is not None
        assert follower.step() is True  # space was freed
        assert follower.status.state == "running" and follower.status.last_error is None
        assert follower.status.consecutive_failures == 0
    finally:
        follower._lock.close()
        follower.replicator.close()
    run("--db-name", "app.db", "restore", "-o", str(tmp_path / "r.db"))
    assert dump(tmp_path / "r.db") == dump(db)
    conn.close()


def test_an_unexpected_exception_is_retried(tmp_path: Path, storage: S3Store,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    follower = Follower(Replicator(db, storage), FollowOptions(interval=0.05))
    calls = [0]
    real_sync = follower.replicator.sync

    def flaky(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("a bug")
        return real_sync(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(follower.replicator, "sync", flaky)
    try:
        assert follower.step() is False
        assert "KeyError" in (follower.status.last_error or "") or "a bug" in (
            follower.status.last_error or "")
        assert follower.step() is True
    finally:
        follower._lock.close()
        follower.replicator.close()
    conn.close()


@pytest.mark.parametrize("page_size", [4096, 8192])
def test_the_daemon_notes_once_a_page_size_libsql_cannot_restore(
        tmp_path: Path, page_size: int, caplog: pytest.LogCaptureFixture) -> None:
    from bottomless_core.store.files import FileStore

    store = FileStore(tmp_path / "backups", "bucket")
    store.create_bucket()
    db = tmp_path / "app.db"
    conn = open_wal_db(db, page_size)
    insert_rows(conn, 10)
    follower = Follower(Replicator(db, store), FollowOptions(interval=0.05))
    try:
        with caplog.at_level("WARNING", logger="bottomless.follower"):
            assert follower.step() is True
            insert_rows(conn, 10, start=100)
            assert follower.step() is True
    finally:
        follower._lock.close()
        follower.replicator.close()
    conn.close()
    notes = [r for r in caplog.records if "event=libsql_page_size" in r.getMessage()]
    assert len(notes) == (page_size != 4096)


def _open_files(directory: Path) -> list[str]:
    """What this process's descriptors point to inside ``directory`` (Linux /proc)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return sorted(out)


def test_a_database_replaced_under_the_daemon_is_let_go(tmp_path: Path, storage: S3Store,
                                                         run: Cli) -> None:
    """Issue 16: after ``mv new.db app.db`` the daemon kept descriptors (and read locks) of
    every replaced file for its whole life; now it closes them when it sees the new one, and
    backs up the new one."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    conn.close()
    follower = Follower(Replicator(db, storage), FollowOptions(interval=0.05))
    try:
        assert follower.step() is True
        opened = len(_open_files(tmp_path))
        for i in range(1, 6):
            new = tmp_path / "new.db"
            conn = open_wal_db(new)
            insert_rows(conn, 10 * i, start=1000 * i)
            conn.close()
            os.replace(new, db)
            assert follower.step() is True
            files = _open_files(tmp_path)
            assert not [f for f in files if f.endswith("(deleted)")], files
            assert len(files) <= opened, files
        assert follower.status.generation is not None
    finally:
        follower._lock.close()
        follower.replicator.close()
    run("--db-name", "app.db", "restore", "-o", str(tmp_path / "r.db"))
    assert dump(tmp_path / "r.db") == dump(db)
    assert len(dump(db)["t"]) == 50


def test_a_reader_blocking_checkpoints_is_warned_once(tmp_path: Path, storage: S3Store,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16: a long reader kept every checkpoint from completing; the WAL grew to 29 MB
    with INFO lines only and the status said nothing. Now: one warning once the WAL passes
    WARN_FACTOR x checkpoint_pages, in the status and the metrics until a checkpoint works."""
    from bottomless_core.follower import WARN_FACTOR
    from bottomless_core.metrics import DaemonCollector, RequestStats

    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    follower = Follower(Replicator(db, storage), FollowOptions(interval=0.01,
                                                               checkpoint_pages=10))

    def blocked_seconds() -> float:
        for family in DaemonCollector([follower], RequestStats()).collect():
            if family.name == "bottomless_checkpoint_blocked_seconds":
                return family.samples[0].value
        raise AssertionError("no bottomless_checkpoint_blocked_seconds")

    reader = sqlite3.connect(db, isolation_level=None)
    try:
        assert follower.step() is True
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # an old snapshot, held
        for i in range(WARN_FACTOR * 10 + 20):
            insert_rows(conn, 1, start=100 + i, size=3000)
        with caplog.at_level("INFO", logger="bottomless.follower"):
            poll("the warning", lambda: follower.step() and follower.status.warning)
            for _ in range(5):
                assert follower.step() is True
            assert follower.status.checkpoints == 0
            assert "long read transaction" in follower.status.as_dict()["warning"]
            assert blocked_seconds() > 0
            reader.execute("ROLLBACK")
            poll("a checkpoint", lambda: follower.step() and follower.status.checkpoints)
        warnings = [r for r in caplog.records if "event=checkpoint_blocked" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
        busy = [r for r in caplog.records if "event=checkpoint_busy" in r.getMessage()
                and r.levelname == "INFO"]
        assert len(busy) == 1
        assert follower.status.warning is None and blocked_seconds() == 0
    finally:
        reader.close()
        follower._lock.close()
        follower.replicator.close()
        conn.close()
