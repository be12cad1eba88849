"""A reference reader: libSQL's own restore, re-written in Python from its Rust source, rule by
rule, so that the tests can check that libSQL would read the buckets our tool writes.

Read from tursodatabase/libsql at LIBSQL_COMMIT: ``bottomless/src/replicator.rs`` (the
restore itself), ``read.rs`` (``BatchReader``), ``wal.rs`` (``WalFrameHeader``,
``checksum_step``), ``uuid_utils.rs`` and ``libsql-replication/src/injector/sqlite_injector``
(which injected frames take effect). Each function below names the Rust function it mirrors;
where the Rust code panics or fails, this one raises LibsqlRestoreError with the Rust message.

Deliberately independent of bottomless_core (its restore, walsum, codec and layout): it uses
zstandard, zlib and struct directly, so that it checks our writer, not our reader. Input: any
object with ``list_objects(prefix)`` (objects with ``.key``, in key order) and ``get(key) ->
bytes`` (raising KeyError, FileNotFoundError or a ``NotFoundError`` when there is no such
object): give it the raw store, never a decrypting one (libSQL does not read age objects).

Not modelled: ``upload_remaining_files`` (local files of a crashed replicator), a destination
that already holds a database (``compare_with_local`` then skips the restore: this reader
restores into a fresh file, as ``bottomless-cli restore`` of a new path does), libSQL's page
encryption, and S3 errors other than "no such key".
"""

from __future__ import annotations

import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import zstandard

LIBSQL_COMMIT = "f8fb14f3638e44edf3dbace489618c7768daee55"  # the source read (2026-08-11)

MAX_RESTORE_STACK_DEPTH = 100  # replicator.rs: "at least one in 100 ... has to have a snapshot"
REVERSE_EPOCH_SECS = 253370761200  # generation_from_timestamp / generation_to_timestamp
NANOS_MAX = 999_999_999
LIST_PAGE = 1000  # ListObjects' default max-keys: a `break` in restore_wal ends one page
INJECTOR_CAPACITY = 4096  # SqliteInjector::new(path, 4096, ...) in restore_wal
FRESH_FILE_PAGE_SIZE = 4096  # `PRAGMA page_size` of a new SQLite file (read_page_size)
FRAME_HEADER_SIZE = 24  # WalFrameHeader::SIZE
UNSET_PAGE_SIZE = None  # Replicator::UNSET_PAGE_SIZE (usize::MAX)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LibsqlRestoreError(Exception):
    """The Rust restore fails here (an ``Err`` returned through ``?``, a ``bail!`` or a
    panic); nothing is renamed into place."""


class PageSizeBug(LibsqlRestoreError):
    """``set_page_size`` refused the generation's page size (see ``_set_page_size``)."""


class Store(Protocol):
    def list_objects(self, prefix: str) -> Iterator[Any]: ...

    def get(self, key: str) -> bytes: ...


@dataclass
class GenerationReplay:
    """What ``restore_wal`` did with one generation of the restore stack."""

    generation: uuid.UUID
    meta: tuple[int, tuple[int, int]] | None  # None: no .meta, WAL skipped (get_metadata)
    batches: int = 0  # batch objects read
    frames_injected: int = 0
    frames_committed: int = 0  # injected frames that a commit frame made take effect
    last_injected_frame: int = 0
    stopped: str = "end of listing"  # why this generation's WAL ended
    stop_key: str | None = None


@dataclass
class LibsqlResult:
    generation: uuid.UUID | None  # the one chosen (choose_generation)
    restored: bool  # False: libSQL restores nothing (no generation, or compare_with_local)
    why: str = ""  # when nothing was restored
    stack: list[uuid.UUID] = field(default_factory=list)  # the chosen one first (restore_stack)
    snapshot: str | None = None  # the snapshot key restored, None: none in the whole stack
    last_consistent_frame: int = 0
    replays: list[GenerationReplay] = field(default_factory=list)  # oldest first
    page_size: int | None = None
    path: Path | None = None

    @property
    def frames_applied(self) -> int:
        return sum(r.frames_committed for r in self.replays)

    @property
    def frames_injected(self) -> int:
        return sum(r.frames_injected for r in self.replays)

    def stopped(self) -> str:
        """Where and why each generation's WAL ended, oldest first."""
        return "; ".join(f"{r.generation}: {r.stopped}" for r in self.replays) or "no WAL"


