"""The daemon's followers on a few worker threads (issue 19: a thousand databases on a host).

One thread per database made 1,512 threads for 1,000 databases and a core's worth of CPU
spent polling databases nobody wrote. Here a loop looks at every follower every TICK: a
follower whose database changed (the wal-index header in ``-shm``: one pread) or that has
work of its own due (a retry, a tail to ship, a background job, compaction, retention,
self-verification, a heartbeat) is given to a worker for one ``step``. An idle database costs
that pread and no request at all. A commit after a quiet spell is shipped at the next tick
(~0.1 s after COMMIT) instead of at the next poll; a busy database is stepped at most once
per ``interval``, so its PUTs do not grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .follower import Follower

log = logging.getLogger("bottomless.scheduler")

TICK = 0.1  # seconds between looks at every follower
WORKERS = 8  # followers stepped side by side (a snapshot upload holds one for its length)
STATUS_EVERY = 1.0  # seconds between on_tick calls (the status file)


class Scheduler:
    """Runs followers until stopped; followers may be added and removed while it runs."""

    def __init__(self, workers: int = WORKERS, tick: float = TICK,
                 on_closed: Callable[[Follower], None] | None = None) -> None:
        self.tick = tick
        self.on_closed = on_closed  # called once a follower is closed (its lock let go of)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="follow")
        self._followers: list[Follower] = []
        self._running: dict[int, Future[bool]] = {}  # id(follower) -> its step
        self._leaving: list[tuple[Follower, bool]] = []  # removed: closing still to do
        self._guard = threading.Lock()
        self.results: dict[int, bool] = {}  # id(follower) -> its final step succeeded
        self.stopped: list[Follower] = []  # those still followed when it stopped

    @property
    def followers(self) -> list[Follower]:
        with self._guard:
            return list(self._followers)

    def __iter__(self) -> Iterator[Follower]:  # the metrics and the status file read it
        return iter(self.followers)

    def __len__(self) -> int:
        return len(self._followers)

    def add(self, follower: Follower) -> None:
        with self._guard:
            self._followers.append(follower)

    def remove(self, follower: Follower, ship: bool = True) -> None:
        """Stop following: its final step ships what is committed (unless not ``ship``: the
        database is gone), then it is closed."""
        with self._guard:
            if follower in self._followers:
                self._followers.remove(follower)
                self._leaving.append((follower, ship))

    def run(self, stop: threading.Event, on_tick: Callable[[], None] | None = None) -> bool:
        """Step the followers until ``stop``; then each one's final step (``stopped`` holds
        them then). True if every final step shipped what was committed."""
        last_status = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._reap()
                for f in self.followers:
                    if id(f) in self._running:
                        continue
                    try:
                        due = f.due(now)
                    except Exception:  # a bug: do not take the other databases down
                        log.exception("db=%s event=crashed", f.status.db_name)
                        f.status.state = "failed"
                        self.remove(f)
                        continue
                    if due:
                        self._running[id(f)] = self._pool.submit(self._step, f)
                self._finish_leaving()
                if on_tick is not None and now - last_status >= STATUS_EVERY:
                    last_status = now
                    _call(on_tick, "tick")
                stop.wait(self.tick)
            return self._shut_down()
        finally:
            self._pool.shutdown(wait=False)

    def _step(self, f: Follower) -> bool:
        try:
            return f.step()
        except Exception:  # a bug in one database's handling: logged, retried
            log.exception("db=%s event=step_crashed", f.status.db_name)
            return False

    def _reap(self) -> None:
        for key in [k for k, fut in self._running.items() if fut.done()]:
            del self._running[key]

    def _finish_leaving(self) -> None:
        with self._guard:
            leaving = [(f, s) for f, s in self._leaving if id(f) not in self._running]
            self._leaving = [(f, s) for f, s in self._leaving if id(f) in self._running]
        for f, ship in leaving:
            self._pool.submit(self._final, f, ship)

    def _final(self, f: Follower, ship: bool = True) -> bool:
        """The follower's final step (with ``ship``), then it is closed. True if what was
        committed is shipped (or was not to be)."""
        ok = True
        try:
            if ship:
                ok = f.gave_up is None and f.step(final=True)
                f.status.state = ("failed" if f.gave_up is not None else
                                  "stopped" if ok else "failed")
            else:
                f.status.state = "stopped"
        except Exception:
            log.exception("db=%s event=crashed", f.status.db_name)
            f.status.state, ok = "failed", False
        finally:
            try:
                f.close()
            finally:
                if self.on_closed is not None:
                    _call(lambda: self.on_closed(f), "closed")  # type: ignore[misc]
        if ship:
            self.results[id(f)] = ok
        return ok

    def _shut_down(self) -> bool:
        for fut in list(self._running.values()):
            fut.result()
        self._running.clear()
        with self._guard:
            everyone = [(f, True) for f in self._followers] + self._leaving
            self.stopped = [f for f, _ in everyone]
            self._followers, self._leaving = [], []
        finals = [self._pool.submit(self._final, f, ship) for f, ship in everyone]
        return all(fut.result() for fut in finals) and all(self.results.values())


def _call(fn: Callable[[], None], what: str) -> None:
    try:
        fn()
    except Exception:  # e.g. the status file cannot be written: keep replicating
        log.exception("event=%s_failed", what)
