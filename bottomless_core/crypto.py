"""Client-side encryption of snapshots and WAL batches with age (https://age-encryption.org).

What a generation holds stays where it is: the object names, and the small objects a listing
and a chain walk need (``.meta``, ``.changecounter``, ``.dep``, the tombstone, the lease). Only
the data objects, the snapshot ``db.*`` and the WAL batches, are encrypted: their compressed
bytes become an age file (binary format, X25519 recipients), so the ``age`` CLI decrypts one
(``age -d -i key.txt OBJECT | zstd -d``). A reader tells an encrypted object by the first line
of every age file, ``age-encryption.org/v1``; objects without it are read as before, so a
bucket may mix both (a chain whose older generations predate encryption).

``EncryptedStore`` does all of it at the storage seam: everything above it (replicator,
follower, restore, snapshot) writes and reads plain compressed bytes. Large objects stream
through the cipher in bounded pieces (age's own 64 KiB chunks), so a multi-GB snapshot never
sits in memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyrage
from pyrage import x25519

from . import layout
from .codec import Readable
from .errors import BottomlessError, ConfigError, CorruptBackupError, NotFoundError
from .objectstore import ObjectStore

if TYPE_CHECKING:
    from .catalog import Generation

AGE_MAGIC = b"age-encryption.org/v1\n"  # the first line of every (binary) age file
ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
PIPE_CHUNKS = 16  # pieces (age writes 64 KiB each) in flight between the cipher and its reader
READ_AHEAD = 1 << 20  # bytes read from the source at a time
VERDICTS_KEPT = 4096  # generations whose "holds age objects" verdict a store remembers


class EncryptionError(BottomlessError):
    """Encrypted objects without (or with the wrong) identity, or a damaged encrypted object."""

    exit_code = 2


def is_encrypted(head: bytes) -> bool:
    """Does an object starting with these bytes hold an age file (binary or armored)?"""
    return head.startswith(AGE_MAGIC) or head.startswith(ARMOR_MAGIC)


def is_data_key(key: str) -> bool:
    """Snapshots and WAL batches: the objects that are encrypted."""
    name = key.rsplit("/", 1)[-1]
    return "/" in key and (layout.BatchKey.parse(name) is not None
                           or layout.snapshot_codec(name) is not None)


# --- keys -----------------------------------------------------------------------------------

def parse_recipients(values: Iterable[str], base: Path | None = None,
                     ) -> list[x25519.Recipient]:
    """Public keys (``age1...``), or files holding one per line (``#`` comments), as
    ``age-keygen`` prints them and ``age -R`` reads them. A value may list several, separated
    by commas or newlines (a path may contain spaces); an empty one is an error. Relative
    paths are relative to ``base`` when given (a config file's directory)."""
    out: list[x25519.Recipient] = []
    for value in values:
        items = recipient_items(value)
        if not items:
            raise ConfigError("empty age recipient (--age-recipient, "
                              "LIBSQL_BOTTOMLESS_AGE_RECIPIENT or age_recipient): give a "
                              "public key (age1...) or a file of them, or leave it out")
        for text in items:
            if text.startswith(RECIPIENT_PREFIX):
                out.append(_recipient(text, repr(text)))
                continue
            if is_secret_key(text):  # never echo it
                raise ConfigError("an age recipient is a secret key (an identity, for "
                                  "--age-identity); --age-recipient takes the public key "
                                  "(age1..., see age-keygen -y)")
            path = _path(text, base)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"age recipient {text!r}: neither a public key (age1...) nor "
                                  f"a readable file ({exc.strerror or exc})") from None
            keys = [(n, line.strip()) for n, line in enumerate(lines, 1)
                    if line.strip() and not line.strip().startswith("#")]
            if not keys:
                raise ConfigError(f"{path}: holds no age recipient (age1...)")
            for n, k in keys:
                if is_secret_key(k):  # never echo a secret key
                    raise ConfigError(f"{path} line {n} is a secret key (an identity, for "
                                      "--age-identity); --age-recipient takes the public key "
                                      "(age1..., see age-keygen -y)")
                out.append(_recipient(k, f"{path} line {n}"))
    return out


def recipient_items(value: str) -> list[str]:
    """The keys and files one recipient value names: split on commas and newlines (``#``
    lines skipped); a part made only of ``age1...`` words is split on spaces too."""
    if value.strip().upper().startswith(IDENTITY_PREFIX):  # a secret key: one item, never split
        return [value.strip()]
    out: list[str] = []
    for part in value.replace(",", "\n").splitlines():
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        words = part.split()
        out.extend(words if all(w.startswith(RECIPIENT_PREFIX) for w in words) else [part])
    return out


def identity_items(value: str) -> list[str]:
    """The secret keys and files one identity value names, one a line: a path (spaces
    allowed), an ``AGE-SECRET-KEY-1...``, or a whole key file's text (``#`` lines skipped)."""
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def is_secret_key(text: str) -> bool:
    return text.upper().startswith(IDENTITY_PREFIX)


def _path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _recipient(text: str, where: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text)
    except Exception:  # pyrage.RecipientError
        raise ConfigError(f"age recipient {where} is not an X25519 public key "
                          "(age1...)") from None


def load_identities(values: Iterable[str], base: Path | None = None,
                    ) -> list[x25519.Identity]:
    """Identity files (as ``age-keygen -o key.txt`` writes them), or a secret key itself
    (``AGE-SECRET-KEY-1...``, for containers that get it from a secret variable), or a whole
    key file's text; see ``identity_items``."""
    out: list[x25519.Identity] = []
    for value in values:
        for text in identity_items(value):
            if is_secret_key(text):
                out.append(_identity(text, "the secret key given"))
                continue
            path = _path(text, base)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"age identity file {str(path)!r}: cannot read it "
                                  f"({exc.strerror or exc})") from None
            keys = [line.strip() for line in lines
                    if line.strip() and not line.strip().startswith("#")]
            if not keys:
                raise ConfigError(f"age identity file {str(path)!r} holds no secret key "
                                  "(AGE-SECRET-KEY-1...)")
            out.extend(_identity(k, f"{path}") for k in keys)
    return out


