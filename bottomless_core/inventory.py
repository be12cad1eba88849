"""A bucket's databases at a glance (``databases``, ``ls --all``): one summary each.

Per database only its newest generation is looked at: one listing of its objects and one
small read that tells the database's size and whether it is encrypted (see ``_Probe``); the
generations themselves come from the bucket-wide listing (catalog.scan_databases). Nothing is
downloaded whole but a WAL batch of at most ``BATCH_READ_LIMIT`` bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

from . import layout, pack
from .catalog import (
    MAX_CHAIN,
    Generation,
    ListedDatabase,
    describe_generation,
    is_dead,
    read_dependency,
    read_tombstone,
)
from .codec import Codec, CodecError, Decoder, decompress
from .dbheader import DB_HEADER_SIZE, NotSQLiteError, parse_db_header
from .errors import CorruptBackupError, EncryptionError, NotFoundError
from .layout import BatchKey
from .progress import NoProgress, Progress
from .store.base import ARMOR_MAGIC, ObjectInfo, ObjectStore, is_encrypted

WORKERS = 16  # databases described side by side
BATCH_READ_LIMIT = 1 << 20  # a larger newest batch is not fetched: the size is then unknown
SNAPSHOT_HEAD = 136 << 10  # compressed bytes holding a snapshot's first block (128 KiB at most)
SNAPSHOT_FEED = 256  # compressed bytes decoded at a time: a block of zeros expands a lot
WAL_FRAME_HEADER = 24

State = tuple[int | None, int | None]  # database pages, page size (None: not told)
UNKNOWN: State = (None, None)


@dataclass(frozen=True)
class DatabaseSummary:
    """What ``databases`` says about one database. ``db_pages``/``page_size``: its size after
    the newest commit of its newest generation (None: not told cheaply). ``encryption``: "age"
    or "none" as the object read for the size is stored (None: none read)."""

    name: str
    generations: int
    newest: uuid.UUID | None = None
    complete: bool | None = None  # the newest generation has its .meta (was not interrupted)
    last_commit: datetime | None = None  # stamp of its newest WAL batch or page pack
    page_size: int | None = None
    db_pages: int | None = None
    encryption: str | None = None
    has_tombstone: bool = False
    tombstone: datetime | None = None  # what it covers: generations created at or before it
    problem: str | None = None  # a damaged object seen on the way

    @property
    def created(self) -> datetime | None:
        return layout.generation_time(self.newest) if self.newest is not None else None

    @property
    def changed(self) -> datetime | None:
        """The newest commit, or the generation's creation when it has none."""
        return self.last_commit or self.created

    @property
    def size(self) -> int | None:
        if self.db_pages is None or self.page_size is None:
            return None
        return self.db_pages * self.page_size

    @property
    def deleted(self) -> bool:
        """Nothing of it is restorable by name: no generation, or the tombstone covers the
        newest (a removal of the whole database in progress)."""
        if self.newest is None:
            return True
        return self.tombstone is not None and is_dead(int(self.tombstone.timestamp()),
                                                      self.newest)


