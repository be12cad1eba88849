"""What is in the bucket: generations of a database, newest first, and what each one holds."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from . import layout
from .codec import Codec
from .errors import CorruptBackupError, NotFoundError
from .layout import BatchKey, Meta, PackKey
from .store.base import ObjectInfo, ObjectStore

MAX_CHAIN = 100  # libSQL's MAX_RESTORE_STACK_DEPTH: a restore follows at most this many .dep
SHA256_METADATA = "sha256"  # user metadata on snapshots we write: digest of the raw image
FRAMES_METADATA = "wal-frames"  # on snapshots: WAL frames of the generation folded into it
PARENT_FRAMES_METADATA = "parent-frames"  # on .dep of a snapshot-less generation: the
PARENT_CHECKSUM_METADATA = "parent-checksum"  # parent's last frame and chain value it builds on
BASE_METADATA = "base"  # on .dep of a generation that starts from its own snapshot: "snapshot"
# on snapshots and .dep we write: the generation they belong to, so that one copied over the
# same object of another generation is told apart (its digest and chain metadata travel along)
GENERATION_METADATA = "generation"


def snapshot_metadata(gen: uuid.UUID, sha256: str, wal_frames: int = 0) -> dict[str, str]:
    """User metadata of a snapshot we upload: digest of the raw image, WAL frames folded into
    it, and the generation it belongs to."""
    return {SHA256_METADATA: sha256, FRAMES_METADATA: str(wal_frames),
            GENERATION_METADATA: str(gen)}


def check_owner(key: str, gen: uuid.UUID, metadata: dict[str, str]) -> None:
    """Refuse an object whose metadata says it belongs to another generation."""
    owner = metadata.get(GENERATION_METADATA)
    if owner is not None and owner != str(gen):
        raise CorruptBackupError(f"{key}: belongs to generation {owner}, not {gen} (copied "
                                 "over from another generation?)")


MAX_NAME_DEPTH = 8  # path components of a database name the bucket-wide listing looks into


@dataclass
class ListedDatabase:
    """A database as the bucket-wide listing finds it: its generations (newest first) and
    whether its tombstone is there. Either may be missing, not both."""

    name: str
    generations: list[uuid.UUID] = field(default_factory=list)
    has_tombstone: bool = False


def scan_databases(storage: ObjectStore, max_depth: int = MAX_NAME_DEPTH,
                   ) -> list[ListedDatabase]:
    """Every database of the bucket, by name, from delimited listings of its "directories".

    A level's common prefixes are generations (``NAME-GEN/``) or, for names holding '/'
    (``tenants/a.db``), the next level, listed in turn up to ``max_depth`` components; its
    objects include the tombstones (``NAME.tombstone``). One listing request per 1,000
    entries of a level, so per 1,000 generations in all, nothing read.
    """
    found: dict[str, ListedDatabase] = {}
    suffix = layout.TOMBSTONE_SUFFIX
    levels = [("", 1)]
    while levels:
        prefix, depth = levels.pop()
        for entry in storage.list_level(prefix):
            if isinstance(entry, str):
                name = layout.database_from_prefix(entry)
                gen = layout.generation_from_prefix(name, entry) if name is not None else None
                if name is not None and gen is not None:
                    found.setdefault(name, ListedDatabase(name)).generations.append(gen)
                elif depth < max_depth:
                    levels.append((entry, depth + 1))
            elif entry.key.endswith(suffix) and len(entry.key) > len(prefix) + len(suffix):
                name = entry.key[:-len(suffix)]
                found.setdefault(name, ListedDatabase(name)).has_tombstone = True
    for db in found.values():
        db.generations.sort(key=layout.generation_millis)
    return sorted(found.values(), key=lambda db: db.name)


def list_databases(storage: ObjectStore) -> Iterator[str]:
    """The names of the databases that have generations in the bucket, sorted."""
    for db in scan_databases(storage):
        if db.generations:
            yield db.name


def list_generations(storage: ObjectStore, db_name: str) -> Iterator[uuid.UUID]:
    """Generation ids of ``db_name``, newest first: one listing entry per generation."""
    for prefix in storage.list_prefixes(layout.generations_prefix(db_name)):
        gen = layout.generation_from_prefix(db_name, prefix)
        if gen is not None:
            yield gen


def newest_generation(storage: ObjectStore, db_name: str) -> uuid.UUID | None:
    return next(list_generations(storage, db_name), None)


@dataclass
class GenerationSummary:
    """What one listing of every object tells about a generation, without reading any (but
    its parent, read from ``.dep`` when asked for: ``read_parent``)."""

    id: uuid.UUID
    objects: list[str] = field(default_factory=list)
    size: int = 0
    has_snapshot: bool = False
    has_meta: bool = False
    has_dep: bool = False
    parent: uuid.UUID | None = None

    @property
    def created(self) -> datetime:
        return layout.generation_time(self.id)


def bucket_index(storage: ObjectStore, db_name: str) -> list[GenerationSummary]:
    """Every generation of ``db_name`` and its object keys, newest first, from one listing
    of the database's objects (1,000 keys a request) instead of one listing per generation."""
    found: dict[uuid.UUID, GenerationSummary] = {}
    head = layout.generations_prefix(db_name)
    for obj in storage.list_objects(head):
        prefix, _, name = obj.key.partition("/")
        gen = layout.generation_from_prefix(db_name, prefix + "/")
        if gen is None:
            continue
        summary = found.get(gen)
        if summary is None:
            summary = found[gen] = GenerationSummary(gen)
        summary.objects.append(obj.key)
        summary.size += obj.size
        summary.has_snapshot |= layout.snapshot_codec(name) is not None
        summary.has_meta |= name == layout.META
        summary.has_dep |= name == layout.DEPENDENCY
    return sorted(found.values(), key=lambda s: layout.generation_millis(s.id))


