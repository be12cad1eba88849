"""Downloads for restore: many small objects prefetched in order, and one large object read as
parallel ranged GETs behind a sequential reader (a snapshot whose zstd frame is decompressed
as the ranges arrive). Memory stays bounded by the bytes in flight, not by the object."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import CorruptBackupError, NotFoundError
from .store.base import AGE_MAGIC, ObjectInfo, ObjectStore

PREFETCH = 8  # batch downloads in flight during restore (Litestream restores with 8 too)
# Memory: restoring a 200 MB burst of 16 MiB batches peaked at 137 MiB with 24 MiB / 4 MiB /
# 32 MiB here and at 100 MiB with these (python -m bench.bench_burst; docs/benchmarks.md).
PREFETCH_BYTES = 16 << 20  # ...and at most this many compressed bytes of them in memory
RANGE_BYTES = 8 << 20  # one ranged GET of a large object
RANGES_IN_FLIGHT = 4  # ...side by side: 32 MiB in memory at most
PARALLEL_FROM = 2 * RANGE_BYTES  # objects smaller than this are read in one stream


def prefetch(storage: ObjectStore, objects: list[ObjectInfo]) -> Iterator[bytes]:
    """The objects' bodies in order, with up to PREFETCH downloads (and PREFETCH_BYTES of
    them) in flight: a daemon's generation can hold thousands of small batches."""
    with ThreadPoolExecutor(PREFETCH, thread_name_prefix="restore-get") as pool:
        window: deque[tuple[int, Future[bytes]]] = deque()
        in_flight = 0
        todo = iter(objects)
        nxt = next(todo, None)
        try:
            while nxt is not None or window:
                while nxt is not None and (not window or (
                        len(window) < PREFETCH and in_flight + nxt.size <= PREFETCH_BYTES)):
                    window.append((nxt.size, pool.submit(get, storage, nxt.key)))
                    in_flight += nxt.size
                    nxt = next(todo, None)
                size, fut = window.popleft()
                body = fut.result()
                in_flight -= size
                yield body
        finally:
            for _, f in window:
                f.cancel()


def get(storage: ObjectStore, key: str) -> bytes:
    try:
        return storage.get(key)
    except NotFoundError:
        raise CorruptBackupError(f"{key}: disappeared during the restore") from None


class RangedReader:
    """``read(n)`` over an object fetched as ranged GETs, RANGES_IN_FLIGHT of them ahead.
    Only for objects stored as they are read (not age files: those decrypt as one stream)."""

    def __init__(self, storage: ObjectStore, key: str, size: int) -> None:
        self.storage, self.key, self.size = storage, key, size
        self._pool = ThreadPoolExecutor(RANGES_IN_FLIGHT, thread_name_prefix="restore-range")
        self._window: deque[Future[bytes]] = deque()
        self._next = 0  # offset of the next range to ask for
        self._buf = b""
        self._pos = 0

    def _fill(self) -> None:
        while len(self._window) < RANGES_IN_FLIGHT and self._next < self.size:
            length = min(RANGE_BYTES, self.size - self._next)
            self._window.append(self._pool.submit(self._range, self._next, length))
            self._next += length

    def _range(self, start: int, length: int) -> bytes:
        try:
            data = self.storage.get_range(self.key, start, length)
        except NotFoundError:
            raise CorruptBackupError(f"{self.key}: disappeared during the restore") from None
        if len(data) != length:
            raise CorruptBackupError(f"{self.key}: shorter than listed (truncated?)")
        return data

    def read(self, size: int = -1, /) -> bytes:
        if self._pos >= len(self._buf):
            self._fill()
            if not self._window:
                return b""
            self._buf, self._pos = self._window.popleft().result(), 0
            self._fill()
        end = len(self._buf) if size is None or size < 0 else self._pos + size
        data = self._buf[self._pos:end]
        self._pos += len(data)
        return data

    def close(self) -> None:
        for fut in self._window:
            fut.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def ranged_if_plain(storage: ObjectStore, key: str, size: int) -> RangedReader | None:
    """A RangedReader for a large object stored as it is read, else None (small, or an age
    file the store decrypts: read those as one stream)."""
    if size < PARALLEL_FROM:
        return None
    if storage.stored is not storage:  # a wrapper: what it stores may differ from what it reads
        head = storage.stored.get_range(key, 0, len(AGE_MAGIC))
        if head.startswith(AGE_MAGIC):
            return None
        return RangedReader(storage.stored, key, size)
    return RangedReader(storage, key, size)
