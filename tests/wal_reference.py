"""A frame-by-frame, pure-Python WAL chain walker: the reference that walsum (the one the
product uses) is tested against. Slow (~40 MB/s); tests and benchmarks only."""

from __future__ import annotations

import struct

from bottomless_core.wal import FRAME_HEADER_SIZE, Checksum, frame_checksum


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
