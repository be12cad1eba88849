"""Page packs: database pages, each group of them compressed on its own, with an index that
says where every page is, so that one page is one ranged GET (docs/format.md, "Page packs").

A pack is what compaction writes (the last version of every page changed by a run of WAL
frames of one generation) and what a snapshot's page-indexed form is (every page of the
image). Pure: bytes in, values out.

    +--------------------------------------------------------------+
    | header, 64 bytes: what the pack covers                      |
    | group 0: one zstd frame, pages p0 < p1 < ... back to back   |
    | group 1 ...                                                  |
    | index: one zstd frame: page numbers, their groups and slots, |
    |        the groups' offsets and lengths                       |
    | commits: one zstd frame: (frame, stamp) of every commit      |
    | footer, 32 bytes: where the index and commits are, a CRC     |
    +--------------------------------------------------------------+

A reader fetches the footer and the index (the object's tail), then any group by its offset
and length. Pages are sorted by number across groups, so neighbouring pages share groups
(a scan reads few of them).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import zstandard

from .wal import Checksum

MAGIC = b"BLPACK\x00\x01"
FOOTER_MAGIC = b"BLPKEND1"
VERSION = 1
HEADER = struct.Struct(">8sHBBIIIIIIQQII4x")  # 64 bytes
FOOTER = struct.Struct(">QIQII")  # index offset/length, commits offset/length, CRC32
FOOTER_SIZE = FOOTER.size + len(FOOTER_MAGIC)
GROUP_BYTES = 64 << 10  # raw page bytes in one group: a ranged GET of a page fetches this much
ZSTD_LEVEL = 3
TAIL_GUESS = 256 << 10  # bytes a reader fetches from the end to get the index in one request

KIND_SNAPSHOT = 0  # every page of an image (a snapshot's page-indexed form)
# compaction levels are 1, 2, ...


class PackError(ValueError):
    """Bytes that are not a (whole, undamaged) page pack."""


@dataclass(frozen=True)
class PackInfo:
    """What a pack covers: frames ``first_frame..last_frame`` of its generation (0..0 for the
    image of a snapshot without frames), after which the database has ``db_pages`` pages and
    the WAL chain value is ``checksum``; the batches it replaces were stamped
    ``first_stamp..last_stamp``."""

    kind: int
    page_size: int
    first_frame: int
    last_frame: int
    db_pages: int
    checksum: Checksum
    first_stamp: int
    last_stamp: int
    page_count: int = 0
    group_count: int = 0


@dataclass
class PackIndex:
    """Where every page of a pack is."""

    info: PackInfo
    pgnos: np.ndarray  # uint32, sorted
    groups: np.ndarray  # uint32: the group of each page
    slots: np.ndarray  # uint16: its place in the group
    offsets: np.ndarray  # uint64: where each group starts in the object
    lengths: np.ndarray  # uint32: its compressed length
    commits: list[tuple[int, int]] = field(default_factory=list)  # (frame, stamp)

    def find(self, pgno: int) -> tuple[int, int] | None:
        """(group, slot) of page ``pgno``; None when the pack does not hold it."""
        i = int(np.searchsorted(self.pgnos, pgno))
        if i < len(self.pgnos) and int(self.pgnos[i]) == pgno:
            return int(self.groups[i]), int(self.slots[i])
        return None

    def group_range(self, group: int) -> tuple[int, int]:
        """(offset, length) of a group's bytes in the object."""
        return int(self.offsets[group]), int(self.lengths[group])

    def group_pages(self, group: int) -> np.ndarray:
        """The page numbers in a group, in slot order."""
        return self.pgnos[self.groups == group]


def encode_header(info: PackInfo) -> bytes:
    return HEADER.pack(MAGIC, VERSION, info.kind, 0, info.page_size, info.first_frame,
                       info.last_frame, info.db_pages, info.checksum[0], info.checksum[1],
                       info.first_stamp, info.last_stamp, info.page_count, info.group_count)


def decode_header(data: bytes) -> PackInfo:
    if len(data) < HEADER.size:
        raise PackError("too short for a pack header")
    (magic, version, kind, _flags, page_size, first, last, db_pages, c1, c2, s1, s2, pages,
     groups) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PackError("not a page pack (bad magic)")
    if version != VERSION:
        raise PackError(f"page pack version {version}, this reader knows {VERSION}")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise PackError(f"page pack names page size {page_size}")
    return PackInfo(kind, page_size, first, last, db_pages, (c1, c2), s1, s2, pages, groups)


