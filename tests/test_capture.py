"""Capturing the WAL of a live database: the wal-index fast path agrees with full verification."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottomless_core.capture import WalPosition, capture_wal
from bottomless_core.database import ReadLock, wal_path
from bottomless_core.replicator import replicate_once
from bottomless_core.store.s3 import S3Store
from bottomless_core.wal import WalIndexHeader
from tests.helpers import insert_rows, open_wal_db


def _live_db(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    db = tmp_path / "live.db"
    conn = open_wal_db(db)
    for i in range(8):
        insert_rows(conn, 50, start=i * 100, size=400)
    return db, conn


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection, WalIndexHeader]]:
    """A database with an open app connection, our read lock held, and SQLite's wal-index."""
    db, conn = _live_db(tmp_path)
    with ReadLock(db) as lock:
        index = lock.wal_index()
        assert index is not None
        yield db, conn, index
    conn.close()


def test_index_fast_path_matches_full_verification(live: tuple) -> None:
    db, _, index = live
    assert index.mx_frame > 50
    full = capture_wal(wal_path(db))
    fast = capture_wal(wal_path(db), None, index)
    assert (fast.frame_count, fast.checksum) == (full.frame_count, full.checksum)
    assert fast.frames.read() == full.frames.read()
    # resuming from a known point copies only what follows
    mid = WalPosition(full.header.checksum, 10, None)
    part = capture_wal(wal_path(db), mid, index)
    assert part.skipped == 10 and part.frame_count == full.frame_count


def test_index_that_disagrees_is_not_trusted(live: tuple) -> None:
    db, _, index = live
    lying = dataclasses.replace(index, frame_checksum=(1, 2))
    full = capture_wal(wal_path(db))
    got = capture_wal(wal_path(db), None, lying)
    assert (got.frame_count, got.checksum) == (full.frame_count, full.checksum)
    assert got.frames.read() == full.frames.read()


def test_index_claiming_more_frames_than_the_file_gives_the_valid_prefix(live: tuple) -> None:
    """The file is the truth: an index that claims frames the file does not hold is not
    believed, and the capture is the file's whole valid committed prefix (not nothing)."""
    db, _, index = live
    full = capture_wal(wal_path(db))
    assert full.frame_count == index.mx_frame > 0
    longer = dataclasses.replace(index, mx_frame=index.mx_frame + 5)
    got = capture_wal(wal_path(db), None, longer)
    assert (got.frame_count, got.checksum, got.db_size) == (
        full.frame_count, full.checksum, full.db_size)
    assert got.frames.read() == full.frames.read()
    resumed = capture_wal(wal_path(db), WalPosition(full.header.checksum, 10, None), longer)
    assert (resumed.skipped, resumed.frame_count) == (10, full.frame_count)


def test_capture_stops_at_the_read_snapshot(live: tuple) -> None:
    """Frames committed after the index was read wait for the next capture: a writer faster
    than us cannot keep one capture going forever."""
    db, conn, index = live
    insert_rows(conn, 20, start=5000)  # committed after the index was read
    got = capture_wal(wal_path(db), None, index)
    assert got.frame_count == index.mx_frame
    rest = capture_wal(wal_path(db), WalPosition(got.header.checksum, got.frame_count,
                                                 got.checksum))
    assert rest.skipped == index.mx_frame
    assert rest.frame_count == capture_wal(wal_path(db)).frame_count > index.mx_frame


def test_capture_in_rounds_of_max_bytes(live: tuple) -> None:
    db, _, index = live
    full = capture_wal(wal_path(db))
    frame_size = full.frame_size
    pos, pieces = None, []
    while True:
        part = capture_wal(wal_path(db), pos, index, max_bytes=5 * frame_size)
        pieces.append(part.frames.read())
        pos = WalPosition(part.header.checksum, part.frame_count, part.checksum)
        if part.complete:
            break
        assert part.new_frames >= 5  # whole transactions, at least max_bytes of them
    assert pos.frame_count == full.frame_count and pos.checksum == full.checksum
    assert b"".join(pieces) == full.frames.read()


def _other_process_opens_and_closes(db: Path) -> None:
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM t').fetchone(); c.close()")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)


def test_replicating_in_process_keeps_the_apps_locks(tmp_path: Path, storage: S3Store) -> None:
    """POSIX drops all of a process's locks on a file when any descriptor of it closes. If the
    library closed its descriptors, the app's SHARED lock would be gone, and another process's
    close-time checkpoint would delete the WAL under the app (and under our read mark)."""
    db, conn = _live_db(tmp_path)
    replicate_once(db, storage)
    replicate_once(db, storage)
    _other_process_opens_and_closes(db)
    assert wal_path(db).exists() and wal_path(db).stat().st_size > 0
    # the check is sensitive: the same sequence after a plain open()/close() loses the WAL
    with open(db, "rb") as f:
        f.read(100)
    _other_process_opens_and_closes(db)
    assert not wal_path(db).exists()
    conn.close()