def describe_databases(storage: ObjectStore, listed: list[ListedDatabase],
                       progress: Progress | None = None, workers: int = WORKERS,
                       ) -> list[DatabaseSummary]:
    """``describe_database`` of each, ``workers`` at a time, in the order given. A storage
    error stops it all (the others are cancelled); damage stays in the summary."""
    progress = progress or NoProgress()
    progress.start("databases", len(listed), unit="databases")
    results: list[DatabaseSummary | None] = [None] * len(listed)
    pool = ThreadPoolExecutor(max(1, min(workers, len(listed))),
                              thread_name_prefix="describe-db")
    try:
        futures: dict[Future[DatabaseSummary], int] = {
            pool.submit(describe_database, storage, db): i for i, db in enumerate(listed)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            progress.advance("databases", 1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.finish("databases")
    return [r for r in results if r is not None]


def describe_database(storage: ObjectStore, db: ListedDatabase) -> DatabaseSummary:
    """The summary of one database (its newest generation only)."""
    problems: list[str] = []
    tombstone = None
    if db.has_tombstone:
        try:
            secs = read_tombstone(storage, db.name)
        except CorruptBackupError as exc:
            problems.append(str(exc))
        else:
            tombstone = _time(secs)
            if secs is not None and tombstone is None:
                problems.append(f"{layout.tombstone_key(db.name)}: {secs} is no time")
    base = DatabaseSummary(db.name, len(db.generations), has_tombstone=db.has_tombstone,
                           tombstone=tombstone)
    if not db.generations:
        return _with(base, problems)
    newest = db.generations[0]
    try:
        g = describe_generation(storage, db.name, newest, read_metadata=False)
    except NotFoundError:  # removed since the listing
        return _with(base, problems)
    stamps = [k.timestamp for k, _ in g.batches] + [k.timestamp for k, _ in g.packs]
    probe = _Probe(storage, db.name, problems)
    pages, page_size = probe.state_at(g, g.contiguous_frame)
    summary = dataclasses.replace(
        base, newest=newest, complete=g.meta_listed,
        last_commit=_time(max(stamps, default=None)), page_size=page_size, db_pages=pages,
        encryption=probe.encryption)
    return _with(summary, problems)


def _time(secs: int | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(secs, UTC) if secs is not None else None
    except (OverflowError, OSError, ValueError):
        return None  # (a stamp no writer of ours or libSQL's makes)


def _with(summary: DatabaseSummary, problems: list[str]) -> DatabaseSummary:
    if not problems:
        return summary
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return dataclasses.replace(summary, problem=problems[0] + more)


class _Probe:
    """Reads what tells a generation's database size at a frame, cheaply: the header of the
    page pack ending there (64 bytes), else the WAL batch holding it (its last commit frame
    says the size; only when it is at most BATCH_READ_LIMIT bytes), else, at frame 0, the
    SQLite header of the snapshot (its first compressed block) or the parent's state that
    the generation starts from. Notes the encryption of the object read."""

    def __init__(self, storage: ObjectStore, db_name: str, problems: list[str]) -> None:
        self.storage, self.db_name, self.problems = storage, db_name, problems
        self.encryption: str | None = None

    def state_at(self, g: Generation, frame: int) -> State:
        """(database pages, page size) after ``frame`` of ``g``; None where not told."""
        for _ in range(MAX_CHAIN):
            if frame > 0:
                return self._after_frame(g, frame)
            if g.snapshot is not None and g.snapshot_codec is not None:
                return self._snapshot(g.snapshot, g.snapshot_codec)
            parent = self._parent(g)
            if parent is None:
                return UNKNOWN
            g, frame = parent
        return UNKNOWN

    def _parent(self, g: Generation) -> tuple[Generation, int] | None:
        try:
            dep = read_dependency(self.storage, self.db_name, g.id)
            if dep is None:
                return None
            parent = describe_generation(self.storage, self.db_name, dep.parent,
                                         read_metadata=False)
        except NotFoundError:
            return None
        except CorruptBackupError as exc:
            self.problems.append(str(exc))
            return None
        frame = dep.parent_frames if dep.parent_frames is not None else parent.contiguous_frame
        return parent, frame

    def _after_frame(self, g: Generation, frame: int) -> State:
        for k, info in g.packs:
            if k.last == frame:
                return self._decoded(info, self._head(info, pack.HEADER.size), _pack_state)
        for k, info in g.batches:
            if k.first <= frame <= k.last:
                if info.size > BATCH_READ_LIMIT:
                    self._head(info, len(ARMOR_MAGIC))  # (its encryption, at least)
                    return UNKNOWN
                return self._decoded(info, self._whole(info),
                                     functools.partial(_batch_state, key=k, frame=frame))
        return UNKNOWN

    def _snapshot(self, info: ObjectInfo, codec: Codec) -> State:
        head = self._head(info, SNAPSHOT_HEAD)
        return self._decoded(info, head, lambda h: _snapshot_state(h, codec))

    def _decoded(self, info: ObjectInfo, data: bytes | None,
                 decode: Callable[[bytes], State]) -> State:
        if data is None:
            return UNKNOWN
        try:
            return decode(data)
        except (CodecError, NotSQLiteError, pack.PackError, ValueError, struct.error) as exc:
            self.problems.append(f"{info.key}: {exc}")
            return UNKNOWN

    def _head(self, info: ObjectInfo, n: int) -> bytes | None:
        """The first ``n`` bytes in the clear; None when they cannot be read (an age file and
        no identity that decrypts it, or gone)."""
        try:
            raw = self.storage.stored.get_range(info.key, 0, n)
            return self._clear(raw, lambda: self.storage.get_range(info.key, 0, n))
        except (NotFoundError, EncryptionError):
            return None
        except CorruptBackupError as exc:  # (a damaged age file)
            self.problems.append(str(exc))
            return None

    def _whole(self, info: ObjectInfo) -> bytes | None:
        try:
            raw = self.storage.stored.get(info.key)
            return self._clear(raw, lambda: self.storage.get(info.key))
        except (NotFoundError, EncryptionError):
            return None
        except CorruptBackupError as exc:
            self.problems.append(str(exc))
            return None

    def _clear(self, raw: bytes, decrypted: Callable[[], bytes]) -> bytes | None:
        """``raw`` if it is not an age file, else what the age layer makes of it (None: there
        is none, or it has no identity for it)."""
        if not is_encrypted(raw[:len(ARMOR_MAGIC)]):
            self.encryption = "none"
            return raw
        self.encryption = "age"
        if self.storage.stored is self.storage:
            return None
        plain = decrypted()
        return None if is_encrypted(plain[:len(ARMOR_MAGIC)]) else plain


def _pack_state(head: bytes) -> State:
    info = pack.decode_header(head)
    return info.db_pages, info.page_size


def _snapshot_state(head: bytes, codec: Codec) -> State:
    """Pages and page size from the SQLite header at the start of a compressed image."""
    decoder, out, at = Decoder(codec), b"", 0
    while len(out) < DB_HEADER_SIZE and at < len(head):
        out += decoder.feed(head[at:at + SNAPSHOT_FEED])
        at += SNAPSHOT_FEED
    header = parse_db_header(out[:DB_HEADER_SIZE])
    return header.page_count or None, header.page_size


def _batch_state(data: bytes, key: BatchKey, frame: int) -> State:
    """The database size after the last commit of a WAL batch up to ``frame`` (pages None
    when none commits there). Its page size is what its frames hold: the key says how many."""
    raw = decompress(data, key.codec)
    count = key.last - key.first + 1
    page_size = len(raw) // count - WAL_FRAME_HEADER
    if len(raw) % count or page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise ValueError(f"{len(raw)} bytes are not {count} WAL frames")
    size = WAL_FRAME_HEADER + page_size
    for i in range(frame - key.first, -1, -1):
        (pages,) = struct.unpack_from(">I", raw, i * size + 4)
        if pages:
            return int(pages), page_size
    return None, page_size
