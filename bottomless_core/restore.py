"""Restore: choose a generation, download its snapshot, replay its WAL batches, swap in."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from . import layout
from .catalog import (
    Generation,
    describe_generation,
    list_generations,
    read_tombstone,
)
from .codec import CodecError, Decoder, decompress
from .database import check_sqlite_file
from .errors import (
    CorruptBackupError,
    LocalDatabaseError,
    NotFoundError,
    RestoreRefusedError,
)
from .layout import BatchKey
from .progress import NoProgress, Progress
from .storage import ObjectInfo, Storage
from .wal import FRAME_HEADER_SIZE, FrameChain

MAX_RESTORE_DEPTH = 100  # generations followed through .dep to find a snapshot (as libsql)
PENDING_MEMORY = 32 << 20  # an unfinished transaction's frames stay in memory up to this
PREFETCH = 8  # batch downloads in flight during restore (Litestream restores with 8 too)


@dataclass
class RestoreResult:
    generation: uuid.UUID
    chain: list[uuid.UUID]  # generations used, oldest (the one with the snapshot) first
    page_size: int = 0
    pages: int = 0
    frames_applied: int = 0
    batches_applied: int = 0
    change_counter: int = 0
    integrity: str = ""
    path: Path | None = None
    skipped_batches: list[str] = field(default_factory=list)


def choose_generation(storage: Storage, db_name: str, generation: uuid.UUID | None = None,
                      utc_time: datetime | None = None) -> uuid.UUID:
    """The generation to restore: the given one, the newest created at or before ``utc_time``,
    or the newest. Generations covered by the database's tombstone are refused."""
    tombstone = read_tombstone(storage, db_name)

    def dead(gen: uuid.UUID) -> bool:
        return tombstone is not None and layout.generation_time(gen).timestamp() <= tombstone

    if generation is not None:
        prefix = layout.generation_prefix(db_name, generation)
        if next(storage.list_objects(prefix), None) is None:
            raise NotFoundError(f"generation {generation} of {db_name!r} not found in bucket "
                                f"{storage.bucket!r}")
        if dead(generation):
            raise NotFoundError(f"generation {generation} was deleted (tombstone)")
        return generation
    for gen in list_generations(storage, db_name):
        if dead(gen):
            break  # everything older is covered by the tombstone too
        if utc_time is None or layout.generation_time(gen) <= utc_time:
            return gen
    when = f" created at or before {utc_time:%Y-%m-%d %H:%M:%S} UTC" if utc_time else ""
    raise NotFoundError(f"no generation of {db_name!r}{when} in bucket {storage.bucket!r}")


def restore(storage: Storage, db_name: str, target: Path, *,
            generation: uuid.UUID | None = None, utc_time: datetime | None = None,
            force: bool = False, verify_only: bool = False,
            progress: Progress | None = None) -> RestoreResult:
    """Restore into ``target`` (atomically), or with ``verify_only`` into a temporary file that
    is checked and deleted. A failed restore leaves ``target`` untouched."""
    progress = progress or NoProgress()
    if utc_time is not None and utc_time.tzinfo is None:
        utc_time = utc_time.replace(tzinfo=UTC)
    if not verify_only:
        _refuse_overwrite(target, force)
    storage.check_bucket()
    gen = choose_generation(storage, db_name, generation, utc_time)
    chain = _generation_chain(storage, db_name, gen)
    result = RestoreResult(gen, [g.id for g in chain])
    directory = target.parent
    if verify_only and not directory.is_dir():
        directory = Path(tempfile.gettempdir())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restoring",
                                        dir=directory)
    except OSError as exc:
        raise LocalDatabaseError(f"{directory}: cannot write there ({exc.strerror})") from None
    tmp = Path(tmp_name)
    try:
        return _restore_into(storage, chain, tmp, fd, target, utc_time, result, force,
                             verify_only, progress)
    except OSError as exc:  # local disk: full, read-only, vanished directory...
        raise LocalDatabaseError(f"{target}: restore failed writing locally "
                                 f"({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _restore_into(storage: Storage, chain: list[Generation], tmp: Path, fd: int, target: Path,
                  utc_time: datetime | None, result: RestoreResult, force: bool,
                  verify_only: bool, progress: Progress) -> RestoreResult:
    """Build the database in ``tmp``, check it, then swap it in (unless verify_only)."""
    with os.fdopen(fd, "r+b") as out:
        _download_snapshot(storage, chain[0], out, progress)
        _replay(storage, chain, out, utc_time, result, progress)
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
    for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed over the restored file
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    result.path = target
    return result


def _refuse_overwrite(target: Path, force: bool) -> None:
    if force:
        return
    with contextlib.suppress(FileNotFoundError):
        if target.stat().st_size > 0:
            raise RestoreRefusedError(f"{target} already exists and is not empty; "
                                      "use --force to overwrite it")


