"""Restore after a long history of small batches (issue 17): with compaction against without,
and against one fresh snapshot of the same database, at added latencies per request.

    python -m bench.bench_history N [N ...] [--db-mb 50] [--latency-ms 0,20,50]
                                    [--levels 30s,5m,1h] [--pitr 5] [--without]

A database of about --db-mb MB (bench/workload.py) is backed up, then N commits are made,
each updating one random row and shipped as its own batch, one (simulated) second apart, as
the daemon ships a database written around the clock: the replicator runs in-process with a
clock that advances a second per commit, and compacts every 30 such seconds as the daemon
does. Every restore is a separate `bottomless-cli restore` process through a proxy that adds
the latency to each request and counts the GETs. "fresh snapshot": the same database given a
snapshot of its own (`create`), restored the same way: the target is at most 1.5x that, and
at most 200 GETs. --without also restores the same history uncompacted (a bucket with
--compaction-levels off), which is what every restore cost before compaction.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import run_cli
from bench.workload import build_database
from bottomless_core import catalog
from bottomless_core.create import create_generation
from bottomless_core.database import ReadLock
from bottomless_core.follower import Follower, FollowOptions
from bottomless_core.replicator import ReplicateOptions, Replicator
from bottomless_core.settings import parse_setting
from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer


@dataclass
class Timed:
    seconds: float
    gets: int
    rss_mib: int


def _bucket(server: SeaweedServer, name: str) -> S3Store:
    s = S3Store(StorageConfig(server.endpoint, name, "us-east-1", server.access_key,
                              server.secret_key))
    s.create_bucket()
    return s


def make_history(db: Path, storage: S3Store, commits: int, levels: tuple[int, ...],
                 daemon: bool, seed: int = 7) -> tuple[int, int, int, float]:
    """``commits`` one-row updates, one batch each, a simulated second apart. ``daemon``:
    each poll is the daemon's (Follower.step: its checkpoints, snapshot-less generations and
    snapshot policy); else one generation takes every batch (replicate --once with the
    application's checkpoints off). Returns the bytes of the batches and of the packs, the
    generations made, and the time of the first commit."""
    rng = random.Random(seed)
    start = float(int(time.time()))  # the policy's 24 h counts in real time
    now = [start]
    r = Replicator(db, storage, db.name, ReplicateOptions(
        clock=lambda: now[0], compaction_levels=levels))
    follower = Follower(r, FollowOptions(interval=1.0)) if daemon else None
    lock = ReadLock(db)
    import sqlite3

    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA wal_autocheckpoint=0")
    rows = app.execute("SELECT max(id) FROM t").fetchone()[0]

    def poll() -> None:
        if follower is not None:
            assert follower.step(), follower.status.last_error
        else:
            lock.acquire()
            r.sync(lock)

    try:
        poll()
        started = time.monotonic()
        for i in range(commits):
            now[0] = start + 1 + i
            app.execute("UPDATE t SET updated = ?, v = substr(v, 2) || 'x' WHERE id = ?",
                        (i, rng.randint(1, rows)))
            poll()
            if levels and (i + 1) % levels[0] == 0:
                r.compact()  # every level-1 window, as the daemon does
            if (i + 1) % 5000 == 0:
                print(f"  {i + 1} commits shipped ({time.monotonic() - started:.0f} s)",
                      file=sys.stderr)
        now[0] = start + commits + 2 * (levels[-1] if levels else 0) + 2
        if levels:
            r.compact()  # what a daemon running on has compacted by then
    finally:
        if follower is not None:
            follower.close()
        r.close()
        lock.close()
        app.close()
    gens = [catalog.describe_generation(storage, db.name, g)
            for g in catalog.list_generations(storage, db.name)]
    return (sum(o.size for g in gens for _, o in g.batches),
            sum(o.size for g in gens for _, o in g.packs), len(gens), start + 1)


def restore_timed(server: SeaweedServer, bucket: str, name: str, latency: float, out: Path,
                  *extra: str) -> Timed:
    proxy = Proxy(server.port, latency=latency)
    try:
        env = {**server.env(), "LIBSQL_BOTTOMLESS_ENDPOINT": proxy.endpoint,
               "LIBSQL_BOTTOMLESS_BUCKET": bucket}
        out.unlink(missing_ok=True)
        before = proxy.totals().gets
        seconds, rss = run_cli(env, "--db-name", name, "restore", "-o", str(out), *extra)
        return Timed(seconds, proxy.totals().gets - before, rss)
    finally:
        proxy.close()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("commits", type=int, nargs="+")
    ap.add_argument("--db-mb", type=float, default=50)
    ap.add_argument("--latency-ms", default="0,20,50")
    ap.add_argument("--levels", default="30s,5m,1h")
    ap.add_argument("--pitr", type=int, default=5, help="random point-in-time restores")
    ap.add_argument("--without", action="store_true", help="also restore it uncompacted")
    ap.add_argument("--one-generation", action="store_true",
                    help="every batch in one generation (no daemon checkpoints, no snapshot "
                         "policy: replicate --once with the app's checkpoints off)")
    args = ap.parse_args()
    latencies = [int(x) / 1000 for x in args.latency_ms.split(",")]
    levels = parse_setting("compaction_levels", args.levels)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        base = Path(tmp) / "base.db"
        n_rows = build_database(base, args.db_mb)
        size = base.stat().st_size
        print(f"database: {size / 1e6:.0f} MB, {n_rows} rows; levels {args.levels}; "
              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for n in args.commits:
            runs = [("compacted", levels)] + ([("uncompacted", ())] if args.without else [])
            for label, lv in runs:
                bucket = f"hist-{n}-{label}"
                storage = _bucket(server, bucket)
                db = Path(tmp) / f"h{n}{label}.db"
                db.write_bytes(base.read_bytes())
                t = time.monotonic()
                batch_bytes, pack_bytes, gens, first = make_history(
                    db, storage, n, lv, not args.one_generation)
                built = time.monotonic() - t
                fresh = f"{db.name}-fresh"
                create_generation(db, storage, fresh)
                rng = random.Random(n)
                for latency in latencies:
                    out = Path(tmp) / "r.db"
                    newest = restore_timed(server, bucket, db.name, latency, out)
                    snap = restore_timed(server, bucket, fresh, latency, out)
                    pitr = [restore_timed(server, bucket, db.name, latency, out,
                                          "--utc-time", iso(first + rng.randint(0, n)))
                            for _ in range(args.pitr if label == "compacted" else 0)]
                    worst = max(pitr, key=lambda x: x.seconds) if pitr else None
                    rows.append(
                        f"| {n:,} | {label} | {latency * 1000:.0f} ms | "
                        f"{newest.seconds:.2f} s | {newest.gets} | {snap.seconds:.2f} s | "
                        f"{newest.seconds / snap.seconds:.2f}x | "
                        + (f"{statistics.median(p.seconds for p in pitr):.2f} / "
                           f"{worst.seconds:.2f} s, {max(p.gets for p in pitr)} GETs | "
                           if worst else "- | ")
                        + f"{newest.rss_mib} MiB | {batch_bytes / 1e6:.1f} / "
                        f"{pack_bytes / 1e6:.1f} MB | {gens} | {built:.0f} s |")
                    print(rows[-1], file=sys.stderr)
    print(f"\npython -m bench.bench_history {' '.join(map(str, args.commits))} --db-mb "
          f"{args.db_mb:g} --latency-ms {args.latency_ms} --levels {args.levels} --pitr "
          f"{args.pitr}{' --without' if args.without else ''}"
          f"{' --one-generation' if args.one_generation else ''}\n")
    print("| batches | bucket | latency | restore newest | GETs | fresh snapshot | ratio | "
          "point in time median / worst | peak RSS | batches / packs stored | generations | "
          "built in |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
