"""The storage seam: the operations the core needs from a bucket, and the factory that picks a
backend from the endpoint.

``ObjectStore`` is what catalog, replicator, restore, retention and lease are written against.
Two implementations: ``storage.Storage`` (S3 through boto3) and ``filestore.FileStore`` (the
same bucket layout as files in a local directory, for ``-e file:///var/backups/bottomless``).
Every failure leaves a store as a StorageError / NotFoundError / PreconditionFailedError /
BucketNotFoundError with one readable line.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable

from .codec import Readable
from .errors import ConfigError

if TYPE_CHECKING:
    from .storage import ServerSideEncryption, StorageConfig

FILE_SCHEME = "file:"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket: list, read, write (optionally conditional) and delete objects by key.

    Keys are S3 keys (``app.db-GEN/.meta``); listings are in byte order of the key. User
    metadata keys come back lower-case. An ETag is an opaque string that changes with the
    content; ``put(if_match=ETAG)`` and ``put(if_none_match=True)`` raise
    PreconditionFailedError when the condition does not hold.
    """

    bucket: str

    @property
    def where(self) -> str:
        """The endpoint, as error messages name it."""
        ...

    def check_bucket(self) -> None:
        """BucketNotFoundError (or StorageError) unless the bucket can be used."""
        ...

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        ...

    def create_bucket(self) -> None: ...

    def list_objects(self, prefix: str, start_after: str | None = None,
                     ) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (no user metadata)."""
        ...

    def list_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """The common prefixes one level below ``prefix``, in key order."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size, time and user metadata of an object; None when it does not exist."""
        ...

    def get(self, key: str) -> bytes:
        """An object's bytes; NotFoundError when it does not exist."""
        ...

    def get_optional(self, key: str) -> bytes | None: ...

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        """Bytes, user metadata and ETag; None when the object does not exist."""
        ...

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write a small object; return its ETag."""
        ...

    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        """Write an object of any size from a readable stream."""
        ...

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        """Stream an object into ``sink`` chunk by chunk; return its size."""
        ...

    def open_object(self, key: str) -> AbstractContextManager[Readable]:
        """An object as a readable stream."""
        ...

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete keys (missing ones too; a key ending in '/' removes an empty "directory");
        return how many were asked for."""
        ...

    def stale_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime | None]]:
        """Unfinished uploads under ``prefix``: (key, upload id, initiated)."""
        ...

    def abort_upload(self, key: str, upload_id: str) -> None: ...


def file_root(endpoint: str | None) -> Path | None:
    """The directory named by a ``file:`` endpoint (``file:///abs/dir``, ``file:rel/dir``,
    relative to the working directory), or None for any other endpoint."""
    if not endpoint or endpoint[:len(FILE_SCHEME)].lower() != FILE_SCHEME:
        return None
    rest = endpoint[len(FILE_SCHEME):]
    if rest.startswith("//"):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"endpoint {endpoint!r}: a file: endpoint names a local "
                              "directory (file:///var/backups/bottomless), not a host")
        path = urllib.parse.unquote(parts.path)
    else:
        path = urllib.parse.unquote(rest)
    if not path:
        raise ConfigError(f"endpoint {endpoint!r} names no directory "
                          "(e.g. file:///var/backups/bottomless)")
    return Path(os.path.abspath(path))


def open_store(endpoint: str | None, bucket: str, env: dict[str, str] | None = None, *,
               s3: Callable[[StorageConfig], ObjectStore] | None = None,
               sse: ServerSideEncryption | None = None) -> ObjectStore:
    """The store for ``-e ENDPOINT -b BUCKET``: a FileStore for ``file:`` endpoints, else S3
    (credentials from ``env``, default os.environ). ``s3`` replaces the S3 class (tests).
    ``sse``: S3 server-side encryption for every upload (refused for a directory)."""
    root = file_root(endpoint)
    if root is not None:
        if sse is not None:
            raise ConfigError(f"--sse {sse.algorithm} is S3 server-side encryption; endpoint "
                              f"{endpoint} is a local directory (use --age-recipient to "
                              "encrypt the backup itself)")
        from .filestore import FileStore

        return FileStore(root, bucket)
    from .storage import Storage, StorageConfig

    return (s3 or Storage)(StorageConfig.from_env(endpoint, bucket, env, sse))
