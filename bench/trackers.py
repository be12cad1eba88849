"""When each commit reached the bucket: the objects a counting proxy captured, decoded.

Ours: zstd/gzip/raw WAL batches and snapshots (names from bottomless_core.layout); Litestream
0.5: LTX files (superfly/ltx), LZ4-compressed pages. Every row the writer touches carries a
marker (bench/workload.py); a tracker maps each marker to the end of the first upload that made
it visible.
"""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import zstandard

from bench.workload import MARKER, PAGE_SIZE
from bottomless_core.codec import Codec
from bottomless_core.layout import BatchKey, snapshot_codec
from bottomless_core.wal import FRAME_HEADER_SIZE
from bottomless_dev.proxy import Proxy, Upload

LS_LTX = re.compile(r"^(?P<path>.+)/(?P<level>[0-9a-f]{4})/(?P<min>[0-9a-f]{16})-"
                    r"(?P<max>[0-9a-f]{16})\.ltx$")


def markers_in(data: bytes) -> set[int]:
    return {int(m) for m in MARKER.findall(data)}


def our_batch(key: str) -> tuple[str, BatchKey] | None:
    """(``DB-GEN``, the batch) of one of our WAL batch keys, else None."""
    gen, _, name = key.rpartition("/")
    batch = BatchKey.parse(name)
    return (gen, batch) if gen and batch is not None else None


def our_snapshot(key: str) -> Codec | None:
    """The codec of one of our snapshot keys (``DB-GEN/db.zstd``...), else None."""
    gen, _, name = key.rpartition("/")
    return snapshot_codec(name) if gen else None


def is_our_snapshot(key: str) -> bool:
    return our_snapshot(key) is not None


def ltx_level(key: str) -> int | None:
    m = LS_LTX.match(key)
    return int(m["level"], 16) if m else None


def ltx_txids(key: str) -> tuple[int, int]:
    m = LS_LTX.match(key)
    assert m is not None
    return int(m["min"], 16), int(m["max"], 16)


def _decompressed_stream(path: Path, codec: Codec) -> Iterator[bytes]:
    with open(path, "rb") as f:
        if codec is Codec.ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
        elif codec is Codec.GZIP:
            reader = gzip.GzipFile(fileobj=f)
        else:
            reader = f
        while chunk := reader.read(4 << 20):
            yield chunk


def ltx_pages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(pgno, page) of an LTX file (superfly/ltx v0.5: 100-byte header, then per page a 6-byte
    header (pgno u32, flags u16), with flag 1 a u32 size and an LZ4 block, else a raw page;
    a zero page header ends the pages)."""
    import lz4.block  # the benchmark's only extra dependency: pip install lz4

    page_size = struct.unpack(">I", data[8:12])[0]
    pos = 100
    while True:
        pgno, flags = struct.unpack(">IH", data[pos:pos + 6])
        pos += 6
        if pgno == 0 and flags == 0:
            return
        if flags & 1:
            (size,) = struct.unpack(">I", data[pos:pos + 4])
            pos += 4
            yield pgno, lz4.block.decompress(data[pos:pos + size], uncompressed_size=page_size)
            pos += size
        else:
            yield pgno, data[pos:pos + page_size]
            pos += page_size


class Tracker:
    """Finds when each marker first reached the bucket, from a proxy's captured uploads.
    Call ``update()`` repeatedly; ``found`` maps marker -> time."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.found: dict[int, float] = {}
        self.commits: dict[int, float] = {}
        self.scanned_bytes = 0
        self._next = 0

    def update(self) -> None:
        uploads = self.proxy.puts()
        while self._next < len(uploads):
            up = uploads[self._next]
            self._next += 1
            if up.body is not None:
                self._process(up)

    def _resolve(self, markers: set[int], when: float) -> None:
        for m in markers:
            if m not in self.found or when < self.found[m]:
                self.found[m] = when

    def _needed(self, when: float) -> bool:
        """Could an object completed at ``when`` be the first to hold some marker?"""
        return not self.commits or any(
            t <= when and m not in self.found for m, t in self.commits.items())

    def _process(self, up: Upload) -> None:
        raise NotImplementedError


class OursTracker(Tracker):
    """Our layout: a marker counts once the batch holding its transaction's commit frame is up
    (batches are uploaded in frame order). Snapshots are scanned only when they could matter."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self._pending: dict[str, set[int]] = {}

    def _process(self, up: Upload) -> None:
        assert up.body is not None
        if batch := our_batch(up.key):
            gen, key = batch
            data = b"".join(_decompressed_stream(up.body, key.codec))
            self.scanned_bytes += len(data)
            pending = self._pending.setdefault(gen, set())
            step = FRAME_HEADER_SIZE + PAGE_SIZE
            for off in range(0, len(data) - step + 1, step):
                pending |= markers_in(data[off + FRAME_HEADER_SIZE:off + step])
                if struct.unpack(">I", data[off + 4:off + 8])[0]:  # a commit frame
                    self._resolve(pending, up.end)
                    pending.clear()
        elif (codec := our_snapshot(up.key)) and self._needed(up.end):
            tail = b""
            for chunk in _decompressed_stream(up.body, codec):
                self.scanned_bytes += len(chunk)
                self._resolve(markers_in(tail + chunk), up.end)
                tail = chunk[-16:]


class LitestreamTracker(Tracker):
    """Litestream 0.5: every LTX file holds whole transactions; L0 files are always scanned,
    compactions and snapshots (levels 1-9) only when they could matter."""

    def _process(self, up: Upload) -> None:
        assert up.body is not None
        level = ltx_level(up.key)
        if level is None or (level > 0 and not self._needed(up.end)):
            return
        data = up.body.read_bytes()
        buf: list[bytes] = []
        try:
            for _pgno, page in ltx_pages(data):
                buf.append(page)
                if len(buf) >= 1024:
                    self._scan(buf, up.end)
        except (struct.error, ValueError) as exc:
            raise RuntimeError(f"cannot decode {up.key} ({len(data)} bytes, {up.parts} "
                               f"parts): {exc}") from None
        self._scan(buf, up.end)

    def _scan(self, pages: list[bytes], when: float) -> None:
        joined = b"".join(pages)
        self.scanned_bytes += len(joined)
        self._resolve(markers_in(joined), when)
        pages.clear()
