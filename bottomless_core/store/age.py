"""Client-side encryption of snapshots and WAL batches with age (https://age-encryption.org):
an ObjectStore around another one.

What a generation holds stays where it is: the object names, and the small objects a listing
and a chain walk need (``.meta``, ``.changecounter``, ``.dep``, the tombstone, the lease). Only
the data objects, the snapshot ``db.*`` and the WAL batches, are encrypted: their compressed
bytes become an age file (binary format, X25519 recipients), so the ``age`` CLI decrypts one
(``age -d -i key.txt OBJECT | zstd -d``). A reader tells an encrypted object by the first line
of every age file, ``age-encryption.org/v1``; objects without it are read as before, so a
bucket may mix both (a chain whose older generations predate encryption).

Everything above this store (writer, restore, snapshot) writes and reads plain compressed
bytes. Large objects stream through the cipher in bounded pieces (age's own 64 KiB chunks),
so a multi-GB snapshot never sits in memory. Which generation may hold plaintext next to
encrypted objects is the writer's rule (writer.py), not this store's.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

import pyrage
from pyrage import x25519

from .. import layout
from ..agekeys import AgeKeys
from ..codec import Readable
from ..errors import BottomlessError, CorruptBackupError, EncryptionError
from .base import AGE_MAGIC, ObjectInfo, ObjectStore, RequestCounter, read_exactly

PIPE_CHUNKS = 16  # pieces (age writes 64 KiB each) in flight between the cipher and its reader
READ_AHEAD = 1 << 20  # bytes read from the source at a time


def is_data_key(key: str) -> bool:
    """Snapshots, WAL batches and page packs: the objects that hold pages, encrypted."""
    name = key.rsplit("/", 1)[-1]
    return "/" in key and (layout.BatchKey.parse(name) is not None
                           or layout.snapshot_codec(name) is not None
                           or layout.PackKey.parse(name) is not None
                           or name == layout.SNAPSHOT_PACK)


def encrypt(data: bytes, recipients: Sequence[x25519.Recipient]) -> bytes:
    return pyrage.encrypt(data, list(recipients))


def decrypt(data: bytes, key: str, identities: Sequence[x25519.Identity]) -> bytes:
    _need_identity(key, identities)
    try:
        return pyrage.decrypt(data, list(identities))
    except pyrage.DecryptError as exc:
        raise _decrypt_error(key, exc) from None


def _need_identity(key: str, identities: Sequence[x25519.Identity]) -> None:
    if not identities:
        raise EncryptionError(f"objects are encrypted ({key} is an age file); give "
                              "--age-identity FILE (or LIBSQL_BOTTOMLESS_AGE_IDENTITY) with "
                              "the secret key of one of its recipients")


def _decrypt_error(key: str, exc: Exception) -> BottomlessError:
    text = str(exc)
    if "No matching keys" in text:
        return EncryptionError(f"{key}: none of the --age-identity keys given can decrypt it "
                               "(the objects are encrypted to other recipients)")
    return CorruptBackupError(f"{key}: truncated or damaged encrypted object ({text})")


class _Pipe:
    """A bounded hand-over from a thread that writes to a reader: ``write`` blocks while
    PIPE_CHUNKS pieces wait; the reader's ``close`` makes further writes fail."""

    def __init__(self) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue(PIPE_CHUNKS)
        self.closed = threading.Event()

    def write(self, data: Any) -> int:
        piece = bytes(data)
        while True:
            if self.closed.is_set():
                raise BrokenPipeError("reader went away")
            try:
                self.q.put(piece, timeout=0.1)
                return len(piece)
            except queue.Full:
                continue

    def flush(self) -> None:
        pass


class _ThreadedReader:
    """``read`` over what ``produce(writer)`` writes in another thread. An exception in the
    producer is raised by the read that reaches it."""

    def __init__(self, produce: Callable[[_Pipe], None], name: str) -> None:
        self._pipe = _Pipe()
        self._buf = b""
        self._eof = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name,
                                        daemon=True)
        self._thread.start()

    def _run(self, produce: Callable[[_Pipe], None]) -> None:
        try:
            produce(self._pipe)
        except BaseException as exc:  # handed to the reader
            self._error = exc
        finally:
            while not self._pipe.closed.is_set():
                try:
                    self._pipe.q.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def read(self, size: int = -1, /) -> bytes:
        want = size if size is not None and size >= 0 else 1 << 62
        parts = [self._buf] if self._buf else []
        have = len(self._buf)
        self._buf = b""
        while have < want and not self._eof:
            piece = self._pipe.q.get()
            if piece is None:
                self._eof = True
                self._thread.join()
                if self._error is not None:
                    raise self._error
                break
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        if len(data) > want:
            data, self._buf = data[:want], data[want:]
        return data

    def close(self) -> None:
        self._pipe.closed.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._pipe.q.get_nowait()
        self._thread.join(timeout=5)


class _ReadOnly:
    """What pyrage reads from: it asks for 8 KiB at a time, so the source (an S3 body, where
    every read is a trip through urllib3) is read READ_AHEAD at a time and served from here."""

    def __init__(self, source: Readable, prefix: bytes = b"") -> None:
        self.source = source
        self.buf = prefix
        self.pos = 0
        self.error: BaseException | None = None  # what the source raised (pyrage hides it)

    def read(self, size: int = -1, /) -> bytes:
        if self.pos >= len(self.buf):
            try:
                self.buf, self.pos = self.source.read(READ_AHEAD), 0
            except BaseException as exc:
                self.error = exc
                raise
            if not self.buf:
                return b""
        end = len(self.buf) if size is None or size < 0 else min(len(self.buf), self.pos + size)
        data = self.buf[self.pos:end]
        self.pos = end
        return data


