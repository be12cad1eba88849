"""The local database: checks, the read transaction that pins the WAL, the write gate used
around our own checkpoints, and the POSIX-lock rules that keep the application's locks alive."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .codec import CHUNK
from .dbheader import DB_HEADER_SIZE, DbHeader, NotSQLiteError, parse_db_header
from .errors import LocalDatabaseError
from .wal import WAL_INDEX_HEADER_SIZE, WalIndexHeader, parse_wal_index_header

BUSY_TIMEOUT_MS = 5000  # how long our read transaction waits for a writer's lock (Litestream: 1s)
INDEX_READ_TRIES = 50  # re-reads of a wal-index header caught mid-update before giving up
NBACKFILL_OFFSET = 96  # the checkpoint-info block of -shm starts with nBackfill (u32, native)
# Lock bytes (fcntl) that every SQLite connection holds for as long as it has the file open:
# in -shm the "DMS" byte (offset 120 + 8 locks), in a rollback-journal database the SHARED range.
SHM_DMS_BYTE = 128
GATE_RETRY = 0.0005  # seconds between attempts to take the write lock around our checkpoint
PENDING_BYTE = 0x40000000


def resolve_db_path(path: Path) -> Path:
    """The database's real path: SQLite writes -wal and -shm beside the link's target, so
    every path derived from the database must come from here."""
    return Path(os.path.realpath(path))


def sqlite_uri(path: Path, query: str) -> str:
    """A ``file:`` URI of ``path`` for sqlite3.connect(uri=True): percent-encoded, so that a
    path holding '%', '?' or '#' (``eu%2Facme.db``) names that very file."""
    return f"{path.resolve().as_uri()}?{query}"


def wal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wal")


def shm_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-shm")


_KEPT_FDS: dict[tuple[int, int], int] = {}
_KEPT_PATHS: dict[tuple[int, int], str] = {}  # where each kept file was (real path)
_KEPT_LOCK = threading.Lock()


def kept_fd(path: Path) -> int:
    """A read-only descriptor of ``path`` that this process shares and never closes.

    POSIX locks belong to a process, and closing *any* descriptor of a file drops all of the
    process's locks on it: SQLite's SHARED lock on the database, the WAL read locks on -shm,
    for every connection in the process (ours, and an application's when this library runs
    inside it). SQLite itself keeps such descriptors open for the same reason. Costs one
    descriptor per database file (and -shm file) per process.
    """
    st = os.stat(path)
    with _KEPT_LOCK:
        fd = _KEPT_FDS.get((st.st_dev, st.st_ino))
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            opened = os.fstat(fd)
            # If the path was replaced in between, this is another file's descriptor: keep it
            # under that file's key (closing it would be the very thing we avoid).
            key = (opened.st_dev, opened.st_ino)
            fd = _KEPT_FDS.setdefault(key, fd)
            _KEPT_PATHS.setdefault(key, os.path.realpath(path))
        return fd


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def close_replaced(paths: Iterable[Path]) -> int:
    """Close the kept descriptors of files that were at ``paths`` and are no longer (a
    database replaced by ``mv new.db app.db``, a -shm that SQLite removed): they would keep
    the old file, and its disk space, for the life of the process. Only once no connection
    of this process has such a file open (closing drops its POSIX locks). Returns how many."""
    wanted = {os.path.realpath(p) for p in paths}
    closed = 0
    with _KEPT_LOCK:
        for key, where in list(_KEPT_PATHS.items()):
            if where in wanted and file_identity(Path(where)) != key:
                del _KEPT_PATHS[key]
                os.close(_KEPT_FDS.pop(key))
                closed += 1
    return closed


def db_fd(db_path: Path) -> int:
    """kept_fd() of a database file, with one clear error when it cannot be one."""
    try:
        if stat.S_ISDIR(os.stat(db_path).st_mode):
            raise LocalDatabaseError(f"{db_path}: is a directory, not a database")
        return kept_fd(db_path)
    except FileNotFoundError:
        raise LocalDatabaseError(f"{db_path}: no such database file") from None
    except OSError as exc:
        raise LocalDatabaseError(f"{db_path}: cannot read ({exc.strerror})") from None


def read_db_header(db_path: Path) -> DbHeader:
    """Check that ``db_path`` is an SQLite database in WAL mode and return its header."""
    try:
        head = os.pread(db_fd(db_path), DB_HEADER_SIZE, 0)
    except OSError as exc:
        raise LocalDatabaseError(f"{db_path}: cannot read ({exc.strerror})") from None
    return check_db_header(db_path, head)


def check_db_header(db_path: Path, head: bytes) -> DbHeader:
    if not head:
        raise LocalDatabaseError(f"{db_path}: database file is empty")
    try:
        header = parse_db_header(head)
    except NotSQLiteError:
        raise LocalDatabaseError(f"{db_path}: not an SQLite database") from None
    if not header.wal_mode:
        raise LocalDatabaseError(
            f"{db_path}: database is not in WAL mode (rollback journal); "
            "run 'PRAGMA journal_mode=WAL' on it first")
    return header


class ReadLock:
    """A read transaction that pins the WAL: no checkpoint can restart it under frames that
    our snapshot can see, and checkpoints copy frames into the main file only up to that
    snapshot. Never writes; sets no pragma that persists.

    If ours is the last connection to close, SQLite checkpoints and removes the WAL; the next
    run then sees a new WAL and starts a new generation, which loses nothing.

    The main database file and -shm are read only through kept_fd() descriptors, never
    opened and closed (see kept_fd: that would drop every connection's locks in the process).
    """

    def __init__(self, db_path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.db_path = resolve_db_path(db_path)
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # the file our connection has open
        self._opening: tuple[int, int] | None = None  # ...and the one _connect() opened
        self._held = False
        # Incremented whenever the read transaction is let go: a proof that "nothing could
        # restart the WAL since then" holds only while the epoch it was made in lasts.
        self.epoch = 0

    @property
    def fd(self) -> int:
        return db_fd(self.db_path)

    def db_header(self) -> DbHeader:
        return read_db_header(self.db_path)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The main database file from its start."""
        fd, offset = self.fd, 0
        while chunk := os.pread(fd, size, offset):
            offset += len(chunk)
            yield chunk

    def wal_index(self) -> WalIndexHeader | None:
        """SQLite's wal-index header (the start of -shm), or None if there is none (yet)."""
        try:
            fd = kept_fd(shm_path(self.db_path))
        except OSError:
            return None
        for _ in range(INDEX_READ_TRIES):  # a writer may be updating it this very moment
            try:
                data = os.pread(fd, 2 * WAL_INDEX_HEADER_SIZE, 0)
            except OSError:
                return None
            index = parse_wal_index_header(data)
            if index is not None or len(data) < 2 * WAL_INDEX_HEADER_SIZE:
                return index
            time.sleep(0.001)
        return None

    def backfilled(self) -> int:
        """Frames of the current WAL that checkpoints have copied into the main file."""
        try:
            data = os.pread(kept_fd(shm_path(self.db_path)), 4, NBACKFILL_OFFSET)
        except OSError:
            return 0
        return struct.unpack("=I", data)[0] if len(data) == 4 else 0

    def fingerprint(self) -> tuple[int, int, int, bytes]:
        """Changes whenever anything writes to the main file: its size and times, plus the
        wal-index header and nBackfill (file times are coarse, a checkpoint moves these)."""
        st = os.fstat(self.fd)
        try:
            shm_fd = kept_fd(shm_path(self.db_path))
            index = os.pread(shm_fd, WAL_INDEX_HEADER_SIZE, 0) + os.pread(shm_fd, 4, 96)
        except OSError:
            index = b""
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, index

    def sha256(self) -> str:
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()

    def replaced(self) -> bool:
        """Is the file our connection has open no longer the one at the path (``mv new.db
        app.db``, or removed)? Then ``close`` lets go of it, and the next ``acquire`` opens
        what is there now."""
        if self._conn is None or self._file is None:
            return False
        return file_identity(self.db_path) != self._file

    def _connect(self) -> sqlite3.Connection:
        """A connection of ours, noting which file it opens (before it opens it: a file
        swapped in between is taken for replaced once too often, never missed)."""
        self._opening = file_identity(self.db_path)
        uri = sqlite_uri(self.db_path, "mode=rw")
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                   timeout=self.busy_timeout_ms / 1000, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise LocalDatabaseError(f"{self.db_path}: cannot open database ({exc})") from None
        return conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise LocalDatabaseError(f"{self.db_path}: {exc}") from None

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        if self._held:
            return
        self.db_header()  # never let SQLite open (or create files beside) a non-WAL database
        if self._conn is None:
            self._conn = self._connect()
            self._file = self._opening
        self._begin(self._conn)
        self._held = True

    def renew(self) -> None:
        """Move the pinned snapshot to the current end of the WAL without ever letting go:
        a second connection begins before the first one ends."""
        fresh = self._connect()
        try:
            self._begin(fresh)
        except BaseException:
            fresh.close()
            raise
        if not self._held:
            self.epoch += 1
        old, self._conn, self._held = self._conn, fresh, True
        self._file = self._opening
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            old.close()

    def release(self) -> None:
        if self._conn is not None and self._held:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        if self._held:
            self.epoch += 1
        self._held = False

    def checkpoint_passive(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(PASSIVE)`` on our connection, with the read transaction
        released (the caller re-acquires it); SQLite's (busy, WAL frames, copied)."""
        self.release()
        if self._conn is None:
            self._conn = self._connect()
            self._file = self._opening
        try:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LocalDatabaseError(f"{self.db_path}: checkpoint failed ({exc})") from None
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._file = None

    def __enter__(self) -> ReadLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteGate:
    """SQLite's WAL write lock, held by an empty write transaction on a connection of its own:
    no application commit can happen while it is held. Nothing is ever written through it.

    Used for a few milliseconds around our own checkpoint, so that "every committed frame is
    shipped and copied back" is a fact at one instant, not a race with the next commit.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = resolve_db_path(db_path)
        self._conn: sqlite3.Connection | None = None

    def try_enter(self, busy_ms: int) -> bool:
        """Take the write lock, trying for at most ``busy_ms``. An application that commits
        back to back leaves the lock free only for microseconds between transactions, and
        SQLite's own busy handler sleeps 1 to 100 ms between attempts, so we retry often."""
        uri = sqlite_uri(self.db_path, "mode=rw")
        deadline = time.monotonic() + busy_ms / 1000
        try:
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=0")
            while True:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    return True
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        self.leave()
                        return False
                    time.sleep(GATE_RETRY)
        except sqlite3.DatabaseError as exc:
            self.leave()
            raise LocalDatabaseError(f"{self.db_path}: {exc}") from None

    def truncate_wal(self, busy_ms: int) -> None:
        """End the (empty) write transaction and run a TRUNCATE checkpoint on this
        connection: gives a grown WAL file's space back. Best effort."""
        if self._conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def leave(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()

    def __enter__(self) -> WriteGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


_REPLICATING: set[Path] = set()
_REPLICATING_GUARD = threading.Lock()


class ReplicatorLock:
    """One replicator per database file on this host: two cron entries, or cron and the
    daemon, must never ship the same WAL side by side (their batches would overlap).

    An flock on ``.NAME.bottomless-lock`` beside the database (never on the database file
    itself: on NFS flock is emulated with the byte-range locks SQLite uses), plus a set for
    replicators inside this process, since flock is shared by one process's descriptors.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = resolve_db_path(db_path)
        self.path = self.db_path.with_name(f".{self.db_path.name}.bottomless-lock")
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            holder = self._try()
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise LocalDatabaseError(
                    f"{self.db_path}: another bottomless replicator is already running for this "
                    f"database ({holder}); only one may ship its WAL at a time")
            time.sleep(0.1)

    def _try(self) -> str | None:
        """None when taken, else who holds it."""
        with _REPLICATING_GUARD:
            if self.db_path in _REPLICATING:
                return f"in this process, pid {os.getpid()}"
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise LocalDatabaseError(f"{self.path}: cannot create the replicator lock "
                                         f"file ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                return f"pid {pid}" if pid else "another process"
            try:  # who holds it, for the error another replicator gets
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:  # a full disk, a quota: one line naming the file
                os.close(fd)
                raise LocalDatabaseError(f"{self.path}: cannot write the replicator lock "
                                         f"file ({exc.strerror})") from None
            self._fd = fd
            _REPLICATING.add(self.db_path)
            return None

    def release(self) -> None:
        with _REPLICATING_GUARD:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    if not self.db_path.exists():  # the database is gone (replicate --dir):
                        os.unlink(self.path)  # so is its lock, taken away while held
                os.close(fd)  # closing drops the flock
                _REPLICATING.discard(self.db_path)

    def __enter__(self) -> ReplicatorLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_holder(fd: int, start: int, length: int) -> int | None:
    """The pid of another process holding a lock that conflicts with a write lock on
    [start, start+length) of ``fd`` (F_GETLK takes no lock and releases none)."""
    if sys.platform == "darwin":  # pragma: no cover - struct flock differs
        return None
    query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    try:
        got = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    kind, _, _, _, pid = struct.unpack("hhqqi", got)
    return pid if kind != fcntl.F_UNLCK else None


def open_by_another_process(db_path: Path) -> int | None:
    """The pid of a process that has ``db_path`` open through SQLite, if any.

    A WAL-mode connection holds a shared lock on the -shm "DMS" byte for as long as it is
    open; a rollback-journal connection holds SHARED while it reads. Locks this process holds
    itself are not reported (POSIX semantics), which is what a caller wants.
    """
    path = resolve_db_path(db_path)
    for target, start, length in ((shm_path(path), SHM_DMS_BYTE, 1),
                                  (path, PENDING_BYTE, 512)):
        try:
            fd = kept_fd(target)
        except OSError:
            continue
        pid = _lock_holder(fd, start, length)
        if pid:
            return pid
    return None


def check_sqlite_file(path: Path) -> tuple[str, DbHeader]:
    """Run ``PRAGMA integrity_check`` on a database file without creating -wal/-shm files."""
    with open(path, "rb") as f:
        try:
            header = parse_db_header(f.read(DB_HEADER_SIZE))
        except NotSQLiteError as exc:
            return str(exc), DbHeader(0, 0, 0, 0, 0)
    # immutable=1: read the file as it is, no locks, no WAL lookup (there is none).
    conn = sqlite3.connect(sqlite_uri(path, "mode=ro&immutable=1"), uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc), header
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:5]), header
