"""The numpy WAL checksum against the pure-Python reference in tests/wal_reference.py (exact
equality)."""

from __future__ import annotations

import random
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bottomless_core import walsum
from bottomless_core.wal import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    Checksum,
    WalFormatError,
    parse_wal_header,
    wal_checksum,
)
from tests.helpers import insert_rows, open_wal_db
from tests.wal_reference import FrameChain, encode_frame, frame_checksum, make_wal_header


def reference_chain(frames: bytes | memoryview, page_size: int, seed: Checksum,
                    big_endian: bool, salts: tuple[int, int] | None) -> tuple[int, Checksum]:
    """What verify_chain must return, computed frame by frame with wal.FrameChain."""
    chain = FrameChain(page_size, seed, salts, big_endian)
    size = FRAME_HEADER_SIZE + page_size
    mv = memoryview(frames)
    n = 0
    while chain.accept(mv[n * size:(n + 1) * size]) is not None:
        n += 1
    return n, chain.checksum


def random_wal(rng: random.Random, page_size: int, n: int, big_endian: bool,
               ) -> tuple[bytes, Checksum, tuple[int, int]]:
    """(frames, seed, salts) of a valid chain of ``n`` frames of random pages."""
    header = make_wal_header(page_size, rng.getrandbits(32), rng.getrandbits(32),
                             big_endian=big_endian)
    ck = header.checksum
    out = []
    for i in range(n):
        frame, ck = encode_frame(rng.randrange(1, 1 << 31), (i + 1) * (i % 3 == 2),
                                 rng.randbytes(page_size), header, ck)
        out.append(frame)
    return b"".join(out), header.checksum, header.salts


def sqlite_wal(tmp_path: Path, page_size: int) -> bytes:
    """A WAL file exactly as sqlite3 wrote it, copied while the connection is still open."""
    db = tmp_path / f"p{page_size}.db"
    conn = open_wal_db(db, page_size, autocheckpoint=0)
    try:
        for i in range(5):
            insert_rows(conn, 30 + 40 * i, start=1000 * i, size=200 + 100 * i)
        data = db.with_name(db.name + "-wal").read_bytes()
    finally:
        conn.close()
    return data


# --- real WAL files ------------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [512, 1024, 4096, 65536])
def test_sqlite_wal(tmp_path: Path, page_size: int) -> None:
    data = sqlite_wal(tmp_path, page_size)
    header = parse_wal_header(data[:WAL_HEADER_SIZE])
    assert header.page_size == page_size
    frames = memoryview(data)[WAL_HEADER_SIZE:]
    size = FRAME_HEADER_SIZE + page_size
    n = len(frames) // size
    assert n > 3 and len(frames) == n * size

    expected = reference_chain(frames, page_size, header.checksum, header.big_endian,
                               header.salts)
    assert expected[0] == n  # the whole file is one valid chain
    assert walsum.verify_chain(frames, page_size, header.checksum, header.big_endian,
                               header.salts) == expected
    assert walsum.verify_chain(frames, page_size, header.checksum, header.big_endian,
                               None) == expected

    contrib = walsum.frame_contributions(frames, page_size, header.big_endian)
    assert contrib.shape == (n, 2)
    assert [tuple(map(int, c)) for c in contrib] == [
        frame_checksum(frames[i * size:(i + 1) * size], (0, 0), header.big_endian, page_size)
        for i in range(n)]

    # the other byte order is a different checksum: nothing verifies
    assert walsum.verify_chain(frames, page_size, header.checksum, not header.big_endian,
                               header.salts) == (0, header.checksum)
    # the whole file, header included, through checksum()
    assert walsum.checksum(data, (7, 9), True) == wal_checksum(data, (7, 9), True)
    assert walsum.checksum(data, (7, 9), False) == wal_checksum(data, (7, 9), False)


# --- random data, both byte orders ---------------------------------------------------------