@contextlib.contextmanager
def encrypting_reader(source: Readable, recipients: Sequence[x25519.Recipient],
                      ) -> Iterator[Readable]:
    """The age encryption of ``source``, as a stream (bounded memory)."""
    def produce(out: _Pipe) -> None:
        plain = _ReadOnly(source)
        try:
            pyrage.encrypt_io(plain, out, list(recipients))
        except Exception:
            if plain.error is not None:  # the source's own error (a local read, say)
                raise plain.error from None
            raise

    reader = _ThreadedReader(produce, "age-encrypt")
    try:
        yield reader
    finally:
        reader.close()


@contextlib.contextmanager
def decrypting_reader(source: Readable, key: str, identities: Sequence[x25519.Identity],
                      prefix: bytes = b"") -> Iterator[Readable]:
    """The plaintext of an age stream (``prefix``: bytes already read from it)."""
    _need_identity(key, identities)

    def produce(out: _Pipe) -> None:
        sealed = _ReadOnly(source, prefix)
        try:
            pyrage.decrypt_io(sealed, out, list(identities))
        except Exception as exc:
            if sealed.error is not None:  # the download failed, not the cipher
                raise sealed.error from None
            if isinstance(exc, pyrage.DecryptError):
                raise _decrypt_error(key, exc) from None
            raise

    reader = _ThreadedReader(produce, "age-decrypt")
    try:
        yield reader
    finally:
        reader.close()


class _ReadOnlyPrefixed:
    def __init__(self, body: Readable, head: bytes) -> None:
        self.body, self.head = body, head

    def read(self, size: int = -1, /) -> bytes:
        if self.head:
            if size is None or size < 0:
                data, self.head = self.head + self.body.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            if len(data) < size:
                data += self.body.read(size - len(data))
            return data
        return self.body.read(size)


class AgeStore(ObjectStore):
    """An ObjectStore that encrypts the snapshots and WAL batches it writes to
    ``keys.recipients`` (when there are any) and decrypts those it reads that are age files.
    Everything else goes through to ``inner`` unchanged."""

    def __init__(self, inner: ObjectStore, keys: AgeKeys | None = None) -> None:
        self.inner = inner
        self.keys = keys or AgeKeys()
        self.bucket = inner.bucket
        self._decrypted = False

    def __repr__(self) -> str:
        return f"AgeStore({self.inner!r})"

    # what this wrapper is
    @property
    def stored(self) -> ObjectStore:
        return self.inner.stored

    @property
    def encrypts(self) -> bool:
        return self.keys.encrypting

    @property
    def decrypted_any(self) -> bool:
        return self._decrypted or self.inner.decrypted_any

    # passed through
    @property
    def where(self) -> str:
        return self.inner.where

    def check_bucket(self) -> None:
        self.inner.check_bucket()

    def create_bucket(self) -> None:
        self.inner.create_bucket()

    def list_objects(self, prefix: str, start_after: str | None = None,
                     ) -> Iterator[ObjectInfo]:
        return self.inner.list_objects(prefix, start_after)

    def list_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        return self.inner.list_prefixes(prefix, delimiter)

    def list_level(self, prefix: str) -> Iterator[str | ObjectInfo]:
        return self.inner.list_level(prefix)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def delete_many(self, keys: Iterable[str]) -> int:
        return self.inner.delete_many(keys)

    def stale_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime | None]]:
        return self.inner.stale_uploads(prefix)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.inner.abort_upload(key, upload_id)

    def count_requests(self, counter: RequestCounter) -> bool:
        return self.inner.count_requests(counter)

    # reading
    def get(self, key: str) -> bytes:
        return self._plain(key, self.inner.get(key))

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        got = self.inner.get_with_metadata(key)
        if got is None:
            return None
        return self._plain(key, got[0]), got[1], got[2]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Of an encrypted object, the plaintext range: its age stream is decrypted from the
        start (pyrage decrypts whole streams only)."""
        if not is_data_key(key):
            return self.inner.get_range(key, start, length)
        with self.open_object(key) as body:
            skipped = 0
            while skipped < start:
                piece = body.read(min(READ_AHEAD, start - skipped))
                if not piece:
                    return b""
                skipped += len(piece)
            return read_exactly(body, length)

    def _plain(self, key: str, data: bytes) -> bytes:
        if is_data_key(key) and data.startswith(AGE_MAGIC):
            plain = decrypt(data, key, self.keys.identities)
            self._decrypted = True
            return plain
        return data

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[Readable]:
        with self.inner.open_object(key) as body:
            if not is_data_key(key):
                yield body
                return
            head = read_exactly(body, len(AGE_MAGIC))
            if head != AGE_MAGIC:
                yield _ReadOnlyPrefixed(body, head)
                return
            with decrypting_reader(body, key, self.keys.identities, head) as plain:
                self._decrypted = True
                yield plain

    # writing
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        if self.keys.encrypting and is_data_key(key):
            data = encrypt(data, self.keys.recipients)
        return self.inner.put(key, data, metadata, if_match=if_match,
                              if_none_match=if_none_match)

    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        if not (self.keys.encrypting and is_data_key(key)):
            self.inner.upload(key, stream, metadata, on_progress)
            return
        with encrypting_reader(stream, self.keys.recipients) as sealed:
            self.inner.upload(key, sealed, metadata, on_progress)  # type: ignore[arg-type]


def with_age(store: ObjectStore, keys: AgeKeys | None) -> ObjectStore:
    """``store`` behind the age layer (always: reading an encrypted object then gives the
    clear error even when no key was configured)."""
    return store if isinstance(store, AgeStore) else AgeStore(store, keys)
