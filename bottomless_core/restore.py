"""Restore: choose a generation, rebuild its starting state (its snapshot, or its parent chain
back to one), replay its WAL batches, check the result and swap it in.

Rules that make every restore exact (docs/format.md, "Reading rules"):

- A generation without ``.meta`` was interrupted while being created. Its snapshot, if it has
  one, is a consistent image on its own (snapshot.py) and is used alone; otherwise it is
  skipped in favour of an older one, with a note.
- A snapshot-less generation restores through its parent (``.dep``); the parent's frames are
  applied up to the frame the child starts from, and the chain checksum there must equal the
  one the child recorded, so a parent that lost a batch is an error, not a wrong database.
- With ``--utc-time T``, a batch is applied only if its stamp (a whole second at or after every
  commit in it) is at most T. If an ancestor is cut short that way, later generations are not
  applied on top of it.
- Batches that overlap (the same frames shipped twice) are applied once: the repeated frames
  must carry the same checksums as the ones already applied.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np

from . import layout, walsum
from .catalog import (
    MAX_CHAIN,
    SHA256_METADATA,
    BrokenChain,
    Generation,
    check_owner,
    describe_generation,
    is_dead,
    list_generations,
    read_tombstone,
    walk_chain,
)
from .codec import Codec, CodecError, Readable, iter_decompressed, iter_decompressed_stream
from .database import check_sqlite_file, open_by_another_process, resolve_db_path
from .dates import format_utc
from .errors import (
    CorruptBackupError,
    LocalDatabaseError,
    NoBackupError,
    NotFoundError,
    RestoreRefusedError,
)
from .fetch import prefetch, ranged_if_plain
from .layout import BatchKey, PackKey
from .pack import PackError, iter_pages, read_index
from .progress import NoProgress, Progress
from .store.base import ObjectInfo, ObjectStore
from .tempfiles import discard, forget, owned_temp_path, remove_stale
from .wal import FRAME_HEADER_SIZE, Checksum

READ_AHEAD = 8  # generations of a chain described side by side
DECODE_BLOCK = 1 << 20  # raw bytes of a batch decompressed, verified and applied at a time
PENDING_MEMORY = 8 << 20  # an unfinished transaction's frames stay in memory up to this


@dataclass
class RestoreResult:
    generation: uuid.UUID
    chain: list[uuid.UUID]  # generations used, oldest (the one with the snapshot) first
    page_size: int = 0
    pages: int = 0
    frames_applied: int = 0
    batches_applied: int = 0
    packs_applied: int = 0
    change_counter: int = 0
    integrity: str = ""
    path: Path | None = None
    notes: list[str] = field(default_factory=list)  # what a user should know about the choice
    damaged: str | None = None  # why the restore had to stop early (a missing batch)
    overlaps: list[str] = field(default_factory=list)  # batches repeating earlier frames
    overlap_note: str | None = None  # what a user should know about them
    pack_problems: list[str] = field(default_factory=list)  # verify: packs vs batches

    @property
    def warnings(self) -> list[str]:
        """The notes that say the backup is damaged (``verify`` fails on them)."""
        return [n for n in (self.damaged, self.overlap_note, *self.pack_problems)
                if n is not None]


@dataclass
class RestorePlan:
    chain: list[Generation]  # oldest (the one whose snapshot is used) first
    notes: list[str] = field(default_factory=list)
    base_only: bool = False  # stop where the chosen generation starts (its own frames unused)
    upto_frame: int | None = None  # stop after this frame of the chosen generation

    @property
    def generation(self) -> Generation:
        return self.chain[-1]


def plan_restore(storage: ObjectStore, db_name: str, generation: uuid.UUID | None = None,
                 utc_time: datetime | None = None) -> RestorePlan:
    """The generation to restore and the chain it restores through.

    Given one: it must exist, not be tombstoned, and be restorable. Otherwise the newest
    restorable generation created at or before ``utc_time`` (or the newest); an interrupted
    one is passed over with a note.
    """
    tombstone = read_tombstone(storage, db_name)
    notes: list[str] = []
    if generation is not None:
        if is_dead(tombstone, generation):
            raise NotFoundError(f"generation {generation} was deleted (tombstone)")
        try:
            g = describe_generation(storage, db_name, generation, change_counter=False)
        except NotFoundError:
            raise NotFoundError(f"generation {generation} of {db_name!r} not found in bucket "
                                f"{storage.bucket!r}") from None
        if not g.complete and g.snapshot is None:
            raise CorruptBackupError(
                f"generation {generation} is incomplete (its creation was interrupted: no "
                f"{layout.META}, no snapshot); restore an older one")
        order = list(list_generations(storage, db_name)) if g.snapshot is None else []
        return RestorePlan(_chain(storage, db_name, g, notes, order), notes)
    order = list(list_generations(storage, db_name))
    for gen in order:
        if is_dead(tombstone, gen):
            break  # everything older is covered by the tombstone too
        if utc_time is not None and layout.generation_time(gen) > utc_time:
            continue
        try:
            g = describe_generation(storage, db_name, gen, change_counter=False)
        except NotFoundError:
            continue  # removed while we listed
        if not g.complete and g.snapshot is None:
            notes.append(f"skipped generation {gen}: incomplete (its creation was "
                         "interrupted)")
            continue
        return RestorePlan(_chain(storage, db_name, g, notes, order), notes)
    when = f" created at or before {format_utc(utc_time)} UTC" if utc_time else ""
    raise NoBackupError(f"no generation of {db_name!r}{when} in bucket {storage.bucket!r}")


class _Describer:
    """describe_generation with read-ahead: a chain's parents are, nearly always, the next
    older generations of the listing, so their descriptions are fetched several at a time
    (a chain of 30 generations is then a few round trips, not 90)."""

    def __init__(self, storage: ObjectStore, db_name: str, order: list[uuid.UUID]) -> None:
        self.storage, self.db_name, self.order = storage, db_name, order
        self.position = {gen: i for i, gen in enumerate(order)}
        self.pool = ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="restore-describe")
        self.futures: dict[uuid.UUID, Future[Generation]] = {}

    def _submit(self, gen: uuid.UUID) -> None:
        if gen not in self.futures:
            self.futures[gen] = self.pool.submit(describe_generation, self.storage,
                                                 self.db_name, gen, True, False)

    def find(self, gen: uuid.UUID) -> Generation | None:
        """The description of ``gen``; None when it is not in the bucket."""
        i = self.position.get(gen)
        if i is not None:
            for older in self.order[i:i + 1 + READ_AHEAD]:
                self._submit(older)
        self._submit(gen)
        try:
            return self.futures.pop(gen).result()
        except NotFoundError:
            return None

    def close(self) -> None:
        for fut in self.futures.values():
            fut.cancel()
        self.pool.shutdown(wait=False)


def _chain(storage: ObjectStore, db_name: str, g: Generation, notes: list[str],
           order: list[uuid.UUID]) -> list[Generation]:
    """``g`` and, if it has no snapshot, its ancestors up to one that has (oldest first)."""
    describer = _Describer(storage, db_name, order)
    try:
        return _walk_chain(describer, db_name, g, notes)
    finally:
        describer.close()


def _walk_chain(describer: _Describer, db_name: str, g: Generation,
                notes: list[str]) -> list[Generation]:
    if not g.complete:
        notes.append(f"generation {g.id} is incomplete (its creation was interrupted): its "
                     "snapshot is used alone")
    chain: list[Generation] = []
    try:
        for link in walk_chain(g, describer.find):
            if chain:
                child = chain[-1]
                if not link.complete and (link.snapshot is None or child.parent_frames):
                    raise CorruptBackupError(
                        f"generation {child.id} restores through {link.id}, which has no "
                        f"{layout.META} ({link.key(layout.META)} is missing)")
            if link.snapshot is None and link.own_base:
                raise CorruptBackupError(
                    f"generation {link.id} starts from its own snapshot, which is missing "
                    f"({link.key(layout.snapshot_name(link.snapshot_codec or Codec.ZSTD))})")
            chain.append(link)
    except BrokenChain as broken:
        child = broken.child
        if broken.too_long:
            raise CorruptBackupError(f"no snapshot within {MAX_CHAIN} generations of "
                                     f"{g.id}") from None
        if broken.parent is None:
            raise CorruptBackupError(f"generation {child.id} has no snapshot and no parent "
                                     f"({layout.DEPENDENCY}) to restore from") from None
        raise CorruptBackupError(
            f"generation {child.id} restores through {broken.parent}, which is missing "
            f"from the bucket ({layout.generation_prefix(db_name, broken.parent)})") from None
    return list(reversed(chain))


def restore(storage: ObjectStore, db_name: str, target: Path, *,
            generation: uuid.UUID | None = None, utc_time: datetime | None = None,
            force: bool = False, verify_only: bool = False, base_only: bool = False,
            upto_frame: int | None = None,
            progress: Progress | None = None) -> RestoreResult:
    """Restore into ``target`` (atomically), or with ``verify_only`` into a temporary file
    that is checked and deleted. A failed restore leaves ``target`` untouched. ``base_only``
    rebuilds the state the generation starts from (what its snapshot holds or would hold);
    ``upto_frame`` the state after that frame of the generation (a commit frame: the daemon's
    self-verification compares it with the local database pinned there)."""
    progress = progress or NoProgress()
    if utc_time is not None and utc_time.tzinfo is None:
        utc_time = utc_time.replace(tzinfo=UTC)
    if verify_only:
        target = Path(tempfile.gettempdir()) / (target.name or db_name)
    else:
        target = _real_target(target)
        _refuse_overwrite(target, force)
    storage.check_bucket()
    plan = plan_restore(storage, db_name, generation, utc_time)
    plan.base_only = base_only
    plan.upto_frame = upto_frame
    result = RestoreResult(plan.generation.id, [g.id for g in plan.chain], notes=plan.notes)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target)  # what a killed restore (or replicator) of it left behind
        tmp = owned_temp_path(target, "restoring")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise LocalDatabaseError(f"{target.parent}: cannot write there "
                                 f"({exc.strerror})") from None
    try:
        done = _restore_into(storage, plan, tmp, fd, target, utc_time, result, force,
                             verify_only, progress)
        if verify_only:  # and every page pack against the batches it replaces
            from .compactor import check_packs

            done.pack_problems = check_packs(storage, plan.chain, progress)
        return done
    except OSError as exc:  # local disk: full, read-only, vanished directory...
        raise LocalDatabaseError(f"{target}: restore failed writing locally "
                                 f"({exc.strerror or exc})") from None
    finally:
        discard(tmp)


def _real_target(target: Path) -> Path:
    """Restoring over a symlink replaces the file it points to, not the link."""
    return resolve_db_path(target) if target.is_symlink() else target


def _restore_into(storage: ObjectStore, plan: RestorePlan, tmp: Path, fd: int, target: Path,
                  utc_time: datetime | None, result: RestoreResult, force: bool,
                  verify_only: bool, progress: Progress) -> RestoreResult:
    """Build the database in ``tmp``, check it, then swap it in (unless verify_only)."""
    with os.fdopen(fd, "r+b") as out:
        _download_snapshot(storage, plan.chain[0], out, progress)
        out.flush()  # the replay writes pages with pwrite: the buffered snapshot goes first
        _replay(storage, plan, out, utc_time, result, progress)
        out.flush()
        os.fsync(out.fileno())
    result.integrity, header = check_sqlite_file(tmp)
    result.page_size, result.change_counter = header.page_size, header.change_counter
    result.pages = header.page_count or (tmp.stat().st_size // max(header.page_size, 1))
    if result.integrity != "ok":
        raise CorruptBackupError(f"restored database fails integrity_check: "
                                 f"{result.integrity}")
    if verify_only:
        return result
    _refuse_overwrite(target, force)
    _copy_ownership(target, tmp)
    for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed over the restored file
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)
    forget(tmp)
    _fsync_dir(target.parent)
    result.path = target
    return result


def _refuse_overwrite(target: Path, force: bool) -> None:
    """Never replace a database silently: not a non-empty one without --force, and not one
    that a running application has open (its connection would keep the old file)."""
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return
    pid = open_by_another_process(target) if size else None
    if force:
        return
    if pid:
        raise RestoreRefusedError(f"{target} is open in another process (pid {pid}); stop the "
                                  "application first, or use --force to replace it anyway")
    if size > 0:
        raise RestoreRefusedError(f"{target} already exists and is not empty; "
                                  "use --force to overwrite it")


def live_user(target: Path) -> int | None:
    """The pid of a process that has ``target`` open (what --force replaces under it)."""
    target = _real_target(target)
    return open_by_another_process(target) if target.exists() else None


def _copy_ownership(target: Path, tmp: Path) -> None:
    """The restored file keeps the replaced file's mode and owner; a new one gets the mode
    a new file would get (0666 less the umask), not the temporary file's 0600."""
    try:
        st = target.stat()
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        return
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    with contextlib.suppress(PermissionError):
        os.chown(tmp, st.st_uid, st.st_gid)


