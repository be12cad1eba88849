"""An ``ObjectStore`` over a local directory: the bucket layout as files.

``FileStore(root, bucket)`` keeps the bucket in ``root/bucket/``; an object ``app.db-GEN/.meta``
is the file ``root/bucket/app.db-GEN/.meta``, holding exactly the object's bytes. What S3 keeps
beside the bytes lives in files whose names no object can have (they are refused as keys and
never listed):

- ``.NAME.bottomless-meta.json`` beside object NAME: its user metadata, and the inode of the
  data file it belongs to (metadata left by a writer killed between its two renames is then
  ignored instead of being attached to other bytes);
- ``.NAME.bottomless-tmp-RANDOM``: a write in progress (or left by a killed writer);
- ``.bottomless-lock`` at the top of the bucket: an flock that makes conditional writes, and
  the pairing of bytes and metadata, atomic between processes on this host.

Writes go to a temporary file in the object's directory, are fsynced, renamed into place under
the lock, and the directory is fsynced: a reader sees the old object or the new one, never a
part. The ETag is the MD5 of the content (as S3 gives for a single-part upload). Deleting an
object removes directories it leaves empty, so a removed generation no longer lists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from ..errors import (
    BottomlessError,
    BucketNotFoundError,
    ConfigError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
)
from .base import ObjectInfo, ObjectStore

CHUNK = 1 << 20
LOCK_NAME = ".bottomless-lock"
META_SUFFIX = ".bottomless-meta.json"
TEMP_MARK = ".bottomless-tmp-"
# Names the store keeps for itself: never an object's name, never listed.
_INTERNAL = re.compile(r"^\.(?:bottomless-lock|.*\.bottomless-(?:meta\.json|tmp-[0-9a-f]{16}))$")
WRITE_TRIES = 5  # a concurrent delete may remove a directory between mkdir and create


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def _same_etag(a: str, b: str) -> bool:
    return a.strip('"') == b.strip('"')


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileBody:
    """An open object whose read() raises only our errors."""

    def __init__(self, store: FileStore, key: str, f: BinaryIO) -> None:
        self._store, self._key, self._f = store, key, f

    def read(self, size: int = -1, /) -> bytes:
        with self._store._errors(f"reading {self._key}"):
            return self._f.read(size)


class FileStore(ObjectStore):
    """An ObjectStore whose bucket is the directory ``root/bucket``."""

    def __init__(self, root: Path, bucket: str) -> None:
        if not bucket or "/" in bucket or "\0" in bucket or bucket in (".", ".."):
            raise ConfigError(f"bucket {bucket!r}: not usable as a directory name")
        self.root = Path(os.path.abspath(root))
        self.bucket = bucket
        self.dir = self.root / bucket
        self._where = self.root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r}, {self.bucket!r})"

    @property
    def where(self) -> str:
        return self._where

    # --- errors -----------------------------------------------------------------------------

    def _missing_bucket(self) -> StorageError:
        for path in (self.dir, *self.dir.parents):
            if path.exists():
                if not path.is_dir():  # a file where the store's directory should be
                    return StorageError(f"endpoint {self.where}: {path} is a file, not a "
                                        "directory")
                break
        return BucketNotFoundError(f"bucket {self.bucket!r} does not exist at {self.where} "
                                   f"(no directory {self.dir}; create it, or replicate with "
                                   "--create-bucket)")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Local failures as one line: a missing bucket, a missing object, no permission, a
        full disk."""
        try:
            yield
        except BottomlessError:
            raise
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if not self.dir.is_dir():
                raise self._missing_bucket() from None
            raise NotFoundError(f"{what}: no such object") from None
        except PermissionError as exc:
            raise StorageError(f"{what}: permission denied in the file store "
                               f"({exc.filename or self.dir})") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(f"{what}: no space left on the device of {self.dir}"
                                   ) from None
            if exc.errno == errno.EROFS:
                raise StorageError(f"{what}: {self.dir} is on a read-only file system"
                                   ) from None
            raise StorageError(f"{what} failed in the file store at {self.where}: "
                               f"{exc.strerror or exc}") from None

    # --- keys -------------------------------------------------------------------------------

    def _parts(self, key: str, directory: bool = False) -> list[str]:
        """The path components of a key; StorageError for keys a directory cannot hold."""
        parts = key.split("/")
        if directory and len(parts) > 1 and parts[-1] == "":
            parts.pop()
        if not key or any(p in ("", ".", "..") or "\0" in p or _INTERNAL.match(p)
                          for p in parts):
            raise StorageError(f"the file store at {self.where} cannot hold the key {key!r}")
        return parts

    def _path(self, key: str) -> Path:
        return self.dir.joinpath(*self._parts(key))

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}{META_SUFFIX}")

    @staticmethod
    def _temp(path: Path) -> Path:
        return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(8)}")

    # --- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """The bucket's flock. A reader that cannot create the lock file (read-only access,
        nobody has written yet) reads without it."""
        lock = self.dir / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self.dir.is_dir():
                raise self._missing_bucket() from None
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except PermissionError:
                if exclusive:
                    raise
                fd = -1
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # also releases the flock

    # --- bucket -----------------------------------------------------------------------------

    def check_bucket(self) -> None:
        with self._errors(f"checking bucket {self.bucket!r}"):
            if not self.dir.is_dir():
                if self.dir.exists():
                    raise StorageError(f"bucket {self.bucket!r} at {self.where}: {self.dir} "
                                       "is not a directory")
                raise self._missing_bucket()
            if not os.access(self.dir, os.R_OK | os.X_OK):
                raise StorageError(f"bucket {self.bucket!r} at {self.where}: permission "
                                   f"denied ({self.dir})")

    def create_bucket(self) -> None:
        with self._errors(f"creating bucket {self.bucket!r}"):
            self.dir.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.dir / LOCK_NAME, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                             0o666))

    # --- listing ----------------------------------------------------------------------------

    def _start(self, prefix: str) -> tuple[Path, str, str] | None:
        """Where a listing of ``prefix`` starts: the directory, the key prefix of its
        entries, and the beginning their names must have. None: nothing can match."""
        head, _, partial = prefix.rpartition("/")
        if head:
            parts = head.split("/")
            if any(p in ("", ".", "..") or "\0" in p or _INTERNAL.match(p) for p in parts):
                return None
            return self.dir.joinpath(*parts), head + "/", partial
        return self.dir, "", partial

    def _entries(self, directory: Path, partial: str = "") -> list[tuple[str, Path, bool]]:
        """(name as it sorts, path, is a directory) of the visible entries, in key order: a
        directory sorts as NAME/, so that "a-b" < "a.c" < "a/x" as S3 orders keys."""
        try:
            scan = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for entry in scan:
            name = entry.name
            if not name.startswith(partial) or _INTERNAL.match(name):
                continue
            if entry.is_dir():
                out.append((name + "/", Path(entry.path), True))
            elif entry.is_file():
                out.append((name, Path(entry.path), False))
        out.sort(key=lambda e: e[0])
        return out

    def _walk(self, directory: Path, key_prefix: str, partial: str,
              start_after: str | None) -> Iterator[ObjectInfo]:
        for sort_name, path, is_dir in self._entries(directory, partial):
            key = key_prefix + sort_name
            if is_dir:
                if (start_after is not None and key <= start_after
                        and not start_after.startswith(key)):
                    continue  # every key below it sorts before start_after
                yield from self._walk(path, key, "", start_after)
                continue
            if start_after is not None and key <= start_after:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # deleted while we listed
            yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _holds_object(self, directory: Path) -> bool:
        """Is there an object anywhere below ``directory``? (Stops at the first one.)"""
        try:
            with os.scandir(directory) as scan:
                subdirs = []
                for entry in scan:
                    if _INTERNAL.match(entry.name):
                        continue
                    if entry.is_file():
                        return True
                    if entry.is_dir():
                        subdirs.append(Path(entry.path))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return any(self._holds_object(d) for d in subdirs)

    def list_objects(self, prefix: str, start_after: str | None = None,
                     ) -> Iterator[ObjectInfo]:
        with self._errors(f"listing {prefix!r}"):
            self.check_bucket()
            start = self._start(prefix)
            if start is not None:
                yield from self._walk(*start, start_after)

    def list_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """Directories one level below ``prefix`` that hold at least one object (S3 has no
        empty "directories")."""
        if delimiter != "/":
            raise StorageError(f"the file store lists with the delimiter '/' only, not "
                               f"{delimiter!r}")
        with self._errors(f"listing {prefix!r}"):
            self.check_bucket()
            start = self._start(prefix)
            if start is None:
                return
            directory, key_prefix, partial = start
            for sort_name, path, is_dir in self._entries(directory, partial):
                if is_dir and self._holds_object(path):
                    yield key_prefix + sort_name

    def list_level(self, prefix: str) -> Iterator[str | ObjectInfo]:
        """The files and the directories holding an object one level below ``prefix``."""
        with self._errors(f"listing {prefix!r}"):
            self.check_bucket()
            start = self._start(prefix)
            if start is None:
                return
            directory, key_prefix, partial = start
            for sort_name, path, is_dir in self._entries(directory, partial):
                if is_dir:
                    if self._holds_object(path):
                        yield key_prefix + sort_name
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # deleted while we listed
                yield ObjectInfo(key_prefix + sort_name, st.st_size,
                                 datetime.fromtimestamp(st.st_mtime, UTC))

    # --- reading ----------------------------------------------------------------------------

    def _metadata(self, path: Path, inode: int) -> dict[str, str]:
        """The user metadata written with the data file ``inode`` (call under the lock)."""
        try:
            record = json.loads(self._sidecar(path).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise StorageError(f"{self._sidecar(path)}: unreadable metadata") from None
        if not isinstance(record, dict) or record.get("inode") != inode:
            return {}  # left by a writer that died before its data landed
        meta = record.get("metadata")
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with self._errors(f"reading {key}"), self._locked(exclusive=False):
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC),
                              self._metadata(path, st.st_ino))

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors(f"reading {key}"):
            return path.read_bytes()

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        path = self._path(key)
        try:
            with (self._errors(f"reading {key}"), self._locked(exclusive=False),
                  open(path, "rb") as f):
                data = f.read()
                metadata = self._metadata(path, os.fstat(f.fileno()).st_ino)
        except NotFoundError:
            return None
        return data, metadata, _etag(data)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        with self._errors(f"reading {key}"), open(path, "rb") as f:
            f.seek(start)
            return f.read(max(0, length))

    def remove_if_empty(self) -> None:
        """Remove the bucket's directory if it holds no object (what a failed
        ``copy --to-dir`` made), with the lock file the store keeps there."""
        if self._holds_object(self.dir):
            return
        with contextlib.suppress(OSError):
            (self.dir / LOCK_NAME).unlink(missing_ok=True)
            self.dir.rmdir()

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[_FileBody]:
        path = self._path(key)
        with self._errors(f"reading {key}"):
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the caller is done
        try:
            yield _FileBody(self, key, f)
        finally:
            f.close()

    # --- writing ----------------------------------------------------------------------------

    def _make_parents(self, path: Path) -> None:
        """Create the object's directories below the bucket (never the bucket itself)."""
        if not self.dir.is_dir():
            raise self._missing_bucket()
        current = self.dir
        for part in path.relative_to(self.dir).parts[:-1]:
            current = current / part
            for _ in range(WRITE_TRIES):
                try:
                    current.mkdir()
                except FileExistsError:
                    if current.is_dir():
                        break
                    if current.exists():  # a file: an object where a prefix should be
                        raise StorageError(
                            f"the file store cannot hold {path.relative_to(self.dir)}: "
                            f"{current.relative_to(self.dir)} is an object, not a prefix",
                        ) from None
                    continue  # a delete removed it between mkdir and the check: again
                break

    def _write(self, key: str, fill: Callable[[BinaryIO], object],
               metadata: dict[str, str] | None, if_match: str | None,
               if_none_match: bool) -> None:
        """Write through temporary files, then (under the lock, after checking the
        conditions) rename the metadata and the data into place."""
        path = self._path(key)
        what = f"writing {key}"
        with self._errors(what):
            tmp = self._temp(path)
            for attempt in range(WRITE_TRIES):
                try:
                    self._make_parents(path)
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o666)
                    break
                except FileNotFoundError:
                    if attempt == WRITE_TRIES - 1:
                        raise
                    # a delete removed the directory it emptied, between mkdir and create
            side_tmp: Path | None = None
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fsync(f.fileno())
                    inode = os.fstat(f.fileno()).st_ino
                if metadata:
                    side_tmp = self._write_sidecar(path, inode, metadata)
                with self._locked(exclusive=True):
                    if path.is_dir():
                        raise StorageError(f"the file store cannot hold {key!r}: objects "
                                           f"exist under {key}/")
                    self._check_conditions(path, what, if_match, if_none_match)
                    if side_tmp is not None:
                        os.replace(side_tmp, self._sidecar(path))
                        side_tmp = None
                    else:
                        self._sidecar(path).unlink(missing_ok=True)
                    os.replace(tmp, path)
                    if metadata and (moved := os.stat(path).st_ino) != inode:
                        # a file system that renumbers on rename (some FUSE mounts)
                        side_tmp = self._write_sidecar(path, moved, metadata)
                        os.replace(side_tmp, self._sidecar(path))
                        side_tmp = None
                _fsync_dir(path.parent)
            finally:
                for leftover in (tmp, side_tmp):
                    if leftover is not None:
                        with contextlib.suppress(OSError):
                            leftover.unlink()

    def _write_sidecar(self, path: Path, inode: int, metadata: dict[str, str]) -> Path:
        """A temporary file holding ``metadata`` for the data file ``inode``, fsynced."""
        tmp = self._temp(path)
        record = {"inode": inode,
                  "metadata": {str(k).lower(): str(v) for k, v in metadata.items()}}
        try:
            with open(tmp, "xb") as f:
                f.write(json.dumps(record, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    @staticmethod
    def _check_conditions(path: Path, what: str, if_match: str | None,
                          if_none_match: bool) -> None:
        if if_none_match and path.exists():
            raise PreconditionFailedError(f"{what}: the object exists already")
        if if_match is not None:
            try:
                current = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                raise PreconditionFailedError(f"{what}: the object is gone") from None
            if not _same_etag(_etag(current), if_match):
                raise PreconditionFailedError(f"{what}: the object changed meanwhile")

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write a small object atomically; return its ETag (PreconditionFailedError when
        ``if_match`` / ``if_none_match`` does not hold, also when ``if_match`` finds no
        object, as SeaweedFS answers)."""
        self._write(key, lambda f: f.write(data), metadata, if_match, if_none_match)
        return _etag(data)

    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        def fill(f: BinaryIO) -> None:
            while chunk := stream.read(CHUNK):
                f.write(chunk)
                if on_progress is not None:
                    on_progress(len(chunk))

        self._write(key, fill, metadata, None, False)

    # --- deleting ---------------------------------------------------------------------------

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete objects (missing ones are fine) and the directories they leave empty; a
        key ending in '/' removes that directory if it is empty. Returns how many keys were
        given, as S3's DeleteObjects counts them."""
        count = 0
        for key in keys:
            with self._errors(f"deleting {key}"):
                if key.endswith("/"):
                    self._prune(self.dir.joinpath(*self._parts(key, directory=True)))
                else:
                    path = self._path(key)
                    with self._locked(exclusive=True):
                        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                            path.unlink()
                        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                            self._sidecar(path).unlink()
                    self._prune(path.parent)
            count += 1
        return count

    def _prune(self, directory: Path) -> None:
        """Remove ``directory`` and its parents below the bucket while they are empty."""
        while directory != self.dir and self.dir in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone, or not ours to remove): stop there
            directory = directory.parent

    # (multipart uploads: none here; a write in progress is a hidden temporary file)