def _is_missing(exc: BaseException) -> bool:
    """The store's "no such key": GetObjectError::NoSuchKey in the Rust code."""
    return isinstance(exc, KeyError | FileNotFoundError) or type(exc).__name__ in (
        "NotFoundError", "NoSuchKey")


# --- uuid_utils.rs / generation ids ---------------------------------------------------------

_HEX = "[0-9a-fA-F]"
_UUID_FORMS = re.compile(  # what uuid::Uuid::parse_str accepts
    rf"^(?:{_HEX}{{32}}|{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
    rf"|\{{{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\}}"
    rf"|urn:uuid:{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})$")


def parse_uuid(text: str) -> uuid.UUID | None:
    """``Uuid::parse_str``: simple, hyphenated, braced or urn form; None when it fails."""
    if not _UUID_FORMS.match(text):
        return None
    return uuid.UUID(text.removeprefix("urn:uuid:").strip("{}"))


def generation_to_timestamp(gen: uuid.UUID) -> tuple[int, int]:
    """``Replicator::generation_to_timestamp`` over ``uuid_utils::decode_unix_timestamp``:
    the 48-bit millis split into seconds and nanos, each reversed. Returns (secs, nanos)."""
    millis = int.from_bytes(gen.bytes[:6], "big")
    seconds, nanos = millis // 1000, (millis % 1000) * 1_000_000
    if seconds > REVERSE_EPOCH_SECS:  # u64 subtraction overflow
        raise LibsqlRestoreError(f"panic: generation {gen}: attempt to subtract with overflow")
    return REVERSE_EPOCH_SECS - seconds, NANOS_MAX - nanos


def _whole_seconds(t: datetime) -> int:
    """``NaiveDateTime::and_utc().timestamp()``: whole seconds, rounded down."""
    return (_utc(t) - _EPOCH) // timedelta(seconds=1)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# --- listing -------------------------------------------------------------------------------

def _pages(store: Store, prefix: str) -> Iterator[list[str]]:
    """ListObjects pages of LIST_PAGE keys (the marker loop of the Rust callers)."""
    keys = (obj.key for obj in store.list_objects(prefix))
    while page := list(islice(keys, LIST_PAGE)):
        yield page


def latest_generation_before(store: Store, db_name: str,
                             timestamp: datetime | None) -> uuid.UUID | None:
    """``Replicator::latest_generation_before``: the first generation in plain listing order
    of ``DB-`` whose creation time in whole seconds is <= T in whole seconds (no T: the first
    one). No completeness check, no tombstone check: a generation without .meta or snapshot
    is taken as well."""
    # `ts.and_utc().timestamp() as u64`: a T before 1970 wraps around to "any generation"
    threshold = None if timestamp is None else _whole_seconds(timestamp) % (1 << 64)
    last_gen = None
    for page in _pages(store, f"{db_name}-"):
        for key in page:
            index = key.find("/")
            name = key[len(db_name) + 1:index] if index >= 0 else key
            if name == last_gen:
                continue
            last_gen = name
            generation = parse_uuid(name)
            if generation is None:
                continue
            if threshold is None:
                return generation
            unix_seconds, _ = generation_to_timestamp(generation)
            if unix_seconds <= threshold:
                return generation
    return None


def get_last_consistent_frame(store: Store, db_name: str, generation: uuid.UUID) -> int:
    """``Replicator::get_last_consistent_frame`` / ``try_get_last_frame_no``: the LAST frame
    of the last parsable batch key in listing order (not the highest, not checked for gaps)."""
    last_frame = 0
    for page in _pages(store, f"{db_name}-{generation}/"):
        for key in page:
            parsed = parse_frame_range(key)
            if parsed is not None:
                last_frame = parsed[1]
    return last_frame


# --- small objects -------------------------------------------------------------------------

