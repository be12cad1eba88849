"""``copy --to-dir``: a generation and the chain it restores through, copied object by object
into a directory in the bucket layout (a ``FileStore`` bucket), so that ``restore --from-dir``
works with no S3 at all.

Objects are copied as they are stored (encrypted ones stay encrypted), with their user
metadata (the snapshot's digest, the ``.dep`` chain metadata). In each generation ``.meta`` is
copied last, as the replicator writes it: a copy cut short leaves an incomplete generation,
which restore passes over, never a wrong one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .errors import CorruptBackupError, LocalDatabaseError, NotFoundError
from .progress import NoProgress, Progress
from .restore import plan_restore
from .store.base import ObjectStore
from .store.files import FileStore

_SMALL = (layout.META, layout.CHANGE_COUNTER, layout.DEPENDENCY)


@dataclass
class CopyResult:
    generation: uuid.UUID
    chain: list[uuid.UUID] = field(default_factory=list)  # oldest (with the snapshot) first
    objects: int = 0
    bytes: int = 0


def directory_store(directory: Path, create: bool = False) -> FileStore:
    """The FileStore whose bucket is ``directory`` itself."""
    directory = Path(directory).absolute()
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalDatabaseError(f"{directory}: cannot create it "
                                     f"({exc.strerror or exc})") from None
    elif not directory.is_dir():
        raise LocalDatabaseError(f"{directory}: no such directory (a copy made with "
                                 "copy --to-dir)")
    return FileStore(directory.parent, directory.name)


def copy_to_directory(storage: ObjectStore, db_name: str, directory: Path,
                      generation: uuid.UUID | None = None,
                      progress: Progress | None = None) -> CopyResult:
    """``copy --to-dir``: into ``directory`` (created if missing); a failed copy leaves no
    directory behind that it created (only when nothing else got into it)."""
    made = not directory.exists()
    dest = directory_store(directory, create=True)
    try:
        return copy_generation(storage, db_name, dest, generation, progress)
    except BaseException:
        if made:
            dest.remove_if_empty()
        raise


def copy_generation(storage: ObjectStore, db_name: str, dest: ObjectStore,
                    generation: uuid.UUID | None = None,
                    progress: Progress | None = None) -> CopyResult:
    """Copy ``generation`` (default: the one a restore would use) and its chain to ``dest``."""
    progress = progress or NoProgress()
    raw = storage.stored  # as stored: never decrypted
    raw.check_bucket()
    dest.check_bucket()
    plan = plan_restore(raw, db_name, generation)
    result = CopyResult(plan.generation.id, [g.id for g in plan.chain])
    listings = {g.id: list(raw.list_objects(layout.generation_prefix(db_name, g.id)))
                for g in plan.chain}
    total = sum(o.size for objs in listings.values() for o in objs)
    progress.start("copy", total)
    for g in plan.chain:
        prefix = layout.generation_prefix(db_name, g.id)
        objs = sorted(listings[g.id], key=lambda o: (o.key[len(prefix):] == layout.META,
                                                     o.key[len(prefix):] in _SMALL, o.key))
        for obj in objs:
            name = obj.key[len(prefix):]
            try:
                if name in _SMALL or layout.BatchKey.parse(name) is not None:
                    got = raw.get_with_metadata(obj.key)
                    if got is None:
                        raise NotFoundError(obj.key)
                    dest.put(obj.key, got[0], got[1] or None)
                    size = len(got[0])
                else:
                    info = raw.head(obj.key)
                    if info is None:
                        raise NotFoundError(obj.key)
                    with raw.open_object(obj.key) as body:
                        dest.upload(obj.key, body, info.metadata or None)  # type: ignore[arg-type]
                    size = info.size
            except NotFoundError:
                raise CorruptBackupError(f"{obj.key}: disappeared during the copy") from None
            result.objects += 1
            result.bytes += size
            progress.advance("copy", size)
    progress.finish("copy")
    return result
