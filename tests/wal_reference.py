"""The pure-Python WAL reference for tests and benchmarks: a frame-by-frame chain walker that
walsum (the one the product uses) is tested against, slow (~40 MB/s), and the WAL writers
that build headers and frames (the product only reads WAL files)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bottomless_core.wal import (
    FRAME_HEADER_SIZE,
    WAL_FORMAT_VERSION,
    WAL_MAGIC_BE,
    WAL_MAGIC_LE,
    Checksum,
    WalFormatError,
    WalHeader,
    wal_checksum,
)


def make_wal_header(page_size: int, salt1: int, salt2: int, checkpoint_seq: int = 0,
                    big_endian: bool = False) -> WalHeader:
    """Build a valid header."""
    magic = WAL_MAGIC_BE if big_endian else WAL_MAGIC_LE
    head = struct.pack(">6I", magic, WAL_FORMAT_VERSION, page_size, checkpoint_seq, salt1, salt2)
    return WalHeader(magic, WAL_FORMAT_VERSION, page_size, checkpoint_seq, salt1, salt2,
                     wal_checksum(head, (0, 0), big_endian))


def encode_wal_header(header: WalHeader) -> bytes:
    """The 32 bytes of ``header``, as they start a WAL file."""
    return struct.pack(">8I", header.magic, header.version, header.page_size,
                       header.checkpoint_seq, header.salt1, header.salt2, *header.checksum)


@dataclass(frozen=True)
class WalFrame:
    page_no: int
    db_size: int  # pages in the database after this commit; 0 for non-commit frames
    salt1: int
    salt2: int
    checksum: Checksum
    page: bytes

    @property
    def is_commit(self) -> bool:
        return self.db_size != 0

    def encode(self) -> bytes:
        return struct.pack(">6I", self.page_no, self.db_size, self.salt1, self.salt2,
                           *self.checksum) + self.page


def parse_frame(data: bytes | memoryview, page_size: int) -> WalFrame:
    """Decode one frame (no checksum verification; see FrameChain)."""
    if len(data) < FRAME_HEADER_SIZE + page_size:
        raise WalFormatError("truncated WAL frame")
    pgno, db_size, s1, s2, c1, c2 = struct.unpack_from(">6I", data)
    return WalFrame(pgno, db_size, s1, s2, (c1, c2),
                    bytes(data[FRAME_HEADER_SIZE:FRAME_HEADER_SIZE + page_size]))


def frame_checksum(frame: bytes | memoryview, seed: Checksum, big_endian: bool,
                   page_size: int) -> Checksum:
    """Checksum of one encoded frame: its first 8 header bytes, then its page."""
    mv = memoryview(frame)
    head = wal_checksum(mv[:8], seed, big_endian)
    return wal_checksum(mv[FRAME_HEADER_SIZE:FRAME_HEADER_SIZE + page_size], head, big_endian)


def encode_frame(page_no: int, db_size: int, page: bytes, header: WalHeader,
                 seed: Checksum) -> tuple[bytes, Checksum]:
    """Encode a frame that continues the chain at ``seed``; return it and the new chain value."""
    head8 = struct.pack(">2I", page_no, db_size)
    ck = wal_checksum(head8, seed, header.big_endian)
    ck = wal_checksum(page, ck, header.big_endian)
    return head8 + struct.pack(">4I", header.salt1, header.salt2, *ck) + page, ck


class FrameChain:
    """Verifies frames one after another, the way SQLite's WAL recovery does.

    A frame belongs to the chain when its salts equal the expected ones and its stored
    checksum equals the running checksum over it. ``salts=None`` accepts the salts of the
    first frame (restore knows only the checksum seed, not the WAL header). ``big_endian=None``
    tries both byte orders on the first frame: the bucket does not record the WAL magic.
    """

    def __init__(self, page_size: int, seed: Checksum, salts: tuple[int, int] | None = None,
                 big_endian: bool | None = None) -> None:
        self.page_size = page_size
        self.checksum = seed
        self.salts = salts
        self.big_endian = big_endian
        self.frame_size = FRAME_HEADER_SIZE + page_size

    def accept(self, frame: bytes | memoryview) -> tuple[int, int] | None:
        """Return (page number, db size) if ``frame`` continues the chain, else None."""
        if len(frame) < self.frame_size:
            return None
        pgno, db_size, s1, s2, c1, c2 = struct.unpack_from(">6I", frame)
        if self.salts is not None and (s1, s2) != self.salts:
            return None
        orders = (self.big_endian,) if self.big_endian is not None else (False, True)
        for order in orders:
            ck = frame_checksum(frame, self.checksum, order, self.page_size)
            if ck == (c1, c2):
                self.checksum, self.big_endian, self.salts = ck, order, (s1, s2)
                return pgno, db_size
        return None
