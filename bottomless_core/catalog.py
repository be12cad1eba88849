"""What is in the bucket: generations of a database, newest first, and what each one holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from . import layout
from .codec import Codec
from .errors import CorruptBackupError, NotFoundError
from .layout import BatchKey, Meta
from .store.base import ObjectInfo, ObjectStore

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
    """What one listing of every object tells about a generation, without reading any."""

    id: uuid.UUID
    objects: list[str] = field(default_factory=list)
    size: int = 0
    has_snapshot: bool = False
    has_meta: bool = False
    has_dep: bool = False

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
    meta: Meta | None = None
    change_counter: bytes | None = None
    parent: uuid.UUID | None = None
    # For a generation without a snapshot of its own: where in its parent it starts (None when
    # the writer did not record it, e.g. libSQL).
    parent_frames: int | None = None
    parent_checksum: tuple[int, int] | None = None
    own_base: bool = False  # .dep says: starts from its own snapshot, never from the parent
    object_count: int = 0
    total_size: int = 0

    @property
    def complete(self) -> bool:
        """Its creation finished: ``.meta`` is written last (after the snapshot and the WAL
        frames that make the snapshot whole), so a generation without it was interrupted."""
        return self.meta is not None

    @property
    def created(self) -> datetime:
        return layout.generation_time(self.id)

    @property
    def last_frame(self) -> int:
        """Last frame of the highest batch (what libsql calls the consistent frame)."""
        return max((key.last for key, _ in self.batches), default=0)

    @property
    def contiguous_frame(self) -> int:
        """Last frame reachable from frame 1 without a gap (overlapping batches are fine)."""
        last = 0
        for key, _ in self.batches:
            if key.first > last + 1:
                break
            last = max(last, key.last)
        return last

    def key(self, name: str) -> str:
        return layout.object_key(self.db_name, self.id, name)


def describe_generation(storage: ObjectStore, db_name: str, gen: uuid.UUID,
                        read_metadata: bool = True, change_counter: bool = True) -> Generation:
    """List a generation's objects; with ``read_metadata`` also fetch .meta, .dep (and
    .changecounter unless ``change_counter`` is False).

    Raises NotFoundError if nothing is stored under the generation's prefix.
    """
    g = Generation(db_name, gen)
    prefix = layout.generation_prefix(db_name, gen)
    names: set[str] = set()
    for obj in storage.list_objects(prefix):
        name = obj.key[len(prefix):]
        names.add(name)
        g.object_count += 1
        g.total_size += obj.size
        batch = BatchKey.parse(name)
        if batch is not None:
            g.batches.append((batch, obj))
            continue
        codec = layout.snapshot_codec(name)
        if codec is not None and g.snapshot is None:
            g.snapshot, g.snapshot_codec = obj, codec
    if not g.object_count:
        raise NotFoundError(f"generation {gen} of {db_name!r} not found")
    g.batches.sort(key=lambda b: (b[0].first, b[0].last))
    if read_metadata:
        _read_small_objects(storage, g, names, change_counter)
    return g


def _read_small_objects(storage: ObjectStore, g: Generation, names: set[str],
                        change_counter: bool) -> None:
    key = ""
    try:
        if layout.META in names:
            key = g.key(layout.META)
            data = storage.get_optional(key)
            g.meta = Meta.decode(data) if data is not None else None
        if layout.DEPENDENCY in names:
            key = g.key(layout.DEPENDENCY)
            got = storage.get_with_metadata(key)
            if got is not None:
                check_owner(key, g.id, got[1])
                g.parent = layout.decode_dependency(got[0])
                g.own_base = got[1].get(BASE_METADATA) == "snapshot"
                frames, checksum = (got[1].get(PARENT_FRAMES_METADATA),
                                    got[1].get(PARENT_CHECKSUM_METADATA))
                if frames is not None and checksum is not None:
                    g.parent_frames = int(frames)
                    c1, c2 = checksum.split("-")
                    g.parent_checksum = (int(c1, 16), int(c2, 16))
    except ValueError as exc:
        raise CorruptBackupError(f"{key}: {exc}") from None
    if change_counter and layout.CHANGE_COUNTER in names:
        g.change_counter = storage.get_optional(g.key(layout.CHANGE_COUNTER))


def chain_depth(storage: ObjectStore, db_name: str, g: Generation,
                cache: dict[uuid.UUID, Generation] | None = None, limit: int = 100,
                ) -> int | None:
    """How many parents a restore of ``g`` goes through to reach a snapshot (0: it has its
    own); None when the chain is broken (a parent is missing, or no snapshot within
    ``limit``)."""
    cache = {} if cache is None else cache
    depth, current = 0, g
    while current.snapshot is None:
        if current.parent is None or depth >= limit:
            return None
        parent = cache.get(current.parent)
        if parent is None:
            try:
                parent = describe_generation(storage, db_name, current.parent,
                                             change_counter=False)
            except NotFoundError:
                return None
            cache[parent.id] = parent
        current, depth = parent, depth + 1
    return depth
