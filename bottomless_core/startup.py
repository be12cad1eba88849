"""``replicate --restore-if-missing``: a container whose disk is thrown away starts from the
bucket (libSQL's replicator restores on boot when the main database file is empty).

Before replication starts: a database file that is missing or empty (and has no WAL holding
frames) is restored from the newest generation; when the bucket has none either, an empty
database in WAL mode is created, which the replicator then backs up like any other. A
database with content is never touched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .database import resolve_db_path, wal_path
from .errors import LocalDatabaseError, NoBackupError
from .progress import Progress
from .restore import restore
from .store.base import ObjectStore


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def restore_if_missing(db_path: Path, storage: ObjectStore, db_name: str,
                       progress: Progress | None = None) -> str | None:
    """Restore (or create) the database if its file is missing or empty; return what was
    done, as one line, or None when the database was there."""
    path = resolve_db_path(db_path) if db_path.is_symlink() else db_path
    if _size(path) > 0:
        return None
    wal = _size(wal_path(path))
    if wal > 0:  # an app's WAL without its database: neither restore over it nor start
        state = "empty" if path.exists() else "missing"
        raise LocalDatabaseError(f"{path}: the database file is {state} but "
                                 f"{wal_path(path).name} beside it holds {wal} bytes: "
                                 "not restoring over them; move both away (or put the "
                                 "database back) and run again")
    storage.check_bucket()
    was = "empty" if path.exists() else "missing"
    try:
        result = restore(storage, db_name, path, progress=progress)
    except NoBackupError:
        _create_empty(path)
        return (f"{path}: {was} and no backup of {db_name!r} in bucket "
                f"{storage.bucket!r}: started with an empty database in WAL mode")
    # (restored from an encrypted backup without --age-recipient: replication then refuses
    # to add plaintext to it or after it, with one error naming the option)
    return (f"{path}: was {was}; restored generation {result.generation} ({result.pages} "
            f"pages, {result.frames_applied} frames)")


def _create_empty(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise LocalDatabaseError(f"{path}: cannot create the database ({exc})") from None
