"""The replicate daemon: one Follower per database, run until SIGTERM/SIGINT.

``run_daemon`` checks what retrying cannot fix, takes each database's ReplicatorLock, removes
temp files a killed run left, serves metrics if asked, installs the signal handlers and runs
the followers on a few worker threads (scheduler.py), rewriting the status file and logging a
summary line as they go. The CLI chooses how log lines are drawn (``configure_logging`` takes
its handler) and prints nothing here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import DatabaseConfig, DirectoryConfig
from .database import read_db_header
from .directories import DirectoryFollowers, Taken
from .errors import BottomlessError, ConfigError, UnreachableError
from .follower import Follower
from .lease import system_id
from .metrics import RequestStats, serve
from .replicator import Replicator
from .report import Reporter, raise_open_files_limit
from .scheduler import Scheduler
from .store.age import with_age
from .store.base import ObjectStore
from .store.config import ServerSideEncryption, same_place
from .store.opener import open_backend
from .tempfiles import remove_all_owned, remove_stale

log = logging.getLogger("bottomless.daemon")

LOCK_WAIT = 30.0  # seconds the daemon waits for a --once run of the same file to end
NOISY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def configure_logging(handler: logging.Handler, debug: bool) -> None:
    """Make ``handler`` the root logger's only one; INFO (DEBUG with ``debug``), the AWS
    libraries at WARNING unless ``debug``."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


class StoreOpener:
    """Each database's store: one backend per (endpoint, bucket, server-side encryption),
    behind the database's age layer (store/age.py). Opening sends no request; with
    ``create_bucket``, ``prepare`` creates a missing bucket (once per backend)."""

    def __init__(self, create_bucket: bool = False) -> None:
        self.create_bucket = create_bucket
        self._backends: dict[tuple[str | None, str, ServerSideEncryption | None],
                             ObjectStore] = {}
        self._wrapped: dict[tuple[int, int], ObjectStore] = {}
        self._ready: set[int] = set()
        self._guard = threading.Lock()
        self._on_backend: list[Callable[[ObjectStore], None]] = []

    def __call__(self, db: DatabaseConfig) -> ObjectStore:
        key = (same_place(db.endpoint), db.bucket, db.sse)
        with self._guard:
            if key not in self._backends:
                self._backends[key] = open_backend(db.endpoint, db.bucket, sse=db.sse)
                for call in self._on_backend:
                    call(self._backends[key])
            backend = self._backends[key]
            pair = (id(backend), id(db.age))
            if pair not in self._wrapped:
                self._wrapped[pair] = with_age(backend, db.age)
            return self._wrapped[pair]

    def on_backend(self, call: Callable[[ObjectStore], None]) -> None:
        """``call(backend)`` for every backend opened so far and from now on."""
        with self._guard:
            self._on_backend.append(call)
            for backend in self._backends.values():
                call(backend)

    def prepare(self, db: DatabaseConfig) -> None:
        """With ``create_bucket``: create the database's bucket unless it exists."""
        backend = self(db).stored
        if self.create_bucket and id(backend) not in self._ready:
            backend.ensure_bucket()
            self._ready.add(id(backend))


def run_daemon(databases: list[DatabaseConfig], stores: StoreOpener,
               status_file: Path | None = None,
               directories: list[DirectoryConfig] | None = None) -> None:
    """Replicate ``databases`` and the databases of ``directories`` (directories.py) until
    SIGTERM/SIGINT (a second signal exits at once).

    What retrying cannot fix (no database file, no bucket, refused credentials, another
    replicator holding the lock past LOCK_WAIT) stops a database before it starts: with one
    database, the daemon (raised at once); with several, that database alone, the others go
    on and the daemon exits with an error when it stops (or when none is left). An endpoint
    that cannot be reached is retried with backoff, and reported, until it answers. Raises
    BottomlessError too if the shutdown left committed frames unshipped.
    """
    directories = directories or []
    alone = len(databases) == 1 and not directories
    raise_open_files_limit()
    taken = Taken()
    scheduler = Scheduler(on_closed=taken.release)
    followers = [_follower(db, stores, alone) for db in databases]
    try:
        for db, f in zip(databases, followers, strict=True):
            if f.gave_up is not None:
                continue
            try:
                taken.take(db, f, wait=LOCK_WAIT)
            except BottomlessError as exc:
                _not_started(f, exc, alone)
                continue
            for stale in remove_stale(f.replicator.db_path):
                log.info("event=removed_stale_file path=%s", stale)
        for f in followers:
            scheduler.add(f)
        fleet = None
        if directories:
            fleet = DirectoryFollowers(directories, stores, scheduler, taken)
            fleet.start(alone=not databases)
        settings = [db.settings for db in databases] + [d.template.settings
                                                        for d in directories]
        addr = next((s.metrics_addr for s in settings if s.metrics_addr), None)
        _follow(scheduler, followers, fleet, stores, addr, status_file)
    finally:
        taken.release_all()


