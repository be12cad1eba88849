"""A write burst: our daemon vs Litestream 0.5 following two identical small databases.

    python -m bench.bench_burst [MB=200] [--txn-mb 5]

One writer process inserts MB of compressible rows in TXN_MB transactions as fast as it can,
each transaction to both databases in turn (alternating which goes first). Per tool: how long
after its last commit the bucket holds that commit, the WAL's peak size (sampled every 50 ms),
bytes and PUTs uploaded, daemon CPU; then a restore of the result (wall time, CPU, peak RSS)
with a content check.
"""

from __future__ import annotations

import argparse
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
    print_table,
)
from bench.sidebyside import REPO, SideBySide, wait_caught_up
from bench.trackers import is_our_snapshot, ltx_level
from bench.workload import build_database, read_commits, run_writer, table_checksum

MB = 1_000_000


def run(megabytes: float, txn_mb: float, seed: int, ours_src: Path) -> None:
    with SideBySide("bench-burst-", ours_src) as sb:
        source = sb.tmp / "source.db"
        rows = build_database(source, 1, seed)
        sb.copy_database(source)
        db_bytes = source.stat().st_size
        source.unlink()
        print(f"\n== databases of {db_bytes / MB:.1f} MB ({rows} rows); the writer adds "
              f"{megabytes:g} MB in {txn_mb:g} MB transactions to each; {load_average()}")
        sb.start()
        print(f"initial sync: ours {sb.ours.initial_sync_s:.1f} s, Litestream "
              f"{sb.ls.initial_sync_s:.1f} s (until its first L1 compaction)")
        sb.reset()
        assert sb.ours.daemon is not None and sb.ls.daemon is not None
        account = CpuAccount((sb.ours.daemon, sb.ls.daemon), sb.server_pid)
        sampler = Sampler([sb.ours.db.with_name(sb.ours.db.name + "-wal"),
                           sb.ls.db.with_name(sb.ls.db.name + "-wal")],
                          [sb.ours.daemon.pid, sb.ls.daemon.pid])
        start = time.time()
        commits_file = sb.tmp / "commits.txt"
        run_writer("burst", sb.ours.db, sb.ls.db, commits_file, megabytes, txn_mb, seed)
        commits = read_commits(commits_file)
        writes_end = [max(c.values()) for c in commits]
        caught: list[float] = []
        for i, tool in enumerate(sb.tools):
            tool.tracker.commits = commits[i]
            caught.append(wait_caught_up(tool, max(commits[i]), timeout=3600))
        wal_end = [wal_size(tool.db) for tool in sb.tools]
        peaks = sampler.stop()
        window_cpu = account.report()
        cpu = [sampler.cpu_at(caught[i], i) - tool.cpu_at_reset
               for i, tool in enumerate(sb.tools)]
        total = [tool.proxy.totals(until=caught[i]) for i, tool in enumerate(sb.tools)]
        snapshots = [sum(is_our_snapshot(u.key) for u in sb.ours.proxy.puts()
                         if u.end <= caught[0]),
                     sum(ltx_level(u.key) == 9 for u in sb.ls.proxy.puts() if u.end <= caught[1])]
        once = [initial_state_bytes(tool, caught[i]) for i, tool in enumerate(sb.tools)]
        lag = [lags(tool) for tool in sb.tools]
        notes = [f"{tool.name}: {breakdown(tool, caught[i])}" for i, tool in enumerate(sb.tools)]
        codes = [tool.daemon.stop() for tool in sb.tools if tool.daemon is not None]
        sizes = [tool.db.stat().st_size for tool in sb.tools]
        sources = [table_checksum(tool.db) for tool in sb.tools]
        restored = []
        account = CpuAccount(server_pid=sb.server_pid)
        for tool in sb.tools:
            target = sb.tmp / f"restored-{tool.name}.db"
            timed = sb.restore(tool, target)
            restored.append((timed, table_checksum(target)))
            target.unlink()
        restore_cpu = account.report()

    print(f"finished; {load_average()}")
    print(f"writer: {len(commits[0])} transactions per database, both databases written in "
          f"{max(writes_end) - start:.1f} s; final sizes {sizes[0] / MB:.0f} MB / "
          f"{sizes[1] / MB:.0f} MB; daemons exited with {codes[0]} (ours), {codes[1]} "
          "(Litestream) on SIGTERM")
    checks = ["ok" if r[1] == s else "MISMATCH" for r, s in zip(restored, sources, strict=True)]
    print_table(f"burst of {megabytes:g} MB in {txn_mb:g} MB transactions:", [
        ("caught up after the last commit (s)", caught[0] - writes_end[0],
         caught[1] - writes_end[1], ".2f"),
        ("commit-to-bucket lag, median txn (s)", median(lag[0][0]), median(lag[1][0]), ".2f"),
        ("WAL MB peak (sampled every 50 ms)", peaks[0] / MB, peaks[1] / MB, ".1f"),
        ("WAL MB when caught up", wal_end[0] / MB, wal_end[1] / MB, ".1f"),
        ("MB uploaded until caught up", total[0].uploaded / MB, total[1].uploaded / MB, ".1f"),
        ("  the same without one-time compactions", (total[0].uploaded - once[0]) / MB,
         (total[1].uploaded - once[1]) / MB, ".1f"),
        ("PUT requests until caught up", total[0].puts, total[1].puts, "d"),
        ("snapshots taken", snapshots[0], snapshots[1], "d"),
        ("daemon CPU s until caught up", cpu[0], cpu[1], ".2f"),
        ("restore wall s", restored[0][0].wall, restored[1][0].wall, ".2f"),
        ("restore CPU s (user+sys)", restored[0][0].cpu, restored[1][0].cpu, ".2f"),
        ("restore peak RSS MiB", restored[0][0].max_rss_mib, restored[1][0].max_rss_mib,
         ".0f"),
        ("restored rows = source rows", checks[0], checks[1], ""),
    ])
    print(f"  sources identical (lockstep writer): {'yes' if sources[0] == sources[1] else 'NO'}"
          f"; {sources[0][0]} rows")
    for note in notes:
        print(f"  uploads until caught up, {note}")
    print(f"  CPU from the start of the writes until both caught up: {window_cpu}")
    print(f"  CPU during the restores and content checks: {restore_cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("megabytes", nargs="?", type=float, default=200.0, metavar="MB")
    parser.add_argument("--txn-mb", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ours-src", type=Path, default=REPO,
                        help="source tree our daemon and restore run from (default: this "
                             "checkout), e.g. a `git archive` export of the commit to measure")
    args = parser.parse_args()
    print(command_line("bench.bench_burst"))
    describe_setup(args.ours_src)
    run(args.megabytes, args.txn_mb, args.seed, args.ours_src)


if __name__ == "__main__":
    main()
