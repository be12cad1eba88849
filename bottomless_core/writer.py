"""The one writer of the bucket (beside the catalog, its one reader).

Everything that puts a generation's objects into the bucket goes through here, in the order
that makes an interrupted write visible to readers (docs/format.md):

- a generation **with a snapshot**: ``.changecounter``, ``.dep`` (metadata ``base:
  snapshot``), the snapshot, the WAL frames captured with it, then ``.meta`` **last**. (The
  small objects first: libSQL's restore takes a generation holding a snapshot but no
  ``.changecounter`` for an empty database and restores nothing, where one without the
  snapshot yet restores through its parent.);
- a generation **without one** (the daemon's, after its own checkpoint): ``.changecounter``,
  ``.dep`` (metadata: the parent's last frame and chain value it builds on), ``.meta``, then
  its batches;
- a snapshot added later to a snapshot-less generation (``snapshot``, the daemon's policy).

And the rule that keeps an encrypted backup encrypted: without a recipient, no plaintext
snapshot or WAL batch goes into, or right after, a generation whose objects are age files.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from . import layout
from .capture import WalCapture
from .catalog import (
    BASE_METADATA,
    GENERATION_METADATA,
    PARENT_CHECKSUM_METADATA,
    PARENT_FRAMES_METADATA,
    Generation,
    snapshot_metadata,
)
from .codec import Codec, compress, decompress
from .errors import ConfigError, NotFoundError
from .layout import BatchKey, Meta, PackKey
from .progress import NoProgress, Progress
from .snapshot import SnapshotFile
from .store.base import ObjectInfo, ObjectStore

VERDICTS_KEPT = 4096  # generations whose "holds age objects" verdict a writer remembers
RECENT_BYTES = 16 << 20  # compressed batches a writer keeps for compaction (see Writer)
NEED_RECIPIENT = ("give --age-recipient (or LIBSQL_BOTTOMLESS_AGE_RECIPIENT, config key "
                  "age_recipient) with the public key it is encrypted to")


class SealedGenerations:
    """Which generations hold age objects: read once each (the first bytes of a snapshot and
    of the newest batch), then remembered, also for the ones this process wrote plaintext
    into."""

    def __init__(self) -> None:
        self._sealed: dict[uuid.UUID, bool] = {}
        self._guard = threading.Lock()

    def wrote_plain(self, g: uuid.UUID) -> None:
        self._remember(g, False, keep=True)

    def _remember(self, g: uuid.UUID, sealed: bool, keep: bool = False) -> None:
        with self._guard:
            if keep and g in self._sealed:
                return
            self._sealed[g] = sealed
            while len(self._sealed) > VERDICTS_KEPT:
                del self._sealed[next(iter(self._sealed))]

    def sealed(self, store: ObjectStore, g: Generation) -> bool:
        known = self._sealed.get(g.id)
        if known is not None:
            return known
        sample = [g.snapshot.key] if g.snapshot is not None else []
        if g.batches:
            sample.append(g.batches[-1][1].key)
        verdict = any(_is_age(store, k) for k in sample)
        self._remember(g.id, verdict)
        return verdict

    def refuse_plaintext_into(self, store: ObjectStore, g: Generation,
                              what: str = "WAL batches", after: bool = False) -> None:
        """Without recipients: ConfigError if ``g`` holds age objects and ``what`` would be
        added to it (or, with ``after``, follow it) in plaintext through ``store``."""
        if store.encrypts or not self.sealed(store, g):
            return
        how = "follow it" if after else "be added to it"
        raise ConfigError(f"generation {g.id} is encrypted (age) and {what} would {how} in "
                          f"plaintext; {NEED_RECIPIENT}")


def _is_age(store: ObjectStore, key: str) -> bool:
    try:
        return store.object_encryption(key) == "age"
    except NotFoundError:  # removed since the listing
        return False


def refuse_plaintext_from_sealed(store: ObjectStore, key: str) -> None:
    """What is about to be uploaded to ``key`` was rebuilt from what ``store`` read: if that
    was decrypted and this store does not encrypt, it would go up in the clear."""
    if store.decrypted_any and not store.encrypts:
        raise ConfigError(f"{key}: what it would hold was read from encrypted (age) objects; "
                          f"{NEED_RECIPIENT}")


class Writer:
    """Writes the generations of one database into the bucket, in the order above."""

    def __init__(self, store: ObjectStore, db_name: str,
                 before_write: Callable[[], None] | None = None) -> None:
        """``before_write``: called before every write (the lease holder's Lease.ensure)."""
        self.store = store
        self.db_name = db_name
        self.before_write = before_write or (lambda: None)
        self.sealed = SealedGenerations()
        # the compressed bodies of the batches shipped last, newest last: compaction reads
        # them here instead of downloading them again (bounded by RECENT_BYTES)
        self.recent: OrderedDict[BatchKey, tuple[Codec, bytes]] = OrderedDict()
        self._recent_bytes = 0
        self._recent_guard = threading.Lock()

    def shipped_frames(self, key: BatchKey) -> bytes | None:
        """The raw frames of a batch this writer shipped recently, if it still has them."""
        with self._recent_guard:
            got = self.recent.get(key)
        return decompress(got[1], got[0]) if got is not None else None

    def _remember_shipped(self, key: BatchKey, codec: Codec, body: bytes) -> None:
        with self._recent_guard:
            self.recent[key] = (codec, body)
            self._recent_bytes += len(body)
            while self._recent_bytes > RECENT_BYTES and self.recent:
                _, (_, old) = self.recent.popitem(last=False)
                self._recent_bytes -= len(old)

    def upload_snapshot(self, gen: uuid.UUID, image: SnapshotFile,
                        progress: Progress | None = None, rebuilt: bool = False) -> ObjectInfo:
        """``image`` as the snapshot of ``gen``, with the metadata every reader checks (its
        digest, the frames folded into it, the generation it belongs to). ``rebuilt``: the
        image was restored from the bucket, so what was encrypted there stays encrypted."""
        self.before_write()
        progress = progress or NoProgress()
        key = layout.object_key(self.db_name, gen, layout.snapshot_name(image.codec))
        if rebuilt:
            refuse_plaintext_from_sealed(self.store, key)
        metadata = snapshot_metadata(gen, image.sha256, image.wal_frames)
        progress.start("upload snapshot", image.size)
        with open(image.path, "rb") as f:
            self.store.upload(key, f, metadata=metadata,
                              on_progress=lambda n: progress.advance("upload snapshot", n))
        progress.finish("upload snapshot")
        return ObjectInfo(key, image.size, None, metadata)

    def start(self, g: Generation) -> None:
        """``.changecounter`` and ``.dep``. The dependency's metadata says what the generation
        starts from: its own snapshot, or the parent up to a frame whose checksum it gives
        (a reader can then tell a parent that lost frames; libSQL ignores metadata)."""
        self.before_write()
        if g.change_counter is not None:
            self.store.put(g.key(layout.CHANGE_COUNTER), g.change_counter)
        if g.parent is None:
            return
        if g.parent_frames is None or g.parent_checksum is None:
            metadata = {BASE_METADATA: "snapshot"}
        else:
            c1, c2 = g.parent_checksum
            metadata = {PARENT_FRAMES_METADATA: str(g.parent_frames),
                        PARENT_CHECKSUM_METADATA: f"{c1:08x}-{c2:08x}"}
        self.store.put(g.key(layout.DEPENDENCY), layout.encode_dependency(g.parent),
                       metadata={**metadata, GENERATION_METADATA: str(g.id)})

    def write_meta(self, g: Generation, meta: Meta) -> None:
        """``.meta``: page size and the checksum the frame chain starts from. Written last for
        a generation with a snapshot (from then on it is complete), before any batch for one
        without; rewritten when a new WAL is adopted on top of an unchanged snapshot."""
        self.before_write()
        self.store.put(g.key(layout.META), meta.encode())
        g.meta = meta

    def ship(self, g: Generation, capture: WalCapture, stamp: int, codec: Codec,
             per_batch: int, threads: int,
             on_landed: Callable[[BatchKey, ObjectInfo], None]) -> None:
        """Upload the frames of ``capture`` that ``g`` lacks as batches of at most
        ``per_batch`` frames, ``threads`` side by side; each is recorded in ``g`` and handed
        to ``on_landed`` as it lands, in frame order."""
        self.before_write()
        frame_size = capture.frame_size
        keys = batches_to_ship(g.covered(), capture.skipped + 1, capture.frame_count, per_batch,
                               stamp, codec)

        def upload(key: BatchKey, data: bytes) -> ObjectInfo:
            body = compress(data, codec)
            obj_key = g.key(key.name)
            self.store.put(obj_key, body)
            self._remember_shipped(key, codec, body)
            return ObjectInfo(obj_key, len(body))

        window: deque[tuple[BatchKey, Future[ObjectInfo]]] = deque()
        pending = iter(keys)
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="ship") as pool:
            try:
                nxt = next(pending, None)
                while nxt is not None or window:
                    while nxt is not None and len(window) < max(1, threads):
                        capture.frames.seek((nxt.first - capture.skipped - 1) * frame_size)
                        data = capture.frames.read((nxt.last - nxt.first + 1) * frame_size)
                        window.append((nxt, pool.submit(upload, nxt, data)))
                        nxt = next(pending, None)
                    key, fut = window.popleft()
                    info = fut.result()
                    g.batches.append((key, info))
                    on_landed(key, info)
            finally:
                for _, fut in window:
                    fut.cancel()
                g.batches.sort(key=lambda b: (b[0].first, b[0].last))
        if keys and not self.store.encrypts:
            self.sealed.wrote_plain(g.id)

    def upload_pack(self, g: Generation, key: PackKey, body: IO[bytes], size: int,
                    ) -> ObjectInfo:
        """A page pack of ``g`` (compaction), encrypted as ``g``'s own data objects are: a
        plaintext generation (one from before encryption was switched on) stays readable
        without a key, an encrypted one is not given a plaintext pack. If ``g`` was removed
        meanwhile (rm), the pack is taken back and NotFoundError raised."""
        self.before_write()
        name = g.key(key.name)
        if self.sealed.sealed(self.store, g):
            refuse_plaintext_from_sealed(self.store, name)
            self.store.upload(name, body)
        else:
            self.store.stored.upload(name, body)
        if not self.store.exists(g.key(layout.META)):
            self.store.delete_many([name, layout.generation_prefix(self.db_name, g.id)])
            raise NotFoundError(f"generation {g.id} was removed during compaction")
        return ObjectInfo(name, size)

    def abandon(self, g: Generation) -> None:
        """Take back what was written of a generation whose creation failed (best effort: a
        removal that fails too leaves an incomplete generation, which readers pass over)."""
        names = (layout.CHANGE_COUNTER, layout.DEPENDENCY,
                 *(layout.snapshot_name(c) for c in Codec))
        with contextlib.suppress(Exception):
            self.store.delete_many([*(g.key(n) for n in names),
                                    layout.generation_prefix(self.db_name, g.id)])

    def remove(self, keys: Iterable[str]) -> int:
        """Take objects back (batches no restore can use, a removed generation's prefix)."""
        self.before_write()
        return self.store.delete_many(keys)


