"""Removing generations without breaking the restore of the ones that stay.

Rules: the newest generation always stays; a generation that a staying generation restores
through (a snapshot-less chain back to a snapshot) stays, and the reason is reported; with a
date D, the generation that covers D (the newest created at or before it) stays too, so that
``restore --utc-time D`` keeps working. The tombstone written first never covers a generation
that stays, and within a generation ``.meta`` goes first, so that a generation half-deleted by
a crash is never taken as complete.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from . import layout
from .catalog import (
    BrokenChain,
    GenerationSummary,
    bucket_index,
    is_dead,
    read_parent,
    read_tombstone,
    walk_chain,
)
from .dates import format_utc
from .errors import NotFoundError
from .progress import NoProgress, Progress
from .store.base import ObjectStore

log = logging.getLogger("bottomless.retention")



@dataclass
class RemovalPlan:
    remove: list[uuid.UUID] = field(default_factory=list)  # newest first
    keep: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # asked for, kept: why
    tombstone: int | None = None  # unix seconds to write to DB.tombstone first
    objects: dict[uuid.UUID, list[str]] = field(default_factory=dict)  # keys of each removed


@dataclass
class RemovalResult:
    generations: int = 0
    objects: int = 0


def plan_removal(storage: ObjectStore, db_name: str, generation: uuid.UUID | None = None,
                 older_than: datetime | None = None, keep_last: int | None = None,
                 force: bool = False) -> RemovalPlan:
    """Which generations ``rm -g`` / ``rm --older-than`` / ``rm --keep-last`` may delete, and
    which must stay (and why). One listing of the database's objects, plus the ``.dep`` of
    snapshot-less generations that might restore through a candidate. ``-g`` of the newest
    generation needs ``force`` (a running replicator's next generation may restore through
    it: it then starts one with a snapshot instead)."""
    index = bucket_index(storage, db_name)  # newest first
    by_id = {s.id: s for s in index}
    plan = RemovalPlan()
    if generation is not None:
        if generation not in by_id:
            raise NotFoundError(f"generation {generation} of {db_name!r} not found in bucket "
                                f"{storage.bucket!r}")
        candidates = [generation]
        if generation == index[0].id and not force:
            candidates = []
            plan.keep.append((generation, "it is the newest generation (restore would go back "
                                          "to the one before it, and a running replicator "
                                          "starts a new one with a full snapshot); use "
                                          "--force to remove it anyway"))
    elif older_than is not None or keep_last is not None:
        candidates = _aged_out(storage, db_name, index, older_than, keep_last, plan)
    else:
        raise ValueError("give a generation, a date or a count")
    doomed = set(candidates)
    if doomed:
        _keep_dependencies(storage, db_name, index, doomed, plan)
    plan.remove = [g for g in candidates if g in doomed]
    plan.objects = {g: by_id[g].objects for g in plan.remove}
    if generation is None and plan.remove:
        plan.tombstone = _tombstone(storage, db_name, index, set(plan.remove))
    return plan


def _aged_out(storage: ObjectStore, db_name: str, index: list[GenerationSummary],
              older_than: datetime | None, keep_last: int | None,
              plan: RemovalPlan) -> list[uuid.UUID]:
    """Generations past the date / count, newest first, less those that must stay."""
    if not index:
        return []
    existing = read_tombstone(storage, db_name)
    candidates = []
    covering = None
    for i, s in enumerate(index):
        old = older_than is not None and s.created < older_than
        beyond = keep_last is not None and i >= keep_last
        # A tombstone left by an interrupted removal: finish those generations too, since
        # this run deletes the tombstone when it is done.
        if (old or beyond) or is_dead(existing, s.id):
            candidates.append(s.id)
        if older_than is not None and covering is None and s.created <= older_than:
            covering = s.id
    if candidates and candidates[0] == index[0].id:
        candidates.pop(0)
        plan.keep.append((index[0].id, "it is the newest generation"))
    if (covering is not None and covering in candidates and not is_dead(existing, covering)
            and older_than is not None):
        candidates.remove(covering)
        plan.keep.append((covering, f"it covers {format_utc(older_than)} UTC "
                                    "(restore --utc-time at that moment needs it)"))
    return candidates


def _keep_dependencies(storage: ObjectStore, db_name: str, index: list[GenerationSummary],
                       doomed: set[uuid.UUID], plan: RemovalPlan) -> None:
    """Keep every candidate that a staying, snapshot-less generation restores through."""
    oldest = max(layout.generation_millis(g) for g in doomed)
    by_id = {s.id: s for s in index}

    def parent_of(gen: uuid.UUID) -> GenerationSummary | None:
        s = by_id.get(gen)
        return read_parent(storage, db_name, s) if s is not None else None

    # Only generations newer than the oldest candidate can depend on one (ids sort newest
    # first, so "newer" is a smaller id).
    for s in index:
        if s.id in doomed or layout.generation_millis(s.id) > oldest or s.has_snapshot:
            continue
        try:
            for link in walk_chain(read_parent(storage, db_name, s), parent_of):
                if link.id in doomed:
                    doomed.discard(link.id)
                    plan.keep.append((link.id, f"generation {s.id} has no snapshot and "
                                               "restores through it"))
        except BrokenChain:
            pass  # it cannot be restored anyway: nothing of it to keep


def _tombstone(storage: ObjectStore, db_name: str, index: list[GenerationSummary],
               removed: set[uuid.UUID]) -> int | None:
    """A time that covers as many removed generations as possible and no staying one."""
    existing = read_tombstone(storage, db_name)
    stays = [s for s in index if s.id not in removed]
    limit = min((math.floor(s.created.timestamp()) for s in stays), default=None)
    newest_removed = max(math.floor(layout.generation_time(g).timestamp()) for g in removed)
    tomb = newest_removed if limit is None else min(newest_removed, limit - 1)
    if existing is not None:
        tomb = max(tomb, existing) if limit is None else min(max(tomb, existing), limit - 1)
    if not any(is_dead(tomb, g) for g in removed):
        return None
    return tomb


def remove_generations(storage: ObjectStore, db_name: str, plan: RemovalPlan,
                       progress: Progress | None = None) -> RemovalResult:
    """Carry out a plan: tombstone first, then for each generation (newest first) its
    ``.meta`` (from then on it is incomplete, never restored as a whole), then everything else
    in batched deletes; then the tombstone goes again."""
    progress = progress or NoProgress()
    result = RemovalResult()
    if plan.tombstone is not None:
        storage.put(layout.tombstone_key(db_name), layout.encode_tombstone(plan.tombstone))
    progress.start("remove generations", len(plan.remove), unit="generations")
    for gen in plan.remove:
        prefix = layout.generation_prefix(db_name, gen)
        keys = [o.key for o in storage.list_objects(prefix)]  # as it is now, not as planned
        meta = prefix + layout.META
        first = [k for k in keys if k == meta]
        result.objects += storage.delete_many(first)
        result.objects += storage.delete_many(k for k in keys if k != meta)
        # Filer-backed stores (SeaweedFS) keep an empty "directory" that still lists as a
        # common prefix; deleting the prefix itself removes it (a no-op on AWS S3).
        storage.delete_many([prefix])
        result.generations += 1
        progress.advance("remove generations", 1)
    progress.finish("remove generations")
    if plan.tombstone is not None:
        # As libSQL does: the tombstone marks a removal in progress; once every object is gone
        # it has done its job, and left behind it would refuse later restores of kept ones.
        storage.delete_many([layout.tombstone_key(db_name)])
    return result
