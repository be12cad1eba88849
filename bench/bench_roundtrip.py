"""Snapshot, WAL shipping and restore: time, throughput and peak memory of the CLI process.

    python -m bench.bench_roundtrip [DB_MB] [WAL_MB]

Each step runs `bottomless-cli` in a child process against a local SeaweedFS, so the peak RSS
is that of the tool alone.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import fill, make_bucket, mb, run_cli
from bottomless_core import catalog
from bottomless_dev.seaweed import SeaweedServer


def main() -> None:
    db_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    wal_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        for codec in ("zstd", "gzip", "raw"):
            storage = make_bucket(server, f"bench-{codec}")
            env = {**server.env(), "LIBSQL_BOTTOMLESS_BUCKET": storage.bucket}
            db = Path(tmp) / f"{codec}.db"
            conn = fill(db, db_mb)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            db_bytes = db.stat().st_size
            secs, rss = run_cli(env, "-d", str(db), "replicate", "--once", "--compression", codec)
            gen = next(catalog.list_generations(storage, db.name))
            g = catalog.describe_generation(storage, db.name, gen)
            assert g.snapshot is not None
            rows.append((codec, "snapshot", db_bytes, g.snapshot.size, secs, rss))
            conn2 = fill(db, wal_mb, start=10**9, autocheckpoint=0)
            wal_bytes = db.with_name(db.name + "-wal").stat().st_size
            secs, rss = run_cli(env, "-d", str(db), "replicate", "--once", "--compression", codec)
            g = catalog.describe_generation(storage, db.name, gen)
            shipped = sum(o.size for _, o in g.batches)
            rows.append((codec, "ship WAL", wal_bytes, shipped, secs, rss))
            conn2.close()
            conn.close()
            out = Path(tmp) / f"{codec}-restored.db"
            secs, rss = run_cli(env, "--db-name", db.name, "restore", "-o", str(out))
            rows.append((codec, "restore", out.stat().st_size, g.total_size, secs, rss))
    print(f"database {db_mb} MB of rows, then {wal_mb} MB more in the WAL; SeaweedFS on "
          "127.0.0.1; one run each")
    print(f"{'codec':<6} {'step':<9} {'local MB':>9} {'bucket MB':>10} {'seconds':>8} "
          f"{'MB/s':>7} {'peak RSS MiB':>13}")
    for codec, step, local, remote, secs, rss in rows:
        print(f"{codec:<6} {step:<9} {mb(local):9.1f} {mb(remote):10.1f} {secs:8.2f} "
              f"{mb(local) / secs:7.0f} {rss:13d}")


if __name__ == "__main__":
    main()
