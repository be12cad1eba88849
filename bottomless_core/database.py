"""The local database: checks, the read transaction that pins the WAL, and WAL capture."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .codec import CHUNK, Codec, Encoder
from .dbheader import DB_HEADER_SIZE, DbHeader, NotSQLiteError, parse_db_header
from .errors import LocalDatabaseError
from .wal import (
    WAL_HEADER_SIZE,
    WAL_INDEX_HEADER_SIZE,
    Checksum,
    FrameChain,
    WalFormatError,
    WalHeader,
    WalIndexHeader,
    parse_wal_header,
    parse_wal_index_header,
)

BUSY_TIMEOUT_MS = 5000  # how long our read transaction waits for a writer's lock (Litestream: 1s)
WAL_READ_FRAMES = 256  # frames read per WAL read() call
SPOOL_MEMORY = 32 << 20  # captured frames stay in memory up to this, then spill to a temp file


def wal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wal")


def shm_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-shm")


_KEPT_FDS: dict[tuple[int, int], int] = {}
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
            fd = _KEPT_FDS.setdefault((opened.st_dev, opened.st_ino), fd)
        return fd


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
        self.db_path = db_path
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._held = False

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
        """SQLite's wal-index header (the start of -shm), or None if there is none yet."""
        try:
            data = os.pread(kept_fd(shm_path(self.db_path)), 2 * WAL_INDEX_HEADER_SIZE, 0)
        except OSError:
            return None
        return parse_wal_index_header(data)

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

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{self.db_path.resolve()}?mode=rw"
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
        old, self._conn, self._held = self._conn, fresh, True
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            old.close()

    def release(self) -> None:
        if self._conn is not None and self._held:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        self._held = False

    def checkpoint(self, mode: str = "RESTART", busy_timeout_ms: int | None = None,
                   ) -> tuple[int, int, int]:
        """Run ``PRAGMA wal_checkpoint(mode)`` with the lock released; return SQLite's
        (busy, WAL frames, frames checkpointed). Re-acquires the lock afterwards."""
        assert mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
        self.release()
        if self._conn is None:
            self._conn = self._connect()
        timeout = self.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        try:
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
            row = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LocalDatabaseError(f"{self.db_path}: checkpoint failed ({exc})") from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self.acquire()
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ReadLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class WalPosition:
    """Where the shipped part of the WAL ends: the next capture starts after it."""

    header_checksum: Checksum
    frame_count: int
    checksum: Checksum | None  # chain value after frame_count; None: verify from frame 1


@dataclass
class WalCapture:
    """The committed frames of the local WAL after frame ``skipped``, copied out of the file.

    ``frames`` holds frames skipped+1 .. frame_count back to back (header + page each).
    """

    header: WalHeader | None  # None: no WAL, an empty one, or one whose header is not valid
    skipped: int
    frame_count: int
    checksum: Checksum
    db_size: int
    frames: IO[bytes]

    @property
    def new_frames(self) -> int:
        return self.frame_count - self.skipped

    def close(self) -> None:
        self.frames.close()