def _download_snapshot(storage: ObjectStore, g: Generation, out: IO[bytes],
                       progress: Progress) -> None:
    """Stream the snapshot into ``out``, decompressing in bounded pieces, and check its
    SHA-256 when the writer recorded one (ours do)."""
    assert g.snapshot is not None and g.snapshot_codec is not None
    key = g.snapshot.key
    progress.start("download snapshot", g.snapshot.size)
    info = storage.head(key)
    if info is not None:
        check_owner(key, g.id, info.metadata)
    digest = info.metadata.get(SHA256_METADATA) if info is not None else None
    h = hashlib.sha256()

    class Counted:
        def __init__(self, body: Readable) -> None:
            self.body = body

        def read(self, size: int = -1, /) -> bytes:
            data = self.body.read(size)
            progress.advance("download snapshot", len(data))
            return data

    try:
        ranged = ranged_if_plain(storage, key, g.snapshot.size)
        with (contextlib.closing(ranged) if ranged is not None
              else storage.open_object(key)) as body:
            for data in iter_decompressed_stream(Counted(body), g.snapshot_codec,
                                                 DECODE_BLOCK):
                h.update(data)
                out.write(data)
    except CodecError as exc:
        raise CorruptBackupError(f"{key}: {exc}") from None
    except NotFoundError:
        raise CorruptBackupError(f"{key}: the snapshot disappeared during the restore") from None
    if digest and h.hexdigest() != digest:
        raise CorruptBackupError(f"{key}: truncated or corrupt snapshot (its content does not "
                                 "match its sha256)")
    progress.finish("download snapshot")


