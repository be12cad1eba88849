"""``create --source-db``: a new generation whose snapshot is a copy of a database file.

For seeding a bucket from an existing file (libSQL's ``create``). The copy is SQLite's own
``VACUUM INTO`` from a read-only connection: one read transaction, so it is a consistent state
even while another process writes to the source, whatever the source's journal mode. The copy
is switched to WAL mode (what a replicator of the restored file needs) and uploaded as the
snapshot of a generation with no parent: snapshot, ``.changecounter``, ``.meta`` last.
"""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .catalog import Generation, newest_generation
from .codec import Codec
from .database import sqlite_uri
from .dbheader import DB_HEADER_SIZE, NotSQLiteError, parse_db_header
from .errors import LocalDatabaseError
from .layout import Meta
from .lease import Lease
from .progress import NoProgress, Progress
from .replicator import NO_WAL_CHECKSUM
from .snapshot import pack_file
from .store.base import ObjectStore
from .tempfiles import discard, owned_temp_path
from .writer import Writer

SQLITE_MAGIC = b"SQLite format 3\0"


@dataclass
class CreateResult:
    generation: uuid.UUID
    page_size: int
    raw_size: int
    snapshot_bytes: int


def create_generation(source: Path, storage: ObjectStore, db_name: str,
                      codec: Codec = Codec.ZSTD, workdir: Path | None = None,
                      progress: Progress | None = None) -> CreateResult:
    """Upload a consistent copy of ``source`` as a new generation of ``db_name``."""
    progress = progress or NoProgress()
    _check_source(source)
    storage.check_bucket()
    workdir = workdir or source.parent
    image = owned_temp_path(workdir / db_name, "create")
    packed = owned_temp_path(workdir / db_name, "create-snapshot")
    lease = Lease(storage, db_name, f"create:{socket.gethostname()}:{source.resolve()}")
    lease.acquire()  # a live replicator of this name elsewhere: refuse, do not interleave
    try:
        _copy(source, image)
        header = parse_db_header(_head(image))
        raw_size = image.stat().st_size
        progress.start("snapshot", raw_size)
        snapshot = pack_file(image, codec, packed, lambda n: progress.advance("snapshot", n))
        progress.finish("snapshot")
        newest = newest_generation(storage, db_name)
        g = Generation(db_name, layout.generation_for(time.time(), newer_than=newest),
                       snapshot_codec=codec, change_counter=header.change_counter_bytes)
        writer = Writer(storage, db_name)
        writer.start(g)
        g.snapshot = writer.upload_snapshot(g.id, snapshot, progress)
        writer.write_meta(g, Meta(header.page_size, NO_WAL_CHECKSUM))
    except OSError as exc:
        raise LocalDatabaseError(f"{workdir}: cannot write the copy of {source} there "
                                 f"({exc.strerror or exc})") from None
    finally:
        lease.release()
        discard(image)
        discard(packed)
    return CreateResult(g.id, header.page_size, raw_size, snapshot.size)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(DB_HEADER_SIZE)


def _check_source(source: Path) -> None:
    try:
        head = _head(source)
    except IsADirectoryError:
        raise LocalDatabaseError(f"{source}: is a directory, not a database file") from None
    except OSError as exc:
        raise LocalDatabaseError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise LocalDatabaseError(f"{source}: database file is empty")
    if not head.startswith(SQLITE_MAGIC):
        raise LocalDatabaseError(f"{source}: not an SQLite database (an encrypted libSQL "
                                 "database cannot be read here)")
    try:
        parse_db_header(head)
    except NotSQLiteError as exc:
        raise LocalDatabaseError(f"{source}: {exc}") from None


def _copy(source: Path, image: Path) -> None:
    """VACUUM INTO from a read-only connection, then WAL mode on the copy."""
    uri = sqlite_uri(source, "mode=ro")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("VACUUM INTO ?", (str(image),))
        finally:
            conn.close()
        conn = sqlite3.connect(image, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LocalDatabaseError(f"{source}: cannot copy the database ({exc})") from None
    if str(mode).lower() != "wal":
        raise LocalDatabaseError(f"{source}: its copy could not be switched to WAL mode")
    for suffix in ("-wal", "-shm"):
        image.with_name(image.name + suffix).unlink(missing_ok=True)
