"""Our daemon vs Litestream 0.5 on one database of each size, same writes, side by side.

    python -m bench.bench_scale [SIZE_MB ...] [--seconds 60] [--rate 50]

Per size: one database (page size 4096, WAL; ~900-byte compressible rows, integer primary key
and an index on an integer column), copied twice. One SeaweedFS, a bucket and a counting proxy
per tool; `bottomless-cli replicate` (default options) on copy A, `litestream replicate` on
copy B. After both initial syncs, one writer process updates RATE random rows a second, each
its own transaction, the same row and value to both databases in lockstep (the app keeps
SQLite's default wal_autocheckpoint=1000). Then: bytes and requests, snapshots, commit-to-bucket
lag, daemon CPU, WAL size, and restore time with a content check, ours/Litestream.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from bench.processes import CpuAccount, Sampler, wal_size
from bench.report import (
    breakdown,
    command_line,
    describe_setup,
    initial_state_bytes,
    lags,
    load_average,
    median,
    percentile,
    print_table,
)
from bench.sidebyside import LS_BUCKET, OURS_BUCKET, REPO, SideBySide, wait_caught_up
from bench.trackers import is_our_snapshot, ltx_level
from bench.workload import build_database, read_commits, run_writer, table_checksum

MB = 1_000_000


def run_size(size: float, seconds: float, rate: float, seed: int, ours_src: Path,
             ours_args: tuple[str, ...] = ()) -> None:
    with SideBySide("bench-scale-", ours_src, ours_args) as sb:
        t = time.perf_counter()
        source = sb.tmp / "source.db"
        rows = build_database(source, size, seed)
        sb.copy_database(source)
        db_bytes = source.stat().st_size
        source.unlink()
        print(f"\n== database {db_bytes / MB:.0f} MB ({rows} rows), built and copied in "
              f"{time.perf_counter() - t:.1f} s; {rate:g} updates/s for {seconds:g} s; "
              f"{load_average()}")
        sb.start()
        print(f"initial sync: ours {sb.ours.initial_sync_s:.1f} s, Litestream "
              f"{sb.ls.initial_sync_s:.1f} s (until its first L1 compaction)")
        sb.reset()
        assert sb.ours.daemon is not None and sb.ls.daemon is not None
        account = CpuAccount((sb.ours.daemon, sb.ls.daemon), sb.server_pid)
        sampler = Sampler([sb.ours.db.with_name(sb.ours.db.name + "-wal"),
                           sb.ls.db.with_name(sb.ls.db.name + "-wal")],
                          [sb.ours.daemon.pid, sb.ls.daemon.pid])
        window_start = time.time()
        commits_file = sb.tmp / "commits.txt"
        run_writer("update", sb.ours.db, sb.ls.db, commits_file, rows, rate, seconds, seed)
        commits = read_commits(commits_file)
        writes_end = [max(c.values()) for c in commits]
        caught: list[float] = []
        for i, tool in enumerate(sb.tools):
            tool.tracker.commits = commits[i]
            caught.append(wait_caught_up(tool, max(commits[i]), timeout=1800))
        wal_end = [wal_size(tool.db) for tool in sb.tools]
        peaks = sampler.stop()
        window_cpu = account.report()
        cpu_window = [sampler.cpu_at(writes_end[i], i) - tool.cpu_at_reset
                      for i, tool in enumerate(sb.tools)]
        cpu_caught = [sampler.cpu_at(caught[i], i) - tool.cpu_at_reset
                      for i, tool in enumerate(sb.tools)]
        window = [tool.proxy.totals(until=writes_end[i]) for i, tool in enumerate(sb.tools)]
        total = [tool.proxy.totals(until=caught[i]) for i, tool in enumerate(sb.tools)]
        snapshots = [sum(is_our_snapshot(u.key) for u in sb.ours.proxy.puts()
                         if u.end <= caught[0]),
                     sum(ltx_level(u.key) == 9 for u in sb.ls.proxy.puts() if u.end <= caught[1])]
        once = [initial_state_bytes(tool, caught[i]) for i, tool in enumerate(sb.tools)]
        lag = [lags(tool) for tool in sb.tools]
        notes = [f"{tool.name}: {breakdown(tool, caught[i])}" for i, tool in enumerate(sb.tools)]
        codes = [tool.daemon.stop() for tool in sb.tools if tool.daemon is not None]
        sources = [table_checksum(tool.db) for tool in sb.tools]
        restored = []
        account = CpuAccount(server_pid=sb.server_pid)
        for tool in sb.tools:
            target = sb.tmp / f"restored-{tool.name}.db"
            timed = sb.restore(tool, target)
            restored.append((timed, table_checksum(target)))
            target.unlink()
        restore_cpu = account.report()
        fresh_target = sb.tmp / "restored-fresh.db"
        fresh = sb.fresh_snapshot_restore(fresh_target)
        fresh_ok = table_checksum(fresh_target) == sources[0]
        fresh_target.unlink()
        achieved = len(commits[0]) / (writes_end[0] - window_start)

    print(f"finished; {load_average()}")
    print(f"writer: {len(commits[0])} updates per database in {writes_end[0] - window_start:.1f}"
          f" s ({achieved:.1f}/s); daemons exited with {codes[0]} (ours), {codes[1]} "
          f"(Litestream) on SIGTERM")
    same = sources[0] == sources[1]
    checks = ["ok" if r[1] == s else "MISMATCH" for r, s in zip(restored, sources, strict=True)]
    print_table(f"side by side, {db_bytes / MB:.0f} MB database "
                f"(buckets {OURS_BUCKET} / {LS_BUCKET}):", [
        ("MB uploaded during the writes", window[0].uploaded / MB, window[1].uploaded / MB,
         ".2f"),
        ("MB uploaded until caught up", total[0].uploaded / MB, total[1].uploaded / MB, ".2f"),
        ("  the same without one-time compactions", (total[0].uploaded - once[0]) / MB,
         (total[1].uploaded - once[1]) / MB, ".2f"),
        ("PUT requests during the writes", window[0].puts, window[1].puts, "d"),
        ("PUT requests until caught up", total[0].puts, total[1].puts, "d"),
        ("GET requests until caught up", total[0].gets, total[1].gets, "d"),
        ("LIST requests until caught up", total[0].lists, total[1].lists, "d"),
        ("HEAD requests until caught up", total[0].heads, total[1].heads, "d"),
        ("DELETE requests until caught up", total[0].deletes, total[1].deletes, "d"),
        ("other requests (multipart POSTs)", total[0].others, total[1].others, "d"),
        ("snapshots taken", snapshots[0], snapshots[1], "d"),
        ("lag p50 (s)", median(lag[0][0]), median(lag[1][0]), ".2f"),
        ("lag p99 (s)", percentile(lag[0][0], 0.99), percentile(lag[1][0], 0.99), ".2f"),
        ("lag max (s)", lag[0][0][-1], lag[1][0][-1], ".2f"),
        ("commits never seen in the bucket", lag[0][1], lag[1][1], "d"),
        ("caught up after the last write (s)", caught[0] - writes_end[0],
         caught[1] - writes_end[1], ".2f"),
        ("daemon CPU s during the writes", cpu_window[0], cpu_window[1], ".2f"),
        ("daemon CPU s until caught up", cpu_caught[0], cpu_caught[1], ".2f"),
        ("WAL MB at the end", wal_end[0] / MB, wal_end[1] / MB, ".2f"),
        ("WAL MB peak (sampled every 50 ms)", peaks[0] / MB, peaks[1] / MB, ".2f"),
        ("restore wall s", restored[0][0].wall, restored[1][0].wall, ".2f"),
        ("restore CPU s", restored[0][0].cpu, restored[1][0].cpu, ".2f"),
        ("restore peak RSS MiB", restored[0][0].max_rss_mib, restored[1][0].max_rss_mib,
         ".0f"),
        ("restored rows = source rows", checks[0], checks[1], ""),
    ])
    print(f"  sources identical (lockstep writer): {'yes' if same else 'NO'}; "
          f"{sources[0][0]} rows, sha256 {sources[0][1][:16]}…")
    print(f"  ours: restore of the final state through its generations {restored[0][0].wall:.2f} s"
          f" vs a single fresh snapshot of the same database {fresh.wall:.2f} s (ratio "
          f"{restored[0][0].wall / fresh.wall:.2f}; content {'ok' if fresh_ok else 'MISMATCH'})")
    for note in notes:
        print(f"  uploads until caught up, {note}")
    print(f"  CPU from the start of the writes until both caught up: {window_cpu}")
    print(f"  CPU during the restores and content checks: {restore_cpu}")
    print("  one-time compactions: Litestream's first compaction into L1, L2 and L3 (at the next "
          "30 s, 5 min and 1 h wall-clock boundary) re-uploads the whole database; the first L1 "
          "is part of the initial sync here, L2/L3 land in the window only by the clock (their "
          "CPU cannot be separated out)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=float, default=[300.0, 1000.0],
                        metavar="SIZE_MB")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="updates per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ours-src", type=Path, default=REPO,
                        help="source tree our daemon and restore run from (default: this "
                             "checkout), e.g. a `git archive` export of the commit to measure")
    parser.add_argument("--ours-args", default="",
                        help="extra options for our daemon, e.g. \"--snapshot-interval 20s\" "
                             "to measure lag while snapshots upload")
    args = parser.parse_args()
    ours_args = tuple(shlex.split(args.ours_args))
    print(command_line("bench.bench_scale"))
    describe_setup(args.ours_src, ours_args)
    for size in args.sizes:
        run_size(size, args.seconds, args.rate, args.seed, args.ours_src, ours_args)


if __name__ == "__main__":
    main()
