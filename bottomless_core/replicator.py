"""Replicate a local WAL-mode database into the bucket: new generations and WAL batches."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .catalog import SHA256_METADATA, Generation, describe_generation, newest_generation
from .codec import Codec, compress
from .database import (
    SnapshotFile,
    WalCapture,
    capture_wal,
    compress_snapshot,
    hash_file,
    read_db_header,
    read_transaction,
    wal_path,
)
from .dbheader import DbHeader
from .errors import NotFoundError
from .layout import BatchKey, Meta
from .progress import NoProgress, Progress
from .storage import Storage
from .wal import FRAME_HEADER_SIZE

log = logging.getLogger("bottomless.replicator")

BATCH_MAX_FRAMES = 10_000  # libsql's LIBSQL_BOTTOMLESS_BATCH_MAX_FRAMES default
BATCH_MAX_BYTES = 64 << 20  # also cap the raw size: 10,000 frames of 64 KiB pages is 640 MiB
NO_WAL_CHECKSUM = (0, 0)  # .meta of a generation snapshotted while the WAL was empty


@dataclass(frozen=True)
class ReplicateOptions:
    codec: Codec = Codec.ZSTD
    max_batch_frames: int = BATCH_MAX_FRAMES
    max_batch_bytes: int = BATCH_MAX_BYTES
    clock: Callable[[], float] = time.time  # stamps generation ids and batch names


@dataclass
class ReplicateResult:
    generation: uuid.UUID
    new_generation: bool
    reason: str  # why a new generation was started, or how the newest one was continued
    frames_shipped: int = 0
    batches_shipped: int = 0
    snapshot_bytes: int = 0
    last_frame: int = 0

    @property
    def uploaded_anything(self) -> bool:
        return self.new_generation or self.batches_shipped > 0


def default_db_name(db_path: Path) -> str:
    return db_path.name


def replicate_once(db_path: Path, storage: Storage, db_name: str | None = None,
                   options: ReplicateOptions | None = None,
                   progress: Progress | None = None) -> ReplicateResult:
    """Ship everything committed locally that the bucket does not have yet.

    Continues the newest generation when the local WAL provably extends it; otherwise starts a
    new generation from a snapshot taken under a read transaction (see docs/algorithms.md).
    """
    options = options or ReplicateOptions()
    progress = progress or NoProgress()
    db_name = db_name or default_db_name(db_path)
    read_db_header(db_path)
    storage.check_bucket()
    newest = _newest(storage, db_name)
    skip_if = (newest.meta.checksum, newest.last_frame) if newest and newest.meta else None

    with read_transaction(db_path):
        db_header = read_db_header(db_path)
        capture = capture_wal(wal_path(db_path), skip_if)
        decision = _decide(db_path, newest, capture, db_header.page_size)
        snapshot = None
        if decision.new_generation:
            if capture.skipped:
                capture.close()
                capture = capture_wal(wal_path(db_path))
            progress.start("snapshot", db_path.stat().st_size)
            snapshot = compress_snapshot(db_path, options.codec,
                                         lambda n: progress.advance("snapshot", n))
            progress.finish("snapshot")
    # The read transaction is released: everything below works on private copies.
    try:
        if snapshot is not None:
            gen = layout.new_generation_id(int(options.clock() * 1e9),
                                           newer_than=newest.id if newest else None)
            result = ReplicateResult(gen, True, decision.reason, snapshot_bytes=snapshot.size)
            _upload_generation(storage, db_name, gen, snapshot, capture, db_header, newest,
                               progress)
        else:
            assert newest is not None
            gen = newest.id
            result = ReplicateResult(gen, False, decision.reason, last_frame=newest.last_frame)
            meta = Meta(db_header.page_size,
                        capture.header.checksum if capture.header else NO_WAL_CHECKSUM)
            if newest.meta != meta and capture.new_frames:
                storage.put(layout.object_key(db_name, gen, layout.META), meta.encode())
        result.frames_shipped, result.batches_shipped = _ship_frames(
            storage, db_name, gen, capture, options, progress)
        if result.batches_shipped:
            result.last_frame = capture.frame_count
        log.info("%s: generation %s %s, %d frames in %d batches", db_name, gen,
                 "started" if result.new_generation else "continued", result.frames_shipped,
                 result.batches_shipped)
        return result
    finally:
        capture.close()
        if snapshot is not None:
            snapshot.path.unlink(missing_ok=True)


def _newest(storage: Storage, db_name: str) -> Generation | None:
    gen = newest_generation(storage, db_name)
    if gen is None:
        return None
    try:
        g = describe_generation(storage, db_name, gen)
    except NotFoundError:  # deleted between the two listings
        return None
    if g.snapshot is not None:  # the listing has no user metadata: ask for the digest
        g.snapshot = storage.head(g.snapshot.key) or g.snapshot
    return g


@dataclass(frozen=True)
class _Decision:
    new_generation: bool
    reason: str


def _decide(db_path: Path, newest: Generation | None, capture: WalCapture,
            page_size: int) -> _Decision:
    """Does the local database continue the newest generation, or must a new one start?"""
    if newest is None:
        return _Decision(True, "no generation in the bucket yet")
    if newest.snapshot is None:
        return _Decision(True, f"generation {newest.id} has no snapshot of its own")
    meta = newest.meta
    last = newest.last_frame
    if last and newest.contiguous_frame != last:
        return _Decision(True, f"generation {newest.id} has a gap in its WAL batches")
    header = capture.header
    if (meta is not None and header is not None and meta.page_size == page_size
            and meta.checksum == header.checksum and header.page_size == page_size
            and capture.frame_count >= last):
        return _Decision(False, "local WAL continues the newest generation")
    if last == 0:
        # Nothing shipped on top of the snapshot yet: if the main file is still exactly the
        # snapshot, the current WAL (whatever its salts) applies on top of it.
        digest = newest.snapshot.metadata.get(SHA256_METADATA)
        if digest and hash_file(db_path) == digest:
            return _Decision(False, "database file unchanged since the newest snapshot")
    if header is None:
        return _Decision(True, "WAL was checkpointed away since the last run")
    if meta is None or meta.checksum != header.checksum:
        return _Decision(True, "WAL was restarted (checkpoint) since the last run")
    if meta.page_size != page_size:
        return _Decision(True, "page size changed")
    return _Decision(True, f"local WAL has {capture.frame_count} committed frames, "
                           f"bucket has {last}")


def _upload_generation(storage: Storage, db_name: str, gen: uuid.UUID, snapshot: SnapshotFile,
                       capture: WalCapture, db_header: DbHeader, parent: Generation | None,
                       progress: Progress) -> None:
    """Snapshot first, small objects after: a crash leaves a generation restore can still use."""
    key = layout.object_key(db_name, gen, layout.snapshot_name(snapshot.codec))
    progress.start("upload snapshot", snapshot.size)
    with open(snapshot.path, "rb") as f:
        storage.upload(key, f, metadata={SHA256_METADATA: snapshot.sha256},
                       on_progress=lambda n: progress.advance("upload snapshot", n))
    progress.finish("upload snapshot")
    storage.put(layout.object_key(db_name, gen, layout.CHANGE_COUNTER),
                db_header.change_counter_bytes)
    if parent is not None:
        storage.put(layout.object_key(db_name, gen, layout.DEPENDENCY),
                    layout.encode_dependency(parent.id))
    checksum = capture.header.checksum if capture.header else NO_WAL_CHECKSUM
    storage.put(layout.object_key(db_name, gen, layout.META),
                Meta(db_header.page_size, checksum).encode())


def _ship_frames(storage: Storage, db_name: str, gen: uuid.UUID, capture: WalCapture,
                 options: ReplicateOptions, progress: Progress) -> tuple[int, int]:
    """Upload the captured frames as numbered batches; return (frames, batches)."""
    if capture.header is None or capture.new_frames <= 0:
        return 0, 0
    frame_size = FRAME_HEADER_SIZE + capture.header.page_size
    per_batch = max(1, min(options.max_batch_frames, options.max_batch_bytes // frame_size))
    first = capture.skipped + 1
    batches = 0
    progress.start("upload frames", capture.new_frames, unit="frames")
    capture.frames.seek(0)
    while first <= capture.frame_count:
        last = min(capture.frame_count, first + per_batch - 1)
        data = capture.frames.read((last - first + 1) * frame_size)
        key = BatchKey(first, last, int(options.clock()), options.codec)
        storage.put(layout.object_key(db_name, gen, key.name), compress(data, options.codec))
        progress.advance("upload frames", last - first + 1)
        batches += 1
        first = last + 1
    progress.finish("upload frames")
    return capture.new_frames, batches

