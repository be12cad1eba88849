"""WAL capture and checksum speed: full verification vs SQLite's wal-index fast path.

    python -m bench.bench_capture [WAL_MB]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import fill, mb, now
from bottomless_core.database import ReadLock, capture_wal, wal_path


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
        conn.close()
    print(f"WAL of {mb(wal_bytes):.0f} MB, {frames} frames of 4096 bytes (best of 3)")
    for name, secs in results.items():
        print(f"  {name:<22} {secs:6.2f} s   {mb(wal_bytes) / secs:7.0f} MB/s")


if __name__ == "__main__":
    main()