def _follower(db: DatabaseConfig, stores: StoreOpener, alone: bool) -> Follower:
    """The database's Follower, its start checked: what retrying cannot fix stops it (or
    the daemon, ``alone``); an endpoint that does not answer leaves the check to the
    Follower, which retries it."""
    store = stores(db)  # (a bad endpoint is the configuration's: it stops everything)
    f = Follower(Replicator(db.path, store, db.db_name, db.settings.replicate_options()),
                 db.settings.follow_options())

    def check() -> None:
        stores.prepare(db)
        store.check_bucket()

    try:
        read_db_header(db.path)
        check()
    except UnreachableError as exc:
        log.warning("db=%s event=endpoint_unreachable error=%r: retrying until it answers",
                    db.db_name, str(exc))
        f.prepare = check
    except BottomlessError as exc:
        _not_started(f, exc, alone)
    return f


def _not_started(f: Follower, exc: BottomlessError, alone: bool) -> None:
    if alone:
        raise exc
    log.error("db=%s event=not_started error=%r: the other databases go on", f.status.db_name,
              str(exc))
    f.give_up(exc)


class StatusFile:
    """The JSON status of every database, rewritten atomically; a failure to write it is
    logged (once per distinct error) and replication goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.system = system_id()  # where the pid means something (``status`` checks it)
        self._errors_seen: set[str] = set()

    def write(self, followers: Iterable[Follower]) -> None:
        data = {"updated": time.time(), "pid": os.getpid(), "system": self.system,
                "databases": [f.status.as_dict() for f in followers]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2))
            os.replace(tmp, self.path)
        except OSError as exc:
            if str(exc) not in self._errors_seen:
                self._errors_seen.add(str(exc))
                log.error("event=status_file_failed path=%s error=%r", self.path, str(exc))


def _follow(scheduler: Scheduler, listed: list[Follower], fleet: DirectoryFollowers | None,
            stores: StoreOpener, metrics_addr: str | None, status_file: Path | None) -> None:
    """Run the scheduler until a signal; ``listed``: the databases given one by one."""
    if fleet is None and all(f.gave_up is not None for f in listed):
        _raise_gave_up(listed)
    if metrics_addr:
        _serve_metrics(metrics_addr, scheduler, stores)
    stop = threading.Event()
    _install_signal_handlers(stop)
    status = StatusFile(status_file) if status_file is not None else None
    report = Reporter(scheduler)

    def on_tick() -> None:
        now = time.monotonic()
        if fleet is not None:
            fleet.look(now)
        if status is not None and report.status_due(now):
            status.write(scheduler)
        report.tick(now)

    log.info("event=started databases=%d pid=%d", len(scheduler), os.getpid())
    ok = scheduler.run(stop, on_tick)
    if status is not None:  # how each one stopped
        status.write(scheduler.stopped)
    report.followers = scheduler.stopped
    report.summary()
    _raise_gave_up(listed)
    if not ok:
        raise BottomlessError("stopped with committed frames not shipped (see the log); "
                              "the next run ships them")


def _raise_gave_up(followers: list[Follower]) -> None:
    """One error line naming every database that was not replicated, and why."""
    gave_up = [f for f in followers if f.gave_up is not None]
    if gave_up:
        raise BottomlessError(f"{len(gave_up)} of {len(followers)} databases not replicated: "
                              + "; ".join(f"{f.status.db_name}: {f.gave_up}" for f in gave_up))


def _serve_metrics(addr: str, followers: Scheduler, stores: StoreOpener) -> None:
    """Serve Prometheus metrics at ``addr``, counting the requests of every S3 store (those
    opened later, for databases found in a directory, too)."""
    requests = RequestStats()
    stores.on_backend(lambda backend: backend.count_requests(requests.counter(backend.bucket)))
    try:
        serve(addr, followers, requests)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--metrics-addr {addr}: cannot serve metrics there ({exc})") from None
    log.info("event=metrics addr=%s", addr)


def _install_signal_handlers(stop: threading.Event) -> None:
    """The first SIGTERM/SIGINT sets ``stop`` (ship what is committed, then exit); a second
    exits at once, leaving unshipped frames in the WAL for the next run."""
    seen: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        seen.append(signum)
        if len(seen) > 1:
            remove_all_owned()
            os.write(2, b"error: second signal: exiting at once, unshipped frames stay in the "
                        b"WAL for the next run\n")
            os._exit(128 + signum)
        log.info("event=stopping signal=%s: shipping what is committed",
                 signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
