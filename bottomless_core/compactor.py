"""Compaction: the WAL batches of sealed time windows merged into page packs (pack.py), level
by level, so that a restore fetches a few large objects instead of one per poll.

Level 1 merges the batches whose stamps fall in one window (30 s by default) into a pack
holding the last version of every page they change; level k merges the level k-1 packs of
its window (5 min, 1 h). A pack covers frames FIRST..LAST of one generation and ends at a
commit, so a restore applies it as whole transactions, then goes on with the next pack or
the batches after it; the commits inside it (frame, stamp) are listed in it. The batches stay
(libSQL reads them, and a restore at a time inside a window uses them), unless
``keep_batches`` is off (docs/format.md, "Page packs", says what a libSQL reader then loses).

A window is sealed once no batch can be stamped in it any more: every batch is stamped with
its capture time rounded up, so after the window's end only earlier frames' refills can, and a
window with a hole is not compacted until the hole is filled. A generation that is no longer
the newest is sealed whole. Compaction writes through the Writer (the lease holder's) and
needs the plaintext of the batches: an encrypted generation is compacted only when the
identity is there (else it is skipped, with one log line).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import layout, pack, walsum
from .catalog import BrokenChain, Generation, describer, walk_chain
from .codec import CodecError, decompress
from .errors import ConfigError, CorruptBackupError, EncryptionError, NotFoundError
from .layout import BatchKey, PackKey
from .pack import PackInfo
from .progress import NoProgress, Progress
from .store.base import ObjectInfo, ObjectStore
from .tempfiles import discard, owned_temp_path
from .wal import FRAME_HEADER_SIZE, Checksum
from .writer import Writer

log = logging.getLogger("bottomless.compactor")

# Windows of the levels, in seconds (each a multiple of the one below). Litestream 0.5
# compacts at 30 s, 5 min and 1 h too: a day of one-second batches restores from at most
# 23 + 11 + 9 packs and 29 batches (docs/benchmarks.md, "History").
LEVELS = (30, 300, 3600)
SPOOL_MEMORY = 8 << 20  # pages of a pack being built stay in memory up to this


@dataclass
class CompactResult:
    packs: list[PackKey] = field(default_factory=list)
    frames: int = 0  # frames of the batches merged into level-1 packs
    bytes_read: int = 0  # compressed bytes of the objects read
    bytes_written: int = 0  # of the packs uploaded
    batches_removed: int = 0  # with keep_batches off
    skipped: str | None = None  # why nothing could be done (e.g. encrypted, no identity)


class _Pages:
    """The last version of every page seen, spooled to a temporary file."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        self.where: dict[int, int] = {}
        self.end = 0

    def add(self, pgno: int, page: bytes | memoryview) -> None:
        self.spool.seek(self.end)
        self.spool.write(page)
        self.where[pgno] = self.end
        self.end += self.page_size

    def add_frames(self, data: memoryview, heads: np.ndarray) -> None:
        """Frames in order: only the last version of each page among them is written."""
        pgnos = heads[:, 0]
        rev = pgnos[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        size = FRAME_HEADER_SIZE + self.page_size
        for i in sorted((len(pgnos) - 1 - first_in_rev).tolist()):
            start = i * size + FRAME_HEADER_SIZE
            self.add(int(pgnos[i]), data[start:start + self.page_size])

    def sorted_pages(self, db_pages: int) -> Iterator[tuple[int, bytes]]:
        for pgno in sorted(p for p in self.where if p <= db_pages):
            self.spool.seek(self.where[pgno])
            yield pgno, self.spool.read(self.page_size)

    def close(self) -> None:
        self.spool.close()


class _Chain:
    """The WAL checksum chain of one generation, verified batch by batch (restore does the
    same): a merged pack must hold exactly the frames the batches hold."""

    def __init__(self, page_size: int, seed: Checksum) -> None:
        self.page_size = page_size
        self.value = seed
        self.big_endian: bool | None = None
        self.salts: tuple[int, int] | None = None

    def verify(self, frames: memoryview, key: str, first: int) -> None:
        if self.big_endian is None:
            for order in (False, True):
                good, _ = walsum.verify_chain(frames, self.page_size, self.value, order, None)
                if good:
                    self.big_endian = order
                    self.salts = (int.from_bytes(frames[8:12], "big"),
                                  int.from_bytes(frames[12:16], "big"))
                    break
            else:
                raise CorruptBackupError(f"{key}: frame {first} fails its checksum")
        good, value = walsum.verify_chain(frames, self.page_size, self.value, self.big_endian,
                                          self.salts)
        if good * (FRAME_HEADER_SIZE + self.page_size) != len(frames):
            raise CorruptBackupError(f"{key}: frame {first + good} fails its checksum")
        self.value = value


# A source of a batch's raw frames without a download (the replicator's recent ships).
LocalFrames = Callable[[layout.BatchKey], bytes | None]


class Compactor:
    """Merges one database's sealed windows into packs (the lease holder runs it)."""

    def __init__(self, writer: Writer, levels: Sequence[int] = LEVELS,
                 keep_batches: bool = True, local: LocalFrames | None = None,
                 clock: Callable[[], float] = time.time, workdir: Path | None = None) -> None:
        """``workdir``: a path whose directory holds the temporary packs (the database's:
        a killed run's leftovers are removed by the next, tempfiles.py)."""
        if not levels or any(b % a for a, b in itertools.pairwise(levels)):
            raise ValueError(f"compaction levels {list(levels)}: each a multiple of the one "
                             "below")
        self.writer = writer
        self.levels = tuple(levels)
        self.keep_batches = keep_batches
        self.local = local
        self.clock = clock
        self.workdir = workdir
        self._infos: dict[str, PackInfo] = {}  # pack key -> its header, once read
        self._known: dict[uuid.UUID, dict[PackKey, ObjectInfo]] = {}  # packs of each gen
        self._described: dict[uuid.UUID, Generation] = {}  # parents, for compact_chain
        self._noted: set[str] = set()

    @property
    def store(self):
        return self.writer.store

    def run(self, g: Generation, finished: bool = False) -> CompactResult:
        """Compact what is sealed in ``g`` (all of it when ``finished``: ``g`` is no longer the
        newest). ``g.packs`` and, with keep_batches off, ``g.batches`` are kept up to date."""
        result = CompactResult()
        if g.meta is None or not g.batches:
            return result
        known = self._known.setdefault(g.id, {})
        known.update(g.packs)  # what a listing showed, and what this compactor wrote
        g.packs = sorted(known.items(), key=lambda p: (p[0].first, -p[0].last, p[0].level))
        horizon = math.inf if finished else math.ceil(self.clock())
        try:
            self._level_one(g, horizon, result)
            for level in range(2, len(self.levels) + 1):
                self._level(g, level, horizon, result)
        except (EncryptionError, ConfigError) as exc:  # age batches, and no identity (or no
            # recipient to encrypt their pack to) here
            result.skipped = str(exc)
            if g.db_name not in self._noted:
                self._noted.add(g.db_name)
                log.warning("db=%s event=compaction_skipped generation=%s: %s", g.db_name,
                            g.id, exc)
        return result

    # --- level 1: batches -> packs ------------------------------------------------------------

    def _level_one(self, g: Generation, horizon: float, result: CompactResult) -> None:
        window = self.levels[0]
        ones = [k for k, _ in g.packs if k.level == 1]
        start = max((k.last for k in ones), default=0) + 1
        seed = self._info(g, max(ones, key=lambda k: k.last)).checksum if ones else (
            g.meta.checksum if g.meta is not None else (0, 0))
        reach = g.contiguous_frame  # a hole stops compaction until it is refilled
        batches = [(k, o) for k, o in g.batches if k.last >= start and k.first <= reach]
        # the batches of each sealed window, in frame order (stamps grow with frames)
        groups: list[list[tuple[BatchKey, ObjectInfo]]] = []
        for k, o in batches:
            w = k.timestamp // window
            if (w + 1) * window > horizon:
                break
            if groups and groups[-1][0][0].timestamp // window == w:
                groups[-1].append((k, o))
            else:
                groups.append([(k, o)])
        for group in groups:
            built = self._merge_batches(g, group, start, seed, result)
            if built is None:
                continue  # no commit in the window: its frames go with the next one
            key, info = built
            start, seed = key.last + 1, info.checksum
            if not self.keep_batches:
                self._drop_batches(g, key.last, result)

    def _merge_batches(self, g: Generation, group: list[tuple[BatchKey, ObjectInfo]],
                       start: int, seed: Checksum, result: CompactResult,
                       ) -> tuple[PackKey, PackInfo] | None:
        assert g.meta is not None
        ps = g.meta.page_size
        size = FRAME_HEADER_SIZE + ps
        chain = _Chain(ps, seed)
        pages = _Pages(ps)
        commits: list[tuple[int, int]] = []
        last_commit, db_pages, at_commit = 0, 0, seed
        first_stamp = group[0][0].timestamp
        pos = start  # the next frame to take
        try:
            for k, o in group:
                if k.last < pos:
                    continue  # a repeat (older versions refilled so): nothing new in it
                data = self._batch_frames(g, k, o, result)
                if len(data) != (k.last - k.first + 1) * size:
                    raise CorruptBackupError(f"{o.key}: truncated or corrupt object")
                skip = pos - k.first  # frames a previous pack or batch already holds
                mv = memoryview(data)[skip * size:]
                chain.verify(mv, o.key, pos)
                pos = k.last + 1
                n = len(mv) // size
                heads = np.frombuffer(mv, dtype=">u4").reshape(n, size // 4)[:, :6]
                pages.add_frames(mv, heads)  # (pages past the last commit are dropped below)
                for i in np.flatnonzero(heads[:, 1]).tolist():
                    frame = k.first + skip + i
                    commits.append((frame, k.timestamp))
                    last_commit, db_pages = frame, int(heads[i, 1])
                    at_commit = (int(heads[i, 4]), int(heads[i, 5]))
            if not last_commit:
                return None
            if last_commit < group[-1][0].last:
                # frames after the window's last commit belong to the next pack: rebuild the
                # page set without them (rare: a batch cut inside a transaction)
                pages.close()
                pages = self._pages_upto(g, group, start, last_commit, result)
            last_stamp = next(k.timestamp for k, _ in group if k.first <= last_commit <= k.last)
            info = PackInfo(1, ps, start, last_commit, db_pages, at_commit, first_stamp,
                            last_stamp)
            key = PackKey(start, last_commit, 1, last_stamp)
            result.frames += last_commit - start + 1
            self._upload(g, key, info, pages, commits, result)
            return key, info
        finally:
            pages.close()

    def _pages_upto(self, g: Generation, group: list[tuple[BatchKey, ObjectInfo]],
                    start: int, last: int, result: CompactResult) -> _Pages:
        assert g.meta is not None
        size = FRAME_HEADER_SIZE + g.meta.page_size
        pages = _Pages(g.meta.page_size)
        pos = start
        for k, o in group:
            if k.first > last:
                break
            if k.last < pos:
                continue
            data = self._batch_frames(g, k, o, result)
            lo = pos - k.first
            hi = min(k.last, last) - k.first + 1
            mv = memoryview(data)[lo * size:hi * size]
            n = len(mv) // size
            pages.add_frames(mv, np.frombuffer(mv, dtype=">u4").reshape(n, size // 4))
            pos = k.last + 1
        return pages

    def _batch_frames(self, g: Generation, k: BatchKey, o: ObjectInfo,
                      result: CompactResult) -> bytes:
        if self.local is not None:
            data = self.local(k)
            if data is not None:
                return data
        try:
            body = self.store.get(o.key)
        except NotFoundError:
            raise CorruptBackupError(f"{o.key}: disappeared during compaction") from None
        result.bytes_read += len(body)
        try:
            return decompress(body, k.codec)
        except CodecError as exc:
            raise CorruptBackupError(f"{o.key}: {exc}") from None

    def _drop_batches(self, g: Generation, upto: int, result: CompactResult) -> None:
        """keep_batches off: the batches whose frames are all in level-1 packs go."""
        gone = [(k, o) for k, o in g.batches if k.last <= upto]
        if gone:
            result.batches_removed += self.writer.remove(o.key for _, o in gone)
            g.batches = [(k, o) for k, o in g.batches if k.last > upto]

    # --- level k: packs of level k-1 -> one pack ----------------------------------------------

    def _level(self, g: Generation, level: int, horizon: float, result: CompactResult) -> None:
        window = self.levels[level - 1]
        below = sorted((k for k, _ in g.packs if k.level == level - 1), key=lambda k: k.first)
        done = [k for k, _ in g.packs if k.level == level]
        start = max((k.last for k in done), default=0) + 1
        # the level below, contiguous from `start`, grouped by this level's windows
        groups: list[list[PackKey]] = []
        expect = start
        for k in below:
            if k.last < start:
                continue
            if k.first != expect:
                break  # not contiguous: nothing after it yet
            w = k.timestamp // window
            if (w + 1) * window > horizon:
                break
            if groups and groups[-1][0].timestamp // window == w:
                groups[-1].append(k)
            else:
                groups.append([k])
            expect = k.last + 1
        for group in groups:
            if len(group) < 2:
                continue  # one pack of the level below already is this window's pack
            self._merge_packs(g, level, group, result)

    def _merge_packs(self, g: Generation, level: int, group: list[PackKey],
                     result: CompactResult) -> None:
        assert g.meta is not None
        pages = _Pages(g.meta.page_size)
        commits: list[tuple[int, int]] = []
        try:
            infos = []
            for k in group:
                try:
                    data = self.store.get(g.key(k.name))
                except NotFoundError:
                    raise CorruptBackupError(f"{g.key(k.name)}: disappeared during "
                                             "compaction") from None
                result.bytes_read += len(data)
                try:
                    index = pack.read_index(data)
                    for pgno, page in pack.iter_pages(data, index):
                        pages.add(pgno, page)
                except pack.PackError as exc:
                    raise CorruptBackupError(f"{g.key(k.name)}: {exc}") from None
                self._infos[g.key(k.name)] = index.info
                infos.append(index.info)
                commits.extend(index.commits)
            first, last = infos[0], infos[-1]
            info = PackInfo(level, first.page_size, first.first_frame, last.last_frame,
                            last.db_pages, last.checksum, first.first_stamp, last.last_stamp)
            key = PackKey(first.first_frame, last.last_frame, level, last.last_stamp)
            self._upload(g, key, info, pages, commits, result)
        finally:
            pages.close()

    # --- both ---------------------------------------------------------------------------------

    def _upload(self, g: Generation, key: PackKey, info: PackInfo, pages: _Pages,
                commits: list[tuple[int, int]], result: CompactResult) -> None:
        if self.workdir is not None:  # beside the database: removed by the next run if killed
            tmp = str(owned_temp_path(self.workdir, "pack"))
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            fd, tmp = tempfile.mkstemp(prefix=".bottomless-pack-")
        try:
            with os.fdopen(fd, "w+b") as f:
                done = pack.write_pack(f, info, pages.sorted_pages(info.db_pages), commits)
                size = f.tell()
                f.seek(0)
                obj = self.writer.upload_pack(g, key, f, size)
            self._infos[g.key(key.name)] = done
            self._known.setdefault(g.id, {})[key] = obj
            g.packs.append((key, obj))
            g.packs.sort(key=lambda p: (p[0].first, -p[0].last, p[0].level))
            result.packs.append(key)
            result.bytes_written += size
            log.info("db=%s event=compacted generation=%s level=%d frames=%d-%d pages=%d "
                     "bytes=%d", g.db_name, g.id, key.level, key.first, key.last,
                     done.page_count, size)
        finally:
            discard(Path(tmp))

    def _info(self, g: Generation, key: PackKey) -> PackInfo:
        """A pack's header (one ranged GET, then remembered)."""
        name = g.key(key.name)
        info = self._infos.get(name)
        if info is None:
            try:
                info = pack.decode_header(self.store.get_range(name, 0, pack.HEADER.size))
            except pack.PackError as exc:
                raise CorruptBackupError(f"{name}: {exc}") from None
            self._infos[name] = info
        return info


def compact_chain(compactor: Compactor, newest: Generation,
                  finished: Sequence[Generation] = ()) -> CompactResult:
    """Compact ``newest`` (what is sealed of it), the generations it restores through, and
    ``finished`` ones (no longer the newest), adding up what was done."""
    total = CompactResult()
    targets: list[tuple[Generation, bool]] = []
    parent_of = describer(compactor.store, newest.db_name, compactor._described)
    try:
        for link in walk_chain(newest, parent_of):
            targets.append((link, link is not newest))
    except BrokenChain:
        pass  # compact what the chain reaches
    seen = {g.id for g, _ in targets}
    targets.extend((g, True) for g in finished if g.id not in seen)
    for g, done in targets:
        r = compactor.run(g, finished=done)
        total.packs += r.packs
        total.frames += r.frames
        total.bytes_read += r.bytes_read
        total.bytes_written += r.bytes_written
        total.batches_removed += r.batches_removed
        total.skipped = total.skipped or r.skipped
    return total


def check_packs(store: ObjectStore, chain: Sequence[Generation],
                progress: Progress | None = None) -> list[str]:
    """``verify``: every pack of ``chain`` rebuilt from the batches it replaces (where they
    are all still there) and compared page by page, with the chain value and the database
    size after it. Returns what does not match (empty: all do)."""
    progress = progress or NoProgress()
    checks = [(g, k, o) for g in chain if g.meta is not None for k, o in g.packs]
    problems: list[str] = []
    if checks:
        progress.start("check page packs", len(checks), unit="packs")
    for g, key, obj in checks:
        try:
            problem = _check_pack(store, g, key, obj)
        except (CorruptBackupError, NotFoundError) as exc:
            problem = str(exc)
        if problem is not None:
            problems.append(problem)
        progress.advance("check page packs", 1)
    if checks:
        progress.finish("check page packs")
    return problems


def _check_pack(store: ObjectStore, g: Generation, key: PackKey, obj: ObjectInfo,
                ) -> str | None:
    assert g.meta is not None
    ps = g.meta.page_size
    size = FRAME_HEADER_SIZE + ps
    batches, pos = [], key.first
    for k, o in g.batches:
        if k.last < pos or k.first > key.last:
            continue
        if k.first > pos:
            return None  # batches removed (drop_compacted_batches): nothing to check against
        batches.append((k, o))
        pos = k.last + 1
        if pos > key.last:
            break
    if pos <= key.last:
        return None
    def frames(k: BatchKey, o: ObjectInfo) -> bytes:
        try:
            data = decompress(store.get(o.key), k.codec)
        except CodecError as exc:
            raise CorruptBackupError(f"{o.key}: {exc}") from None
        if len(data) != (k.last - k.first + 1) * size:
            raise CorruptBackupError(f"{o.key}: truncated or corrupt object")
        return data

    first_k, first_o = batches[0]
    data = frames(first_k, first_o)
    if key.first == 1:
        seed = g.meta.checksum
    elif key.first > first_k.first:
        at = (key.first - 1 - first_k.first) * size
        seed = (int.from_bytes(data[at + 16:at + 20], "big"),
                int.from_bytes(data[at + 20:at + 24], "big"))
    else:  # the frame before the pack is in an earlier batch
        prev = next(((k, o) for k, o in g.batches if k.first <= key.first - 1 <= k.last), None)
        if prev is None:
            return None
        pdata = frames(*prev)
        at = (key.first - 1 - prev[0].first) * size
        seed = (int.from_bytes(pdata[at + 16:at + 20], "big"),
                int.from_bytes(pdata[at + 20:at + 24], "big"))
    chain = _Chain(ps, seed)
    pages = _Pages(ps)
    db_pages = 0
    try:
        for i, (k, o) in enumerate(batches):
            raw = data if i == 0 else frames(k, o)
            lo = max(0, key.first - k.first)
            hi = min(k.last, key.last) - k.first + 1
            mv = memoryview(raw)[lo * size:hi * size]
            chain.verify(mv, o.key, k.first + lo)
            n = len(mv) // size
            heads = np.frombuffer(mv, dtype=">u4").reshape(n, size // 4)[:, :6]
            pages.add_frames(mv, heads)
            commits = np.flatnonzero(heads[:, 1])
            if len(commits):
                db_pages = int(heads[int(commits[-1]), 1])
        try:
            body = store.get(obj.key)
            index = pack.read_index(body)
            info = index.info
            if info.checksum != chain.value:
                return f"{obj.key}: its frames end at another WAL checksum than the batches'"
            if info.db_pages != db_pages:
                return (f"{obj.key}: says {info.db_pages} database pages, the batches "
                        f"{db_pages}")
            held = pack.iter_pages(body, index)
            for (pgno, page), (got, page2) in itertools.zip_longest(
                    pages.sorted_pages(db_pages), held, fillvalue=(0, b"")):
                if pgno != got:
                    return f"{obj.key}: holds other pages than the batches it replaces"
                if page != page2:
                    return f"{obj.key}: page {pgno} differs from the batches it replaces"
        except pack.PackError as exc:
            return f"{obj.key}: {exc}"
        return None
    finally:
        pages.close()
