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
    ReadLock,
    SnapshotFile,
    WalCapture,
    WalPosition,
    capture_wal,
    compress_snapshot,
    wal_path,
)
from .dbheader import DbHeader
from .errors import NotFoundError
from .layout import BatchKey, Meta
from .progress import NoProgress, Progress
from .storage import ObjectInfo, Storage
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
    last_frame: int = 0  # frames of the generation now in the bucket
    wal_frames: int = 0  # committed frames in the local WAL

    @property
    def uploaded_anything(self) -> bool:
        return self.new_generation or self.batches_shipped > 0


def default_db_name(db_path: Path) -> str:
    return db_path.name


class Replicator:
    """Ships one database. Remembers what the bucket holds between calls to ``sync``, so a
    daemon polls the WAL without listing the bucket every second."""

    def __init__(self, db_path: Path, storage: Storage, db_name: str | None = None,
                 options: ReplicateOptions | None = None) -> None:
        self.db_path = db_path
        self.storage = storage
        self.db_name = db_name or default_db_name(db_path)
        self.options = options or ReplicateOptions()
        self.newest: Generation | None = None
        self._loaded = False
        self._position: WalPosition | None = None  # end of what we shipped in `newest`
        # ReadLock.fingerprint() of the main file when its content was last known to equal the
        # newest snapshot: lets a daemon skip re-hashing an idle database every poll.
        self._same_as_snapshot: tuple[int, int, int, bytes] | None = None

    def sync(self, lock: ReadLock, progress: Progress | None = None) -> ReplicateResult:
        """Ship everything committed that the bucket lacks. ``lock`` must be held."""
        progress = progress or NoProgress()
        assert lock.held, "sync needs the read transaction"
        if not self._loaded:
            self.storage.check_bucket()
            self.newest = _load_newest(self.storage, self.db_name)
            self._position = None
            self._loaded = True
        newest = self.newest
        db_header = lock.db_header()
        capture = capture_wal(wal_path(self.db_path), self._resume_point(), lock.wal_index())
        try:
            decision = _decide(newest, capture, db_header.page_size,
                               lambda: self._matches_snapshot(lock))
            if decision.new_generation:
                if capture.skipped:
                    capture.close()
                    capture = capture_wal(wal_path(self.db_path), None, lock.wal_index())
                return self._new_generation(lock, capture, db_header, decision.reason,
                                            progress)
            assert newest is not None
            return self._continue(newest, capture, db_header, decision.reason, progress)
        except BaseException:
            # What the bucket holds is uncertain after a failure half-way: list it again.
            self._loaded = False
            self._same_as_snapshot = None
            raise
        finally:
            capture.close()

    def _matches_snapshot(self, lock: ReadLock) -> bool:
        """Is the main file byte for byte the newest snapshot (hashing only when it moved)?"""
        newest = self.newest
        digest = newest.snapshot.metadata.get(SHA256_METADATA) if newest and newest.snapshot \
            else None
        if not digest:
            return False
        before = lock.fingerprint()
        if before == self._same_as_snapshot:
            return True
        if lock.sha256() != digest:
            return False
        self._same_as_snapshot = before if lock.fingerprint() == before else None
        return True

    def _resume_point(self) -> WalPosition | None:
        if self._position is not None:
            return self._position
        newest = self.newest
        if newest is not None and newest.meta is not None:
            return WalPosition(newest.meta.checksum, newest.last_frame, None)
        return None

    def _new_generation(self, lock: ReadLock, capture: WalCapture, db_header: DbHeader,
                        reason: str, progress: Progress) -> ReplicateResult:
        parent = self.newest
        progress.start("snapshot", self.db_path.stat().st_size)
        before = lock.fingerprint()
        snapshot = compress_snapshot(lock, self.options.codec,
                                     lambda n: progress.advance("snapshot", n))
        progress.finish("snapshot")
        # Only an empty WAL guarantees no checkpoint wrote into the file during the copy.
        same = before if capture.frame_count == 0 and lock.fingerprint() == before else None
        try:
            gen = layout.new_generation_id(int(self.options.clock() * 1e9),
                                           newer_than=parent.id if parent else None)
            meta = Meta(db_header.page_size,
                        capture.header.checksum if capture.header else NO_WAL_CHECKSUM)
            snap_info = self._upload_generation(gen, snapshot, meta, db_header, parent,
                                                progress)
        finally:
            snapshot.path.unlink(missing_ok=True)
        g = Generation(self.db_name, gen, snapshot=snap_info, snapshot_codec=snapshot.codec,
                       meta=meta, parent=parent.id if parent else None,
                       change_counter=db_header.change_counter_bytes)
        self.newest, self._position, self._same_as_snapshot = g, None, same
        result = ReplicateResult(gen, True, reason, snapshot_bytes=snapshot.size,
                                 wal_frames=capture.frame_count)
        self._ship(g, capture, result, progress)
        log.info("db=%s event=generation generation=%s reason=%r snapshot_bytes=%d frames=%d",
                 self.db_name, gen, reason, snapshot.size, result.frames_shipped)
        return result

    def _continue(self, g: Generation, capture: WalCapture, db_header: DbHeader, reason: str,
                  progress: Progress) -> ReplicateResult:
        result = ReplicateResult(g.id, False, reason, last_frame=g.last_frame,
                                 wal_frames=capture.frame_count)
        if capture.header is not None and capture.new_frames > 0:
            meta = Meta(db_header.page_size, capture.header.checksum)
            if g.meta != meta:  # adopting a new WAL on top of an unchanged snapshot
                self.storage.put(g.key(layout.META), meta.encode())
                g.meta = meta
        self._ship(g, capture, result, progress)
        if result.frames_shipped:
            log.info("db=%s event=shipped generation=%s frames=%d batches=%d last_frame=%d",
                     self.db_name, g.id, result.frames_shipped, result.batches_shipped,
                     result.last_frame)
        return result

    def _upload_generation(self, gen: uuid.UUID, snapshot: SnapshotFile, meta: Meta,
                           db_header: DbHeader, parent: Generation | None,
                           progress: Progress) -> ObjectInfo:
        """Snapshot first, small objects after: a crash half-way leaves a generation that
        restores (snapshot alone) or that the next run recognises and completes."""
        key = layout.object_key(self.db_name, gen, layout.snapshot_name(snapshot.codec))
        metadata = {SHA256_METADATA: snapshot.sha256}
        progress.start("upload snapshot", snapshot.size)
        with open(snapshot.path, "rb") as f:
            self.storage.upload(key, f, metadata=metadata,
                                on_progress=lambda n: progress.advance("upload snapshot", n))
        progress.finish("upload snapshot")
        self.storage.put(layout.object_key(self.db_name, gen, layout.CHANGE_COUNTER),
                         db_header.change_counter_bytes)
        if parent is not None:
            self.storage.put(layout.object_key(self.db_name, gen, layout.DEPENDENCY),
                             layout.encode_dependency(parent.id))
        self.storage.put(layout.object_key(self.db_name, gen, layout.META), meta.encode())
        return ObjectInfo(key, snapshot.size, None, metadata)

    def _ship(self, g: Generation, capture: WalCapture, result: ReplicateResult,
              progress: Progress) -> None:
        """Upload the captured frames as numbered batches, recording each as it lands."""
        header = capture.header
        if header is None:
            return
        if capture.new_frames > 0:
            frame_size = FRAME_HEADER_SIZE + header.page_size
            per_batch = max(1, min(self.options.max_batch_frames,
                                   self.options.max_batch_bytes // frame_size))
            first = capture.skipped + 1
            progress.start("upload frames", capture.new_frames, unit="frames")
            capture.frames.seek(0)
            while first <= capture.frame_count:
                last = min(capture.frame_count, first + per_batch - 1)
                data = capture.frames.read((last - first + 1) * frame_size)
                key = BatchKey(first, last, int(self.options.clock()), self.options.codec)
                obj_key = g.key(key.name)
                body = compress(data, self.options.codec)
                self.storage.put(obj_key, body)
                g.batches.append((key, ObjectInfo(obj_key, len(body))))
                result.frames_shipped += last - first + 1
                result.batches_shipped += 1
                progress.advance("upload frames", last - first + 1)
                first = last + 1
            progress.finish("upload frames")
        result.last_frame = g.last_frame
        self._position = WalPosition(header.checksum, capture.frame_count, capture.checksum)


def replicate_once(db_path: Path, storage: Storage, db_name: str | None = None,
                   options: ReplicateOptions | None = None,
                   progress: Progress | None = None) -> ReplicateResult:
    """Ship everything committed locally that the bucket does not have yet (cron mode).

    Continues the newest generation when the local WAL provably extends it; otherwise starts a
    new generation from a snapshot taken under a read transaction (see docs/algorithms.md).
    """
    replicator = Replicator(db_path, storage, db_name, options)
    lock = ReadLock(db_path)
    try:
        lock.db_header()  # a bad local file fails before any request
        storage.check_bucket()  # a bad bucket fails before SQLite opens the database
        lock.acquire()
        return replicator.sync(lock, progress)
    finally:
        lock.close()


def _load_newest(storage: Storage, db_name: str) -> Generation | None:
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


def _decide(newest: Generation | None, capture: WalCapture, page_size: int,
            matches_snapshot: Callable[[], bool]) -> _Decision:
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
    # Nothing shipped on top of the snapshot yet: if the main file is still exactly the
    # snapshot, the current WAL (whatever its salts) applies on top of it.
    if last == 0 and matches_snapshot():
        return _Decision(False, "database file unchanged since the newest snapshot")
    if header is None:
        return _Decision(True, "WAL was checkpointed away since the last run")
    if meta is None or meta.checksum != header.checksum:
        return _Decision(True, "WAL was restarted (checkpoint) since the last run")
    if meta.page_size != page_size:
        return _Decision(True, "page size changed")
    return _Decision(True, f"local WAL has {capture.frame_count} committed frames, "
                           f"bucket has {last}")
