"""The storage seam: one bucket, a handful of verbs.

``ObjectStore`` is what the catalog, the writer, restore, retention and the lease are
written against. A backend (store/s3.py, store/files.py) implements the basic verbs; the
derived ones are written once, here, over them. A wrapper (store/age.py) is an ObjectStore
around another one. Every failure leaves a store as a StorageError / NotFoundError /
PreconditionFailedError / BucketNotFoundError with one readable line that never carries a
secret.

Keys are S3 keys (``app.db-GEN/.meta``); listings are in byte order of the key. User metadata
keys come back lower-case. An ETag is an opaque string that changes with the content.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Protocol

from ..codec import Readable
from ..errors import BucketNotFoundError, NotFoundError

AGE_MAGIC = b"age-encryption.org/v1\n"  # the first line of every (binary) age file
ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"

class RequestCounter(Protocol):
    """What a backend reports of each request it sends (``ObjectStore.count_requests``)."""

    def sent(self, operation: str, payload: int) -> None:
        """A request (e.g. "PutObject") with ``payload`` bytes of body goes out."""

    def answered(self, operation: str, received: int) -> None:
        """Its answer (or error) came back, with ``received`` bytes of object data."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def is_encrypted(head: bytes) -> bool:
    """Does an object starting with these bytes hold an age file (binary or armored)?"""
    return head.startswith(AGE_MAGIC) or head.startswith(ARMOR_MAGIC)


def read_exactly(body: Readable, n: int) -> bytes:
    """Up to ``n`` bytes from a stream (fewer only at its end)."""
    parts, have = [], 0
    while have < n:
        piece = body.read(n - have)
        if not piece:
            break
        parts.append(piece)
        have += len(piece)
    return b"".join(parts)


class ObjectStore(abc.ABC):
    """One bucket: list, read, write (optionally conditional) and delete objects by key."""

    bucket: str

    # --- the basic verbs: every backend implements these ------------------------------------

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The endpoint, as error messages name it."""

    @abc.abstractmethod
    def check_bucket(self) -> None:
        """BucketNotFoundError (or StorageError) unless the bucket can be used."""

    @abc.abstractmethod
    def create_bucket(self) -> None:
        """Create the bucket (an explicit choice: a typo must not create one)."""

    @abc.abstractmethod
    def list_objects(self, prefix: str, start_after: str | None = None,
                     ) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (no user metadata)."""

    @abc.abstractmethod
    def list_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """The common prefixes one level below ``prefix``, in key order."""

    @abc.abstractmethod
    def list_level(self, prefix: str) -> Iterator[str | ObjectInfo]:
        """One level below ``prefix`` ('/' delimited), in key order: the common prefixes (as
        ``str``, ending in '/') and the objects (``ObjectInfo``, no user metadata) together,
        as one delimited listing gives them."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, time and user metadata of an object; None when it does not exist."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """An object's bytes; NotFoundError when it does not exist. (A verb of its own, not
        get_with_metadata's bytes: a restore reads thousands of batches, and a file store
        reads one without its metadata sidecar or lock.)"""

    @abc.abstractmethod
    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        """Bytes, user metadata and ETag, read together; None when the object does not
        exist."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of an object from offset ``start`` (fewer at its end);
        NotFoundError when it does not exist."""

    @abc.abstractmethod
    def open_object(self, key: str) -> AbstractContextManager[Readable]:
        """An object as a readable stream; NotFoundError when it does not exist."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write a small object; return its ETag. ``if_match=ETAG`` / ``if_none_match``
        raise PreconditionFailedError when the condition does not hold."""

    @abc.abstractmethod
    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        """Write an object of any size from a readable stream."""

    @abc.abstractmethod
    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete keys (missing ones too; a key ending in '/' removes an empty "directory");
        return how many were asked for."""

    # --- what only some backends have: nothing by default -----------------------------------

    def stale_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime | None]]:
        """Unfinished multipart uploads under ``prefix``: (key, upload id, initiated)."""
        return iter(())

    def abort_upload(self, key: str, upload_id: str) -> None:  # noqa: B027 - none to abort
        """Abort one of ``stale_uploads``."""

    def count_requests(self, counter: RequestCounter) -> bool:
        """Report every request this store sends to ``counter``; False when it sends none
        (a directory) or cannot count them."""
        return False

    # --- what a wrapper changes -------------------------------------------------------------

    @property
    def stored(self) -> ObjectStore:
        """The store that reads objects as they are stored (a wrapper's inner store)."""
        return self

    @property
    def encrypts(self) -> bool:
        """Are the data objects written through this store encrypted?"""
        return False

    @property
    def decrypted_any(self) -> bool:
        """Has a read through this store decrypted an encrypted object?"""
        return False

    # --- derived verbs, written once ---------------------------------------------------------

    def get_optional(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except NotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        try:
            self.check_bucket()
        except BucketNotFoundError:
            self.create_bucket()

    def object_encryption(self, key: str) -> str:
        """"age" or "none", from the first bytes of the object as stored."""
        with self.stored.open_object(key) as body:
            head = read_exactly(body, len(ARMOR_MAGIC))
        return "age" if is_encrypted(head) else "none"
