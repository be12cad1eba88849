"""Continuous replication: follow every commit, own the checkpoints, survive outages.

One Follower per database. It holds a read transaction at all times (see database.ReadLock),
polls the WAL every ``interval`` and ships new committed frames; past ``checkpoint_pages`` it
ships everything, releases the read transaction and runs a RESTART checkpoint, so that the
app's next write starts a new WAL and with it a new generation. When storage fails it keeps
the frames (the read transaction stops the WAL from being restarted under them), backs off
and catches up when storage returns.

Why RESTART and not PASSIVE: after a PASSIVE checkpoint the WAL restarts only if some writer
begins a transaction at a moment when every frame is already copied back; an app that writes
continuously almost never does, and its WAL grows without bound. RESTART waits (at most
CHECKPOINT_BUSY_MS, blocking new writers meanwhile) for that moment. Litestream forces it
instead with a write to a table of its own; we do not write to the user's database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .database import ReadLock, wal_path
from .errors import BottomlessError
from .replicator import Replicator
from .wal import FRAME_HEADER_SIZE, WAL_HEADER_SIZE

log = logging.getLogger("bottomless.follower")

INTERVAL = 1.0  # seconds between WAL polls (Litestream's DefaultMonitorInterval)
CHECKPOINT_PAGES = 1000  # checkpoint past this many WAL frames (Litestream's MinCheckpointPageN)
EMERGENCY_PAGES = 121_359  # ~500 MB of 4 KiB pages: TRUNCATE, giving the disk space back
CHECKPOINT_BUSY_MS = 1000  # the longest our checkpoint waits for (and blocks) app writers
CHECKPOINT_RETRY_POLLS = 10  # after a busy checkpoint, wait this many polls before another
WARN_FACTOR = 10  # warn when the WAL holds this many times checkpoint_pages (shipping is stuck)
FIRST_BACKOFF = 1.0  # seconds before the first retry after a failed sync
MAX_BACKOFF = 60.0  # cap of the exponential backoff while storage fails


@dataclass(frozen=True)
class FollowOptions:
    interval: float = INTERVAL
    checkpoint_pages: int = CHECKPOINT_PAGES
    emergency_pages: int = EMERGENCY_PAGES
    max_backoff: float = MAX_BACKOFF


@dataclass
class FollowerStatus:
    """What ``status`` reports for one database."""

    db_name: str
    path: str
    state: str = "starting"  # running | retrying | stopped | failed
    generation: str | None = None
    generations_started: int = 0
    frames_shipped: int = 0
    batches_shipped: int = 0
    last_frame: int = 0
    wal_frames: int = 0
    checkpoints: int = 0
    last_success: float | None = None  # unix time of the last sync that shipped everything
    behind_since: float | None = None  # unix time since which committed frames wait to ship
    last_error: str | None = None
    consecutive_failures: int = 0

    def lag_seconds(self, now: float | None = None) -> float:
        if self.behind_since is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.behind_since)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lag_seconds"] = round(self.lag_seconds(), 3)
        return d


class Follower:
    def __init__(self, replicator: Replicator, options: FollowOptions | None = None) -> None:
        self.replicator = replicator
        self.options = options or FollowOptions()
        self.status = FollowerStatus(replicator.db_name, str(replicator.db_path))
        self._lock = ReadLock(replicator.db_path)
        self._backoff = 0.0
        self._checkpointed: tuple[object, int] | None = None
        self._checkpoint_not_before = 0.0
        self._warned = False

    def run(self, stop: threading.Event) -> bool:
        """Replicate until ``stop`` is set, then ship what is committed. True if the final
        ship succeeded (nothing committed is left behind)."""
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self._backoff or self.options.interval)
            ok = self.step(final=True)
            self.status.state = "stopped" if ok else "failed"
            return ok
        finally:
            self._lock.close()

    def step(self, final: bool = False) -> bool:
        """One poll: ship new frames, maybe checkpoint. Never raises a BottomlessError."""
        status = self.status
        started = time.time()
        try:
            self._lock.acquire()
            result = self.replicator.sync(self._lock)
        except BottomlessError as exc:
            self._failed(exc, started, final)
            return False
        status.state = "running"
        status.generation = str(result.generation)
        status.generations_started += int(result.new_generation)
        status.frames_shipped += result.frames_shipped
        status.batches_shipped += result.batches_shipped
        status.last_frame = result.last_frame
        status.wal_frames = result.wal_frames
        status.last_success = started
        status.behind_since = None
        if status.consecutive_failures:
            log.info("db=%s event=recovered after=%d failures", status.db_name,
                     status.consecutive_failures)
        status.consecutive_failures, status.last_error = 0, None
        self._backoff = 0.0
        self._warned = False
        if final:
            return True
        try:
            if result.wal_frames >= self.options.checkpoint_pages:
                self._checkpoint()
            elif result.uploaded_anything:
                self._lock.renew()  # let the app's checkpoints reach what we have shipped
        except BottomlessError as exc:
            log.warning("db=%s event=checkpoint_failed error=%r", status.db_name, str(exc))
        return True

    def _checkpoint(self) -> None:
        key = (self.status.generation, self.status.wal_frames)
        if self._checkpointed == key or time.monotonic() < self._checkpoint_not_before:
            return  # nothing new since our last checkpoint of this WAL, or backing off
        mode = ("TRUNCATE" if self.status.wal_frames >= self.options.emergency_pages
                else "RESTART")
        busy, wal, done = self._lock.checkpoint(mode, CHECKPOINT_BUSY_MS)
        self._checkpointed = key
        self.status.checkpoints += 1
        if busy:
            self._checkpoint_not_before = (time.monotonic()
                                           + CHECKPOINT_RETRY_POLLS * self.options.interval)
        log.info("db=%s event=checkpoint mode=%s busy=%d wal_frames=%d checkpointed=%d",
                 self.status.db_name, mode, busy, wal, done)

    def _failed(self, exc: BottomlessError, started: float, final: bool) -> None:
        status = self.status
        status.state = "retrying"
        status.last_error = str(exc)
        status.consecutive_failures += 1
        if status.behind_since is None:
            status.behind_since = started
        self._backoff = min(self.options.max_backoff,
                            max(FIRST_BACKOFF, self._backoff * 2 or FIRST_BACKOFF))
        log.error("db=%s event=sync_failed failures=%d retry_in=%.0fs error=%r", status.db_name,
                  status.consecutive_failures, self._backoff, str(exc))
        wal_frames = _wal_frames(self.replicator)
        status.wal_frames = max(status.wal_frames, wal_frames)
        if (not self._warned and not final
                and wal_frames >= WARN_FACTOR * self.options.checkpoint_pages):
            self._warned = True
            log.warning("db=%s event=wal_growing wal_frames=%d: frames cannot be shipped, so "
                        "the WAL cannot be checkpointed and keeps growing until storage "
                        "returns", status.db_name, wal_frames)


def _wal_frames(replicator: Replicator) -> int:
    """Frames in the local WAL file by its size (cheap; for warnings only)."""
    newest = replicator.newest
    page_size = newest.meta.page_size if newest is not None and newest.meta else 4096
    try:
        size = wal_path(replicator.db_path).stat().st_size
    except OSError:
        return 0
    return max(0, (size - WAL_HEADER_SIZE) // (FRAME_HEADER_SIZE + page_size))


def run_followers(followers: list[Follower], stop: threading.Event,
                  on_tick: Callable[[], None] | None = None, tick: float = 1.0) -> bool:
    """Run every follower in its own thread until ``stop``; True if all shut down clean."""
    results: dict[int, bool] = {}

    def target(i: int, f: Follower) -> None:
        try:
            results[i] = f.run(stop)
        except Exception:  # a bug: log it, do not take the other databases down
            log.exception("db=%s event=crashed", f.status.db_name)
            f.status.state = "failed"
            results[i] = False

    threads = [threading.Thread(target=target, args=(i, f), name=f"follow-{f.status.db_name}",
                                daemon=True) for i, f in enumerate(followers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick()
        for t in threads:
            t.join(timeout=tick / max(1, len(threads)))
    if on_tick is not None:
        on_tick()
    return all(results.get(i, False) for i in range(len(followers)))