@dataclass
class _Span:
    """What to apply of one generation of the chain."""

    g: Generation
    batches: list[tuple[BatchKey | PackKey, ObjectInfo]]  # in order; packs replace batches
    upto: int | None  # the last frame to apply (the child's starting point), if known
    expect: Checksum | None  # the chain value there, as the child recorded it
    cut: bool  # batches after the time bound exist (the generation is cut short)


def _spans(chain: list[Generation], cutoff: float | None, base_only: bool,
           upto_last: int | None = None) -> tuple[list[_Span], str | None, list[str]]:
    """What to apply of each generation; when a batch is missing where nothing later
    depends on what follows it, why the walk stops there; and the batches whose frames
    overlap an earlier batch's (applied once here, but where libSQL's restore stops)."""
    spans = []
    gap: str | None = None
    overlaps: list[str] = []
    for i, g in enumerate(chain):
        if base_only and i == len(chain) - 1:
            break
        child = chain[i + 1] if i + 1 < len(chain) else None
        upto = child.parent_frames if child is not None else upto_last
        expect = child.parent_checksum if child is not None else None
        batches: list[tuple[BatchKey | PackKey, ObjectInfo]] = []
        cut = False
        if g.complete:
            reached = 0
            from_packs = 0  # frames up to here come from packs: their batches are not needed
            for key, obj in _with_packs(g, upto, cutoff):
                if isinstance(key, PackKey):
                    batches.append((key, obj))
                    reached = from_packs = key.last
                    continue
                if key.last <= from_packs:
                    continue  # every frame of it is in a pack applied already
                if upto is not None and key.first > upto:
                    break
                if key.last <= reached and cutoff is not None and key.timestamp > cutoff:
                    continue  # a later copy of frames already applied: nothing new in it
                if cutoff is not None and key.timestamp > cutoff:
                    cut = True
                    if key.first > reached + 1 and not _compacted(g, reached + 1):
                        gap = (f"generation {g.id}: WAL batch missing (frames {reached + 1}.."
                               f"{key.first - 1}; next is {obj.key}): restored up to the last "
                               f"commit before frame {reached + 1}")
                    break
                if key.first > reached + 1 and cutoff is not None and _compacted(g, reached + 1):
                    cut = True  # removed batches (drop_compacted_batches) a pack too new holds
                    break
                if key.first > reached + 1:
                    missing = (f"generation {g.id}: WAL batch missing (frames {reached + 1}.."
                               f"{key.first - 1}; next is {obj.key})")
                    if upto is not None and reached < upto:
                        raise CorruptBackupError(missing)  # the next generation needs them
                    # Frames after a gap cannot be applied; up to it is a committed state
                    # (a ship cut short by a crash leaves exactly this).
                    gap = f"{missing}: restored up to the last commit before frame {reached + 1}"
                    cut = True
                    break
                if key.first <= reached and key.first > from_packs:
                    overlaps.append(f"{obj.key} repeats frames {key.first}.."
                                    f"{min(key.last, reached)} of generation {g.id}")
                if key.last <= reached:
                    batches.append((key, obj))  # a repeat, checked and skipped
                    continue
                batches.append((key, obj))
                reached = key.last
            if upto is not None and not cut and reached < upto:
                raise CorruptBackupError(
                    f"generation {g.id}: has frames up to {reached}, but generation "
                    f"{child.id if child else '?'} starts after frame {upto} of it (a WAL "
                    f"batch of {g.key('')} is missing)")
        elif child is not None and child.parent_frames:
            raise CorruptBackupError(f"generation {g.id} has no {layout.META}")
        spans.append(_Span(g, batches, upto, expect, cut))
        if cut:
            break  # later generations start after frames we may not apply
    return spans, gap, overlaps