def capture_wal(path: Path, resume: WalPosition | None = None,
                trusted: WalIndexHeader | None = None) -> WalCapture:
    """Read the WAL once, verifying the chain, and copy out its committed frames.

    With ``resume`` and a WAL header whose checksum matches it, frames 1..resume.frame_count are
    not copied (they were shipped before); if the chain value there is known, they are not even
    read. With ``trusted`` (SQLite's wal-index header), frames up to its mx_frame are committed
    and complete: only their salts are checked, and the last one's stored checksum against the
    index, instead of recomputing every checksum; any disagreement falls back to full
    verification. Verifying as it copies keeps the copy consistent even if the WAL is restarted
    while it is being read: a frame of the new cycle breaks the chain.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - returned
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return WalCapture(None, 0, 0, (0, 0), 0, spool)
    with f:
        head = f.read(WAL_HEADER_SIZE)
        try:
            header = parse_wal_header(head)
        except WalFormatError:
            return WalCapture(None, 0, 0, (0, 0), 0, spool)
        skip = resume.frame_count if resume and resume.header_checksum == header.checksum else 0
        chain = FrameChain(header.page_size, header.checksum, header.salts, header.big_endian)
        size = chain.frame_size
        n = count = db_size = 0
        checksum = header.checksum
        if skip and resume is not None and resume.checksum is not None:
            f.seek(WAL_HEADER_SIZE + skip * size)
            chain.checksum = checksum = resume.checksum
            n = count = skip
        trusted_upto, trusted_checksum = 0, (0, 0)
        if (trusted is not None and trusted.salts == header.salts
                and trusted.page_size == header.page_size
                and trusted.big_endian == header.big_endian and trusted.mx_frame > n):
            trusted_upto, trusted_checksum = trusted.mx_frame, trusted.frame_checksum
        committed_len = 0
        while block := f.read(size * WAL_READ_FRAMES):
            mv = memoryview(block)
            stop = False
            for off in range(0, len(mv), size):
                frame = mv[off:off + size]
                if n < trusted_upto and len(frame) == size:
                    pgno, commit, s1, s2, c1, c2 = struct.unpack_from(">6I", frame)
                    if (s1, s2) != header.salts:
                        trusted_upto = -1
                    elif n + 1 == trusted_upto:
                        if (c1, c2) != trusted_checksum or not commit:
                            trusted_upto = -1
                        else:
                            chain.checksum = (c1, c2)
                    if trusted_upto == -1:  # the index and the file disagree: verify it all
                        spool.close()
                        return capture_wal(path, resume, None)
                    got: tuple[int, int] | None = (pgno, commit)
                else:
                    got = chain.accept(frame)
                if got is None:
                    stop = True
                    break
                n += 1
                if n > skip:
                    spool.write(frame)
                if got[1] and n >= trusted_upto:
                    count, db_size, checksum = n, got[1], chain.checksum
                    committed_len = spool.tell()
            if stop:
                break
        if trusted_upto > 0:
            # A restart rewrites the header before it overwrites any frame. Frames taken on
            # trust were not checksummed, so if the WAL restarted while we read them (possible
            # when our read transaction got read-lock 0), read it again, verifying everything.
            f.seek(0)
            if f.read(WAL_HEADER_SIZE) != head:
                spool.close()
                return capture_wal(path, resume, None)
    spool.truncate(committed_len)
    spool.seek(0)
    return WalCapture(header, min(skip, count), count, checksum, db_size, spool)


@dataclass
class SnapshotFile:
    """A compressed copy of the main database file, written next to it."""

    path: Path
    codec: Codec
    sha256: str  # of the uncompressed database file
    raw_size: int
    size: int


def compress_snapshot(lock: ReadLock, codec: Codec,
                      on_bytes: Callable[[int], None] | None = None) -> SnapshotFile:
    """Compress the main database file into a temporary file beside it. The lock must be held:
    no checkpoint can then write pages that the WAL frames shipped with it do not also hold."""
    db_path = lock.db_path
    fd, tmp = tempfile.mkstemp(prefix=f".{db_path.name}.", suffix=".snapshot",
                               dir=db_path.parent)
    h = hashlib.sha256()
    raw = 0
    enc = Encoder(codec)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in lock.chunks():
                h.update(chunk)
                raw += len(chunk)
                out.write(enc.feed(chunk))
                if on_bytes:
                    on_bytes(len(chunk))
            out.write(enc.finish())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if raw < DB_HEADER_SIZE:
        Path(tmp).unlink(missing_ok=True)
        raise LocalDatabaseError(f"{db_path}: database file is too short")
    return SnapshotFile(Path(tmp), codec, h.hexdigest(), raw, os.path.getsize(tmp))


def check_sqlite_file(path: Path) -> tuple[str, DbHeader]:
    """Run ``PRAGMA integrity_check`` on a database file without creating -wal/-shm files."""
    with open(path, "rb") as f:
        try:
            header = parse_db_header(f.read(DB_HEADER_SIZE))
        except NotSQLiteError as exc:
            return str(exc), DbHeader(0, 0, 0, 0, 0)
    # immutable=1: read the file as it is, no locks, no WAL lookup (there is none).
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro&immutable=1", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc), header
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:5]), header