def _identity(text: str, where: str) -> x25519.Identity:
    try:
        return x25519.Identity.from_str(text)
    except Exception:  # pyrage.IdentityError; never echo the key itself
        raise ConfigError(f"age identity in {where} is not an X25519 secret key "
                          "(AGE-SECRET-KEY-1...)") from None


@dataclass(frozen=True)
class AgeKeys:
    """Who new data objects are encrypted to, and what decrypts the ones read."""

    recipients: tuple[x25519.Recipient, ...] = ()
    identities: tuple[x25519.Identity, ...] = ()

    @classmethod
    def from_options(cls, recipients: Sequence[str] = (), identities: Sequence[str] = (),
                     recipients_base: Path | None = None, identities_base: Path | None = None,
                     ) -> AgeKeys:
        """``*_base``: the directory relative file paths are relative to (a config file's)."""
        return cls(tuple(parse_recipients(recipients, recipients_base)),
                   tuple(load_identities(identities, identities_base)))

    @property
    def encrypting(self) -> bool:
        return bool(self.recipients)


# --- bytes and streams ----------------------------------------------------------------------

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


def _read_exactly(body: Readable, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        piece = body.read(n - have)
        if not piece:
            break
        parts.append(piece)
        have += len(piece)
    return b"".join(parts)


# --- the store ------------------------------------------------------------------------------

class EncryptedStore:
    """An ObjectStore that encrypts snapshots and WAL batches it writes to ``keys.recipients``
    (when there are any) and decrypts those it reads that are age files. Everything else goes
    through unchanged; ``raw`` is the store underneath (``copy`` moves objects as they are)."""

    def __init__(self, raw: ObjectStore, keys: AgeKeys | None = None) -> None:
        self.raw = raw
        self.keys = keys or AgeKeys()
        self.bucket = raw.bucket
        self._sealed: dict[str, bool] = {}  # generation prefix -> its data objects are age
        self._guard = threading.Lock()
        self.read_sealed = False  # an age object was decrypted through this store
        self.keep_sealed = False  # then refuse to write plaintext data objects (keep_sealed())

    def __repr__(self) -> str:
        return f"EncryptedStore({self.raw!r})"

    def __getattr__(self, name: str) -> Any:  # list, head, delete, buckets, uploads...
        return getattr(self.raw, name)

    @property
    def where(self) -> str:
        return self.raw.where

    # reading
    def get(self, key: str) -> bytes:
        return self._plain(key, self.raw.get(key))

    def get_optional(self, key: str) -> bytes | None:
        data = self.raw.get_optional(key)
        return None if data is None else self._plain(key, data)

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        got = self.raw.get_with_metadata(key)
        if got is None:
            return None
        return self._plain(key, got[0]), got[1], got[2]

    def _plain(self, key: str, data: bytes) -> bytes:
        if is_data_key(key) and data.startswith(AGE_MAGIC):
            plain = decrypt(data, key, self.keys.identities)
            self.read_sealed = True
            return plain
        return data

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[Readable]:
        with self.raw.open_object(key) as body:
            if not is_data_key(key):
                yield body
                return
            head = _read_exactly(body, len(AGE_MAGIC))
            if head != AGE_MAGIC:
                yield _ReadOnlyPrefixed(body, head)
                return
            with decrypting_reader(body, key, self.keys.identities, head) as plain:
                self.read_sealed = True
                yield plain

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        total = 0
        with self.open_object(key) as body:
            while piece := body.read(1 << 20):
                total += len(piece)
                sink(piece)
        return total

    # writing
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        if self.keys.encrypting and is_data_key(key):
            data = encrypt(data, self.keys.recipients)
        elif is_data_key(key):
            self._writing_plain(key)
        return self.raw.put(key, data, metadata, if_match=if_match,
                            if_none_match=if_none_match)

    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        if not (self.keys.encrypting and is_data_key(key)):
            if is_data_key(key):
                self._writing_plain(key)
            self.raw.upload(key, stream, metadata, on_progress)
            return
        with encrypting_reader(stream, self.keys.recipients) as sealed:
            self.raw.upload(key, sealed, metadata, on_progress)  # type: ignore[arg-type]


    # plaintext next to encrypted objects
    def _writing_plain(self, key: str) -> None:
        if self.keep_sealed and self.read_sealed:
            raise ConfigError(f"{key}: what it would hold was read from encrypted (age) "
                              f"objects; {NEED_RECIPIENT}")
        self._remember(key.rsplit("/", 1)[0] + "/", False, keep=True)

    def _remember(self, prefix: str, sealed: bool, keep: bool = False) -> None:
        with self._guard:
            if keep and prefix in self._sealed:
                return
            self._sealed[prefix] = sealed
            while len(self._sealed) > VERDICTS_KEPT:
                del self._sealed[next(iter(self._sealed))]

    def refuse_plaintext_into(self, g: Generation, what: str, after: bool = False) -> None:
        """Without recipients: raise ConfigError if ``g``'s snapshot or newest WAL batch is an
        age file (``what`` would be added to it, or with ``after`` follow it, in plaintext).
        Reads their first bytes once per generation; one this store wrote plaintext into is
        known without reading."""
        if self.keys.encrypting:
            return
        prefix = g.key("")
        sealed = self._sealed.get(prefix)
        if sealed is None:
            sample = [g.snapshot.key] if g.snapshot is not None else []
            if g.batches:
                sample.append(g.batches[-1][1].key)
            sealed = any(self._is_sealed(k) for k in sample)
            self._remember(prefix, sealed)
        if sealed:
            how = "follow it" if after else "be added to it"
            raise ConfigError(f"generation {g.id} is encrypted (age) and {what} would {how} "
                              f"in plaintext; {NEED_RECIPIENT}")

    def _is_sealed(self, key: str) -> bool:
        try:
            return object_encryption(self.raw, key) == "age"
        except NotFoundError:  # removed since the listing
            return False


NEED_RECIPIENT = ("give --age-recipient (or LIBSQL_BOTTOMLESS_AGE_RECIPIENT, config key "
                  "age_recipient) with the public key it is encrypted to")


def refuse_plaintext_into(storage: ObjectStore, g: Generation,
                          what: str = "WAL batches", after: bool = False) -> None:
    """Refuse to write plaintext ``what`` into (or, with ``after``, as the next generation
    after) a generation whose objects are encrypted, when no recipient is configured (see
    ``EncryptedStore.refuse_plaintext_into``)."""
    if isinstance(storage, EncryptedStore):
        storage.refuse_plaintext_into(g, what, after)


@contextlib.contextmanager
def keep_sealed(storage: ObjectStore) -> Iterator[None]:
    """While inside: if ``storage`` has ever decrypted an age object, writing a plaintext
    snapshot or WAL batch through it is a ConfigError (what it holds may come from there)."""
    if not isinstance(storage, EncryptedStore):
        yield
        return
    before = storage.keep_sealed
    storage.keep_sealed = True
    try:
        yield
    finally:
        storage.keep_sealed = before


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


def object_encryption(store: ObjectStore, key: str) -> str:
    """"age" or "none", from the first bytes of the object (read as stored)."""
    raw = store.raw if isinstance(store, EncryptedStore) else store
    with raw.open_object(key) as body:
        head = _read_exactly(body, len(ARMOR_MAGIC))
    return "age" if is_encrypted(head) else "none"


def wrap(store: ObjectStore, keys: AgeKeys | None) -> ObjectStore:
    """``store`` behind the age layer (always: reading an encrypted object then gives the
    clear error even when no key was configured)."""
    if isinstance(store, EncryptedStore):
        return store
    return EncryptedStore(store, keys)  # type: ignore[return-value]


def encryption_key_refused() -> ConfigError:
    """libSQL's --encryption-key is a cipher inside the database file, not of the backup."""
    return ConfigError(
        "--encryption-key / LIBSQL_BOTTOMLESS_ENCRYPTION_KEY is libSQL's page-level encryption "
        "of the database file, which Python's sqlite3 cannot open, so this tool cannot back it "
        "up; to encrypt the backup itself use --age-recipient age1... (and --age-identity FILE "
        "to restore), or LIBSQL_BOTTOMLESS_AGE_RECIPIENT / LIBSQL_BOTTOMLESS_AGE_IDENTITY")
