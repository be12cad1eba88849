"""SQLite WAL file format: headers, frames and the cumulative checksum (pure, no I/O)."""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass

WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
WAL_MAGIC_LE = 0x377F0682  # checksum words are little-endian
WAL_MAGIC_BE = 0x377F0683  # checksum words are big-endian
WAL_FORMAT_VERSION = 3007000
_MASK = 0xFFFFFFFF
_NATIVE_BIG = sys.byteorder == "big"

Checksum = tuple[int, int]


class WalFormatError(ValueError):
    """Bytes that are not a WAL header or frame."""


def wal_checksum(data: bytes | memoryview, seed: Checksum, big_endian: bool) -> Checksum:
    """SQLite's cumulative checksum of ``data`` (length a multiple of 8), continuing ``seed``."""
    if len(data) % 8:
        raise WalFormatError("checksummed data must be a multiple of 8 bytes")
    words = array.array("I")
    words.frombytes(data)
    if big_endian != _NATIVE_BIG:
        words.byteswap()
    s1, s2 = seed
    it = iter(words)
    for a, b in zip(it, it, strict=False):
        s1 = (s1 + a + s2) & _MASK
        s2 = (s2 + b + s1) & _MASK
    return s1, s2


@dataclass(frozen=True)
class WalHeader:
    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum: Checksum

    @property
    def big_endian(self) -> bool:
        return self.magic == WAL_MAGIC_BE

    @property
    def salts(self) -> tuple[int, int]:
        return self.salt1, self.salt2


def parse_wal_header(data: bytes) -> WalHeader:
    """Parse and verify the 32-byte WAL header; raise WalFormatError when it is not valid."""
    if len(data) < WAL_HEADER_SIZE:
        raise WalFormatError("WAL header is shorter than 32 bytes")
    magic, version, page_size, seq, salt1, salt2, c1, c2 = struct.unpack_from(">8I", data)
    if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE):
        raise WalFormatError(f"bad WAL magic {magic:#010x}")
    if version != WAL_FORMAT_VERSION:
        raise WalFormatError(f"unsupported WAL format version {version}")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise WalFormatError(f"bad WAL page size {page_size}")
    expected = wal_checksum(data[:24], (0, 0), magic == WAL_MAGIC_BE)
    if expected != (c1, c2):
        raise WalFormatError("WAL header checksum mismatch")
    return WalHeader(magic, version, page_size, seq, salt1, salt2, (c1, c2))


# --- the wal-index (-shm) header ------------------------------------------------------------

WAL_INDEX_HEADER_SIZE = 48  # one copy; SQLite keeps two, back to back, for lock-free reads


@dataclass(frozen=True)
class WalIndexHeader:
    """SQLite's own record of the WAL (first 48 bytes of the -shm file, native byte order).

    Frames 1..mx_frame are committed and completely written: SQLite publishes this header only
    after the frames. It lets a reader skip recomputing the checksums of those frames.
    """

    mx_frame: int
    page_size: int
    frame_checksum: Checksum  # checksum of frame mx_frame
    salts: tuple[int, int]
    big_endian: bool


def parse_wal_index_header(data: bytes) -> WalIndexHeader | None:
    """Both copies of the header, or None when they differ, are torn or not initialised."""
    if len(data) < 2 * WAL_INDEX_HEADER_SIZE:
        return None
    first = data[:WAL_INDEX_HEADER_SIZE]
    if first != data[WAL_INDEX_HEADER_SIZE:2 * WAL_INDEX_HEADER_SIZE]:
        return None  # a writer is updating it right now
    order = "<" if sys.byteorder == "little" else ">"
    version, _, _, is_init, big_end, sz_page, mx_frame, _, fc1, fc2 = struct.unpack_from(
        order + "3IBBH4I", first)
    c1, c2 = struct.unpack_from(order + "2I", first, 40)
    if version != WAL_FORMAT_VERSION or is_init != 1:
        return None
    if wal_checksum(first[:40], (0, 0), _NATIVE_BIG) != (c1, c2):
        return None
    salt1, salt2 = struct.unpack_from(">2I", first, 32)  # copied bytes of the WAL header
    page_size = 65536 if sz_page == 1 else sz_page
    return WalIndexHeader(mx_frame, page_size, (fc1, fc2), (salt1, salt2), bool(big_end))
