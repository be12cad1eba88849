"""Replicate a local WAL-mode database into the bucket: generations and WAL batches.

A generation starts either from a snapshot (a consistent image of the database, see
snapshot.py) or, when continuity is proven, from its parent's last frame with no snapshot at
all. Continuity is proven only by our own checkpoint (``Replicator.checkpoint``): under the
write lock every committed frame is captured, the WAL is copied back completely, and from then
on our read transaction never lets go, so the next WAL cycle starts exactly where the parent
ends. Everywhere else (first backup, a checkpoint we did not see, a gap) a snapshot is taken.

Object order makes an interrupted write visible to readers (writer.py): a snapshot
generation writes ``.changecounter``, ``.dep``, its snapshot and the WAL frames captured with
the snapshot, and ``.meta`` last; a snapshot-less one writes ``.changecounter``, ``.dep``
(with the parent's last frame and checksum as metadata) and ``.meta`` before any frame.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .capture import WalCapture, WalPosition, capture_wal
from .catalog import (
    SHA256_METADATA,
    BrokenChain,
    Generation,
    describe_generation,
    describer,
    newest_generation,
    walk_chain,
)
from .codec import Codec
from .compactor import LEVELS, Compactor, CompactResult, compact_chain
from .database import ReadLock, WriteGate, resolve_db_path, wal_path
from .dbheader import DbHeader
from .errors import BottomlessError, LocalDatabaseError, NotFoundError, StorageError
from .layout import BatchKey, Meta
from .lease import Lease, writer_identity
from .progress import NoProgress, Progress
from .snapshot import write_snapshot
from .store.base import ObjectInfo, ObjectStore
from .tempfiles import discard
from .wal import FRAME_HEADER_SIZE, Checksum
from .writer import Writer

log = logging.getLogger("bottomless.replicator")

BATCH_MAX_FRAMES = 10_000  # libsql's LIBSQL_BOTTOMLESS_BATCH_MAX_FRAMES default
BATCH_MAX_BYTES = 16 << 20  # also cap the raw size: 10,000 frames of 64 KiB pages is 640 MiB
CAPTURE_MAX_BYTES = 64 << 20  # WAL copied per round before it is shipped (Litestream: 64 MiB)
UPLOAD_THREADS = 4  # batches compressed and uploaded side by side when there are several
# replicate --once snapshots past the WAL fraction only once this much WAL waits to be
# replayed (SQLite's own autocheckpoint: 1,000 pages of 4 KiB); below it a replay is quick
# and a small database would get a snapshot at every run
ONCE_SNAPSHOT_MIN_WAL = 4 << 20
STILL_THERE_EVERY = 30.0  # seconds between checks that the generation being written exists
NO_WAL_CHECKSUM = (0, 0)  # .meta of a generation snapshotted while the WAL was empty


@dataclass(frozen=True)
class ReplicateOptions:
    codec: Codec = Codec.ZSTD
    max_batch_frames: int = BATCH_MAX_FRAMES
    max_batch_bytes: int = BATCH_MAX_BYTES
    max_capture_bytes: int = CAPTURE_MAX_BYTES
    upload_threads: int = UPLOAD_THREADS
    clock: Callable[[], float] = time.time  # stamps generation ids and batch names
    compaction_levels: tuple[int, ...] = LEVELS  # () for no compaction (compactor.py)
    drop_compacted_batches: bool = False
    # replicate --once: a new generation with a snapshot once the WAL shipped since the last
    # snapshot passes this fraction of the database (the daemon's policy, follower.py, gives
    # a snapshot-less generation one in the background instead); None: never
    snapshot_wal_fraction: float | None = None


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
    compaction: CompactResult | None = None  # what replicate --once compacted after it
    compaction_error: str | None = None  # ...or why it could not (the next run tries again)

    @property
    def uploaded_anything(self) -> bool:
        return self.new_generation or self.batches_shipped > 0


@dataclass
class PendingChild:
    """What our own checkpoint proved: the next WAL cycle starts at ``parent``'s last frame,
    so the generation it makes (``generation``) needs no snapshot. Valid while the read lock
    taken right after the checkpoint has not let go (``epoch``). Until ``tail`` (the frames
    caught under the write gate) is in the parent, the child may not be written."""

    parent: uuid.UUID
    parent_frames: int
    parent_checksum: Checksum
    old_header: Checksum  # the parent's WAL header: still current until the next write
    generation: uuid.UUID  # id the child will get (its time: after every parent commit)
    change_counter: bytes
    page_size: int
    epoch: int
    tail: WalCapture | None  # not shipped to the parent yet
    tail_at: float  # when it was captured (its batches' stamp)

    @property
    def proven(self) -> bool:
        """Every frame of the parent is in the bucket: the child may be written."""
        return self.tail is None


@dataclass
class CheckpointOutcome:
    done: bool  # every frame shipped and copied back: the next WAL cycle starts a child
    busy: bool = False  # the application's writer or readers were in the way
    pinned: ReadLock | None = None  # a read transaction on the main file as the child starts
    child: uuid.UUID | None = None
    wal_frames: int = 0


class Action(enum.Enum):
    """What a sync does with the newest generation."""

    CONTINUE = "continue"  # ship the frames it lacks into it
    NEW = "new"  # start a generation with a snapshot
    CHILD = "child"  # start a snapshot-less generation after our checkpoint
    WAIT = "wait"  # a new WAL cycle without a committed frame yet: nothing to do


@dataclass
class _Decision:
    action: Action
    reason: str
    dep: bool = True  # a new generation names the current newest as its parent


@dataclass
class ChainState:
    """What the snapshot policy needs: generations since the last snapshot, and the WAL
    shipped since then."""

    depth: int = 0  # generations after the newest one with a snapshot
    wal_bytes: int = 0
    since: float = field(default_factory=time.time)  # when that snapshot was taken


def default_db_name(db_path: Path) -> str:
    return db_path.name


class Replicator:
    """Ships one database. Remembers what the bucket holds between calls to ``sync``, so a
    daemon polls the WAL without listing the bucket every second."""

    def __init__(self, db_path: Path, storage: ObjectStore, db_name: str | None = None,
                 options: ReplicateOptions | None = None, identity: str | None = None) -> None:
        self.db_path = resolve_db_path(db_path)
        self.db_name = db_name or default_db_name(Path(db_path))
        self.options = options or ReplicateOptions()
        self.lease = Lease(storage, self.db_name, identity or writer_identity(self.db_path))
        self.writer = Writer(storage, self.db_name, before_write=self.lease.ensure)
        levels = self.options.compaction_levels
        self.compactor = Compactor(
            self.writer, levels, keep_batches=not self.options.drop_compacted_batches,
            local=self.writer.shipped_frames, clock=self.options.clock,
            workdir=self.db_path) if levels else None
        self._replaced: list[Generation] = []  # generations this one ended: compact them whole
        self._compaction_guard = threading.Lock()
        self.newest: Generation | None = None
        self.chain = ChainState()
        self._loaded = False
        self._position: WalPosition | None = None  # end of what we shipped in `newest`
        self._created: uuid.UUID | None = None  # generation written by the current sync
        # ReadLock.fingerprint() of the main file when its content was last known to equal the
        # newest snapshot: lets a daemon skip re-hashing an idle database every poll.
        self._same_as_snapshot: tuple[int, int, int, bytes] | None = None
        self._child: PendingChild | None = None  # what our last checkpoint proved
        self._snapshot_wanted: str | None = None  # request_snapshot: why
        self._checked: dict[uuid.UUID, float] = {}  # generation -> when _still_there looked
        self.on_child_created: Callable[[uuid.UUID], None] | None = None
        # the child a checkpoint promised will not be written (a snapshot job waiting for it
        # can stop)
        self.on_child_dropped: Callable[[uuid.UUID], None] | None = None
        self.db_bytes = 0  # size of the database at the last commit seen (WAL included)
        self.on_behind: Callable[[], None] | None = None  # committed frames found, shipping

    @property
    def storage(self) -> ObjectStore:
        return self.writer.store

    @storage.setter
    def storage(self, store: ObjectStore) -> None:
        self.writer.store = store

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
            if self._child is not None and not self._child.proven:
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
                if decision.action is Action.NEW:
                    capture.close()
                    if self.newest is not None:  # a plaintext snapshot after encrypted ones
                        self.writer.sealed.refuse_plaintext_into(
                            self.storage, self.newest, "a new generation's snapshot",
                            after=True)
                    return self._new_generation(lock, db_header, decision, progress)
                if decision.action is Action.CHILD:
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
                if decision.action is not Action.WAIT:
                    if capture.new_frames > 0 and self.on_behind is not None:
                        self.on_behind()
                    shipped = self._continue(capture, db_header, stamp, result, progress)
                    newest = self.newest
                    if shipped and newest is not None and not self._still_there(newest,
                                                                                shipped):
                        capture.close()
                        gone = _Decision(Action.NEW, f"generation {newest.id} was removed "
                                                     "from the bucket", dep=False)
                        return self._new_generation(lock, db_header, gone, progress)
                result.caught_up = capture.complete
            finally:
                capture.close()
            if capture.complete or decision.action is Action.WAIT:
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
        child = self._child
        if (child is not None and not child.proven
                and (self.newest is None or self.newest.id != child.parent)):
            self._drop_child()  # the generation we were finishing is gone
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
            return _Decision(Action.NEW, f"the newest generation was written by {foreign}, "
                                         f"not by {self.lease.identity}: starting cleanly",
                             dep=False)
        if newest is None:
            return _Decision(Action.NEW, "no generation in the bucket yet", dep=False)
        if self._snapshot_wanted is not None:
            return _Decision(Action.NEW, self._snapshot_wanted)
        c = self._child
        if c is not None and c.proven:
            if not lock.held or lock.epoch != c.epoch:
                self._drop_child()  # the read transaction let go: no longer proven
            elif header is None or header.checksum == c.old_header:
                return _Decision(Action.CONTINUE, "no new WAL cycle since our checkpoint")
            elif capture.frame_count == 0:
                return _Decision(Action.WAIT, "new WAL cycle has no committed frame yet")
            elif header.page_size == c.page_size:
                # A child restores through its parent: one removed since (rm -g) would leave
                # a chain no restore can follow, so the child gets a snapshot instead.
                if not self.storage.exists(layout.object_key(self.db_name, c.parent,
                                                             layout.META)):
                    self._drop_child()
                    log.warning("db=%s event=parent_removed generation=%s: starting a "
                                "generation with a snapshot", self.db_name, c.parent)
                    return _Decision(Action.NEW, f"generation {c.parent} was removed from "
                                                 "the bucket before its child was written",
                                     dep=False)
                return _Decision(Action.CHILD, "continues its parent after our checkpoint")
        if not newest.complete:
            return _Decision(Action.NEW, f"generation {newest.id} is incomplete (no .meta)")
        last = newest.last_frame
        meta = newest.meta
        assert meta is not None
        continues = (header is not None and meta.page_size == page_size
                     and meta.checksum == header.checksum and header.page_size == page_size
                     and capture.frame_count >= last)
        if last and newest.contiguous_frame != last:
            # A ship cut short (batches go up side by side) left a hole. While the local WAL
            # still holds those frames, the missing ones are shipped (writer.batches_to_ship);
            # otherwise the batches after the hole can never be used.
            if continues:
                return _Decision(Action.CONTINUE, f"refills a gap in generation {newest.id}")
            self._drop_orphans(newest)
            return _Decision(Action.NEW, f"generation {newest.id} has a gap in its WAL "
                                         "batches")
        if continues:
            fraction = self.options.snapshot_wal_fraction
            db_size = max(self.db_bytes, db_header.page_count * page_size)
            if (fraction is not None and db_size and capture.new_frames > 0
                    and self.chain.wal_bytes >= max(fraction * db_size, ONCE_SNAPSHOT_MIN_WAL)):
                return _Decision(Action.NEW, f"{self.chain.wal_bytes} bytes of WAL since the "
                                             f"last snapshot (database {db_size} bytes)")
            return _Decision(Action.CONTINUE, "local WAL continues the newest generation")
        # Nothing shipped on top of the snapshot yet: if the main file is still exactly the
        # snapshot, the current WAL (whatever its salts) applies on top of it.
        if last == 0 and newest.snapshot is not None and self._matches_snapshot(lock):
            return _Decision(Action.CONTINUE, "database file unchanged since the newest "
                                              "snapshot")
        if header is None:
            return _Decision(Action.NEW, "WAL was checkpointed away since the last run")
        if meta.checksum != header.checksum:
            return _Decision(Action.NEW, "WAL was restarted (checkpoint) since the last run")
        if meta.page_size != page_size:
            return _Decision(Action.NEW, "page size changed")
        return _Decision(Action.NEW, f"local WAL has {capture.frame_count} committed frames, "
                                     f"bucket has {last}")

    def _drop_orphans(self, g: Generation) -> None:
        """Batches after a gap that cannot be refilled: no restore can use them, and they
        would make listings claim frames the generation does not have. We hold the lease."""
        reached = g.contiguous_frame
        orphans = [info.key for key, info in g.batches if key.first > reached + 1]
        if orphans:
            log.warning("db=%s event=orphans_removed generation=%s batches=%d after_frame=%d",
                        self.db_name, g.id, len(orphans), reached)
            self.writer.remove(orphans)
            g.batches = [(k, i) for k, i in g.batches if k.first <= reached + 1]

    def _still_there(self, g: Generation, shipped: list[str]) -> bool:
        """After shipping into a generation this sync did not create: is it still there?
        ``rm -g`` of it must make us start a new generation, not keep shipping into a deleted
        prefix. Checked after the upload, so that a removal during it is seen too, and at most
        every STILL_THERE_EVERY (a HEAD per ship was most of the requests of a database
        written now and then); what was shipped there since is taken back, the new
        generation's snapshot holds it."""
        now = time.monotonic()
        if self._created == g.id or now - self._checked.get(g.id, -math.inf) < STILL_THERE_EVERY:
            return True
        self._checked = {g.id: now}
        if self.storage.exists(g.key(layout.META)):
            return True
        log.warning("db=%s event=generation_removed generation=%s: starting a new generation",
                    self.db_name, g.id)
        # (the prefix too: filer-backed stores list an emptied "directory" until it goes)
        self.writer.remove([*shipped, layout.generation_prefix(self.db_name, g.id)])
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
        if self.newest is not None:
            with self._compaction_guard:
                self._replaced.append(self.newest)
        self._drop_child()
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
                               parent=parent.id if parent else None, own_base=True,
                               change_counter=snapshot.change_counter)
                try:
                    self.writer.start(g)  # before the snapshot: see writer.py
                    g.snapshot = self.writer.upload_snapshot(gen, snapshot, progress)
                except BaseException:  # a failure or a signal: leave nothing half-written
                    self.writer.abandon(g)
                    raise
            finally:
                discard(snapshot.path)
            result = ReplicateResult(gen, True, decision.reason,
                                     snapshot_bytes=snapshot.size,
                                     wal_frames=capture.frame_count,
                                     page_size=db_header.page_size)
            self.newest, self._position, self._same_as_snapshot = g, None, same
            self._created = gen
            self._ship(g, capture, math.ceil(at), result, progress)
            self.writer.write_meta(g, meta)  # last: now it is complete
            self.chain = ChainState(0, 0, at)
            self.lease.previous_writer = None  # the newest generation is ours from now on
            self._snapshot_wanted = None
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

    def _create_child(self, capture: WalCapture) -> ReplicateResult:
        """The first frames of the WAL cycle after our checkpoint: a generation with no
        snapshot that restores through its parent."""
        c = self._child
        assert c is not None and c.proven and capture.header is not None
        g = Generation(self.db_name, c.generation, parent=c.parent,
                       change_counter=c.change_counter, parent_frames=c.parent_frames,
                       parent_checksum=c.parent_checksum)
        self.writer.start(g)
        self.writer.write_meta(g, Meta(c.page_size, capture.header.checksum))
        self.newest, self._position, self._created = g, None, g.id
        self._child = None
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
            self.writer.sealed.refuse_plaintext_into(self.storage, g)  # (once a generation)
        if capture.header is not None and capture.new_frames > 0:
            meta = Meta(db_header.page_size, capture.header.checksum)
            if g.meta != meta:  # adopting a new WAL on top of an unchanged snapshot
                self.writer.write_meta(g, meta)
        landed = self._ship(g, capture, stamp, result, progress)
        if result.frames_shipped:
            log.info("db=%s event=shipped generation=%s frames=%d batches=%d last_frame=%d",
                     self.db_name, g.id, result.frames_shipped, result.batches_shipped,
                     result.last_frame)
        return landed

    def _ship(self, g: Generation, capture: WalCapture, stamp: int, result: ReplicateResult,
              progress: Progress) -> list[str]:
        """Upload the captured frames the generation lacks (writer.ship) and count them;
        return the keys written."""
        header = capture.header
        landed: list[str] = []
        if header is None:
            return landed
        if capture.new_frames > 0:
            frame_size = capture.frame_size
            per_batch = max(1, min(self.options.max_batch_frames,
                                   self.options.max_batch_bytes // frame_size))
            progress.start("upload frames", capture.new_frames, unit="frames")

            def on_landed(key: BatchKey, info: ObjectInfo) -> None:
                n = key.last - key.first + 1
                landed.append(info.key)
                result.frames_shipped += n
                result.batches_shipped += 1
                result.bytes_shipped += n * frame_size
                self.chain.wal_bytes += n * frame_size
                progress.advance("upload frames", n)

            self.writer.ship(g, capture, stamp, self.options.codec, per_batch,
                             self.options.upload_threads, on_landed)
            progress.finish("upload frames")
        result.last_frame = g.last_frame
        self._position = WalPosition(header.checksum, capture.frame_count, capture.checksum)
        return landed

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
        if newest is None or position is None or self._child is not None or not lock.held:
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
        self._child = PendingChild(newest.id, tail.frame_count, tail.checksum, header.checksum,
                                   child, change_counter, header.page_size, lock.epoch,
                                   tail, at)
        log.info("db=%s event=checkpoint wal_frames=%d child=%s", self.db_name, wal_frames,
                 child)
        return CheckpointOutcome(True, pinned=pinned, child=child, wal_frames=wal_frames)

    def ship_tail(self, progress: Progress | None = None) -> None:
        """Ship the frames caught at our checkpoint (``sync`` also does it first thing)."""
        if self._child is not None and not self._child.proven:
            self._ship_tail(progress or NoProgress())

    def _ship_tail(self, progress: Progress) -> None:
        c = self._child
        assert c is not None and c.tail is not None
        newest = self.newest
        if newest is None or newest.id != c.parent:
            self._drop_child()
            return
        self._ship(newest, c.tail, math.ceil(c.tail_at), ReplicateResult(newest.id, False,
                                                                          "tail"), progress)
        c.tail.close()
        c.tail = None  # proven: the next WAL cycle may start the child

    def _drop_child(self) -> None:
        """What our checkpoint proved is off: its child will not be written."""
        c, self._child = self._child, None
        if c is None:
            return
        if c.tail is not None:
            c.tail.close()
        if self.on_child_dropped is not None:
            self.on_child_dropped(c.generation)

    def has_pending_child(self) -> bool:
        """Did our checkpoint leave a tail to ship, or a child to write at the next commit?"""
        return self._child is not None

    def request_snapshot(self, reason: str) -> None:
        """Start a generation with a fresh snapshot at the next sync (the bucket's copy was
        found to differ from the database)."""
        self._snapshot_wanted = reason

    # --- compaction ---------------------------------------------------------------------------

    def compaction_due(self) -> bool:
        return self.compactor is not None and self.newest is not None

    def compact(self) -> CompactResult:
        """Merge what is sealed of the newest generation's batches (and of the generations it
        restores through, and of those it replaced) into page packs. Works on copies, so the
        daemon may run it beside its syncs."""
        newest = self.newest
        if self.compactor is None or newest is None:
            return CompactResult()
        copy = dataclasses.replace(newest, batches=list(newest.batches),
                                   packs=list(newest.packs))
        with self._compaction_guard:
            replaced, self._replaced = self._replaced, []
        return compact_chain(self.compactor, copy, replaced)

    def snapshot_uploaded(self, generation: uuid.UUID, when: float) -> None:
        """A snapshot of ``generation`` landed (taken off the hot path): the chain restarts
        there."""
        newest = self.newest
        if newest is None:
            return
        if newest.id == generation or (self._child is not None
                                       and self._child.generation == generation):
            self.chain = ChainState(0, 0, when)

    def close(self) -> None:
        self._drop_child()
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
        result = replicator.sync(lock, progress)
        try:
            result.compaction = replicator.compact()
        except BottomlessError as exc:  # what was shipped is safe: compaction is for speed
            result.compaction_error = str(exc)
            log.warning("db=%s event=compaction_failed error=%r", replicator.db_name, str(exc))
        return result
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
    try:
        for link in walk_chain(newest, describer(storage, db_name)):
            state.since = link.created.timestamp()
            # raw WAL bytes, as shipping counts them (the frames of the snapshot's own
            # generation too: they are replayed on top of it)
            frame = FRAME_HEADER_SIZE + (link.meta.page_size if link.meta else 4096)
            state.wal_bytes += link.contiguous_frame * frame
            if not link.has_snapshot:
                state.depth += 1
    except BrokenChain:
        pass
    return state
