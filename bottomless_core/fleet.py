"""``replicate --dir DIR``: every database in a directory, picked up as it appears, let go of
when it goes (issue 19: one database per tenant, a thousand on a host).

A database is named by its path under the directory (``tenants/a.db``), so that a restore
finds it again by that name. A file that matches the pattern but is not an SQLite database
in WAL mode is reported once (and looked at again only when it changes); one that another
replicator holds is skipped the same way. The scan is a directory listing every RESCAN
seconds: its cost is the listing, whatever the databases do.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .dbheader import DB_HEADER_SIZE, NotSQLiteError, parse_db_header

log = logging.getLogger("bottomless.fleet")

RESCAN = 5.0  # seconds between looks at the directory
DEFAULT_PATTERN = "*.db"
SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Directory:
    """Where the databases are: ``path``, files matching ``pattern`` (below it too with
    ``recursive``)."""

    path: Path
    pattern: str = DEFAULT_PATTERN
    recursive: bool = False


def database_files(d: Directory) -> Iterator[tuple[str, Path]]:
    """(name, path) of the files matching the pattern, names relative to the directory with
    '/' between parts; SQLite's side files and our own temporary files left out."""
    stack = [d.path]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # hidden: our lock and temporary files, and anyone else's
            try:
                if entry.is_dir(follow_symlinks=False):
                    if d.recursive:
                        stack.append(Path(entry.path))
                    continue
                if not entry.is_file():
                    continue
            except OSError:
                continue
            if name.endswith(SIDE_FILES) or not fnmatch.fnmatchcase(name, d.pattern):
                continue
            path = Path(entry.path)
            yield path.relative_to(d.path).as_posix(), path


def wal_database(path: Path) -> str | None:
    """None when ``path`` is an SQLite database in WAL mode, else why not (one line)."""
    try:
        with open(path, "rb") as f:  # not ours yet: no lock of ours to lose by closing it
            head = f.read(DB_HEADER_SIZE)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not head:
        return "empty (no database yet)"
    try:
        header = parse_db_header(head)
    except NotSQLiteError:
        return "not an SQLite database"
    if not header.wal_mode:
        return "not in WAL mode (rollback journal): run 'PRAGMA journal_mode=WAL' on it"
    return None


@dataclass
class Watcher:
    """What a directory holds, and what changed since the last look."""

    directory: Directory
    known: dict[str, Path] = field(default_factory=dict)  # followed: name -> path
    skipped: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (mtime, size)
    deferred: set[str] = field(default_factory=set)  # reported once, tried at every look

    def scan(self) -> tuple[list[tuple[str, Path]], list[str]]:
        """(new databases to follow, names followed that are no longer there)."""
        found = dict(database_files(self.directory))
        gone = [name for name in self.known if name not in found]
        for name in gone:
            del self.known[name]
        for name in [n for n in self.skipped if n not in found]:
            del self.skipped[name]
        self.deferred &= set(found)
        new = []
        for name, path in sorted(found.items()):
            if name in self.known:
                continue
            stamp = _stamp(path)
            if stamp is None or self.skipped.get(name) == stamp:
                continue  # gone meanwhile, or reported already and unchanged since
            why = wal_database(path)
            if why is not None:
                self.refuse(name, path, why, stamp)
                continue
            self.skipped.pop(name, None)
            new.append((name, path))
        return new, gone

    def follow(self, name: str, path: Path) -> None:
        self.known[name] = path
        self.deferred.discard(name)

    def refuse(self, name: str, path: Path, why: str,
               stamp: tuple[int, int] | None = None) -> None:
        """Do not follow it (not a WAL database, another name's twin, ...): reported once,
        looked at again when it changes."""
        self.known.pop(name, None)
        self.deferred.discard(name)
        stamp = stamp or _stamp(path)
        if stamp is not None:
            self.skipped[name] = stamp
        log.warning("event=skipped path=%s: %s", path, why)

    def defer(self, name: str, path: Path, why: str) -> None:
        """Not now (another replicator holds it): tried again at every look, reported
        once."""
        if name not in self.deferred:
            self.deferred.add(name)
            log.warning("event=waiting path=%s: %s; tried again every %.0fs", path, why,
                        RESCAN)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
