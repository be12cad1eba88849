"""Removing generations without breaking the restore of the ones that stay."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from . import layout
from .catalog import Generation, describe_generation, list_generations, read_tombstone
from .errors import NotFoundError
from .progress import NoProgress, Progress
from .storage import Storage


@dataclass
class RemovalPlan:
    remove: list[uuid.UUID] = field(default_factory=list)  # newest first
    keep: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # asked for, kept: why
    tombstone: int | None = None  # unix seconds to write to DB.tombstone first


@dataclass
class RemovalResult:
    generations: int = 0
    objects: int = 0


def plan_removal(storage: Storage, db_name: str, generation: uuid.UUID | None = None,
                 older_than: datetime | None = None) -> RemovalPlan:
    """Which generations ``rm -g`` / ``rm --older-than`` may delete, and which must stay.

    A generation stays while a generation that stays has no snapshot of its own and restores
    through it (its .dep chain). ``--older-than`` never removes the newest generation, and also
    removes what the tombstone of an interrupted earlier removal covers.
    """
    all_gens = list(list_generations(storage, db_name))  # newest first
    plan = RemovalPlan()
    if generation is not None:
        if generation not in all_gens:
            raise NotFoundError(f"generation {generation} of {db_name!r} not found in bucket "
                                f"{storage.bucket!r}")
        candidates = [generation]
    elif older_than is not None:
        # A tombstone left by an interrupted removal covers half-deleted generations: finish
        # them too, since this run deletes the tombstone when it is done.
        existing = read_tombstone(storage, db_name)
        candidates = [g for g in all_gens if layout.generation_time(g) < older_than
                      or (existing is not None
                          and layout.generation_time(g).timestamp() <= existing)]
        if all_gens and candidates and candidates[0] == all_gens[0]:
            candidates.pop(0)
            plan.keep.append((all_gens[0], "it is the newest generation"))
    else:
        raise ValueError("give a generation or a date")
    if not candidates:
        return plan
    doomed = set(candidates)
    oldest = layout.generation_millis(candidates[-1])
    cache: dict[uuid.UUID, Generation] = {}

    def describe(g: uuid.UUID) -> Generation | None:
        if g not in cache:
            try:
                cache[g] = describe_generation(storage, db_name, g)
            except NotFoundError:
                return None
        return cache[g]

    # Only generations newer than the oldest candidate can depend on one (ids sort newest first).
    for g in all_gens:
        if g in doomed or layout.generation_millis(g) > oldest:
            continue
        info = describe(g)
        depth = 0
        while info is not None and info.snapshot is None and info.parent and depth < 100:
            parent = info.parent
            if parent in doomed:
                doomed.discard(parent)
                plan.keep.append((parent, f"generation {g} has no snapshot and restores "
                                          "from it"))
            info = describe(parent)
            depth += 1
    plan.remove = [g for g in candidates if g in doomed]
    if older_than is not None and plan.remove:
        # Generations created at or before the tombstone count as deleted: keep it below every
        # generation that was not asked to go.
        tomb = math.floor(older_than.timestamp())
        if existing is not None:
            tomb = max(tomb, existing)
        asked = set(candidates)
        for g in all_gens:
            created = layout.generation_time(g).timestamp()
            if g not in asked and created <= tomb:
                tomb = math.ceil(created) - 1
        plan.tombstone = tomb
    return plan


def remove_generations(storage: Storage, db_name: str, plan: RemovalPlan,
                       progress: Progress | None = None) -> RemovalResult:
    """Carry out a plan: tombstone first (so a crash never leaves a half-deleted generation
    restorable), then every object of every removed generation in batched deletes, then the
    tombstone goes again."""
    progress = progress or NoProgress()
    result = RemovalResult()
    if plan.tombstone is not None:
        storage.put(layout.tombstone_key(db_name), layout.encode_tombstone(plan.tombstone))
    progress.start("remove generations", len(plan.remove), unit="generations")
    for gen in plan.remove:
        prefix = layout.generation_prefix(db_name, gen)
        result.objects += storage.delete_many(o.key for o in storage.list_objects(prefix))
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