@dataclass(frozen=True)
class FetchPlan:
    """What a restore of a generation's newest state downloads."""

    objects: int
    bytes: int
    packs: int
    batches: int


def fetch_plan(chain: list[Generation]) -> FetchPlan | None:
    """The objects a restore of the last generation of ``chain`` (oldest first, as
    plan_restore gives it) fetches; None when it cannot be restored."""
    if not chain or chain[0].snapshot is None:
        return None
    try:
        spans, _, _ = _spans(chain, None, False)
    except CorruptBackupError:
        return None
    items = [(k, o) for span in spans for k, o in span.batches]
    packs = sum(isinstance(k, PackKey) for k, _ in items)
    size = chain[0].snapshot.size + sum(o.size for _, o in items)
    return FetchPlan(1 + len(items), size, packs, len(items) - packs)


def _compacted(g: Generation, frame: int) -> bool:
    """Does a pack start at ``frame`` (its batches may have been removed on purpose)?"""
    return any(key.first == frame for key, _ in g.packs)


def _with_packs(g: Generation, upto: int | None, cutoff: float | None,
                ) -> Iterator[tuple[BatchKey | PackKey, ObjectInfo]]:
    """``g``'s batches in frame order, with the largest usable pack taking the place of the
    batches it covers wherever one starts where the walk has got to (a pack starts right
    after a commit; it is usable when it ends by ``upto`` and was stamped by ``cutoff``).
    The caller skips the batches a taken pack covers, and applies the rest of a batch that
    straddles its end."""
    starts: dict[int, list[tuple[PackKey, ObjectInfo]]] = {}
    for key, obj in g.packs:
        if (upto is None or key.last <= upto) and (cutoff is None or key.timestamp <= cutoff):
            starts.setdefault(key.first, []).append((key, obj))
    reached = 0

    def take() -> tuple[PackKey, ObjectInfo] | None:
        options = starts.get(reached + 1)
        return max(options, key=lambda p: p[0].last) if options else None

    for key, obj in g.batches:
        while (found := take()) is not None:
            yield found
            reached = found[0].last
        yield key, obj
        if key.first <= reached + 1:
            reached = max(reached, key.last)
    while (found := take()) is not None:  # packs past the batches (batches removed)
        yield found
        reached = found[0].last