def is_dead(tombstone: int | None, gen: uuid.UUID) -> bool:
    """Covered by the tombstone: created (in whole seconds, as libSQL compares) at or before
    it."""
    return tombstone is not None and int(layout.generation_time(gen).timestamp()) <= tombstone


def read_tombstone(storage: ObjectStore, db_name: str) -> int | None:
    """Unix seconds at or before which every generation counts as deleted, if any."""
    data = storage.get_optional(layout.tombstone_key(db_name))
    if data is None:
        return None
    try:
        return layout.decode_tombstone(data)
    except ValueError as exc:
        raise CorruptBackupError(f"{layout.tombstone_key(db_name)}: {exc}") from None


@dataclass
class Generation:
    """One generation and the objects under its prefix."""

    db_name: str
    id: uuid.UUID
    snapshot: ObjectInfo | None = None
    snapshot_codec: Codec | None = None
    batches: list[tuple[BatchKey, ObjectInfo]] = field(default_factory=list)
    packs: list[tuple[PackKey, ObjectInfo]] = field(default_factory=list)  # compacted pages
    meta: Meta | None = None
    change_counter: bytes | None = None
    parent: uuid.UUID | None = None
    # For a generation without a snapshot of its own: where in its parent it starts (None when
    # the writer did not record it, e.g. libSQL).
    parent_frames: int | None = None
    parent_checksum: tuple[int, int] | None = None
    own_base: bool = False  # .dep says: starts from its own snapshot, never from the parent
    meta_listed: bool = False  # the listing shows a .meta (read into ``meta`` or not)
    object_count: int = 0
    total_size: int = 0

    @property
    def has_snapshot(self) -> bool:
        return self.snapshot is not None

    @property
    def complete(self) -> bool:
        """Its creation finished: ``.meta`` is written last (after the snapshot and the WAL
        frames that make the snapshot whole), so a generation without it was interrupted."""
        return self.meta is not None

    @property
    def created(self) -> datetime:
        return layout.generation_time(self.id)

    def covered(self) -> list[tuple[int, int, int]]:
        """(first, last, stamp) of every batch and pack, in frame order: the frames the
        bucket holds (batches covered by packs may have been removed)."""
        return sorted([(k.first, k.last, k.timestamp) for k, _ in self.batches]
                      + [(k.first, k.last, k.timestamp) for k, _ in self.packs])

    @property
    def last_frame(self) -> int:
        """Last frame of the highest batch or pack (libSQL's "consistent frame", when the
        batches are all there)."""
        return max((last for _, last, _ in self.covered()), default=0)

    @property
    def contiguous_frame(self) -> int:
        """Last frame reachable from frame 1 without a gap (overlaps are fine)."""
        last = 0
        for first, end, _ in self.covered():
            if first > last + 1:
                break
            last = max(last, end)
        return last

    def key(self, name: str) -> str:
        return layout.object_key(self.db_name, self.id, name)


