"""Continuous replication: follow every commit, own the checkpoints, survive failures.

One Follower per database. It holds a read transaction at all times (see database.ReadLock),
polls the WAL every ``interval`` and ships new committed frames. Past ``checkpoint_pages`` it
checkpoints the database itself (Replicator.checkpoint): every frame is shipped and copied
back under SQLite's write lock, so the application's next write starts a new WAL cycle that
provably continues the newest generation, and the next generation needs no snapshot. A
snapshot policy decides when one of those generations gets a full snapshot anyway; that
snapshot is copied from the main file, pinned by a read transaction, and uploaded by a
background thread while frames keep flowing.

Any failure (storage, local disk, a bug in one database's handling) is retried with backoff
and reported; only a stop request ends the loop.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import layout
from .capture import empty_capture
from .compactor import CompactResult
from .database import ReadLock, close_replaced, kept_fd, shm_path, wal_path
from .errors import BottomlessError, UnreachableError
from .replicator import ChainState, Replicator
from .retention import plan_removal, remove_generations
from .selfcheck import VerifyJob
from .snapshot import write_snapshot
from .tempfiles import discard
from .wal import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WAL_INDEX_HEADER_SIZE

log = logging.getLogger("bottomless.follower")

INTERVAL = 1.0  # seconds between WAL polls (Litestream's DefaultMonitorInterval)
CHECKPOINT_PAGES = 1000  # checkpoint past this many WAL frames (Litestream's MinCheckpointPageN)
EMERGENCY_PAGES = 121_359  # ~500 MB of 4 KiB pages: TRUNCATE, giving the disk space back
CHECKPOINT_BUSY_MS = 500  # the longest our checkpoint waits for the application's writer
CHECKPOINT_RETRY_POLLS = 2  # after a busy checkpoint, wait this many polls before another
BUSY_FACTOR = 2  # a WAL this many times checkpoint_pages at a checkpoint: writes outrun us
HARD_MAX_CHAIN = 90  # deferred snapshots never let a chain near libSQL's restore limit (100)
WARN_FACTOR = 10  # warn when the WAL holds this many times checkpoint_pages (shipping is stuck)
FIRST_BACKOFF = 1.0  # seconds before the first retry after a failed sync
MAX_BACKOFF = 60.0  # cap of the exponential backoff while failures go on
RETENTION_EVERY = 3600.0  # seconds between retention runs (and one shortly after start)
STOP_SNAPSHOT_WAIT = 10.0  # at shutdown, how long an unfinished background snapshot may take
HEARTBEAT = 60.0  # seconds after which an unchanged database is stepped anyway (scheduler.py)

# Snapshot policy: a generation gets a full snapshot (off the hot path) when one of these is
# reached since the last snapshot. See docs/operations.md for how the defaults were chosen.
SNAPSHOT_WAL_FRACTION = 0.5  # WAL shipped since, as a fraction of the database's size
SNAPSHOT_MAX_CHAIN = 32  # snapshot-less generations in a row (libSQL restores through 100)
SNAPSHOT_INTERVAL = 24 * 3600.0  # seconds (Litestream's default snapshot interval)


@dataclass(frozen=True)
class SnapshotPolicy:
    wal_fraction: float = SNAPSHOT_WAL_FRACTION
    max_chain: int = SNAPSHOT_MAX_CHAIN
    interval: float = SNAPSHOT_INTERVAL

    def due(self, chain: ChainState, db_size: int, now: float) -> str | None:
        """Why the next generation should get a snapshot, or None."""
        if chain.depth + 1 >= self.max_chain:
            return f"chain of {chain.depth + 1} generations without a snapshot"
        if db_size and chain.wal_bytes >= self.wal_fraction * db_size:
            return (f"{chain.wal_bytes} bytes of WAL since the last snapshot "
                    f"(database {db_size} bytes)")
        if now - chain.since >= self.interval:
            return f"last snapshot {now - chain.since:.0f}s ago"
        return None


@dataclass(frozen=True)
class FollowOptions:
    interval: float = INTERVAL
    checkpoint_pages: int = CHECKPOINT_PAGES
    emergency_pages: int = EMERGENCY_PAGES
    max_backoff: float = MAX_BACKOFF
    snapshots: SnapshotPolicy = SnapshotPolicy()
    retention: float | None = None  # seconds of history every point of which stays restorable
    retention_every: float = RETENTION_EVERY
    verify_every: float | None = None  # seconds between self-verifications (selfcheck.py)


@dataclass
class FollowerStatus:
    """What ``status`` reports for one database."""

    db_name: str
    path: str
    state: str = "starting"  # running | retrying | stopped | failed
    generation: str | None = None
    generations_started: int = 0
    snapshots: int = 0  # full snapshots uploaded (new generations and background ones)
    chain_depth: int = 0  # generations since the newest snapshot
    frames_shipped: int = 0
    bytes_shipped: int = 0  # raw WAL bytes
    batches_shipped: int = 0
    last_frame: int = 0
    wal_frames: int = 0
    checkpoints: int = 0
    packs_written: int = 0  # by compaction
    verify_last_success: float | None = None  # unix time of the last self-check that matched
    verify_failures: int = 0  # self-checks that found the backup different from the database
    verify_last_error: str | None = None  # what the last failed (or skipped) one said
    generations_removed: int = 0  # by retention
    last_success: float | None = None  # unix time of the last sync that shipped everything
    behind_since: float | None = None  # unix time since which committed frames wait to ship
    last_error: str | None = None
    # since when our checkpoints keep failing (a long read transaction of the app's), and the
    # warning given once the WAL grew past WARN_FACTOR x checkpoint_pages meanwhile
    checkpoint_blocked_since: float | None = None
    warning: str | None = None
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failed polls by kind

    def lag_seconds(self, now: float | None = None) -> float:
        if self.behind_since is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.behind_since)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lag_seconds"] = round(self.lag_seconds(), 3)
        return d


class SnapshotJob(threading.Thread):
    """Copies the main file (pinned as it was when the child generation started) into a
    compressed image, lets go of the pin, and uploads the image as the child's snapshot once
    the child exists in the bucket."""

    def __init__(self, replicator: Replicator, pinned: ReadLock, child: uuid.UUID,
                 stop: threading.Event) -> None:
        super().__init__(name=f"snapshot-{replicator.db_name}", daemon=True)
        self.replicator = replicator
        self.pinned = pinned
        self.child = child
        self.stop = stop
        self.created = threading.Event()
        self.dropped = threading.Event()  # the child will never exist: nothing to upload
        self.pinning = True  # the main file is held as the child starts: nothing can be
        self.ok = False      # checkpointed meanwhile
        self.error: str | None = None

    def run(self) -> None:
        r = self.replicator
        try:
            try:
                image = write_snapshot(self.pinned, empty_capture(), r.options.codec)
            finally:
                self.pinned.close()
                self.pinning = False
            try:
                while not self.created.wait(0.2):
                    if self.stop.is_set() or self.dropped.is_set():
                        return
                r.writer.upload_snapshot(self.child, image)
            finally:
                discard(image.path)
            r.snapshot_uploaded(self.child, time.time())
            self.ok = True
            log.info("db=%s event=snapshot generation=%s bytes=%d", r.db_name, self.child,
                     image.size)
        except Exception as exc:  # logged; the chain simply stays longer
            self.error = str(exc)
            log.warning("db=%s event=snapshot_failed generation=%s error=%r", r.db_name,
                        self.child, str(exc))


class CompactionJob(threading.Thread):
    """One compaction of the sealed windows (Replicator.compact), beside the syncs."""

    def __init__(self, replicator: Replicator) -> None:
        super().__init__(name=f"compact-{replicator.db_name}", daemon=True)
        self.replicator = replicator
        self.result: CompactResult | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = self.replicator.compact()
        except Exception as exc:  # logged; the next run tries again
            self.error = str(exc) or type(exc).__name__
            log.warning("db=%s event=compaction_failed error=%r", self.replicator.db_name,
                        self.error)


class Follower:
    def __init__(self, replicator: Replicator, options: FollowOptions | None = None) -> None:
        self.replicator = replicator
        self.options = options or FollowOptions()
        self.status = FollowerStatus(replicator.db_name, str(replicator.db_path))
        self._lock = ReadLock(replicator.db_path)
        self._backoff = 0.0
        self._checkpoint_not_before = 0.0
        self._warned = False
        self._noted_page_size = False
        self._stop = threading.Event()
        self._job: SnapshotJob | None = None
        self._compaction: CompactionJob | None = None
        self._verify: VerifyJob | None = None
        self._verify_due = (time.monotonic() + self.options.verify_every
                            if self.options.verify_every else None)
        self._compacted_at = 0.0  # monotonic time of the last compaction started
        self._shipped_at: float | None = None  # unix time of a ship compaction has not sealed
        self._old_file_open = False  # descriptors of a replaced database still to close
        self._stepped_at = -math.inf  # monotonic time of the last step (for due())
        self._seen: bytes | None = None  # the database's signature when it began
        # What must succeed once before the first sync (the daemon's start check, when the
        # endpoint did not answer at start): retried like a sync; a failure that retrying
        # cannot fix gives up (``gave_up`` says why).
        self.prepare: Callable[[], None] | None = None
        self.gave_up: str | None = None
        # Is the database removed for good? (replicate --dir: the directory's watcher then
        # lets go of it; until then a failed step is not an error)
        self.gone: Callable[[], bool] | None = None
        self._retention_due = time.monotonic() + min(60.0, self.options.retention_every)
        replicator.on_child_created = self._child_created
        replicator.on_child_dropped = self._child_dropped
        replicator.on_behind = self._behind
        self._poll_started = 0.0

    def run(self, stop: threading.Event) -> bool:
        """Replicate until ``stop`` is set, then ship what is committed. True if the final
        ship succeeded (nothing committed is left behind)."""
        try:
            while not stop.is_set() and self.gave_up is None:
                started = time.monotonic()
                self.step()
                # Polls keep a steady cadence: a slow sync (a large ship) does not add a
                # whole interval on top of itself.
                pause = self._backoff or max(0.0, started + self.options.interval
                                             - time.monotonic())
                stop.wait(pause)
            if self.gave_up is not None:
                return False
            ok = self.step(final=True)
            self.status.state = "stopped" if ok else "failed"
            return ok
        finally:
            self.close()

    def close(self) -> None:
        """Let the background jobs finish (a while at most), let go of the database and the
        lease."""
        self._stop.set()
        if self._job is not None:
            self._job.join(STOP_SNAPSHOT_WAIT)
        if self._compaction is not None:
            self._compaction.join(STOP_SNAPSHOT_WAIT)
        if self._verify is not None:
            self._verify.stop.set()
            self._verify.join(STOP_SNAPSHOT_WAIT)
        self._lock.close()
        self.replicator.close()

    def due(self, now: float) -> bool:
        """Should this follower be stepped at monotonic time ``now``? (scheduler.py) When its
        database changed (a busy one at most once an interval), when something of its own is
        due (a retry, a tail to ship, a background job, compaction, retention, the
        self-check), and once every HEARTBEAT anyway. Costs one pread when idle."""
        if self.gave_up is not None:
            return False
        since = now - self._stepped_at
        if self._backoff:
            return since >= self._backoff
        if since < self.options.interval:
            return False
        r, o = self.replicator, self.options
        if (since >= HEARTBEAT or self.status.behind_since is not None
                or self.status.state != "running" or r.has_pending_child()
                or any(j is not None for j in (self._job, self._compaction, self._verify))
                or (self._shipped_at is not None and r.options.compaction_levels
                    and now - self._compacted_at >= r.options.compaction_levels[0])
                or (self._verify_due is not None and now >= self._verify_due)
                or (o.retention is not None and now >= self._retention_due)):
            return True
        return self._signature() != self._seen

    def _signature(self) -> bytes | None:
        """What changes when the application commits or the WAL restarts: the wal-index
        header at the start of ``-shm`` (None: there is none, or it cannot be read)."""
        try:
            return os.pread(kept_fd(shm_path(self.replicator.db_path)), WAL_INDEX_HEADER_SIZE,
                            0)
        except OSError:
            return None

    def step(self, final: bool = False) -> bool:
        """One poll: ship new frames, maybe checkpoint. Never raises (but on BaseException)."""
        status = self.status
        started = self._poll_started = time.time()
        self._stepped_at = time.monotonic()
        self._seen = self._signature()
        try:
            if self.prepare is not None:
                try:
                    self.prepare()
                except BottomlessError as exc:
                    if not isinstance(exc, UnreachableError):
                        log.error("db=%s event=not_started error=%r: retrying cannot fix "
                                  "it; this database is not replicated", status.db_name,
                                  str(exc))
                        self.give_up(exc)
                    raise
                self.prepare = None
            self._let_go_of_replaced()
            self._lock.acquire()
            result = self.replicator.sync(self._lock)
        except Exception as exc:
            if self.gone is not None and self.gone():
                return False  # removed: whoever watches the directory lets go of it
            if self.gave_up is None:
                self._failed(exc, started, final)
            return False
        status.state = "running"
        status.generation = str(result.generation)
        status.generations_started += int(result.new_generation)
        status.snapshots += int(result.new_generation and not result.snapshotless)
        status.frames_shipped += result.frames_shipped
        status.bytes_shipped += result.bytes_shipped
        status.batches_shipped += result.batches_shipped
        status.last_frame = result.last_frame
        status.wal_frames = result.wal_frames
        if result.page_size and not self._noted_page_size:
            self._noted_page_size = True
            note = layout.libsql_page_size_note(result.page_size)
            if note is not None:
                log.warning("db=%s event=libsql_page_size page_size=%d: %s", status.db_name,
                            result.page_size, note)
        status.chain_depth = self.replicator.chain.depth
        if result.caught_up:
            status.last_success = started
            status.behind_since = None
        elif status.behind_since is None:
            status.behind_since = started
        if status.consecutive_failures:
            log.info("db=%s event=recovered after=%d failures", status.db_name,
                     status.consecutive_failures)
        status.consecutive_failures, status.last_error = 0, None
        self._backoff = 0.0
        self._warned = False
        self._reap_job()
        if result.uploaded_anything:
            self._shipped_at = time.time()
        if final:
            return result.caught_up
        self._compact()
        self._self_check(result.caught_up)
        if any(j is not None and j.is_alive() for j in (self._job, self._compaction)):
            try:  # a long background upload must not outlive the lease
                self.replicator.lease.ensure()
            except Exception as exc:
                log.warning("db=%s event=lease_renewal_failed error=%r", status.db_name,
                            str(exc))
        try:
            if result.caught_up and result.wal_frames >= self.options.checkpoint_pages:
                self._checkpoint(result.wal_frames)
            elif result.uploaded_anything:
                self._lock.renew()  # let the app's checkpoints reach what we have shipped
        except Exception as exc:
            log.warning("db=%s event=checkpoint_failed error=%r", status.db_name, str(exc))
        self._retain()
        return True

    def _compact(self) -> None:
        """Start a compaction once a level-1 window has passed, if anything was shipped."""
        job = self._compaction
        if job is not None and not job.is_alive():
            self._compaction = None
            if job.result is not None:
                self.status.packs_written += len(job.result.packs)
        r = self.replicator
        levels = r.options.compaction_levels
        if (self._compaction is not None or not levels or self._shipped_at is None
                or time.monotonic() - self._compacted_at < levels[0] or not r.compaction_due()):
            return
        self._compacted_at = time.monotonic()
        top = levels[-1]
        if time.time() >= (self._shipped_at // top + 1) * top:
            self._shipped_at = None  # every window of every level holding it is sealed now
        self._compaction = CompactionJob(r)
        self._compaction.start()

    def _self_check(self, caught_up: bool) -> None:
        """--verify-every: report a finished check, start the next when it is due."""
        job, status = self._verify, self.status
        if job is not None and not job.is_alive():
            self._verify = None
            out = job.outcome
            if out is not None and out.ok:
                status.verify_last_success, status.verify_last_error = time.time(), None
                log.info("db=%s event=verify_ok generation=%s frame=%d", status.db_name,
                         out.generation, out.frame)
            elif out is not None and out.skipped:
                status.verify_last_error = out.error
                log.info("db=%s event=verify_skipped reason=%r", status.db_name, out.error)
            elif out is not None:
                status.verify_failures += 1
                status.verify_last_error = out.error
                log.error("db=%s event=verify_failed generation=%s frame=%d page=%s error=%r: "
                          "starting a generation with a fresh snapshot", status.db_name,
                          out.generation, out.frame, out.first_bad_page, out.error)
                self.replicator.request_snapshot(f"self-verification failed: {out.error}")
        every = self.options.verify_every
        if (every is None or self._verify is not None or not caught_up
                or self._verify_due is None or time.monotonic() < self._verify_due):
            return
        self._verify_due = time.monotonic() + every
        r = self.replicator

        def position() -> tuple[uuid.UUID, tuple[int, int] | None, int] | None:
            g = r.newest
            if g is None or g.meta is None:
                return None
            return g.id, g.meta.checksum, g.contiguous_frame

        self._verify = VerifyJob(r.db_path, r.db_name, lambda: r.storage, position)
        self._verify.start()

    def give_up(self, exc: BaseException) -> None:
        """Stop following this database for good: what failed cannot be fixed by retrying
        (no bucket, refused credentials, no database file when the daemon started)."""
        status = self.status
        self.gave_up = status.last_error = str(exc) or type(exc).__name__
        status.state = "failed"
        kind = error_kind(exc)
        status.errors[kind] = status.errors.get(kind, 0) + 1

    def _let_go_of_replaced(self) -> None:
        """A database replaced under us (``mv new.db app.db``) or removed: close our read
        transaction on the old file (SQLite, closing it last, copies its WAL into it and
        removes that WAL), then the descriptors this process keeps of it, once a background
        snapshot no longer pins it. The next acquire opens what is at the path now."""
        r = self.replicator
        if self._lock.replaced():
            log.warning("db=%s event=database_replaced path=%s: the file was replaced or "
                        "removed; letting go of the old one%s", r.db_name, r.db_path,
                        " (its frames not shipped yet are not shipped)"
                        if self.status.behind_since is not None else "")
            self._lock.close()
            self._old_file_open = True
        if self._old_file_open and (self._job is None or not self._job.pinning):
            close_replaced([r.db_path, shm_path(r.db_path)])
            self._old_file_open = False

    def _retain(self) -> None:
        """Remove the generations that no point of the retention window needs (the one that
        covers the window's start, and every generation a kept one restores through, stay)."""
        window = self.options.retention
        if window is None or time.monotonic() < self._retention_due:
            return
        self._retention_due = time.monotonic() + self.options.retention_every
        r = self.replicator
        try:
            since = datetime.fromtimestamp(time.time() - window, tz=UTC)
            plan = plan_removal(r.storage, r.db_name, older_than=since)
            if plan.remove:
                r.lease.ensure()  # a write, like any other of the lease holder's
                done = remove_generations(r.storage, r.db_name, plan)
                self.status.generations_removed += done.generations
                log.info("db=%s event=retention removed=%d objects=%d kept=%d window_start=%s",
                         r.db_name, done.generations, done.objects, len(plan.keep),
                         since.isoformat())
        except Exception as exc:  # tried again at the next retention run
            log.warning("db=%s event=retention_failed error=%r", r.db_name, str(exc))

    def _checkpoint(self, wal_frames: int) -> None:
        if time.monotonic() < self._checkpoint_not_before:
            return
        if self._job is not None and self._job.pinning:
            return  # its read transaction keeps every frame out of the main file for now
        r = self.replicator
        why = None
        # A background snapshot keeps the main file pinned while it is compressed, and nothing
        # can be checkpointed meanwhile: while writes outrun our checkpoints (the WAL holds
        # several times checkpoint_pages), it waits for a calmer checkpoint.
        policy = self.options.snapshots
        calm = (wal_frames < BUSY_FACTOR * self.options.checkpoint_pages
                or r.chain.depth + 1 >= min(2 * policy.max_chain, HARD_MAX_CHAIN))
        if self._job is None and calm:
            try:
                db_size = max(r.db_bytes, r.db_path.stat().st_size)
            except OSError:
                db_size = r.db_bytes
            why = policy.due(r.chain, db_size, time.time())
        outcome = r.checkpoint(self._lock, pin=why is not None, busy_ms=CHECKPOINT_BUSY_MS,
                               truncate=wal_frames >= self.options.emergency_pages)
        if not outcome.done:
            if outcome.busy:
                self._checkpoint_not_before = (time.monotonic()
                                               + CHECKPOINT_RETRY_POLLS * self.options.interval)
                self._checkpoint_blocked(wal_frames)
            return
        self._checkpoint_unblocked()
        self.status.checkpoints += 1
        if outcome.pinned is not None and outcome.child is not None:
            log.info("db=%s event=snapshot_started generation=%s reason=%r",
                     self.status.db_name, outcome.child, why)
            self._job = SnapshotJob(r, outcome.pinned, outcome.child, self._stop)
            self._job.start()
        r.ship_tail()  # a failure is retried by the next sync, before anything else

    def _checkpoint_blocked(self, wal_frames: int) -> None:
        """Our checkpoint could not copy the WAL back (a reader of the app's holds an older
        snapshot, or its writer never paused): said once at INFO; once the WAL has grown
        past WARN_FACTOR x checkpoint_pages meanwhile, warned once, and kept in the status
        until a checkpoint gets through."""
        status = self.status
        if status.checkpoint_blocked_since is None:
            status.checkpoint_blocked_since = time.time()
            log.info("db=%s event=checkpoint_busy wal_frames=%d", status.db_name, wal_frames)
        else:
            log.debug("db=%s event=checkpoint_busy wal_frames=%d", status.db_name, wal_frames)
        if status.warning is None and wal_frames >= WARN_FACTOR * self.options.checkpoint_pages:
            blocked = time.time() - status.checkpoint_blocked_since
            status.warning = (f"checkpoints blocked for {blocked:.0f}s, WAL at {wal_frames} "
                              "frames: a long read transaction of the application (or a "
                              "writer that never pauses) keeps them from copying the WAL back")
            log.warning("db=%s event=checkpoint_blocked wal_frames=%d blocked_seconds=%.0f: "
                        "a long read transaction of the application (or a writer that never "
                        "pauses) keeps the daemon's checkpoints from copying the WAL back, so "
                        "the WAL grows until it ends", status.db_name, wal_frames, blocked)

    def _checkpoint_unblocked(self) -> None:
        status = self.status
        if status.warning is not None:
            log.info("db=%s event=checkpoint_unblocked after=%.0fs", status.db_name,
                     time.time() - (status.checkpoint_blocked_since or time.time()))
        status.checkpoint_blocked_since = status.warning = None

    def _behind(self) -> None:
        """A sync found committed frames to ship: the lag counts from this poll's start, so
        that a long ship shows in the status while it runs."""
        if self.status.behind_since is None:
            self.status.behind_since = self._poll_started

    def _child_created(self, child: uuid.UUID) -> None:
        if self._job is not None and self._job.child == child:
            self._job.created.set()

    def _child_dropped(self, child: uuid.UUID) -> None:
        if self._job is not None and self._job.child == child:
            self._job.dropped.set()

    def _reap_job(self) -> None:
        job = self._job
        if job is not None and not job.is_alive():
            self._job = None
            if job.ok:
                self.status.snapshots += 1
                self.status.chain_depth = self.replicator.chain.depth

    def _failed(self, exc: Exception, started: float, final: bool) -> None:
        status = self.status
        status.state = "retrying"
        status.last_error = str(exc) or type(exc).__name__
        status.consecutive_failures += 1
        kind = error_kind(exc)
        status.errors[kind] = status.errors.get(kind, 0) + 1
        if status.behind_since is None:
            status.behind_since = started
        self._backoff = min(self.options.max_backoff,
                            max(FIRST_BACKOFF, self._backoff * 2 or FIRST_BACKOFF))
        if isinstance(exc, BottomlessError):
            log.error("db=%s event=sync_failed failures=%d retry_in=%.0fs error=%r",
                      status.db_name, status.consecutive_failures, self._backoff, str(exc))
        else:  # not one of ours: a bug or an unexpected local failure; keep the traceback
            log.exception("db=%s event=sync_failed failures=%d retry_in=%.0fs error=%r",
                          status.db_name, status.consecutive_failures, self._backoff,
                          f"{type(exc).__name__}: {exc}")
        wal_frames = _wal_frames(self.replicator)
        status.wal_frames = max(status.wal_frames, wal_frames)
        if (not self._warned and not final
                and wal_frames >= WARN_FACTOR * self.options.checkpoint_pages):
            self._warned = True
            log.warning("db=%s event=wal_growing wal_frames=%d: frames cannot be shipped, so "
                        "the WAL cannot be checkpointed and keeps growing until shipping "
                        "works again", status.db_name, wal_frames)


def error_kind(exc: BaseException) -> str:
    """A short, stable label for metrics: storage, local, lease, corrupt, config, bug."""
    from .errors import (
        ConfigError,
        CorruptBackupError,
        LeaseHeldError,
        LocalDatabaseError,
        StorageError,
    )

    for cls, kind in ((StorageError, "storage"), (LocalDatabaseError, "local"),
                      (LeaseHeldError, "lease"), (CorruptBackupError, "corrupt"),
                      (ConfigError, "config"), (OSError, "local")):
        if isinstance(exc, cls):
            return kind
    return "unexpected"


def _wal_frames(replicator: Replicator) -> int:
    """Frames in the local WAL file by its size (cheap; for warnings only)."""
    newest = replicator.newest
    page_size = newest.meta.page_size if newest is not None and newest.meta else 4096
    try:
        size = wal_path(replicator.db_path).stat().st_size
    except OSError:
        return 0
    return max(0, (size - WAL_HEADER_SIZE) // (FRAME_HEADER_SIZE + page_size))
