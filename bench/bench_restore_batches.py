"""Restore of a generation made of many small batches (as the daemon makes them): batch
downloads one at a time versus the prefetch window.

    python -m bench.bench_restore_batches [BATCHES]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import bottomless_core.restore as restore_module
from bench.common import fill, make_bucket, now
from bottomless_core.replicator import ReplicateOptions, replicate_once
from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer

PREFETCH = restore_module.PREFETCH


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        storage = make_bucket(server, "bench-batches")
        db = Path(tmp) / "many.db"
        conn = fill(db, 1, autocheckpoint=0)
        replicate_once(db, storage)
        conn.close()
        conn = fill(db, batches * 4 // 1000 + 1, start=10**9, autocheckpoint=0)
        result = replicate_once(db, storage, options=ReplicateOptions(max_batch_frames=1))
        conn.close()
        times = {}
        for latency in (0.0, 0.02):
            proxy = Proxy(server.port, latency=latency)
            remote = S3Store(StorageConfig(proxy.endpoint, storage.bucket, "us-east-1",
                                           server.access_key, server.secret_key))
            for prefetch in (1, PREFETCH):
                restore_module.PREFETCH = prefetch
                target = Path(tmp) / f"restored-{latency}-{prefetch}.db"
                t = now()
                r = restore_module.restore(remote, db.name, target)
                times[latency, prefetch] = now() - t
                assert r.integrity == "ok"
            proxy.close()
    print(f"{result.batches_shipped} batches of one frame each (plus a snapshot), SeaweedFS on "
          "127.0.0.1 behind a proxy adding latency to every request")
    for (latency, prefetch), secs in times.items():
        print(f"  added latency {latency * 1000:3.0f} ms, {prefetch} download(s) in flight: "
              f"{secs:6.2f} s")


if __name__ == "__main__":
    main()