def describe_generation(storage: ObjectStore, db_name: str, gen: uuid.UUID,
                        read_metadata: bool = True, change_counter: bool = True) -> Generation:
    """List a generation's objects; with ``read_metadata`` also fetch .meta, .dep (and
    .changecounter unless ``change_counter`` is False), asked for beside the listing (one
    round trip, not three: a restore through a chain describes every link) and kept when
    the listing shows them.

    Raises NotFoundError if nothing is stored under the generation's prefix.
    """
    g = Generation(db_name, gen)
    prefix = layout.generation_prefix(db_name, gen)
    small = _ask_small_objects(storage, g, change_counter) if read_metadata else {}
    names: set[str] = set()
    try:
        for obj in storage.list_objects(prefix):
            name = obj.key[len(prefix):]
            names.add(name)
            g.object_count += 1
            g.total_size += obj.size
            batch = BatchKey.parse(name)
            if batch is not None:
                g.batches.append((batch, obj))
                continue
            pack = PackKey.parse(name)
            if pack is not None:
                g.packs.append((pack, obj))
                continue
            codec = layout.snapshot_codec(name)
            if codec is not None and g.snapshot is None:
                g.snapshot, g.snapshot_codec = obj, codec
        if not g.object_count:
            raise NotFoundError(f"generation {gen} of {db_name!r} not found")
        g.meta_listed = layout.META in names
        g.batches.sort(key=lambda b: (b[0].first, b[0].last))
        g.packs.sort(key=lambda p: (p[0].first, -p[0].last, p[0].level))
        if read_metadata:
            _take_small_objects(g, names, small)
    finally:
        for fut in small.values():
            fut.cancel()
    return g


_SMALL_READS = ThreadPoolExecutor(16, thread_name_prefix="describe")


def _ask_small_objects(storage: ObjectStore, g: Generation, change_counter: bool,
                       ) -> dict[str, Future[object]]:
    asked: dict[str, Future[object]] = {
        layout.META: _SMALL_READS.submit(storage.get_optional, g.key(layout.META)),
        layout.DEPENDENCY: _SMALL_READS.submit(read_dependency, storage, g.db_name, g.id)}
    if change_counter:
        asked[layout.CHANGE_COUNTER] = _SMALL_READS.submit(storage.get_optional,
                                                           g.key(layout.CHANGE_COUNTER))
    return asked


def _take_small_objects(g: Generation, names: set[str],
                        asked: dict[str, Future[object]]) -> None:
    """What was asked beside the listing, for the names it showed (one that appeared after
    the listing is not taken: the generation is as it was listed)."""
    if layout.META in names:
        data = asked[layout.META].result()
        try:
            g.meta = Meta.decode(data) if isinstance(data, bytes) else None
        except ValueError as exc:
            raise CorruptBackupError(f"{g.key(layout.META)}: {exc}") from None
    if layout.DEPENDENCY in names:
        dep = asked[layout.DEPENDENCY].result()
        if isinstance(dep, Dependency):
            g.parent, g.own_base = dep.parent, dep.own_base
            g.parent_frames, g.parent_checksum = dep.parent_frames, dep.parent_checksum
    if layout.CHANGE_COUNTER in asked and layout.CHANGE_COUNTER in names:
        counter = asked[layout.CHANGE_COUNTER].result()
        g.change_counter = counter if isinstance(counter, bytes) else None


@dataclass(frozen=True)
class Dependency:
    """``.dep``: the parent, and what the generation starts from (its metadata)."""

    parent: uuid.UUID
    own_base: bool = False  # starts from its own snapshot, never from the parent
    parent_frames: int | None = None  # builds on the parent up to this frame...
    parent_checksum: tuple[int, int] | None = None  # ...whose chain value this is