def write_pack(out: IO[bytes], info: PackInfo, pages: Iterable[tuple[int, bytes]],
               commits: Iterable[tuple[int, int]] = (), group_bytes: int = GROUP_BYTES,
               ) -> PackInfo:
    """Write a pack of ``pages`` ((pgno, page) in ascending pgno order, each ``page_size``
    bytes) to ``out``, which must start empty; return its info with the counts filled in.
    Memory: one group at a time, plus the index."""
    ps = info.page_size
    per_group = max(1, group_bytes // ps)
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    out.write(encode_header(info))  # rewritten at the end, with the counts
    crc = 0
    offset = HEADER.size
    pgnos: list[int] = []
    offsets: list[int] = []
    lengths: list[int] = []
    batch: list[bytes] = []
    last = 0

    def flush() -> None:
        nonlocal offset
        if not batch:
            return
        body = cctx.compress(b"".join(batch))
        out.write(body)
        offsets.append(offset)
        lengths.append(len(body))
        offset += len(body)
        batch.clear()

    for pgno, page in pages:
        if pgno <= last:
            raise ValueError(f"pages out of order: {pgno} after {last}")
        if len(page) != ps:
            raise ValueError(f"page {pgno} has {len(page)} bytes, not {ps}")
        last = pgno
        pgnos.append(pgno)
        batch.append(bytes(page))
        if len(batch) == per_group:
            flush()
    flush()
    n = len(pgnos)
    slots = np.arange(n, dtype=np.uint32) % per_group
    groups = np.arange(n, dtype=np.uint32) // per_group
    index = cctx.compress(np.asarray(pgnos, dtype=">u4").tobytes()
                          + groups.astype(">u4").tobytes()
                          + slots.astype(">u2").tobytes()
                          + np.asarray(offsets, dtype=">u8").tobytes()
                          + np.asarray(lengths, dtype=">u4").tobytes())
    commit_list = list(commits)
    commit_bytes = cctx.compress(b"".join(struct.pack(">IQ", f, s) for f, s in commit_list))
    done = PackInfo(info.kind, ps, info.first_frame, info.last_frame, info.db_pages,
                    info.checksum, info.first_stamp, info.last_stamp, n, len(offsets))
    header = encode_header(done)
    crc = zlib.crc32(header)
    crc = zlib.crc32(index, crc)
    crc = zlib.crc32(commit_bytes, crc)
    out.write(index)
    out.write(commit_bytes)
    out.write(FOOTER.pack(offset, len(index), offset + len(index), len(commit_bytes), crc))
    out.write(FOOTER_MAGIC)
    out.seek(0)
    out.write(header)
    out.seek(0, 2)
    return done


def decode_index(head: bytes, tail: bytes, size: int) -> PackIndex:
    """The index of a pack of ``size`` bytes from its first 64 bytes and its last bytes
    (at least the footer; PackError asking for more when the index is not all there)."""
    info = decode_header(head)
    if len(tail) < FOOTER_SIZE or tail[-len(FOOTER_MAGIC):] != FOOTER_MAGIC:
        raise PackError("not a whole page pack (no footer)")
    index_at, index_len, commits_at, commits_len, crc = FOOTER.unpack_from(
        tail, len(tail) - FOOTER_SIZE)
    tail_start = size - len(tail)
    if index_at < tail_start:
        raise NeedMore(size - index_at)
    index = tail[index_at - tail_start:index_at - tail_start + index_len]
    commit_bytes = tail[commits_at - tail_start:commits_at - tail_start + commits_len]
    check = zlib.crc32(commit_bytes, zlib.crc32(index, zlib.crc32(head[:HEADER.size])))
    if check != crc:
        raise PackError("damaged page pack (its index fails the CRC)")
    dctx = zstandard.ZstdDecompressor()
    try:
        raw = dctx.decompress(index)
        commits_raw = dctx.decompress(commit_bytes) if commits_len else b""
    except zstandard.ZstdError as exc:
        raise PackError(f"damaged page pack index ({exc})") from None
    n, g = info.page_count, info.group_count
    want = n * 10 + g * 12
    if len(raw) != want:
        raise PackError(f"page pack index holds {len(raw)} bytes, expected {want}")
    at = 0

    def take(dtype: str, count: int, width: int) -> np.ndarray:
        nonlocal at
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=at).astype(dtype[1:])
        at += count * width
        return arr

    pgnos = take(">u4", n, 4)
    groups = take(">u4", n, 4)
    slots = take(">u2", n, 2)
    offsets = take(">u8", g, 8)
    lengths = take(">u4", g, 4)
    commits = [struct.unpack_from(">IQ", commits_raw, i)
               for i in range(0, len(commits_raw), 12)]
    return PackIndex(info, pgnos, groups, slots, offsets, lengths, commits)


class NeedMore(PackError):
    """The tail given does not reach the index: fetch ``tail_bytes`` from the end."""

    def __init__(self, tail_bytes: int) -> None:
        super().__init__(f"the pack's index starts {tail_bytes} bytes before its end")
        self.tail_bytes = tail_bytes


def read_index(data: bytes) -> PackIndex:
    """The index of a whole pack held in memory."""
    return decode_index(data[:HEADER.size], data, len(data))


def decode_group(body: bytes, page_size: int, count: int) -> bytes:
    """A group's pages, back to back (``count`` of them)."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(body)
    except zstandard.ZstdError as exc:
        raise PackError(f"damaged page group ({exc})") from None
    if len(raw) != count * page_size:
        raise PackError(f"page group holds {len(raw)} bytes, expected {count} pages")
    return raw


def iter_pages(data: bytes, index: PackIndex | None = None) -> Iterator[tuple[int, memoryview]]:
    """Every (pgno, page) of a whole pack held in memory, in page order."""
    index = index or read_index(data)
    ps = index.info.page_size
    for g in range(index.info.group_count):
        offset, length = index.group_range(g)
        pgnos = index.group_pages(g)
        raw = memoryview(decode_group(data[offset:offset + length], ps, len(pgnos)))
        for slot, pgno in enumerate(pgnos.tolist()):
            yield pgno, raw[slot * ps:(slot + 1) * ps]
