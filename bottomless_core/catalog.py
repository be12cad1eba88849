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
from .storage import ObjectInfo, Storage

SHA256_METADATA = "sha256"  # user metadata on snapshots we write: digest of the raw db file


def list_generations(storage: Storage, db_name: str) -> Iterator[uuid.UUID]:
    """Generation ids of ``db_name``, newest first: one listing entry per generation."""
    for prefix in storage.list_prefixes(layout.generations_prefix(db_name)):
        gen = layout.generation_from_prefix(db_name, prefix)
        if gen is not None:
            yield gen


def newest_generation(storage: Storage, db_name: str) -> uuid.UUID | None:
    return next(list_generations(storage, db_name), None)


def read_tombstone(storage: Storage, db_name: str) -> int | None:
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
    object_count: int = 0
    total_size: int = 0

    @property
    def created(self) -> datetime:
        return layout.generation_time(self.id)

    @property
    def last_frame(self) -> int:
        """Last frame of the highest batch (what libsql calls the consistent frame)."""
        return self.batches[-1][0].last if self.batches else 0

    @property
    def contiguous_frame(self) -> int:
        """Last frame reachable from frame 1 without a gap."""
        last = 0
        for key, _ in self.batches:
            if key.first != last + 1:
                break
            last = key.last
        return last

    def key(self, name: str) -> str:
        return layout.object_key(self.db_name, self.id, name)


def describe_generation(storage: Storage, db_name: str, gen: uuid.UUID,
                        read_metadata: bool = True) -> Generation:
    """List a generation's objects; with ``read_metadata`` also fetch .meta, .dep, .changecounter.

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
        _read_small_objects(storage, g, names)
    return g


def _read_small_objects(storage: Storage, g: Generation, names: set[str]) -> None:
    try:
        if layout.META in names:
            g.meta = Meta.decode(storage.get(g.key(layout.META)))
        if layout.DEPENDENCY in names:
            g.parent = layout.decode_dependency(storage.get(g.key(layout.DEPENDENCY)))
    except ValueError as exc:
        raise CorruptBackupError(f"generation {g.id}: {exc}") from None
    if layout.CHANGE_COUNTER in names:
        g.change_counter = storage.get(g.key(layout.CHANGE_COUNTER))