@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_random_chain(page_size: int, big_endian: bool) -> None:
    rng = random.Random(page_size * 2 + big_endian)
    frames, seed, salts = random_wal(rng, page_size, 9, big_endian)
    expected = reference_chain(frames, page_size, seed, big_endian, salts)
    assert expected[0] == 9
    assert walsum.verify_chain(frames, page_size, seed, big_endian, salts) == expected


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("page_size", [512, 2048, 8192, 32768, 65536])
def test_random_bytes(page_size: int, big_endian: bool) -> None:
    """Frames of pure noise: contributions and verification still equal the reference."""
    rng = random.Random(page_size * 3 + big_endian)
    size = FRAME_HEADER_SIZE + page_size
    frames = rng.randbytes(5 * size + 100)  # with a trailing partial frame
    seed = (rng.getrandbits(32), rng.getrandbits(32))
    contrib = walsum.frame_contributions(frames, page_size, big_endian)
    assert contrib.shape == (5, 2)
    assert [tuple(map(int, c)) for c in contrib] == [
        frame_checksum(frames[i * size:(i + 1) * size], (0, 0), big_endian, page_size)
        for i in range(5)]
    assert walsum.verify_chain(frames, page_size, seed, big_endian, None) == reference_chain(
        frames, page_size, seed, big_endian, None)


@pytest.mark.parametrize("big_endian", [False, True])
def test_checksum_lengths(big_endian: bool) -> None:
    rng = random.Random(big_endian)
    for length in (0, 8, 16, 24, 4096, 65528, 65536, 65544, 3 * 65536 + 4104, (1 << 20) + 8,
                   (3 << 20) + 65536 * 5 + 24):
        data = rng.randbytes(length)
        seed = (rng.getrandbits(32), rng.getrandbits(32))
        assert walsum.checksum(data, seed, big_endian) == wal_checksum(data, seed, big_endian)
    # extreme words: every word 0xFFFFFFFF, and a seed at the top of the range
    data = b"\xff" * (65536 * 2 + 8 * 7)
    assert walsum.checksum(data, (_M, _M), big_endian) == wal_checksum(data, (_M, _M),
                                                                       big_endian)
    with pytest.raises(WalFormatError):
        walsum.checksum(b"1234", (0, 0), big_endian)


_M = 0xFFFFFFFF


def test_unaligned_and_typed_buffers() -> None:
    rng = random.Random(5)
    frames, seed, salts = random_wal(rng, 1024, 6, False)
    expected = reference_chain(frames, 1024, seed, False, salts)
    odd = memoryview(bytearray(b"x" + frames))[1:]  # word data not 4-byte aligned
    assert walsum.verify_chain(odd, 1024, seed, False, salts) == expected
    as_words = memoryview(bytearray(frames)).cast("I")
    assert walsum.verify_chain(as_words, 1024, seed, False, salts) == expected
    assert walsum.checksum(odd[:4096], seed, True) == wal_checksum(frames[:4096], seed, True)


# --- broken chains -------------------------------------------------------------------------

@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("k", [0, 1, 4, 7])
def test_flipped_byte(k: int, big_endian: bool) -> None:
    page_size, n = 4096, 8
    rng = random.Random(k)
    frames, seed, salts = random_wal(rng, page_size, n, big_endian)
    size = FRAME_HEADER_SIZE + page_size
    # a page byte, a header byte under the checksum, a stored checksum byte, a salt byte
    for where in (FRAME_HEADER_SIZE + rng.randrange(page_size), 3, 17, 22, 9):
        broken = bytearray(frames)
        broken[k * size + where] ^= 0x40
        got = walsum.verify_chain(bytes(broken), page_size, seed, big_endian, salts)
        assert got == reference_chain(bytes(broken), page_size, seed, big_endian, salts)
        assert got[0] == k
        stored = seed if k == 0 else struct.unpack_from(">2I", frames, (k - 1) * size + 16)
        assert got[1] == stored