def _generation_chain(storage: Storage, db_name: str, gen: uuid.UUID) -> list[Generation]:
    """The generation and, if it has no snapshot, its ancestors up to one that has."""
    chain: list[Generation] = []
    current: uuid.UUID | None = gen
    while current is not None:
        if len(chain) >= MAX_RESTORE_DEPTH:
            raise CorruptBackupError(f"no snapshot within {MAX_RESTORE_DEPTH} generations of "
                                     f"{gen}")
        try:
            g = describe_generation(storage, db_name, current)
        except NotFoundError:
            raise CorruptBackupError(f"generation {chain[-1].id if chain else gen} depends on "
                                     f"{current}, which is missing") from None
        chain.append(g)
        if g.snapshot is not None:
            return list(reversed(chain))
        current = g.parent
    raise CorruptBackupError(f"generation {gen} has no snapshot and no parent to take one from")


def _download_snapshot(storage: Storage, g: Generation, out: IO[bytes],
                       progress: Progress) -> None:
    assert g.snapshot is not None and g.snapshot_codec is not None
    decoder = Decoder(g.snapshot_codec)
    progress.start("download snapshot", g.snapshot.size)

    def sink(chunk: bytes) -> None:
        out.write(decoder.feed(chunk))
        progress.advance("download snapshot", len(chunk))

    try:
        storage.download(g.snapshot.key, sink)
        decoder.finish()
    except CodecError as exc:
        raise CorruptBackupError(f"{g.snapshot.key}: {exc}") from None
    progress.finish("download snapshot")


def _replay(storage: Storage, chain: list[Generation], out: IO[bytes],
            utc_time: datetime | None, result: RestoreResult, progress: Progress) -> None:
    """Apply every generation's batches in order: whole transactions only, checksums verified."""
    cutoff = utc_time.timestamp() if utc_time is not None else None
    plan: list[tuple[Generation, list[tuple[BatchKey, ObjectInfo]]]] = []
    for g in chain:
        batches = []
        expected = 1
        for key, obj in g.batches:
            if cutoff is not None and key.timestamp > cutoff:
                break
            if key.first != expected:
                raise CorruptBackupError(
                    f"generation {g.id}: WAL batch missing (frames {expected}..{key.first - 1})")
            batches.append((key, obj))
            expected = key.last + 1
        if batches and g.meta is None:
            raise CorruptBackupError(f"generation {g.id} has WAL batches but no .meta")
        plan.append((g, batches))
    total = sum(k.last - k.first + 1 for _, bs in plan for k, _ in bs)
    if total:
        progress.start("replay frames", total, unit="frames")
    db_pages = 0
    for g, batches in plan:
        if not batches:
            continue
        assert g.meta is not None
        page_size = g.meta.page_size
        chain_check = FrameChain(page_size, g.meta.checksum)
        frame_size = FRAME_HEADER_SIZE + page_size
        with tempfile.SpooledTemporaryFile(max_size=PENDING_MEMORY) as pending:
            for (key, obj), body in zip(batches, _prefetch(storage, batches), strict=True):
                try:
                    data = decompress(body, key.codec)
                except CodecError as exc:
                    raise CorruptBackupError(f"{obj.key}: {exc}") from None
                count = key.last - key.first + 1
                if len(data) != count * frame_size:
                    raise CorruptBackupError(
                        f"{obj.key}: holds {len(data)} bytes, expected {count} frames of "
                        f"{frame_size} bytes")
                mv = memoryview(data)
                for i in range(count):
                    frame = mv[i * frame_size:(i + 1) * frame_size]
                    got = chain_check.accept(frame)
                    if got is None:
                        raise CorruptBackupError(
                            f"{obj.key}: frame {key.first + i} fails its checksum")
                    pending.write(frame)
                    if got[1]:
                        result.frames_applied += _apply(pending, out, page_size)
                        db_pages = got[1]
                        pending.seek(0)
                        pending.truncate()
                progress.advance("replay frames", count)
                result.batches_applied += 1
        if db_pages:
            out.truncate(db_pages * page_size)
    progress.finish("replay frames")


def _prefetch(storage: Storage, batches: list[tuple[BatchKey, ObjectInfo]]) -> Iterator[bytes]:
    """The batches' bodies in order, with up to PREFETCH downloads in flight: a daemon's
    generation can hold hundreds of small batches, and S3 round trips dominate."""
    with ThreadPoolExecutor(PREFETCH, thread_name_prefix="restore-get") as pool:
        window: deque[Future[bytes]] = deque()
        todo = iter(batches)
        try:
            for _, obj in itertools.islice(todo, PREFETCH):
                window.append(pool.submit(storage.get, obj.key))
            while window:
                body = window.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(pool.submit(storage.get, nxt[1].key))
                yield body
        finally:
            for f in window:
                f.cancel()


def _apply(pending: IO[bytes], out: IO[bytes], page_size: int) -> int:
    """Write the pages of one committed transaction to their places; return frames written."""
    frame_size = FRAME_HEADER_SIZE + page_size
    end = pending.tell()
    pending.seek(0)
    while pending.tell() < end:
        frame = pending.read(frame_size)
        pgno = int.from_bytes(frame[:4], "big")
        out.seek((pgno - 1) * page_size)
        out.write(frame[FRAME_HEADER_SIZE:])
    return end // frame_size


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

