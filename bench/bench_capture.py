"""WAL capture and checksum speed: full verification vs SQLite's wal-index fast path, and
chain verification of the same WAL in memory: pure Python (the reference FrameChain in
tests/wal_reference.py) vs numpy (walsum).

    python -m bench.bench_capture [WAL_MB]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import fill, mb, now
from bottomless_core.capture import capture_wal
from bottomless_core.database import ReadLock, wal_path
from bottomless_core.wal import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, parse_wal_header
from bottomless_core.walsum import verify_chain
from tests.wal_reference import FrameChain


def verify_in_memory(data: bytes) -> dict[str, float]:
    """Best of 3 seconds to verify every frame of a WAL image, per implementation."""
    header = parse_wal_header(data[:WAL_HEADER_SIZE])
    frames = memoryview(data)[WAL_HEADER_SIZE:]
    size = FRAME_HEADER_SIZE + header.page_size
    total = len(frames) // size

    def pure_python() -> int:
        chain = FrameChain(header.page_size, header.checksum, header.salts, header.big_endian)
        n = 0
        while chain.accept(frames[n * size:(n + 1) * size]) is not None:
            n += 1
        return n

    def numpy() -> int:
        return verify_chain(frames, header.page_size, header.checksum, header.big_endian,
                            header.salts)[0]

    results = {}
    for name, run in (("FrameChain (Python)", pure_python), ("walsum.verify_chain", numpy)):
        best = float("inf")
        for _ in range(3):
            t = now()
            assert run() == total, name
            best = min(best, now() - t)
        results[name] = best
    return results


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        conn = fill(db, size, autocheckpoint=0)
        wal_bytes = wal_path(db).stat().st_size
        with ReadLock(db) as lock:
            index = lock.wal_index()
            results = {}
            for name, trusted in (("full verification", None), ("wal-index fast path", index)):
                best = float("inf")
                for _ in range(3):
                    t = now()
                    cap = capture_wal(wal_path(db), None, trusted)
                    best = min(best, now() - t)
                    frames = cap.frame_count
                    cap.close()
                results[name] = best
        data = wal_path(db).read_bytes()
        conn.close()
    page_size = parse_wal_header(data[:WAL_HEADER_SIZE]).page_size
    print(f"WAL of {mb(wal_bytes):.0f} MB, {frames} frames of {page_size} bytes (best of 3)")
    for name, secs in results.items():
        print(f"  {name:<22} {secs:6.2f} s   {mb(wal_bytes) / secs:7.0f} MB/s")
    print("checksum chain verification of the same WAL, in memory (no I/O, no copy):")
    for name, secs in verify_in_memory(data).items():
        print(f"  {name:<22} {secs:6.2f} s   {mb(len(data)) / secs:7.0f} MB/s")


if __name__ == "__main__":
    main()