def _replay(storage: ObjectStore, plan: RestorePlan, out: IO[bytes],
            utc_time: datetime | None, result: RestoreResult, progress: Progress) -> None:
    """Apply every generation's batches in order: whole transactions only, checksums
    verified, each page written once per group of committed frames."""
    cutoff = utc_time.timestamp() if utc_time is not None else None
    chain = plan.chain
    spans, gap, overlaps = _spans(chain, cutoff, plan.base_only, plan.upto_frame)
    result.overlaps = overlaps
    if overlaps:
        result.overlap_note = (f"{len(overlaps)} WAL batches overlap earlier ones (first: "
                               f"{overlaps[0]}): applied once here, but libSQL's restore "
                               "stops at the first of them")
        result.notes.append(result.overlap_note)
    if gap is not None:
        result.damaged = gap
        result.notes.append(gap)
    elif len(spans) < len(chain) - int(plan.base_only):
        result.notes.append(f"generation {spans[-1].g.id} has commits after the requested "
                            "time: later generations of its chain were not applied")
    total = sum(k.last - k.first + 1 for s in spans for k, _ in s.batches)
    if total:
        progress.start("replay frames", total, unit="frames")
    applier = _Applier(out)
    everything = [(s, key, obj) for s in spans for key, obj in s.batches]
    current: _Span | None = None
    verifier: _Verifier | None = None
    # closed here when a batch fails, not by the garbage collector in one of its own threads
    # (whose pool shutdown then cannot join itself and prints a traceback)
    with contextlib.closing(prefetch(storage, [obj for _, _, obj in everything])) as bodies:
        for (span, key, obj), body in zip(everything, bodies, strict=True):
            if span is not current:
                if current is not None and verifier is not None:
                    verifier.finish(current, applier)
                current = span
                assert span.g.meta is not None
                verifier = _Verifier(span.g, span.g.meta.page_size, span.g.meta.checksum)
                applier.page_size = span.g.meta.page_size
            assert verifier is not None
            if isinstance(key, PackKey):
                verifier.pack(key, obj, body, applier)
                result.packs_applied += 1
            else:
                verifier.batch(key, obj, body, span.upto, applier)
                result.batches_applied += 1
            progress.advance("replay frames", key.last - key.first + 1)
    if current is not None and verifier is not None:
        verifier.finish(current, applier)
    applier.finish()
    result.frames_applied = applier.frames_written
    progress.finish("replay frames")


