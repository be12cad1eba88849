"""Replicate a local WAL-mode database into the bucket: generations and WAL batches.

A generation starts either from a snapshot (a consistent image of the database, see
snapshot.py) or, when continuity is proven, from its parent's last frame with no snapshot at
all. Continuity is proven only by our own checkpoint (``Replicator.checkpoint``): under the
write lock every committed frame is captured, the WAL is copied back completely, and from then
on our read transaction never lets go, so the next WAL cycle starts exactly where the parent
ends. Everywhere else (first backup, a checkpoint we did not see, a gap) a snapshot is taken.

Object order makes an interrupted write visible to readers: a snapshot generation writes its
snapshot, ``.changecounter``, ``.dep`` and the WAL frames captured with the snapshot, and
``.meta`` last; a snapshot-less one writes ``.changecounter``, ``.dep`` (with the parent's last
frame and checksum as metadata) and ``.meta`` before any frame.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .capture import WalCapture, WalPosition, capture_wal
from .catalog import (
    BASE_METADATA,
    GENERATION_METADATA,
    PARENT_CHECKSUM_METADATA,
    PARENT_FRAMES_METADATA,
    SHA256_METADATA,
    Generation,
    describe_generation,
    newest_generation,
    snapshot_metadata,
)
from .codec import Codec, compress
from .database import ReadLock, WriteGate, resolve_db_path, wal_path
from .dbheader import DbHeader
from .errors import LocalDatabaseError, NotFoundError, StorageError
from .layout import BatchKey, Meta
from .lease import Lease, writer_identity
from .progress import NoProgress, Progress
from .snapshot import SnapshotFile, write_snapshot
from .store.base import ObjectInfo, ObjectStore
from .tempfiles import discard
from .wal import Checksum
from .writer import SealedGenerations

log = logging.getLogger("bottomless.replicator")

BATCH_MAX_FRAMES = 10_000  # libsql's LIBSQL_BOTTOMLESS_BATCH_MAX_FRAMES default
BATCH_MAX_BYTES = 16 << 20  # also cap the raw size: 10,000 frames of 64 KiB pages is 640 MiB
CAPTURE_MAX_BYTES = 64 << 20  # WAL copied per round before it is shipped (Litestream: 64 MiB)
UPLOAD_THREADS = 4  # batches compressed and uploaded side by side when there are several
NO_WAL_CHECKSUM = (0, 0)  # .meta of a generation snapshotted while the WAL was empty
MAX_CHAIN = 100  # libSQL's MAX_RESTORE_STACK_DEPTH: generations a restore follows


@dataclass(frozen=True)
class ReplicateOptions:
    codec: Codec = Codec.ZSTD
    max_batch_frames: int = BATCH_MAX_FRAMES
    max_batch_bytes: int = BATCH_MAX_BYTES
    max_capture_bytes: int = CAPTURE_MAX_BYTES
    upload_threads: int = UPLOAD_THREADS
    clock: Callable[[], float] = time.time  # stamps generation ids and batch names


@dataclass
class ReplicateResult:
    generation: uuid.UUID
    new_generation: bool
    reason: str  # why a new generation was started, or how the newest one was continued
    snapshotless: bool = False  # the new generation restores through its parent
    frames_shipped: int = 0
    batches_shipped: int = 0
    bytes_shipped: int = 0  # raw WAL bytes
    snapshot_bytes: int = 0
    last_frame: int = 0  # frames of the generation now in the bucket
    wal_frames: int = 0  # committed frames in the local WAL
    page_size: int = 0  # of the local database
    caught_up: bool = True  # everything committed when the sync began is in the bucket

    @property
    def uploaded_anything(self) -> bool:
        return self.new_generation or self.batches_shipped > 0


@dataclass
class Continuity:
    """Proof, made at our own checkpoint, that the next WAL cycle starts at ``parent``'s last
    frame. Valid while the read lock that was taken right after it has not let go."""

    parent: uuid.UUID
    parent_frames: int
    parent_checksum: Checksum
    old_header: Checksum  # the parent's WAL header: still current until the next write
    generation: uuid.UUID  # id the child will get (its time: after every parent commit)
    change_counter: bytes
    page_size: int
    epoch: int


@dataclass
class CheckpointOutcome:
    done: bool  # every frame shipped and copied back: the next WAL cycle starts a child
    busy: bool = False  # the application's writer or readers were in the way
    pinned: ReadLock | None = None  # a read transaction on the main file as the child starts
    child: uuid.UUID | None = None
    wal_frames: int = 0


@dataclass
class _Decision:
    action: str  # "continue" | "new" | "child" | "wait"
    reason: str
    dep: bool = True  # a new generation names the current newest as its parent


@dataclass
class ChainState:
    """What the snapshot policy needs: generations since the last snapshot, and the WAL
    shipped since then."""

    depth: int = 0  # generations after the newest one with a snapshot
    wal_bytes: int = 0
    since: float = field(default_factory=time.time)  # when that snapshot was taken


def batches_to_ship(stored: list[tuple[BatchKey, ObjectInfo]], first: int, last: int,
                    per_batch: int, stamp: int, codec: Codec) -> list[BatchKey]:
    """The batches that give frames ``first..last`` to a generation holding ``stored``: only
    frames no stored batch has, so that no two batches ever overlap (libSQL's restore stops,
    silently, at a batch that does not start right after the last frame it applied).

    A hole left by a ship cut short is filled with frames committed before those of the
    batch after it, so the refill is stamped no later than that batch: stamps then still
    grow in listing order, and a restore at T that reaches the batch after the hole reaches
    the refill too.
    """
    covered = sorted((k.first, k.last, k.timestamp) for k, _ in stored)
    keys: list[BatchKey] = []
    frame = first
    i = 0
    while frame <= last:
        while i < len(covered) and covered[i][1] < frame:
            i += 1
        if i < len(covered) and covered[i][0] <= frame:  # frame is stored already
            frame = covered[i][1] + 1
            continue
        end = min(last, covered[i][0] - 1) if i < len(covered) else last
        when = min(stamp, covered[i][2]) if i < len(covered) else stamp
        while frame <= end:
            upto = min(end, frame + per_batch - 1)
            keys.append(BatchKey(frame, upto, when, codec))
            frame = upto + 1
    return keys


def default_db_name(db_path: Path) -> str:
    return db_path.name


class Replicator:
    """Ships one database. Remembers what the bucket holds between calls to ``sync``, so a
    daemon polls the WAL without listing the bucket every second."""

    def __init__(self, db_path: Path, storage: ObjectStore, db_name: str | None = None,
                 options: ReplicateOptions | None = None, identity: str | None = None) -> None:
        self.db_path = resolve_db_path(db_path)
        self.storage = storage
        self.db_name = db_name or default_db_name(Path(db_path))
        self.options = options or ReplicateOptions()
        self.lease = Lease(storage, self.db_name, identity or writer_identity(self.db_path))
        self.newest: Generation | None = None
        self.sealed = SealedGenerations()  # which generations hold age objects
        self.chain = ChainState()
        self._loaded = False
        self._position: WalPosition | None = None  # end of what we shipped in `newest`
        self._created: uuid.UUID | None = None  # generation written by the current sync
        # ReadLock.fingerprint() of the main file when its content was last known to equal the
        # newest snapshot: lets a daemon skip re-hashing an idle database every poll.
        self._same_as_snapshot: tuple[int, int, int, bytes] | None = None
        self._continuity: Continuity | None = None
        self._tail: tuple[WalCapture, float] | None = None  # frames caught at our checkpoint
        self._pending_continuity: Continuity | None = None
        self.on_child_created: Callable[[uuid.UUID], None] | None = None
        # the child a checkpoint promised will not be written (a snapshot job waiting for it
        # can stop)
        self.on_child_dropped: Callable[[uuid.UUID], None] | None = None
        self.db_bytes = 0  # size of the database at the last commit seen (WAL included)
        self.on_behind: Callable[[], None] | None = None  # committed frames found, shipping

    # --- sync ---------------------------------------------------------------------------------

    def sync(self, lock: ReadLock, progress: Progress | None = None) -> ReplicateResult:
        """Ship everything committed (when the sync began) that the bucket lacks. ``lock``
        must be held."""
        progress = progress or NoProgress()
        assert lock.held, "sync needs the read transaction"
        self._created = None
        try:
            if not self._loaded:
                self._load()
            self.lease.renew()
            if self._tail is not None:
                self._ship_tail(progress)
            return self._sync(lock, progress)
        except BaseException:
            # What the bucket holds is uncertain after a failure half-way: list it again.
            self._loaded = False
            self._same_as_snapshot = None
            raise

    def _sync(self, lock: ReadLock, progress: Progress) -> ReplicateResult:
        db_header = lock.db_header()
        index = lock.wal_index()  # the end of this sync: what is committed now
        result: ReplicateResult | None = None
        while True:
            capture = capture_wal(wal_path(self.db_path), self._resume_point(), index,
                                  self.options.max_capture_bytes)
            stamp = self._stamp()
            try:
                decision = self._decide(lock, capture, db_header)
                if decision.action == "new":
                    capture.close()
                    if self.newest is not None:  # a plaintext snapshot after encrypted ones
                        self.sealed.refuse_plaintext_into(
                            self.storage, self.newest, "a new generation's snapshot",
                            after=True)
                    return self._new_generation(lock, db_header, decision, progress)
                if decision.action == "child":
                    result = self._create_child(capture)
                elif result is None:
                    newest = self.newest
                    assert newest is not None
                    result = ReplicateResult(newest.id, False, decision.reason,
                                             last_frame=newest.last_frame)
                result.wal_frames = capture.frame_count
                result.page_size = db_header.page_size
                if capture.db_size and capture.header is not None:
                    self.db_bytes = capture.db_size * capture.header.page_size
                if decision.action != "wait":
                    if capture.new_frames > 0 and self.on_behind is not None:
                        self.on_behind()
                    shipped = self._continue(capture, db_header, stamp, result, progress)
                    newest = self.newest
                    if shipped and newest is not None and not self._still_there(newest,
                                                                                shipped):
                        capture.close()
                        gone = _Decision("new", f"generation {newest.id} was removed from the "
                                                "bucket", dep=False)
                        return self._new_generation(lock, db_header, gone, progress)
                result.caught_up = capture.complete
            finally:
                capture.close()
            if capture.complete or decision.action == "wait":
                return result

    def _stamp(self) -> int:
        """A batch's name carries a whole second that is at or after every commit in it: a
        restore at T then never applies a commit made after T."""
        return math.ceil(self.options.clock())

    def _resume_point(self) -> WalPosition | None:
        if self._position is not None:
            return self._position
        newest = self.newest
        if newest is not None and newest.meta is not None:
            return WalPosition(newest.meta.checksum, newest.contiguous_frame, None)
        return None

    def _load(self) -> None:
        if not self.lease.held:
            self.storage.check_bucket()
            self.lease.acquire()
            self._abort_stale_uploads()
        before = self.newest.id if self.newest is not None else None
        self.newest = _load_newest(self.storage, self.db_name)
        self._position = None
        if self.newest is not None and self.newest.id != before:
            self.chain = _chain_state(self.storage, self.db_name, self.newest)
        if (self._tail is not None and self._pending_continuity is not None
                and (self.newest is None or self.newest.id != self._pending_continuity.parent)):
            self._drop_tail()  # the generation we were finishing is gone
        self._loaded = True

    def _abort_stale_uploads(self) -> None:
        """Multipart uploads of a replicator of this database that died: we hold the lease,
        so nobody else is uploading."""
        try:
            for key, upload_id, _ in self.storage.stale_uploads(
                    layout.generations_prefix(self.db_name)):
                if layout.generation_from_prefix(self.db_name, key.rsplit("/", 1)[0] + "/"):
                    log.info("db=%s event=abort_stale_upload key=%s", self.db_name, key)
                    self.storage.abort_upload(key, upload_id)
        except StorageError as exc:  # not every server lists uploads; they expire anyway
            log.warning("db=%s event=stale_uploads_unchecked error=%r", self.db_name, str(exc))

    def _decide(self, lock: ReadLock, capture: WalCapture, db_header: DbHeader) -> _Decision:
        """Does the local database continue the newest generation, start a child of it with
        no snapshot, or need a new generation with a snapshot?"""
        newest = self.newest
        header = capture.header
        page_size = db_header.page_size
        foreign = self.lease.previous_writer
        if foreign is not None and foreign != self.lease.identity:
            return _Decision("new", f"the newest generation was written by {foreign}, not by "
                                    f"{self.lease.identity}: starting cleanly", dep=False)
        if newest is None:
            return _Decision("new", "no generation in the bucket yet", dep=False)
        c = self._continuity
        if c is not None:
            if not lock.held or lock.epoch != c.epoch:
                self._forget_continuity()  # the read transaction let go: no longer proven
            elif header is None or header.checksum == c.old_header:
                return _Decision("continue", "no new WAL cycle since our checkpoint")
            elif capture.frame_count == 0:
                return _Decision("wait", "new WAL cycle has no committed frame yet")
            elif header.page_size == c.page_size:
                # A child restores through its parent: one removed since (rm -g) would leave
                # a chain no restore can follow, so the child gets a snapshot instead.
                if not self.storage.exists(layout.object_key(self.db_name, c.parent,
                                                             layout.META)):
                    self._forget_continuity()
                    log.warning("db=%s event=parent_removed generation=%s: starting a "
                                "generation with a snapshot", self.db_name, c.parent)
                    return _Decision("new", f"generation {c.parent} was removed from the "
                                            "bucket before its child was written", dep=False)
                return _Decision("child", "continues its parent after our checkpoint")
        if not newest.complete:
            return _Decision("new", f"generation {newest.id} is incomplete (no .meta)")
        last = newest.last_frame
        meta = newest.meta
        assert meta is not None
        continues = (header is not None and meta.page_size == page_size
                     and meta.checksum == header.checksum and header.page_size == page_size
                     and capture.frame_count >= last)
        if last and newest.contiguous_frame != last:
            # A ship cut short (batches go up side by side) left a hole. While the local WAL
            # still holds those frames, shipping on from the hole fills it (the batches after
            # it are repeats that restore checks and skips); otherwise they can never be used.
            if continues:
                return _Decision("continue", f"refills a gap in generation {newest.id}")
            self._drop_orphans(newest)
            return _Decision("new", f"generation {newest.id} has a gap in its WAL batches")
        if continues:
            return _Decision("continue", "local WAL continues the newest generation")
        # Nothing shipped on top of the snapshot yet: if the main file is still exactly the
        # snapshot, the current WAL (whatever its salts) applies on top of it.
        if last == 0 and newest.snapshot is not None and self._matches_snapshot(lock):
            return _Decision("continue", "database file unchanged since the newest snapshot")
        if header is None:
            return _Decision("new", "WAL was checkpointed away since the last run")
        if meta.checksum != header.checksum:
            return _Decision("new", "WAL was restarted (checkpoint) since the last run")
        if meta.page_size != page_size:
            return _Decision("new", "page size changed")
        return _Decision("new", f"local WAL has {capture.frame_count} committed frames, "
                                f"bucket has {last}")

    def _drop_orphans(self, g: Generation) -> None:
        """Batches after a gap that cannot be refilled: no restore can use them, and they
        would make listings claim frames the generation does not have. We hold the lease."""
        reached = g.contiguous_frame
        orphans = [info.key for key, info in g.batches if key.first > reached + 1]
        if orphans:
            log.warning("db=%s event=orphans_removed generation=%s batches=%d after_frame=%d",
                        self.db_name, g.id, len(orphans), reached)
            self.storage.delete_many(orphans)
            g.batches = [(k, i) for k, i in g.batches if k.first <= reached + 1]

    def _still_there(self, g: Generation, shipped: list[str]) -> bool:
        """After shipping into a generation this sync did not create: is it still there?
        ``rm -g`` of it must make us start a new generation, not keep shipping into a deleted
        prefix. Checked after the upload, so that a removal during it is seen too; what we
        just shipped there is taken back."""
        if self._created == g.id or self.storage.exists(g.key(layout.META)):
            return True
        log.warning("db=%s event=generation_removed generation=%s: starting a new generation",
                    self.db_name, g.id)
        # (the prefix too: filer-backed stores list an emptied "directory" until it goes)
        self.storage.delete_many([*shipped, layout.generation_prefix(self.db_name, g.id)])
        return False

    def _matches_snapshot(self, lock: ReadLock) -> bool:
        """Is the main file byte for byte the newest snapshot (hashing only when it moved)?"""
        newest = self.newest
        snap = newest.snapshot if newest is not None else None
        digest = snap.metadata.get(SHA256_METADATA) if snap is not None else None
        if not digest:
            return False
        before = lock.fingerprint()
        if before == self._same_as_snapshot:
            return True
        if lock.sha256() != digest:
            return False
        self._same_as_snapshot = before if lock.fingerprint() == before else None
        return True

    # --- new generations ----------------------------------------------------------------------

    def _new_generation(self, lock: ReadLock, db_header: DbHeader, decision: _Decision,
                        progress: Progress) -> ReplicateResult:
        """A generation with a snapshot: the image of the database as of every frame committed
        now, then those frames (so that the generation's WAL chain starts at frame 1), then
        ``.meta``."""
        parent = self.newest if decision.dep else None
        self._forget_continuity()
        self._drop_tail()
        index = lock.wal_index()
        capture = capture_wal(wal_path(self.db_path), None, index)
        try:
            at = self.options.clock()
            progress.start("snapshot", lock.db_path.stat().st_size)
            before = lock.fingerprint()
            snapshot = write_snapshot(lock, capture, self.options.codec,
                                      lambda n: progress.advance("snapshot", n))
            progress.finish("snapshot")
            try:
                self._check_image(lock, capture)
                # Only an empty WAL guarantees no checkpoint wrote into the file meanwhile.
                same = (before if capture.frame_count == 0 and lock.fingerprint() == before
                        else None)
                gen = layout.generation_for(at, newer_than=self.newest.id if self.newest
                                            else None)
                meta = Meta(db_header.page_size,
                            capture.header.checksum if capture.header else NO_WAL_CHECKSUM)
                g = Generation(self.db_name, gen, snapshot_codec=snapshot.codec,
                               parent=parent.id if parent else None,
                                              change_counter=snapshot.change_counter)
                g.snapshot = self._upload_snapshot(g, snapshot, progress)
                self._put_small(g, parent_frames=None)
            finally:
                discard(snapshot.path)
            result = ReplicateResult(gen, True, decision.reason,
                                     snapshot_bytes=snapshot.size,
                                     wal_frames=capture.frame_count,
                                     page_size=db_header.page_size)
            self.newest, self._position, self._same_as_snapshot = g, None, same
            self._created = gen
            self._ship(g, capture, math.ceil(at), result, progress)
            self.storage.put(g.key(layout.META), meta.encode())  # last: now it is complete
            g.meta = meta
            self.chain = ChainState(0, 0, at)
            self.lease.previous_writer = None  # the newest generation is ours from now on
        finally:
            capture.close()
        log.info("db=%s event=generation generation=%s reason=%r snapshot_bytes=%d frames=%d",
                 self.db_name, gen, decision.reason, snapshot.size, result.frames_shipped)
        return result

    def _check_image(self, lock: ReadLock, capture: WalCapture) -> None:
        """The image holds every frame a checkpoint could have copied into the file while we
        read it (see snapshot.py); make sure nothing past the capture was copied."""
        index = lock.wal_index()
        if (capture.header is not None and index is not None
                and index.salts == capture.header.salts
                and lock.backfilled() > capture.frame_count):
            raise LocalDatabaseError(f"{self.db_path}: a checkpoint copied frames past our read "
                                     "snapshot while the snapshot was taken; try again")

    def _upload_snapshot(self, g: Generation, snapshot: SnapshotFile,
                         progress: Progress) -> ObjectInfo:
        key = g.key(layout.snapshot_name(snapshot.codec))
        metadata = snapshot_metadata(g.id, snapshot.sha256, snapshot.wal_frames)
        progress.start("upload snapshot", snapshot.size)
        with open(snapshot.path, "rb") as f:
            self.storage.upload(key, f, metadata=metadata,
                                on_progress=lambda n: progress.advance("upload snapshot", n))
        progress.finish("upload snapshot")
        return ObjectInfo(key, snapshot.size, None, metadata)

    def _put_small(self, g: Generation, parent_frames: tuple[int, Checksum] | None) -> None:
        """``.changecounter`` and ``.dep``. The dependency's metadata says what the generation
        starts from: its own snapshot, or the parent up to a frame whose checksum it gives
        (a reader can then tell a parent that lost frames; libSQL ignores metadata)."""
        if g.change_counter is not None:
            self.storage.put(g.key(layout.CHANGE_COUNTER), g.change_counter)
        if g.parent is not None:
            if parent_frames is None:
                metadata = {BASE_METADATA: "snapshot"}
            else:
                metadata = {PARENT_FRAMES_METADATA: str(parent_frames[0]),
                            PARENT_CHECKSUM_METADATA:
                                f"{parent_frames[1][0]:08x}-{parent_frames[1][1]:08x}"}
            self.storage.put(g.key(layout.DEPENDENCY), layout.encode_dependency(g.parent),
                             metadata={**metadata, GENERATION_METADATA: str(g.id)})

    def _create_child(self, capture: WalCapture) -> ReplicateResult:
        """The first frames of the WAL cycle after our checkpoint: a generation with no
        snapshot that restores through its parent."""
        c = self._continuity
        assert c is not None and capture.header is not None
        meta = Meta(c.page_size, capture.header.checksum)
        g = Generation(self.db_name, c.generation, meta=meta, parent=c.parent,
                       change_counter=c.change_counter, parent_frames=c.parent_frames,
                       parent_checksum=c.parent_checksum)
        self._put_small(g, (c.parent_frames, c.parent_checksum))
        self.storage.put(g.key(layout.META), meta.encode())
        self.newest, self._position, self._created = g, None, g.id
        self._continuity = None
        self.chain.depth += 1
        log.info("db=%s event=generation generation=%s parent=%s snapshot=none chain=%d",
                 self.db_name, g.id, c.parent, self.chain.depth)
        if self.on_child_created is not None:
            self.on_child_created(g.id)
        return ReplicateResult(g.id, True, "continues its parent after our checkpoint",
                               snapshotless=True)

    # --- shipping -----------------------------------------------------------------------------

    def _continue(self, capture: WalCapture, db_header: DbHeader, stamp: int,
                  result: ReplicateResult, progress: Progress) -> list[str]:
        """Ship into the newest generation; return the keys written."""
        g = self.newest
        assert g is not None
        if capture.new_frames > 0:  # not into an encrypted one without --age-recipient
            self.sealed.refuse_plaintext_into(self.storage, g)  # (read once per generation)
        if capture.header is not None and capture.new_frames > 0:
            meta = Meta(db_header.page_size, capture.header.checksum)
            if g.meta != meta:  # adopting a new WAL on top of an unchanged snapshot
                self.storage.put(g.key(layout.META), meta.encode())
                g.meta = meta
        before = len(g.batches)
        self._ship(g, capture, stamp, result, progress)
        if result.frames_shipped:
            log.info("db=%s event=shipped generation=%s frames=%d batches=%d last_frame=%d",
                      self.db_name, g.id, result.frames_shipped, result.batches_shipped,
                      result.last_frame)
        return [info.key for _, info in g.batches[before:]]

    def _ship(self, g: Generation, capture: WalCapture, stamp: int, result: ReplicateResult,
              progress: Progress) -> None:
        """Upload the captured frames the generation lacks as numbered batches (several in
        flight), recording each as it lands, in frame order."""
        header = capture.header
        if header is None:
            return
        if capture.new_frames > 0:
            frame_size = capture.frame_size
            per_batch = max(1, min(self.options.max_batch_frames,
                                   self.options.max_batch_bytes // frame_size))
            codec = self.options.codec
            keys = batches_to_ship(g.batches, capture.skipped + 1, capture.frame_count,
                                   per_batch, stamp, codec)
            todo = sum(k.last - k.first + 1 for k in keys)
            progress.start("upload frames", todo, unit="frames")

            def upload(key: BatchKey, data: bytes) -> ObjectInfo:
                body = compress(data, codec)
                obj_key = g.key(key.name)
                self.storage.put(obj_key, body)
                return ObjectInfo(obj_key, len(body))

            threads = max(1, self.options.upload_threads)
            window: deque[tuple[BatchKey, Future[ObjectInfo]]] = deque()
            pending = iter(keys)
            with ThreadPoolExecutor(threads, thread_name_prefix="ship") as pool:
                try:
                    nxt = next(pending, None)
                    while nxt is not None or window:
                        while nxt is not None and len(window) < threads:
                            capture.frames.seek((nxt.first - capture.skipped - 1) * frame_size)
                            data = capture.frames.read((nxt.last - nxt.first + 1) * frame_size)
                            window.append((nxt, pool.submit(upload, nxt, data)))
                            nxt = next(pending, None)
                        key, fut = window.popleft()
                        info = fut.result()
                        g.batches.append((key, info))
                        n = key.last - key.first + 1
                        result.frames_shipped += n
                        result.batches_shipped += 1
                        result.bytes_shipped += n * frame_size
                        self.chain.wal_bytes += n * frame_size
                        progress.advance("upload frames", n)
                finally:
                    for _, fut in window:
                        fut.cancel()
                    g.batches.sort(key=lambda b: (b[0].first, b[0].last))
            if not self.storage.encrypts:
                self.sealed.wrote_plain(g.id)
            progress.finish("upload frames")
        result.last_frame = g.last_frame
        self._position = WalPosition(header.checksum, capture.frame_count, capture.checksum)

    # --- our checkpoint -----------------------------------------------------------------------

    def checkpoint(self, lock: ReadLock, pin: bool = False, busy_ms: int = 1000,
                   truncate: bool = False) -> CheckpointOutcome:
        """Copy the WAL back into the database so that the next write starts a new WAL cycle,
        and prove that cycle continues the newest generation (see the module docstring).

        Under SQLite's write lock: capture every frame committed since the last sync, run a
        PASSIVE checkpoint, and take the read transaction again (it lands on the main file,
        read-lock 0, because every frame is copied back). The captured tail is shipped to the
        newest generation before the child is written. ``pin`` also opens a second read
        transaction there, which keeps the main file exactly as the child starts for as long
        as it is held (a snapshot of it can be taken off the hot path). ``truncate`` (a WAL
        past the emergency size) gives the disk space back with a TRUNCATE checkpoint after the
        write lock is released; continuity then holds only if no commit slipped in between.
        """
        newest, position = self.newest, self._position
        if (newest is None or position is None or self._tail is not None
                or self._continuity is not None or not lock.held):
            return CheckpointOutcome(False)
        if self.options.clock() <= newest.created.timestamp():
            # At most one generation a second: the child's time is a whole second after its
            # parent's (layout.generation_for), so an earlier checkpoint would date the child
            # after its first commits and blur point-in-time restores. Try at the next poll.
            return CheckpointOutcome(False)
        gate = WriteGate(self.db_path)
        if not gate.try_enter(busy_ms):
            return CheckpointOutcome(False, busy=True)
        pinned: ReadLock | None = None
        try:
            index = lock.wal_index()
            tail = capture_wal(wal_path(self.db_path), position, index)
            at = self.options.clock()
            header = tail.header
            if (header is None or header.checksum != position.header_checksum
                    or tail.skipped != position.frame_count or tail.frame_count == 0):
                tail.close()
                return CheckpointOutcome(False)
            _, wal_frames, copied = lock.checkpoint_passive()
            lock.acquire()  # read-lock 0 when everything was copied back
            if not wal_frames == copied == tail.frame_count:
                tail.close()  # a reader of the application's holds an older snapshot
                return CheckpointOutcome(False, busy=True, wal_frames=wal_frames)
            if pin:
                pinned = ReadLock(self.db_path)
                pinned.acquire()
            change_counter = lock.db_header().change_counter_bytes
            if truncate:
                # Our read-lock 0 blocks copying any frame of the next cycle, so TRUNCATE can
                # only cut frames that are already in the database file.
                gate.truncate_wal(busy_ms)
        finally:
            gate.leave()
        parent_stamp = max((k.timestamp for k, _ in newest.batches), default=0)
        child_time = max(math.ceil(at), parent_stamp)
        child = layout.generation_for(child_time, newer_than=newest.id)
        self._pending_continuity = Continuity(
            newest.id, tail.frame_count, tail.checksum, header.checksum, child,
            change_counter, header.page_size, lock.epoch)
        self._tail = (tail, at)
        log.info("db=%s event=checkpoint wal_frames=%d child=%s", self.db_name, wal_frames,
                 child)
        return CheckpointOutcome(True, pinned=pinned, child=child, wal_frames=wal_frames)

    def ship_tail(self, progress: Progress | None = None) -> None:
        """Ship the frames caught at our checkpoint (``sync`` also does it first thing)."""
        if self._tail is not None:
            self._ship_tail(progress or NoProgress())

    def _ship_tail(self, progress: Progress) -> None:
        assert self._tail is not None
        tail, at = self._tail
        newest, c = self.newest, self._pending_continuity
        assert c is not None
        if newest is None or newest.id != c.parent:
            self._drop_tail()
            return
        result = ReplicateResult(newest.id, False, "tail")
        self._ship(newest, tail, math.ceil(at), result, progress)
        tail.close()
        self._tail = None
        self._continuity, self._pending_continuity = c, None

    def _drop_tail(self) -> None:
        if self._tail is not None:
            self._tail[0].close()
        if self._pending_continuity is not None and self.on_child_dropped is not None:
            self.on_child_dropped(self._pending_continuity.generation)
        self._tail, self._pending_continuity = None, None

    def _forget_continuity(self) -> None:
        """The proven continuation is off: its child will not be written."""
        c, self._continuity = self._continuity, None
        if c is not None and self.on_child_dropped is not None:
            self.on_child_dropped(c.generation)

    def snapshot_uploaded(self, generation: uuid.UUID, when: float) -> None:
        """A snapshot of ``generation`` landed (taken off the hot path): the chain restarts
        there."""
        newest = self.newest
        if newest is None:
            return
        if newest.id == generation or (self._continuity is not None
                                       and self._continuity.generation == generation):
            self.chain = ChainState(0, 0, when)

    def close(self) -> None:
        self._drop_tail()
        self.lease.release()


def replicate_once(db_path: Path, storage: ObjectStore, db_name: str | None = None,
                   options: ReplicateOptions | None = None,
                   progress: Progress | None = None) -> ReplicateResult:
    """Ship everything committed locally that the bucket does not have yet (cron mode).

    Continues the newest generation when the local WAL provably extends it; otherwise starts a
    new generation from a snapshot taken under a read transaction (see docs/algorithms.md).
    """
    from .database import ReplicatorLock
    from .tempfiles import remove_stale

    db_path = resolve_db_path(db_path)
    local = ReplicatorLock(db_path)
    lock = ReadLock(db_path)
    lock.db_header()  # a bad local file fails before any request
    local.acquire(wait=ONCE_LOCK_WAIT)
    replicator = Replicator(db_path, storage, db_name, options)
    try:
        remove_stale(db_path)
        storage.check_bucket()  # a bad bucket fails before SQLite opens the database
        lock.acquire()
        return replicator.sync(lock, progress)
    finally:
        replicator.close()
        lock.close()
        local.release()


ONCE_LOCK_WAIT = 10.0  # seconds a --once run waits for another replicator of the same file


def _load_newest(storage: ObjectStore, db_name: str) -> Generation | None:
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


def _chain_state(storage: ObjectStore, db_name: str, newest: Generation) -> ChainState:
    """Generations and WAL bytes from the newest snapshot up to ``newest``."""
    state = ChainState(0, 0, newest.created.timestamp())
    g: Generation | None = newest
    while g is not None and g.snapshot is None and g.parent is not None \
            and state.depth < MAX_CHAIN:
        state.depth += 1
        state.wal_bytes += sum(o.size for _, o in g.batches)
        try:
            g = describe_generation(storage, db_name, g.parent, change_counter=False)
        except NotFoundError:
            break
        state.since = g.created.timestamp()
    return state
