"""Capturing the WAL of a live database: the wal-index fast path agrees with full verification."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bottomless_core.database import ReadLock, WalPosition, capture_wal, wal_path
from tests.helpers import insert_rows, open_wal_db


def _live_db(tmp_path: Path) -> tuple[Path, object]:
    db = tmp_path / "live.db"
    conn = open_wal_db(db)
    for i in range(8):
        insert_rows(conn, 50, start=i * 100, size=400)
    return db, conn


def test_index_fast_path_matches_full_verification(tmp_path: Path) -> None:
    db, conn = _live_db(tmp_path)
    with ReadLock(db) as lock:
        index = lock.wal_index()
        assert index is not None and index.mx_frame > 50
        full = capture_wal(wal_path(db))
        fast = capture_wal(wal_path(db), None, index)
        assert (fast.frame_count, fast.checksum) == (full.frame_count, full.checksum)
        assert fast.frames.read() == full.frames.read()
        # resuming from a known point copies only what follows
        mid = WalPosition(full.header.checksum, 10, None)
        part = capture_wal(wal_path(db), mid, index)
        assert part.skipped == 10 and part.frame_count == full.frame_count
    conn.close()


def test_index_that_disagrees_is_not_trusted(tmp_path: Path) -> None:
    db, conn = _live_db(tmp_path)
    with ReadLock(db) as lock:
        index = lock.wal_index()
        assert index is not None
        lying = dataclasses.replace(index, frame_checksum=(1, 2))
        full = capture_wal(wal_path(db))
        got = capture_wal(wal_path(db), None, lying)
        assert (got.frame_count, got.checksum) == (full.frame_count, full.checksum)
        # an index claiming more frames than the file holds is not believed either
        longer = dataclasses.replace(index, mx_frame=index.mx_frame + 5)
        got = capture_wal(wal_path(db), None, longer)
        assert got.frame_count <= full.frame_count
    conn.close()


def test_frames_after_the_index_are_verified(tmp_path: Path) -> None:
    db, conn = _live_db(tmp_path)
    with ReadLock(db) as lock:
        index = lock.wal_index()
        assert index is not None
        insert_rows(conn, 20, start=5000)  # committed after the index was read
        got = capture_wal(wal_path(db), None, index)
        assert got.frame_count > index.mx_frame
        assert got.frame_count == capture_wal(wal_path(db)).frame_count
    conn.close()