def _get_optional(store: Store, key: str) -> bytes | None:
    """NoSuchKey is None; any other failure fails the restore (``e => Err(e.into())``)."""
    try:
        return store.get(key)
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise LibsqlRestoreError(f"{key}: {exc}") from exc


def _get(store: Store, key: str) -> bytes:
    """``self.get_object(key).send().await?``: any failure fails the restore."""
    try:
        return store.get(key)
    except Exception as exc:
        raise LibsqlRestoreError(f"{key}: {exc}") from exc


# DateTime::from_timestamp's range (chrono 0.4.42: -262143-01-01 to 262142-12-31), unix seconds
_CHRONO_MIN_SECS = -8_334_601_315_200
_CHRONO_MAX_SECS = 8_210_266_876_799


def get_tombstone(store: Store, db_name: str) -> int | None:
    """``Replicator::get_tombstone``: ``DB.tombstone``, 8 bytes, big-endian i64 seconds (as
    unix seconds here; None also when chrono cannot represent it)."""
    data = _get_optional(store, f"{db_name}.tombstone")
    if data is None:
        return None
    if len(data) < 8:  # Buf::copy_to_slice
        raise LibsqlRestoreError("panic: tombstone: advance out of bounds")
    seconds = struct.unpack(">q", data[:8])[0]
    if not _CHRONO_MIN_SECS <= seconds <= _CHRONO_MAX_SECS:
        return None
    return seconds


def is_tombstoned(store: Store, db_name: str, generation: uuid.UUID) -> int | None:
    """``Replicator::is_tombstoned``: the tombstone, if its seconds (cast to u64: a negative
    one covers everything) are >= the generation's creation second."""
    tombstone = get_tombstone(store, db_name)
    if tombstone is None:
        return None
    if tombstone % (1 << 64) >= generation_to_timestamp(generation)[0]:
        return tombstone
    return None


def get_dependency(store: Store, db_name: str, generation: uuid.UUID) -> uuid.UUID | None:
    """``Replicator::get_dependency``: ``.dep`` must be exactly 16 bytes (``try_into()?``)."""
    data = _get_optional(store, f"{db_name}-{generation}/.dep")
    if data is None:
        return None
    if len(data) != 16:
        raise LibsqlRestoreError(f"generation {generation}: .dep has {len(data)} bytes: "
                                 "could not convert slice to array")
    return uuid.UUID(bytes=bytes(data))


def get_metadata(store: Store, db_name: str,
                 generation: uuid.UUID) -> tuple[int, tuple[int, int]] | None:
    """``Replicator::get_metadata``: page size and checksum pair (big-endian u32s); any
    failure to get ``.meta`` is None (its WAL is then skipped); fewer than 12 bytes panic."""
    try:
        data = store.get(f"{db_name}-{generation}/.meta")
    except Exception:
        return None
    if len(data) < 12:  # Buf::get_u32
        raise LibsqlRestoreError(f"panic: generation {generation}: .meta has {len(data)} "
                                 "bytes (get_u32 out of bounds)")
    page_size, c1, c2 = struct.unpack(">III", data[:12])
    return page_size, (c1, c2)


def get_remote_change_counter(store: Store, db_name: str, generation: uuid.UUID) -> bytes:
    """``Replicator::get_remote_change_counter``: 4 bytes, zeros when it cannot be read."""
    try:
        data = store.get(f"{db_name}-{generation}/.changecounter")
    except Exception:
        return bytes(4)
    if len(data) < 4:  # Buf::copy_to_slice
        raise LibsqlRestoreError(f"panic: generation {generation}: .changecounter has "
                                 f"{len(data)} bytes")
    return bytes(data[:4])


# --- keys and codecs -----------------------------------------------------------------------

