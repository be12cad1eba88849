"""``replicate --dir``: the daemon's side of fleet.py.

Each directory's databases are put on the scheduler as they appear (the bucket checked once
per directory, each database's ReplicatorLock taken) and taken off when they go. One that
cannot be followed (another replicator holds it, its name is another database's, its
follower gave up) is reported and skipped, and the others go on. ``Taken`` is what every
followed database of the daemon holds, the ones listed one by one too: two never share a
file or a name in a bucket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import DatabaseConfig, DirectoryConfig
from .database import ReplicatorLock, file_identity
from .errors import BottomlessError, ConfigError, LocalDatabaseError, UnreachableError
from .fleet import RESCAN, Watcher
from .follower import Follower
from .replicator import Replicator
from .scheduler import Scheduler
from .store.config import same_place
from .tempfiles import remove_stale_in

if TYPE_CHECKING:
    from .daemon import StoreOpener

log = logging.getLogger("bottomless.daemon")


def name_key(db: DatabaseConfig) -> tuple[str | None, str, str]:
    """What two followed databases must not share: a name in one bucket of one server."""
    return same_place(db.endpoint), db.bucket, db.db_name


class Taken:
    """The databases this daemon follows: each one's ReplicatorLock, file and name."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[int, tuple[ReplicatorLock, object, tuple[str | None, str, str]]] = {}
        self._files: dict[object, str] = {}  # file identity -> database name
        self._names: dict[tuple[str | None, str, str], Path] = {}  # name key -> path

    def conflict(self, db: DatabaseConfig) -> str | None:
        """Why ``db`` cannot be followed beside the others, or None."""
        with self._guard:
            other = self._files.get(file_identity(db.path))
            if other is not None:
                return f"the same file as the database {other!r}, followed already"
            path = self._names.get(name_key(db))
            if path is not None:
                return (f"its name {db.db_name!r} in bucket {db.bucket!r} is that of {path}, "
                        "followed already")
        return None

    def take(self, db: DatabaseConfig, follower: Follower, wait: float) -> None:
        """Take ``db``'s ReplicatorLock for ``follower`` (waiting up to ``wait``);
        BottomlessError if another replicator holds it."""
        lock = ReplicatorLock(db.path)
        lock.acquire(wait=wait)
        identity = file_identity(db.path)
        if identity is None:  # removed meanwhile
            lock.release()
            raise LocalDatabaseError(f"{db.path}: no such database file")
        with self._guard:
            self._held[id(follower)] = (lock, identity, name_key(db))
            self._files[identity] = db.db_name
            self._names[name_key(db)] = db.path

    def release(self, follower: Follower) -> None:
        """Let go of what ``follower`` held (it is closed)."""
        with self._guard:
            held = self._held.pop(id(follower), None)
            if held is None:
                return
            lock, identity, key = held
            self._files.pop(identity, None)
            self._names.pop(key, None)
        lock.release()

    def release_all(self) -> None:
        with self._guard:
            locks = [lock for lock, _, _ in self._held.values()]
            self._held.clear()
            self._files.clear()
            self._names.clear()
        for lock in locks:
            lock.release()


@dataclass
class _Watched:
    config: DirectoryConfig
    watcher: Watcher
    check: Callable[[], None]
    checked: bool = False
    followers: dict[str, Follower] = field(default_factory=dict)  # name -> its follower


class DirectoryFollowers:
    """The databases of ``directories``, started and stopped on ``scheduler``."""

    def __init__(self, directories: list[DirectoryConfig], stores: StoreOpener,
                 scheduler: Scheduler, taken: Taken) -> None:
        self.scheduler = scheduler
        self.taken = taken
        self._watched = [_Watched(d, Watcher(d.directory), _checker(d.template, stores))
                         for d in directories]
        self._stores = stores
        self._next_look = 0.0

    def start(self, alone: bool) -> None:
        """Check each directory and its bucket, then the first look. What retrying cannot
        fix raises when the directories are all there is to replicate (``alone``), else
        stops that directory; an endpoint that does not answer is tried again at each
        look."""
        for w in list(self._watched):
            path = w.config.directory.path
            try:
                if not path.is_dir():
                    raise ConfigError(f"{path}: no such directory")
                _remove_stale_below(w)
                self._check(w)
            except BottomlessError as exc:
                if alone and len(self._watched) == 1:
                    raise
                log.error("event=not_started directory=%s error=%r: the other databases go on",
                          path, str(exc))
                self._watched.remove(w)
        if alone and not self._watched:
            raise ConfigError("none of the directories can be replicated (see the log)")
        self.look(time.monotonic())

    def look(self, now: float) -> None:
        """Every RESCAN seconds: follow new databases, let go of gone ones and of those
        whose follower gave up (skipped until they change)."""
        if now < self._next_look:
            return
        self._next_look = now + RESCAN
        for w in list(self._watched):
            try:
                self._look_at(w)
            except BottomlessError as exc:  # what the endpoint said once it answered
                log.error("event=not_started directory=%s error=%r: the other databases go "
                          "on", w.config.directory.path, str(exc))
                self._watched.remove(w)

    def _look_at(self, w: _Watched) -> None:
        if not w.checked and not self._check(w):
            return
        for name, f in list(w.followers.items()):
            if f.gave_up is not None:
                del w.followers[name]
                self.scheduler.remove(f, ship=False)
                w.watcher.refuse(name, w.config.directory.path / name,
                                 f"not replicated: {f.gave_up}")
        new, gone = w.watcher.scan()
        for name in gone:
            f = w.followers.pop(name, None)
            if f is not None:
                log.info("db=%s event=gone path=%s: no longer followed", f.status.db_name,
                         f.status.path)
                self.scheduler.remove(f, ship=False)
        for name, path in new:
            self._follow(w, name, path)

    def _check(self, w: _Watched) -> bool:
        """The directory's bucket (once): False while its endpoint does not answer."""
        try:
            w.check()
        except UnreachableError as exc:
            if not w.checked:
                log.warning("event=endpoint_unreachable directory=%s error=%r: trying again "
                            "every %.0fs", w.config.directory.path, str(exc), RESCAN)
            return False
        w.checked = True
        return True

    def _follow(self, w: _Watched, name: str, path: Path) -> None:
        db = w.config.database(name, path)
        why = self.taken.conflict(db)
        if why is not None:  # (or its previous follower, removed, is still closing)
            w.watcher.defer(name, path, why)
            return
        f = Follower(Replicator(db.path, self._stores(db), db.db_name,
                                db.settings.replicate_options()),
                     db.settings.follow_options())
        try:
            self.taken.take(db, f, wait=0.0)
        except BottomlessError as exc:
            w.watcher.defer(name, path, str(exc))
            return
        f.gone = lambda: not path.exists()
        w.watcher.follow(name, path)
        w.followers[name] = f
        self.scheduler.add(f)


def _checker(template: DatabaseConfig, stores: StoreOpener) -> Callable[[], None]:
    def check() -> None:
        stores.prepare(template)
        stores(template).check_bucket()
    return check


def _remove_stale_below(w: _Watched) -> None:
    """Leftovers of killed runs in the directory (and below it, if recursive)."""
    d = w.config.directory
    here = [d.path] if not d.recursive else [Path(p) for p, _, _ in os.walk(d.path)]
    for directory in here:
        for stale in remove_stale_in(directory):
            log.info("event=removed_stale_file path=%s", stale)