def test_flip_across_blocks() -> None:
    """A break far into a batch of many processing blocks (512-byte pages, 1 MiB blocks)."""
    page_size, n = 512, 5000
    rng = random.Random(11)
    frames, seed, salts = random_wal(rng, page_size, n, False)
    size = FRAME_HEADER_SIZE + page_size
    full = reference_chain(frames, page_size, seed, False, salts)
    assert walsum.verify_chain(frames, page_size, seed, False, salts) == full
    for k in (1955, 1956, 1957, 3913, 4999):
        broken = bytearray(frames)
        broken[k * size + 100] ^= 1
        assert walsum.verify_chain(broken, page_size, seed, False, salts) == reference_chain(
            broken, page_size, seed, False, salts)
        assert walsum.verify_chain(broken, page_size, seed, False, salts)[0] == k


@pytest.mark.parametrize("k", [0, 3, 5])
def test_wrong_salts(k: int) -> None:
    page_size, n = 1024, 6
    rng = random.Random(100 + k)
    frames, seed, salts = random_wal(rng, page_size, n, False)
    wrong = (salts[0], salts[1] ^ 1)
    # expected salts that no frame has: nothing verifies
    assert walsum.verify_chain(frames, page_size, seed, False, wrong) == (0, seed)
    # frame k carries other salts (and a checksum that is right for them: only salts differ)
    header = make_wal_header(page_size, *wrong)
    size = FRAME_HEADER_SIZE + page_size
    prev = seed if k == 0 else struct.unpack_from(">2I", frames, (k - 1) * size + 16)
    other, _ = encode_frame(5, 0, frames[k * size + 24:(k + 1) * size], header, prev)
    mixed = frames[:k * size] + other + frames[(k + 1) * size:]
    got = walsum.verify_chain(mixed, page_size, seed, False, salts)
    assert got == reference_chain(mixed, page_size, seed, False, salts)
    assert got == (k, prev)
    # salts=None takes frame 0's salts; when frame 0 is the odd one, frame 1 breaks the chain
    got = walsum.verify_chain(mixed, page_size, seed, False, None)
    assert got == reference_chain(mixed, page_size, seed, False, None)
    assert got == ((1, struct.unpack_from(">2I", other, 16)) if k == 0 else (k, prev))


def test_truncated_and_empty() -> None:
    page_size = 4096
    rng = random.Random(3)
    frames, seed, salts = random_wal(rng, page_size, 4, True)
    size = FRAME_HEADER_SIZE + page_size
    full = walsum.verify_chain(frames, page_size, seed, True, salts)
    assert full[0] == 4
    for cut in (1, size // 2, size - 1):
        got = walsum.verify_chain(frames[:-cut], page_size, seed, True, salts)
        assert got == reference_chain(frames[:-cut], page_size, seed, True, salts)
        assert got == (3, struct.unpack_from(">2I", frames, 2 * size + 16))
    for empty in (b"", frames[:size - 1], frames[:FRAME_HEADER_SIZE]):
        assert walsum.verify_chain(empty, page_size, seed, True, salts) == (0, seed)
        assert walsum.verify_chain(empty, page_size, seed, True, None) == (0, seed)
        assert walsum.frame_contributions(empty, page_size, True).shape == (0, 2)


def test_bad_page_size() -> None:
    for page_size in (256, 1000, 131072):
        with pytest.raises(WalFormatError):
            walsum.verify_chain(b"", page_size, (0, 0), False, None)


@pytest.mark.parametrize("big_endian", [False, True])
def test_temporaries_are_bounded(big_endian: bool) -> None:
    """An 8 MiB batch is processed in blocks: temporaries stay far below the batch's size."""
    rng = random.Random(8)
    frames, seed, salts = random_wal(rng, 4096, 2000, big_endian)
    calls = (lambda: walsum.verify_chain(frames, 4096, seed, big_endian, salts),
             lambda: walsum.checksum(memoryview(frames)[8:], seed, big_endian))
    for call in calls:
        call()  # caches filled
        tracemalloc.start()  # numpy reports its allocations to tracemalloc
        try:
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 << 20


def test_contributions_dtype() -> None:
    contrib = walsum.frame_contributions(bytes(2 * (24 + 512)), 512, False)
    assert contrib.dtype == np.uint32 and not contrib.any()