def _parse_uint(text: str, bits: int) -> int | None:
    """Rust's ``str::parse::<u32|u64>``: an optional '+', then ASCII digits, in range."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(digits)
    return value if value < 1 << bits else None


def parse_compression(kind: str) -> str | None:
    """``CompressionKind::parse``: gz|gzip, raw|"" (none), zstd."""
    return {"gz": "gzip", "gzip": "gzip", "raw": "none", "": "none", "zstd": "zstd"}.get(kind)


def parse_frame_range(key: str) -> tuple[int, int, int, str] | None:
    """``Replicator::parse_frame_range``: ``.../FIRST-LAST-TS.EXT`` by the last '/', the last
    two '-' and the last '.'; (first, last, timestamp, compression) or None (then skipped)."""
    frame_delim = key.rfind("/")
    if frame_delim < 0:
        return None
    suffix = key[frame_delim + 1:]
    timestamp_delim = suffix.rfind("-")
    if timestamp_delim < 0:
        return None
    last_frame_delim = suffix[:timestamp_delim].rfind("-")
    if last_frame_delim < 0:
        return None
    compression_delim = suffix.rfind(".")
    if compression_delim < 0:
        return None
    first = _parse_uint(suffix[:last_frame_delim], 32)
    if first is None:
        return None
    last = _parse_uint(suffix[last_frame_delim + 1:timestamp_delim], 32)
    if last is None:
        return None
    if compression_delim < timestamp_delim + 1:  # &s[a..b] with b < a
        raise LibsqlRestoreError(f"panic: slice index starts at {timestamp_delim + 1} but "
                                 f"ends at {compression_delim} ({key})")
    timestamp = _parse_uint(suffix[timestamp_delim + 1:compression_delim], 64)
    if timestamp is None:
        return None
    compression = parse_compression(suffix[compression_delim + 1:])
    if compression is None:
        return None
    return first, last, timestamp, compression


def decode_first_member(data: bytes, compression: str, what: str) -> bytes:
    """async-compression's ``ZstdDecoder`` / ``GzipDecoder`` as ``restore_from_snapshot`` and
    ``BatchReader::new`` build them, without ``multiple_members``: only the FIRST zstd frame
    or gzip member is decoded, anything after it is ignored. libSQL's Cargo.lock has
    async-compression 0.4.11, whose zstd decoder ends a truncated frame silently with what it
    could decode (fixed in 0.4.33, async-compression#412); a truncated gzip member is an
    error (UnexpectedEof)."""
    if compression == "none":
        return bytes(data)
    if compression == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            return d.decompress(data)  # stops at the end of the first frame
        except zstandard.ZstdError as exc:
            raise LibsqlRestoreError(f"{what}: zstd: {exc}") from None
    d = zlib.decompressobj(wbits=31)  # gzip header and trailer (CRC-32, size) checked
    try:
        out = d.decompress(data)
    except zlib.error as exc:
        raise LibsqlRestoreError(f"{what}: gzip: {exc}") from None
    if not d.eof:
        raise LibsqlRestoreError(f"{what}: unexpected end of file (gzip)")
    return out


# --- wal.rs ---------------------------------------------------------------------------------

def checksum_step(init: tuple[int, int], data: bytes | memoryview) -> tuple[int, int]:
    """``wal::checksum_step``: 32-bit words in HOST byte order (its FIXME), which on the
    little-endian hosts libSQL runs on is little-endian: SQLite's order for WAL magic
    0x377f0682. A WAL written with big-endian checksums (0x377f0683) fails verification."""
    s0, s1 = init
    words = iter(struct.unpack(f"<{len(data) // 4}I", data))
    for a, b in zip(words, words, strict=True):
        s0 = (s0 + a + s1) & 0xFFFFFFFF
        s1 = (s1 + b + s0) & 0xFFFFFFFF
    return s0, s1


def verify_frame(header: bytes, init: tuple[int, int], page: bytes) -> tuple[int, int]:
    """``WalFrameHeader::verify``: the chain over the first 8 header bytes, then the page,
    must equal the header's checksum pair (big-endian u32s at 16..24)."""
    crc = checksum_step(init, header[0:8])
    crc = checksum_step(crc, page)
    frame_crc = struct.unpack_from(">II", header, 16)
    if crc != frame_crc:
        pgno = struct.unpack_from(">I", header)[0]
        raise LibsqlRestoreError(
            f"Frame checksum verification failed for page no. {pgno}. Expected: "
            f"{frame_crc[0]:X}-{frame_crc[1]:X}. Got: {crc[0]:X}-{crc[1]:X}")
    return crc


class BatchReader:
    """``read::BatchReader``: 24-byte header, then one page, until the (decoded) object ends.
    Fewer than 24 bytes left is the end (``UnexpectedEof`` is ``None``); a header without its
    whole page is an error."""

    def __init__(self, init_frame_no: int, data: bytes, page_size: int) -> None:
        self.data = data
        self.offset = 0
        self.page_size = page_size
        self.next_frame_no = init_frame_no

    def next_frame_header(self) -> bytes | None:
        if len(self.data) - self.offset < FRAME_HEADER_SIZE:
            return None
        header = self.data[self.offset:self.offset + FRAME_HEADER_SIZE]
        self.offset += FRAME_HEADER_SIZE
        return header

    def next_page(self) -> bytes:
        if len(self.data) - self.offset < self.page_size:
            raise LibsqlRestoreError("failed to fill whole buffer (a batch ends inside a page)")
        page = self.data[self.offset:self.offset + self.page_size]
        self.offset += self.page_size
        self.next_frame_no += 1
        return page


# --- libsql-replication injector ------------------------------------------------------------

class Injector:
    """``SqliteInjector`` as ``restore_wal`` uses it (one per generation, on the restore file).

    ``inject_frame`` buffers frames and flushes on a commit frame (size_after != 0) or when
    INJECTOR_CAPACITY frames are buffered; ``InjectorWal::insert_frames`` writes the buffer
    into the WAL of an open write transaction, which a commit frame (the last frame of a
    flush with size_after != 0) commits. When the restore drops the injector its connection
    closes: SQLite's checkpoint-on-close copies, for every page up to the last commit's size,
    its newest committed frame into the file and truncates the file to that size; frames
    after the last commit frame belong to a transaction that never committed and are lost.
    That is what this does, writing each committed page as its commit arrives (the newest
    write wins, as the newest WAL frame does) and truncating on close.
    """

    def __init__(self, db: Any, page_size: int) -> None:
        self.db = db
        self.page_size = page_size
        self.buffer: list[tuple[int, int, bytes]] = []  # (pgno, size_after, page)
        self.txn: list[tuple[int, int, bytes]] = []  # flushed, not yet committed
        self.committed_size: int | None = None  # pages after the last commit of this session
        self.committed_frames = 0

    def inject_frame(self, pgno: int, size_after: int, page: bytes) -> None:
        self.buffer.append((pgno, size_after, page))
        if size_after != 0 or len(self.buffer) >= INJECTOR_CAPACITY:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        self.txn += self.buffer
        size_after = self.buffer[-1][1]  # make_page_header: the last frame ends the txn
        self.buffer = []
        if size_after == 0:
            return  # LIBSQL_INJECT_OK_TXN: still in the write transaction
        for pgno, _, page in self.txn:
            self.db.seek((pgno - 1) * self.page_size)
            self.db.write(page)
        self.committed_frames += len(self.txn)
        self.committed_size = size_after
        self.txn = []

    def close(self) -> None:
        """The connection closes (checkpoint on close); an open transaction is rolled back."""
        self.buffer, self.txn = [], []
        if self.committed_size is not None:
            self.db.flush()
            os.ftruncate(self.db.fileno(), self.committed_size * self.page_size)


# --- replicator.rs: the restore -------------------------------------------------------------

class _Restore:
    def __init__(self, store: Store, db_name: str, compression: str, verify_crc: bool,
                 page_size_bug: bool) -> None:
        self.store = store
        self.db_name = db_name
        self.use_compression = compression
        self.verify_crc = verify_crc
        self.page_size_bug = page_size_bug
        self.page_size: int | None = UNSET_PAGE_SIZE

    def _set_page_size(self, page_size: int) -> None:
        """``Replicator::set_page_size``: once set, another page size is an error. The first
        call comes from ``restore_from_snapshot``, which asks ``PRAGMA page_size`` of the
        DESTINATION path (``read_page_size`` opens ``self.db_path``, not the file the
        snapshot was written to), a fresh file that answers 4096: so every generation whose
        .meta names another page size fails here (page_size_bug=False: the page size of the
        snapshot itself is taken instead, to check the other rules on such buckets)."""
        if self.page_size is not UNSET_PAGE_SIZE and self.page_size != page_size:
            raise PageSizeBug(f"Cannot set page size to {page_size}, it was already set to "
                              f"{self.page_size}")
        self.page_size = page_size

    def restore_from_snapshot(self, generation: uuid.UUID, db: Any) -> str | None:
        """``Replicator::restore_from_snapshot``: db.zstd, db.gz, db.raw in the order the
        configured compression gives; the first that can be fetched (any error: the next) is
        decoded (first frame/member only) into the restore file. Returns its key."""
        order = {"none": ("none", "zstd", "gzip"), "gzip": ("gzip", "zstd", "none"),
                 "zstd": ("zstd", "gzip", "none")}[self.use_compression]
        for algo in order:
            ext = {"none": "raw", "gzip": "gz", "zstd": "zstd"}[algo]
            key = f"{self.db_name}-{generation}/db.{ext}"
            try:
                data = self.store.get(key)
            except Exception:
                continue
            image = decode_first_member(data, algo, key)
            db.write(image)
            db.flush()
            if self.page_size_bug:
                self._set_page_size(FRESH_FILE_PAGE_SIZE)
            else:
                self._set_page_size(_image_page_size(image))
            return key
        return None

    def restore_wal(self, generation: uuid.UUID, page_size: int,
                    last_consistent_frame: int | None, checksum: tuple[int, int],
                    utc_time: datetime | None, db: Any, replay: GenerationReplay) -> None:
        """``Replicator::restore_wal``: the generation's batches in ListObjects key order.
        Unparsable keys are skipped. Per listing page, a batch whose first frame is not the
        last injected + 1, or (last generation of the stack only) whose last frame is above
        the last consistent frame, ends that page SILENTLY (the next page, if any, is still
        read). A batch stamped after ``utc_time`` ends this generation's WAL, silently too.
        Frames are counted from the batch's first frame by what the object holds, each
        checksum verified against the running chain from .meta (verify_crc), then injected."""
        injector = Injector(db, page_size)
        last_injected = 0
        prefix = f"{self.db_name}-{generation}/"
        try:
            for page in _pages(self.store, prefix):
                for key in page:
                    parsed = parse_frame_range(key)
                    if parsed is None:
                        continue
                    first, last, timestamp, compression = parsed
                    if first != last_injected + 1:
                        kind = "overlap" if first <= last_injected else "gap"
                        replay.stopped = (f"{kind}: frames up to {last_injected} applied, next "
                                          f"batch starts at {first}")
                        replay.stop_key = key
                        break
                    if last_consistent_frame is not None and last > last_consistent_frame:
                        replay.stopped = (f"batch above the last consistent frame "
                                          f"{last_consistent_frame}")
                        replay.stop_key = key
                        break
                    if utc_time is not None:
                        try:
                            stamp = _EPOCH + timedelta(seconds=timestamp)
                        except OverflowError:
                            stamp = None
                        if stamp is None or stamp > _utc(utc_time):
                            replay.stopped = (f"batch stamped {timestamp} is after utc_time "
                                              if stamp is not None else
                                              f"batch stamp {timestamp} unparsable")
                            replay.stop_key = key
                            return
                    data = decode_first_member(_get(self.store, key), compression, key)
                    reader = BatchReader(first, data, page_size)
                    replay.batches += 1
                    while (header := reader.next_frame_header()) is not None:
                        last_injected = reader.next_frame_no
                        page_buf = reader.next_page()
                        if self.verify_crc:
                            checksum = verify_frame(header, checksum, page_buf)
                        pgno, size_after = struct.unpack_from(">II", header)
                        injector.inject_frame(pgno, size_after, page_buf)
                        replay.frames_injected += 1
                    replay.last_injected_frame = last_injected
        finally:
            injector.close()
            replay.frames_committed = injector.committed_frames

    def full_restore(self, path: Path, generation: uuid.UUID, utc_time: datetime | None,
                     last_frame: int, result: LibsqlResult) -> None:
        """``Replicator::full_restore``: push generations on the restore stack while
        following ``.dep`` until one has a snapshot (more than MAX_RESTORE_STACK_DEPTH
        without: error; a chain that ends without one: the WAL is replayed on an empty
        file); then, oldest first, each generation with a .meta has its WAL replayed (without
        .meta: skipped), the last (the chosen one) bounded by its last consistent frame. A
        generation cut short (gap, utc_time) does not stop the ones after it."""
        with open(path, "w+b") as db:
            stack: list[uuid.UUID] = []
            current: uuid.UUID | None = generation
            while current is not None:
                stack.append(current)
                key = self.restore_from_snapshot(current, db)
                if key is not None:
                    result.snapshot = key
                    break
                if len(stack) > MAX_RESTORE_STACK_DEPTH:
                    raise LibsqlRestoreError("Restoration failed: maximum number of "
                                             "generations to restore from was reached.")
                current = get_dependency(self.store, self.db_name, current)
            result.stack = list(stack)
            while stack:
                gen = stack.pop()
                replay = GenerationReplay(gen, get_metadata(self.store, self.db_name, gen))
                result.replays.append(replay)
                if replay.meta is None:
                    replay.stopped = ".meta not found: WAL skipped"
                    continue
                page_size, checksum = replay.meta
                if self.page_size_bug and result.snapshot is None and page_size != 4096:
                    # No snapshot: the injector's connection to the empty file uses SQLite's
                    # default 4096-byte pages and writes that much of each frame.
                    raise PageSizeBug(f"page size {page_size} injected into an empty file "
                                      "of 4096-byte pages")
                self._set_page_size(page_size)
                self.restore_wal(gen, page_size, last_frame if not stack else None, checksum,
                                 utc_time, db, replay)
        result.page_size = self.page_size


def _image_page_size(image: bytes) -> int:
    if len(image) < 18:
        return FRESH_FILE_PAGE_SIZE
    value = struct.unpack_from(">H", image, 16)[0]
    return 65536 if value == 1 else value


def restore(store: Store, db_name: str, path: Path, *, generation: uuid.UUID | None = None,
            utc_time: datetime | None = None, compression: str = "zstd",
            verify_crc: bool = True, page_size_bug: bool = True) -> LibsqlResult:
    """``Replicator::restore`` into a fresh ``path``, as ``bottomless-cli restore [-g GEN]
    [--utc-time T]`` does: ``choose_generation`` (given, else ``latest_generation_before``),
    then ``restore_from``: tombstone check, ``get_last_consistent_frame``,
    ``compare_with_local`` (fresh destination), ``full_restore``. On an error the file is
    removed and LibsqlRestoreError raised; when nothing is restored, no file is written.
    ``compression``: LIBSQL_BOTTOMLESS_COMPRESSION (zstd, gzip, none)."""
    rs = _Restore(store, db_name, compression, verify_crc, page_size_bug)
    # choose_generation
    gen = generation if generation is not None else latest_generation_before(
        store, db_name, utc_time)
    result = LibsqlResult(gen, restored=False)
    if gen is None:
        result.why = "No generation found, nothing to restore"
        return result
    # restore_from
    tombstoned_at = is_tombstoned(store, db_name, gen)
    if tombstoned_at is not None:
        raise LibsqlRestoreError(f"Couldn't restore from generation {gen}. Database "
                                 f"'{db_name}' has been tombstoned at {tombstoned_at}.")
    last_frame = get_last_consistent_frame(store, db_name, gen)
    result.last_consistent_frame = last_frame
    # compare_with_local, against a destination that does not exist: local change counter
    # [0; 4], no local WAL. Only a remote counter of zeros (or none) with no batch and no
    # .dep makes it reuse the generation without restoring anything.
    remote_counter = get_remote_change_counter(store, db_name, gen)
    if (remote_counter == bytes(4) and last_frame == 0
            and get_dependency(store, db_name, gen) is None):
        result.why = ("compare_with_local: remote generation is up-to-date "
                      "(ReuseGeneration): nothing restored")
        return result
    tmp = path.with_name(path.name + ".libsql-restore")  # restore_db_path: data.tmp
    try:
        rs.full_restore(tmp, gen, utc_time, last_frame, result)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for suffix in ("-wal", "-shm"):  # remove_wal_files
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    result.restored = True
    result.path = path
    return result
