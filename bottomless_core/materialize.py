"""``snapshot``: give a snapshot-less generation a snapshot of its own (libSQL's ``snapshot``).

"Snapshots mark the state of the DB at the beginning of the generation": the state a
generation starts from is rebuilt through its parents (restore, ``base_only``), checked, and
uploaded as its ``db.*``, so that later restores, and ``rm``, no longer need the chain.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from . import layout
from .catalog import describe_generation
from .codec import Codec
from .errors import CorruptBackupError
from .progress import NoProgress, Progress
from .restore import plan_restore, restore
from .snapshot import pack_file
from .store.base import ObjectStore
from .tempfiles import discard, owned_temp_path
from .writer import Writer


def materialize_snapshot(storage: ObjectStore, db_name: str, generation: uuid.UUID | None,
                         codec: Codec, workdir: Path,
                         progress: Progress | None = None) -> tuple[uuid.UUID, int | None]:
    """Give ``generation`` (default: the newest) the snapshot of the state it starts from.
    Returns the generation and the compressed size uploaded (None when it already had a
    snapshot)."""
    progress = progress or NoProgress()
    storage.check_bucket()
    if generation is None:
        generation = plan_restore(storage, db_name).generation.id
    g = describe_generation(storage, db_name, generation, change_counter=False)
    if g.snapshot is not None:
        return generation, None
    if not g.complete:
        raise CorruptBackupError(f"generation {generation} is incomplete (no {layout.META}): "
                                 "nothing to snapshot")
    writer = Writer(storage, db_name)
    writer.sealed.refuse_plaintext_into(storage, g, "a snapshot")  # (its parents: rebuilt)
    image = owned_temp_path(workdir / db_name, "image")
    packed = owned_temp_path(workdir / db_name, "snapshot")
    try:
        restore(storage, db_name, image, generation=generation, force=True, base_only=True,
                progress=progress)
        snapshot = pack_file(image, codec, packed)
        writer.upload_snapshot(generation, snapshot, rebuilt=True)
    finally:
        discard(image)
        discard(packed)
    return generation, snapshot.size
