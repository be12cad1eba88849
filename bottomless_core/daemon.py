"""The replicate daemon: one Follower per database, run until SIGTERM/SIGINT.

``run_daemon`` checks what retrying cannot fix, takes each database's ReplicatorLock, removes
temp files a killed run left, serves metrics if asked, installs the signal handlers and runs
the followers, rewriting the status file and logging a summary line as they go. The CLI
chooses how log lines are drawn (``configure_logging`` takes its handler) and prints nothing
here.
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

from .config import DatabaseConfig
from .database import ReplicatorLock, read_db_header, resolve_db_path
from .errors import BottomlessError, ConfigError
from .follower import Follower, FollowerStatus, run_followers
from .metrics import RequestStats, serve
from .replicator import Replicator
from .store.age import with_age
from .store.base import ObjectStore
from .store.config import ServerSideEncryption
from .store.opener import open_backend
from .tempfiles import remove_all_owned, remove_stale

log = logging.getLogger("bottomless.daemon")

SUMMARY_EVERY = 60.0  # seconds between status summary log lines
LOCK_WAIT = 30.0  # seconds the daemon waits for a --once run of the same file to end
NOISY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")

StoreFor = Callable[[DatabaseConfig], ObjectStore]


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


def store_opener(create_bucket: bool = False) -> StoreFor:
    """A function giving each database its bucket's store, one store per (endpoint, bucket,
    server-side encryption), behind the database's age layer (crypto.py); with
    ``create_bucket`` a missing bucket is created when first opened."""
    stores: dict[tuple[str | None, str, ServerSideEncryption | None], ObjectStore] = {}
    wrapped: dict[tuple[int, int], ObjectStore] = {}

    def store_for(db: DatabaseConfig) -> ObjectStore:
        key = (db.endpoint, db.bucket, db.sse)
        if key not in stores:
            stores[key] = open_backend(db.endpoint, db.bucket, sse=db.sse)
            if create_bucket:
                stores[key].ensure_bucket()
        backend = stores[key]
        pair = (id(backend), id(db.age))
        if pair not in wrapped:
            wrapped[pair] = with_age(backend, db.age)
        return wrapped[pair]

    return store_for


def run_daemon(databases: list[DatabaseConfig], store_for: StoreFor,
               status_file: Path | None = None) -> None:
    """Replicate ``databases`` until SIGTERM/SIGINT (a second signal exits at once).

    Raises what retrying cannot fix before starting (no database, no bucket, another
    replicator holding the lock past LOCK_WAIT), and BottomlessError if the shutdown left
    committed frames unshipped.
    """
    for db in databases:  # fail fast on what retrying cannot fix
        read_db_header(db.path)
        store_for(db).check_bucket()
    locks = [ReplicatorLock(db.path) for db in databases]
    try:
        for lock in locks:
            lock.acquire(wait=LOCK_WAIT)
        for db in databases:
            for stale in remove_stale(resolve_db_path(db.path)):
                log.info("event=removed_stale_file path=%s", stale)
        _follow(databases, store_for, status_file)
    finally:
        for lock in locks:
            lock.release()


def summary_line(status: FollowerStatus) -> str:
    """The periodic ``event=status`` log line of one database."""
    return (f"db={status.db_name} event=status state={status.state} "
            f"generation={status.generation} frames_shipped={status.frames_shipped} "
            f"generations_started={status.generations_started} "
            f"lag_seconds={status.lag_seconds():.1f} checkpoints={status.checkpoints} "
            f"last_error={status.last_error!r}")


class StatusFile:
    """The JSON status of every database, rewritten atomically; a failure to write it is
    logged (once per distinct error) and replication goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._errors_seen: set[str] = set()

    def write(self, followers: Iterable[Follower]) -> None:
        data = {"updated": time.time(), "pid": os.getpid(),
                "databases": [f.status.as_dict() for f in followers]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2))
            os.replace(tmp, self.path)
        except OSError as exc:
            if str(exc) not in self._errors_seen:
                self._errors_seen.add(str(exc))
                log.error("event=status_file_failed path=%s error=%r", self.path, str(exc))


def _follow(databases: list[DatabaseConfig], store_for: StoreFor,
            status_file: Path | None) -> None:
    followers = [Follower(Replicator(db.path, store_for(db), db.db_name,
                                     db.settings.replicate_options()),
                          db.settings.follow_options())
                 for db in databases]
    addr = next((db.settings.metrics_addr for db in databases if db.settings.metrics_addr),
                None)
    if addr:
        _serve_metrics(addr, followers)
    stop = threading.Event()
    _install_signal_handlers(stop)
    status = StatusFile(status_file) if status_file is not None else None
    last_summary = time.monotonic()

    def on_tick() -> None:
        nonlocal last_summary
        if status is not None:
            status.write(followers)
        if time.monotonic() - last_summary >= SUMMARY_EVERY:
            last_summary = time.monotonic()
            for f in followers:
                log.info(summary_line(f.status))

    log.info("event=started databases=%d pid=%d", len(followers), os.getpid())
    ok = run_followers(followers, stop, on_tick)
    for f in followers:
        log.info(summary_line(f.status))
    if not ok:
        raise BottomlessError("stopped with committed frames not shipped (see the log); "
                              "the next run ships them")


def _serve_metrics(addr: str, followers: list[Follower]) -> None:
    """Serve Prometheus metrics at ``addr``, counting the requests of every S3 store."""
    requests = RequestStats()
    counted: set[int] = set()
    for f in followers:
        backend = f.replicator.storage.stored  # one backend may serve several databases
        if id(backend) not in counted:
            counted.add(id(backend))
            backend.count_requests(requests.counter(backend.bucket))
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