def batches_to_ship(stored: list[tuple[int, int, int]], first: int, last: int,
                    per_batch: int, stamp: int, codec: Codec) -> list[BatchKey]:
    """The batches that give frames ``first..last`` to a generation holding ``stored``
    ((first, last, stamp) of its batches and packs): only frames it does not have, so that no
    two batches ever overlap (libSQL's restore stops, silently, at a batch that does not
    start right after the last frame it applied).

    A hole left by a ship cut short is filled with frames committed before those of the
    batch after it, so the refill is stamped no later than that batch: stamps then still
    grow in listing order, and a restore at T that reaches the batch after the hole reaches
    the refill too.
    """
    covered = sorted(stored)
    keys: list[BatchKey] = []
    frame = first
    i = 0
    while frame <= last:
        while i < len(covered) and covered[i][1] < frame:
            i += 1
        if i < len(covered) and covered[i][0] <= frame:  # frame is stored already
            frame = covered[i][1] + 1
            continue
        end = min(last, covered[i][0] - 1) if i < len(covered) else last
        when = min(stamp, covered[i][2]) if i < len(covered) else stamp
        while frame <= end:
            upto = min(end, frame + per_batch - 1)
            keys.append(BatchKey(frame, upto, when, codec))
            frame = upto + 1
    return keys