def read_dependency(storage: ObjectStore, db_name: str, gen: uuid.UUID) -> Dependency | None:
    """The generation's ``.dep`` (None when it has none); CorruptBackupError when it cannot be
    decoded or belongs to another generation."""
    key = layout.object_key(db_name, gen, layout.DEPENDENCY)
    got = storage.get_with_metadata(key)
    if got is None:
        return None
    data, metadata, _ = got
    try:
        check_owner(key, gen, metadata)
        parent = layout.decode_dependency(data)
        frames, checksum = (metadata.get(PARENT_FRAMES_METADATA),
                            metadata.get(PARENT_CHECKSUM_METADATA))
        position: tuple[int | None, tuple[int, int] | None] = (None, None)
        if frames is not None and checksum is not None:
            c1, c2 = checksum.split("-")
            position = (int(frames), (int(c1, 16), int(c2, 16)))
    except ValueError as exc:
        raise CorruptBackupError(f"{key}: {exc}") from None
    return Dependency(parent, metadata.get(BASE_METADATA) == "snapshot", *position)


def read_parent(storage: ObjectStore, db_name: str, s: GenerationSummary,
                ) -> GenerationSummary:
    """``s`` with its parent filled in from ``.dep`` (when the listing shows one)."""
    if s.has_dep and s.parent is None:
        dep = read_dependency(storage, db_name, s.id)
        s.parent = dep.parent if dep is not None else None
    return s


# --- chains -------------------------------------------------------------------------------------

class ChainLink(Protocol):
    @property
    def id(self) -> uuid.UUID: ...

    @property
    def parent(self) -> uuid.UUID | None: ...

    @property
    def has_snapshot(self) -> bool: ...


Link = TypeVar("Link", bound=ChainLink)


class BrokenChain(Exception):
    """A chain that does not reach a snapshot: ``child`` has no parent (``parent`` is None),
    its parent is missing, or the snapshot is more than MAX_CHAIN links away."""

    def __init__(self, child: ChainLink, parent: uuid.UUID | None, too_long: bool = False,
                 ) -> None:
        super().__init__(child.id, parent)
        self.child, self.parent, self.too_long = child, parent, too_long


def walk_chain(start: Link, parent_of: Callable[[uuid.UUID], Link | None],
               limit: int = MAX_CHAIN) -> Iterator[Link]:
    """``start`` and the generations a restore of it goes through, child first, up to the
    first one with a snapshot (the only walk of ``.dep`` chains: restore, ls, rm and the
    replicator all use it). ``parent_of`` gives a generation by id (None: not in the bucket).
    Raises BrokenChain when the walk cannot reach a snapshot within ``limit`` links, after
    yielding what it reached."""
    current, depth = start, 0
    yield current
    while not current.has_snapshot:
        if current.parent is None:
            raise BrokenChain(current, None)
        if depth + 1 >= limit:
            raise BrokenChain(current, current.parent, too_long=True)
        parent = parent_of(current.parent)
        if parent is None:
            raise BrokenChain(current, current.parent)
        current, depth = parent, depth + 1
        yield current


def describer(storage: ObjectStore, db_name: str,
              cache: dict[uuid.UUID, Generation] | None = None,
              ) -> Callable[[uuid.UUID], Generation | None]:
    """``parent_of`` for walk_chain over full descriptions (cached in ``cache``)."""
    cache = {} if cache is None else cache

    def parent_of(gen: uuid.UUID) -> Generation | None:
        if gen not in cache:
            try:
                cache[gen] = describe_generation(storage, db_name, gen, change_counter=False)
            except NotFoundError:
                return None
        return cache[gen]

    return parent_of


def restore_chain(storage: ObjectStore, db_name: str, g: Generation,
                  cache: dict[uuid.UUID, Generation] | None = None) -> list[Generation]:
    """``g`` and the generations it restores through, oldest (the one with the snapshot)
    first; empty when the chain is broken."""
    try:
        return list(reversed(list(walk_chain(g, describer(storage, db_name, cache)))))
    except BrokenChain:
        return []


def chain_depth(storage: ObjectStore, db_name: str, g: Generation,
                cache: dict[uuid.UUID, Generation] | None = None) -> int | None:
    """How many parents a restore of ``g`` goes through to reach a snapshot (0: it has its
    own); None when the chain is broken."""
    depth = -1
    try:
        for _ in walk_chain(g, describer(storage, db_name, cache)):
            depth += 1
    except BrokenChain:
        return None
    return depth
