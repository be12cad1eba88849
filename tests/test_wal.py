"""WAL parsing against files SQLite itself wrote, and the product's capture (capture_wal, with
every checksum verified as when no wal-index can be trusted) against SQLite's own recovery."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from bottomless_core.capture import WalCapture, capture_wal
from bottomless_core.wal import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    WalFormatError,
    parse_wal_header,
    wal_checksum,
)
from tests.helpers import dump, insert_rows, open_wal_db
from tests.wal_reference import (
    FrameChain,
    encode_frame,
    encode_wal_header,
    make_wal_header,
    parse_frame,
)


def _write_wal(tmp_path: Path, page_size: int = 4096, commits: int = 6) -> tuple[Path, list[int]]:
    """A database whose changes all sit in the WAL; returns (db path, frame count per commit)."""
    db = tmp_path / "src.db"
    conn = open_wal_db(db, page_size)
    insert_rows(conn, 1)  # creates the table; checkpoint so the main file has the schema
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ends = []
    frame_size = FRAME_HEADER_SIZE + page_size
    for i in range(commits):
        insert_rows(conn, 40 + 30 * i, start=1000 * (i + 1), size=300)
        ends.append((db.with_name("src.db-wal").stat().st_size - WAL_HEADER_SIZE) // frame_size)
    shutil.copy(db, tmp_path / "main-only.db")  # main file without any WAL frame
    shutil.copy(db.with_name("src.db-wal"), tmp_path / "wal.bin")
    conn.close()
    return tmp_path, ends


def _sqlite_recovery(tmp_path: Path, wal: bytes) -> dict:
    """What SQLite's own recovery makes of the main file plus ``wal``."""
    target = tmp_path / "sqlite-recovered.db"
    shutil.copy(tmp_path / "main-only.db", target)
    target.with_name(target.name + "-wal").write_bytes(wal)
    return dump(target)


def _capture(tmp_path: Path, wal: bytes) -> WalCapture:
    """What the product copies out of a WAL holding ``wal``."""
    path = tmp_path / "captured-wal"
    path.write_bytes(wal)
    return capture_wal(path)


def _frames(capture: WalCapture) -> list[bytes]:
    capture.frames.seek(0)
    data = capture.frames.read()
    size = capture.frame_size
    return [data[i:i + size] for i in range(0, len(data), size)]


def _our_recovery(tmp_path: Path, wal: bytes) -> dict:
    """The main file with the frames the capture keeps applied to it."""
    target = tmp_path / "ours.db"
    shutil.copy(tmp_path / "main-only.db", target)
    header = parse_wal_header(wal[:WAL_HEADER_SIZE])
    db_size = 0
    with open(target, "r+b") as f:
        for raw in _frames(_capture(tmp_path, wal)):
            frame = parse_frame(raw, header.page_size)
            f.seek((frame.page_no - 1) * header.page_size)
            f.write(frame.page)
            db_size = frame.db_size or db_size
        if db_size:
            f.truncate(db_size * header.page_size)
    return dump(target)


@pytest.mark.parametrize("page_size", [1024, 4096, 65536])
def test_whole_wal_written_by_sqlite(tmp_path: Path, page_size: int) -> None:
    d, ends = _write_wal(tmp_path, page_size)
    wal = (d / "wal.bin").read_bytes()
    header = parse_wal_header(wal)
    assert header.page_size == page_size
    assert header.magic in (0x377F0682, 0x377F0683)
    assert _capture(d, wal).frame_count == ends[-1]
    assert _our_recovery(d, wal) == _sqlite_recovery(d, wal)
    assert len(_our_recovery(d, wal)["t"]) == 1 + sum(40 + 30 * i for i in range(6))


def test_torn_last_frame_ends_at_previous_commit(tmp_path: Path) -> None:
    d, ends = _write_wal(tmp_path)
    wal = (d / "wal.bin").read_bytes()
    frame_size = FRAME_HEADER_SIZE + 4096
    torn = wal[: WAL_HEADER_SIZE + (ends[-1] - 1) * frame_size + frame_size // 2]
    assert _capture(d, torn).frame_count == ends[-2]
    ours, theirs = _our_recovery(d, torn), _sqlite_recovery(d, torn)
    assert ours == theirs
    assert len(ours["t"]) == 1 + sum(40 + 30 * i for i in range(5))


@pytest.mark.parametrize("where", ["page", "header"])
def test_flipped_byte_in_the_middle(tmp_path: Path, where: str) -> None:
    d, ends = _write_wal(tmp_path)
    wal = bytearray((d / "wal.bin").read_bytes())
    frame_size = FRAME_HEADER_SIZE + 4096
    bad_frame = ends[2] + 2  # a frame inside the 4th transaction (1-based frame numbers)
    offset = WAL_HEADER_SIZE + (bad_frame - 1) * frame_size + (100 if where == "page" else 5)
    wal[offset] ^= 0x40
    assert _capture(d, bytes(wal)).frame_count == ends[2]
    ours, theirs = _our_recovery(d, bytes(wal)), _sqlite_recovery(d, bytes(wal))
    assert ours == theirs
    assert len(ours["t"]) == 1 + sum(40 + 30 * i for i in range(3))


def test_uncommitted_tail_is_not_captured(tmp_path: Path) -> None:
    header = make_wal_header(1024, 7, 9)
    seed, frames = header.checksum, []
    for pgno, commit in [(1, 0), (2, 2), (3, 0)]:  # the last transaction never commits
        raw, seed = encode_frame(pgno, commit, bytes([pgno]) * 1024, header, seed)
        frames.append(raw)
    wal = encode_wal_header(header) + b"".join(frames)
    capture = _capture(tmp_path, wal)
    assert capture.frame_count == 2 and capture.db_size == 2
    assert _frames(capture) == frames[:2]


@pytest.mark.parametrize("big_endian", [False, True])
def test_both_byte_orders_round_trip(big_endian: bool) -> None:
    header = make_wal_header(512, 1, 2, checkpoint_seq=3, big_endian=big_endian)
    assert parse_wal_header(encode_wal_header(header)) == header
    raw, _ = encode_frame(5, 9, b"\x01\x02\x03\x04" * 128, header, header.checksum)
    assert parse_frame(raw, 512).encode() == raw
    # restore does not know the byte order: the chain finds it from the first frame
    chain = FrameChain(512, header.checksum)
    assert chain.accept(raw) == (5, 9)
    assert chain.big_endian is big_endian


def test_checksum_by_hand() -> None:
    data = struct.pack(">4I", 1, 2, 3, 4)
    # s1 = 0+1+0 = 1, s2 = 0+2+1 = 3, s1 = 1+3+3 = 7, s2 = 3+4+7 = 14
    assert wal_checksum(data, (0, 0), True) == (7, 14)
    assert wal_checksum(data, (0, 0), False) != (7, 14)
    assert wal_checksum(data[8:], wal_checksum(data[:8], (0, 0), True), True) == (7, 14)


def test_bad_headers_are_refused() -> None:
    good = encode_wal_header(make_wal_header(4096, 1, 2))
    with pytest.raises(WalFormatError):
        parse_wal_header(good[:20])
    with pytest.raises(WalFormatError):
        parse_wal_header(b"\x00" * 32)
    corrupt = bytearray(good)
    corrupt[13] ^= 1
    with pytest.raises(WalFormatError):
        parse_wal_header(bytes(corrupt))
