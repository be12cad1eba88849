"""A compressed image of the database as of a captured WAL position, for a generation's snapshot.

The main database file alone is not a consistent state while the application's checkpoints
copy WAL frames into it: a page may already hold a version from a frame that our capture also
holds, its neighbour not yet. Every page that a checkpoint can have written during our copy
comes from a WAL frame at or below our read mark, and the capture holds every such frame. So
the image is built as SQLite's reader sees the database: each page from its newest captured
frame if it has one, else from the main file. That image is consistent on its own, whatever
the checkpoints did meanwhile, and equals the state after the capture's last commit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .capture import WalCapture
from .codec import CHUNK, Codec, Encoder
from .database import ReadLock
from .dbheader import DB_HEADER_SIZE
from .errors import LocalDatabaseError
from .tempfiles import discard, owned_temp_path
from .wal import FRAME_HEADER_SIZE

OVERLAY_SCAN = 4 << 20  # bytes of captured frames scanned at a time to map pages
# zstd worker threads for a snapshot: a snapshot holds the main file pinned (or the sync
# waiting) while it is compressed, so it is the one place where two cores pay off.
SNAPSHOT_THREADS = 2


@dataclass
class SnapshotFile:
    """A compressed database image in a temporary file."""

    path: Path
    codec: Codec
    sha256: str  # of the uncompressed image
    raw_size: int
    size: int
    wal_frames: int  # frames of the capture folded into the image (its seed frames)
    change_counter: bytes  # bytes 24..28 of the image's header (libSQL's .changecounter)


def page_overlay(capture: WalCapture) -> dict[int, int]:
    """Page number -> offset in ``capture.frames`` of that page's newest committed version."""
    overlay: dict[int, int] = {}
    if capture.header is None or capture.new_frames <= 0:
        return overlay
    frame_size = capture.frame_size
    f = capture.frames
    f.seek(0)
    offset = 0
    per = max(1, OVERLAY_SCAN // frame_size)
    while block := f.read(per * frame_size):
        n = len(block) // frame_size
        pgnos = np.frombuffer(block, dtype=">u4", count=n * frame_size // 4).reshape(
            n, frame_size // 4)[:, 0]
        for i, pgno in enumerate(pgnos.tolist()):
            overlay[pgno] = offset + i * frame_size
        offset += n * frame_size
    f.seek(0)
    return overlay


def image_chunks(lock: ReadLock, capture: WalCapture, page_size: int) -> Iterator[bytes]:
    """The database image: main file pages, replaced by their newest captured version; its
    length is the page count of the capture's last commit (the main file's when none)."""
    overlay = page_overlay(capture) if capture.frame_count == capture.new_frames else {}
    if capture.frame_count and capture.frame_count != capture.new_frames:
        raise ValueError("an image needs every frame of the WAL, not a resumed capture")
    fd = lock.fd
    pages = capture.db_size if capture.frame_count else os.fstat(fd).st_size // page_size
    per_chunk = max(1, CHUNK // page_size)
    frames = capture.frames
    for first in range(1, pages + 1, per_chunk):
        count = min(per_chunk, pages + 1 - first)
        data = bytearray(os.pread(fd, count * page_size, (first - 1) * page_size))
        if len(data) < count * page_size:  # pages only the WAL has so far
            data.extend(bytes(count * page_size - len(data)))
        for pgno in range(first, first + count):
            at = overlay.get(pgno)
            if at is not None:
                frames.seek(at + FRAME_HEADER_SIZE)
                start = (pgno - first) * page_size
                data[start:start + page_size] = frames.read(page_size)
        yield bytes(data)
    frames.seek(0)


def write_snapshot(lock: ReadLock, capture: WalCapture, codec: Codec,
                   on_bytes: Callable[[int], None] | None = None) -> SnapshotFile:
    """Compress the image into a temporary file beside the database. ``lock`` must be held
    and ``capture`` taken under it, from frame 1 (see the module docstring)."""
    page_size = lock.db_header().page_size
    image = pack_image(image_chunks(lock, capture, page_size), codec,
                       owned_temp_path(lock.db_path, "snapshot"), lock.db_path, on_bytes)
    image.wal_frames = capture.frame_count
    return image


def pack_file(src: Path, codec: Codec, dst: Path,
              on_bytes: Callable[[int], None] | None = None) -> SnapshotFile:
    """A database image in ``src`` (a copy, a restored file), compressed into ``dst``."""
    def chunks() -> Iterator[bytes]:
        with open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    return pack_image(chunks(), codec, dst, src, on_bytes)


def pack_image(chunks: Iterable[bytes], codec: Codec, dst: Path, source: Path,
               on_bytes: Callable[[int], None] | None = None) -> SnapshotFile:
    """Compress an image of ``source`` into the new file ``dst`` (removed again on failure),
    hashing it as it goes: the one place a snapshot is compressed."""
    h = hashlib.sha256()
    raw = 0
    enc = Encoder(codec, threads=SNAPSHOT_THREADS)
    counter = b""
    try:
        with open(dst, "xb") as out:
            for chunk in chunks:
                if not raw:
                    counter = chunk[24:28]
                h.update(chunk)
                raw += len(chunk)
                out.write(enc.feed(chunk))
                if on_bytes:
                    on_bytes(len(chunk))
            out.write(enc.finish())
    except OSError as exc:
        discard(dst)
        raise LocalDatabaseError(f"{dst.parent}: cannot write the temporary snapshot "
                                 f"({exc.strerror or exc})") from None
    except BaseException:
        discard(dst)
        raise
    if raw < DB_HEADER_SIZE:
        discard(dst)
        raise LocalDatabaseError(f"{source}: database file is too short")
    return SnapshotFile(dst, codec, h.hexdigest(), raw, dst.stat().st_size, 0, counter)
