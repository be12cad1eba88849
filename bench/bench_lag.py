"""How far the daemon lags behind the application: commit -> frames in the bucket.

    python -m bench.bench_lag [SECONDS] [COMMITS_PER_SECOND] [INTERVAL]

A writer process commits at a steady rate and records, for each commit, the time and the WAL
frame count after it (autocheckpoint off, one WAL cycle). The daemon (a Follower in a thread,
the same code as `replicate`) records when each sync finished and up to which frame the bucket
then held. Lag of a commit = first sync end covering its frame - commit time.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import make_bucket
from bottomless_core.database import ReadLock
from bottomless_core.follower import Follower, FollowOptions
from bottomless_core.progress import Progress
from bottomless_core.replicator import ReplicateResult, Replicator
from bottomless_dev.seaweed import SeaweedServer

WRITER = """
import os, sqlite3, sys, time
db, out, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
wal = db + "-wal"
with open(out, "w") as f:
    start = time.time(); i = 0
    while time.time() - start < seconds:
        conn.execute("INSERT INTO t(v) VALUES (?)", ("x" * 200,))
        t = time.time()
        frames = (os.path.getsize(wal) - 32) // (4096 + 24)
        f.write(f"{t} {frames}\\n"); i += 1
        time.sleep(max(0.0, start + i / rate - time.time()))
"""


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        storage = make_bucket(server, "bench-lag")
        db = Path(tmp) / "lag.db"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.close()
        replicator = Replicator(db, storage)
        syncs: list[tuple[float, int]] = []
        original = replicator.sync

        def timed_sync(lock: ReadLock, progress: Progress | None = None) -> ReplicateResult:
            result = original(lock, progress)
            syncs.append((time.time(), result.last_frame))
            return result

        replicator.sync = timed_sync  # type: ignore[method-assign]
        follower = Follower(replicator, FollowOptions(interval=interval,
                                                      checkpoint_pages=10**9))
        stop = threading.Event()
        thread = threading.Thread(target=follower.run, args=(stop,))
        thread.start()
        while not syncs:
            time.sleep(0.05)
        commits_file = Path(tmp) / "commits"
        subprocess.run([sys.executable, "-c", WRITER, str(db), str(commits_file), str(seconds),
                        str(rate)], check=True)
        deadline = time.time() + 10
        commits = [(float(t), int(f)) for t, f in
                   (line.split() for line in commits_file.read_text().splitlines())]
        while time.time() < deadline and (not syncs or syncs[-1][1] < commits[-1][1]):
            time.sleep(0.05)
        stop.set()
        thread.join()
    lags = []
    for t, frame in commits:
        done = next((s for s, last in syncs if last >= frame and s >= t), None)
        assert done is not None, "a commit never reached the bucket"
        lags.append(done - t)
    lags.sort()
    print(f"{len(commits)} commits over {seconds:.0f} s ({rate:.0f}/s), poll interval "
          f"{interval} s, {len(syncs)} syncs")
    print(f"  lag p50 {statistics.median(lags):.2f} s, p99 {lags[int(len(lags) * 0.99)]:.2f} s,"
          f" max {lags[-1]:.2f} s")


if __name__ == "__main__":
    main()