class _Applier:
    """Writes committed frames' pages into the database being rebuilt."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.fd = out.fileno()
        self.page_size = 0
        self.db_pages = 0
        self.frames_written = 0
        self.pending = tempfile.SpooledTemporaryFile(max_size=PENDING_MEMORY)  # noqa: SIM115

    def frames(self, data: memoryview, heads: np.ndarray) -> None:
        """Frames in order (data: whole frames; heads: their parsed headers)."""
        commits = np.flatnonzero(heads[:, 1])
        frame_size = FRAME_HEADER_SIZE + self.page_size
        if not len(commits):
            self.pending.write(data)
            return
        end = int(commits[-1]) + 1
        if self.pending.tell():
            self.pending.write(data[:end * frame_size])
            self._flush_pending()
        else:
            self._write(data[:end * frame_size], heads[:end, 0])
        self.db_pages = int(heads[end - 1, 1])
        if end < len(heads):
            self.pending.write(data[end * frame_size:])

    def pages(self, pages: Iterator[tuple[int, memoryview]], db_pages: int, frames: int,
              ) -> None:
        """The pages of a pack: whole transactions, so nothing may be pending."""
        if self.pending.tell():
            raise CorruptBackupError("a page pack starts inside a transaction")
        ps = self.page_size
        for pgno, page in pages:
            os.pwrite(self.fd, page, (pgno - 1) * ps)
        self.db_pages = db_pages
        self.frames_written += frames

    def _flush_pending(self) -> None:
        frame_size = FRAME_HEADER_SIZE + self.page_size
        f = self.pending
        size = f.tell()
        f.seek(0)
        while size > 0:
            block = f.read(min(size, max(frame_size, (DECODE_BLOCK // frame_size) * frame_size)))
            size -= len(block)
            n = len(block) // frame_size
            heads = np.frombuffer(block, dtype=">u4").reshape(n, frame_size // 4)
            self._write(memoryview(block), heads[:, 0])
        f.seek(0)
        f.truncate()

    def _write(self, data: memoryview, pgnos: np.ndarray) -> None:
        """Write each page once: only its last version among these committed frames."""
        ps = self.page_size
        frame_size = FRAME_HEADER_SIZE + ps
        n = len(pgnos)
        rev = pgnos[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        for i in sorted((n - 1 - first_in_rev).tolist()):
            pgno = int(pgnos[i])
            start = i * frame_size + FRAME_HEADER_SIZE
            os.pwrite(self.fd, data[start:start + ps], (pgno - 1) * ps)
        self.frames_written += n

    def end_of_generation(self) -> None:
        """An unfinished transaction at the end of a generation never committed."""
        self.pending.seek(0)
        self.pending.truncate()

    def finish(self) -> None:
        if self.db_pages:
            os.ftruncate(self.fd, self.db_pages * self.page_size)
        self.pending.close()


class _Verifier:
    """Follows one generation's checksum chain across its batches."""

    def __init__(self, g: Generation, page_size: int, seed: Checksum) -> None:
        self.g = g
        self.page_size = page_size
        self.frame_size = FRAME_HEADER_SIZE + page_size
        self.chain = seed
        self.big_endian: bool | None = None
        self.salts: tuple[int, int] | None = None
        self.applied = 0  # frames of this generation verified so far
        self.sums = array.array("Q")  # their stored checksums, for repeated batches
        self.from_packs = 0  # frames up to here came from packs (no stored checksum each)

    def pack(self, key: PackKey, obj: ObjectInfo, body: bytes, applier: _Applier) -> None:
        """Apply a pack that continues the chain where it is: its frames' pages, and the
        chain value and database size after them."""
        try:
            index = read_index(body)
            info = index.info
            if (info.first_frame, info.last_frame) != (key.first, key.last):
                raise PackError(f"holds frames {info.first_frame}..{info.last_frame}, its "
                                "name says otherwise")
            if info.page_size != self.page_size:
                raise PackError(f"has {info.page_size}-byte pages, the generation "
                                f"{self.page_size}")
            if key.first != self.applied + 1:
                raise PackError(f"starts at frame {key.first}, the restore is at frame "
                                f"{self.applied}")
            applier.pages(iter_pages(body, index), info.db_pages,
                          key.last - key.first + 1)
        except PackError as exc:
            raise CorruptBackupError(f"{obj.key}: {exc}") from None
        self.chain = info.checksum
        self.sums.extend([0] * (key.last - self.applied))  # placeholders, never compared
        self.applied = self.from_packs = key.last

    def batch(self, key: BatchKey, obj: ObjectInfo, body: bytes, upto: int | None,
              applier: _Applier) -> None:
        frame_no = key.first
        buf = bytearray()  # a partial frame carried from one piece to the next
        count = key.last - key.first + 1
        got = 0
        try:
            for piece in iter_decompressed(body, key.codec, DECODE_BLOCK):
                data: bytes | bytearray = piece
                if buf:
                    buf += piece
                    data = buf
                whole = len(data) // self.frame_size
                if whole:
                    take = whole * self.frame_size
                    with memoryview(data) as mv:
                        self._frames(obj, frame_no, mv[:take], upto, applier)
                    frame_no += whole
                    got += whole
                rest = bytes(data[whole * self.frame_size:])
                buf = bytearray(rest)
        except CodecError as exc:
            raise CorruptBackupError(f"{obj.key}: {exc}") from None
        if buf or got != count:
            raise CorruptBackupError(
                f"{obj.key}: truncated or corrupt object (holds {got * self.frame_size + len(buf)}"
                f" bytes of frames, expected {count} frames of {self.frame_size} bytes)")

    def _frames(self, obj: ObjectInfo, first: int, data: memoryview, upto: int | None,
                applier: _Applier) -> None:
        skip = max(0, min(len(data) // self.frame_size, self.from_packs + 1 - first))
        if skip:  # frames a pack applied already: not compared, not applied again
            data, first = data[skip * self.frame_size:], first + skip
        n = len(data) // self.frame_size
        if not n:
            return
        heads = np.frombuffer(data, dtype=">u4").reshape(n, self.frame_size // 4)[:, :6]
        stored = (heads[:, 4].astype(np.uint64) << np.uint64(32)) | heads[:, 5]
        repeat = max(0, min(n, self.applied + 1 - first))
        if repeat:  # frames applied already from another batch: they must be the same
            known = np.frombuffer(self.sums, dtype=np.uint64)[
                first - 1:first - 1 + repeat].copy()  # no view: self.sums grows below
            if not np.array_equal(known, stored[:repeat]):
                bad = first + int(np.flatnonzero(known != stored[:repeat])[0])
                raise CorruptBackupError(
                    f"{obj.key}: frame {bad} differs from the frame {bad} already applied from "
                    "another batch (two writers shipped this generation?)")
        if repeat == n:
            return
        new = data[repeat * self.frame_size:]
        new_heads = heads[repeat:]
        start = first + repeat
        if upto is not None:
            keep = max(0, min(len(new_heads), upto - start + 1))
            new, new_heads = new[:keep * self.frame_size], new_heads[:keep]
            if not keep:
                return
        good, chain = self._verify(new)
        if good < len(new_heads):
            raise CorruptBackupError(f"{obj.key}: frame {start + good} fails its checksum")
        self.chain = chain
        self.sums.frombytes(stored[repeat:repeat + len(new_heads)].tobytes())
        self.applied = start + len(new_heads) - 1
        applier.frames(new, new_heads)

    def _verify(self, frames: memoryview) -> tuple[int, Checksum]:
        if self.big_endian is None:  # the bucket does not say: the first frame tells
            for order in (False, True):
                good, _ = walsum.verify_chain(frames, self.page_size, self.chain, order,
                                                  None)
                if good:
                    self.big_endian = order
                    self.salts = (int.from_bytes(frames[8:12], "big"),
                                  int.from_bytes(frames[12:16], "big"))
                    return walsum.verify_chain(frames, self.page_size, self.chain, order,
                                               self.salts)
            return 0, self.chain
        return walsum.verify_chain(frames, self.page_size, self.chain, self.big_endian,
                                   self.salts)

    def finish(self, span: _Span, applier: _Applier) -> None:
        applier.end_of_generation()
        if (not span.cut and span.expect is not None and span.upto
                and (self.applied != span.upto or self.chain != span.expect)):
            raise CorruptBackupError(
                f"generation {self.g.id}: its frames up to {span.upto} do not match what "
                f"the next generation was built on (checksum {self.chain[0]:08x}-"
                f"{self.chain[1]:08x}, expected {span.expect[0]:08x}-{span.expect[1]:08x})")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
