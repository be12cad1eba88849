"""What the side-by-side benchmarks print: tables, percentiles, the setup, upload breakdowns."""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

from bench.processes import binary, version_of
from bench.sidebyside import SideBySide, Tool
from bench.trackers import is_our_snapshot, ltx_level, ltx_txids

LAG_METHOD = (
    "lag = (end of the S3 request that made an object holding the commit visible, as seen by "
    "the counting proxy) - (time COMMIT returned in the writer); every update writes a unique "
    "marker into its row, and every uploaded object is decoded to find the markers: ours = "
    "zstd WAL frames, a marker counts when the batch holding its transaction's commit frame is "
    "uploaded (snapshots scanned too); Litestream = LTX files, LZ4 pages, whole transactions "
    "per file (all levels scanned)")


def lags(tool: Tool) -> tuple[list[float], int]:
    """Sorted lags of every commit, and how many commits were never seen in the bucket."""
    found = tool.tracker.found
    values = sorted(found[m] - t for m, t in tool.tracker.commits.items() if m in found)
    return values, sum(m not in found for m in tool.tracker.commits)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def breakdown(tool: Tool, until: float) -> str:
    """What the tool uploaded up to ``until``, by kind of object."""
    groups: dict[str, list[int]] = {}
    for up in tool.proxy.puts():
        if up.end > until:
            continue
        if tool.name == "ours":
            kind = ("snapshot" if is_our_snapshot(up.key) else
                    "metadata" if up.key.rsplit("/", 1)[-1].startswith(".") else "WAL batch")
        else:
            level = ltx_level(up.key)
            kind = "other" if level is None else f"L{level}"
            if level and ltx_txids(up.key)[0] == 1:
                kind += " (from TXID 1: the whole database)"
        groups.setdefault(kind, []).append(up.size)
    text = "; ".join(f"{k}: {len(v)} objects, {sum(v) / 1e6:.2f} MB"
                     for k, v in sorted(groups.items()))
    for key, sent in unfinished_parts(tool, until).items():
        text += f"; still uploading {key}: {sent / 1e6:.2f} MB of parts sent"
    return text


def _one_time(key: str) -> bool:
    level = ltx_level(key)
    return level is not None and 0 < level < 9 and ltx_txids(key)[0] == 1


def initial_state_bytes(tool: Tool, until: float) -> int:
    """Request bytes (parts of unfinished uploads included) sent up to ``until`` for Litestream
    compactions (levels 1-8) starting at TXID 1: the first compaction into each level
    re-uploads the whole database once."""
    requests, _ = tool.proxy.snapshot()
    return sum(r.sent for r in requests if r.end <= until and _one_time(r.key))


def unfinished_parts(tool: Tool, until: float) -> dict[str, int]:
    """Per key, bytes of multipart parts sent by ``until`` whose upload was not complete then."""
    requests, _ = tool.proxy.snapshot()
    done = {parse_qs(r.query)["uploadId"][0] for r in requests
            if r.kind == "COMPLETE_MPU" and r.end <= until}
    out: dict[str, int] = {}
    for r in requests:
        if r.kind == "PART" and r.end <= until and parse_qs(r.query)["uploadId"][0] not in done:
            out[r.key] = out.get(r.key, 0) + r.sent
    return out


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- printing ---------------------------------------------------------------------------------

def print_table(title: str, rows: list[tuple[str, float | str, float | str, str]]) -> None:
    """rows: (label, ours, litestream, format); the ratio column is ours/Litestream."""
    print(title)
    width = max(len(r[0]) for r in rows)
    print(f"  {'':{width}}  {'ours':>14}  {'Litestream':>14}  {'ours/LS':>9}")
    for label, a, b, fmt in rows:
        sa = a if isinstance(a, str) else format(a, fmt)
        sb = b if isinstance(b, str) else format(b, fmt)
        ratio = ""
        if not isinstance(a, str) and not isinstance(b, str):
            ratio = f"{a / b:9.2f}" if b else ("      inf" if a else "        -")
        print(f"  {label:{width}}  {sa:>14}  {sb:>14}  {ratio:>9}")


def describe_source(src: Path) -> str:
    """Which code of ours runs: a git checkout's commit (and whether it is modified)."""
    done = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    if done.returncode or not (src / ".git").exists():
        return f"{src} (an exported source tree)"
    return f"{src} (git {done.stdout.strip()})"


def describe_setup(ours_src: Path, ours_args: tuple[str, ...] = ()) -> None:
    """Machine and versions, then how lag is measured and how both tools are configured."""
    print(f"machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}, SQLite "
          f"{sqlite3.sqlite_version}; SeaweedFS {version_of([binary('weed'), 'version'])}; "
          f"Litestream {version_of([binary('litestream'), 'version'])}")
    print(f"how lag is measured: {LAG_METHOD}")
    print("Litestream config (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; "
          "everything else default):")
    print("  " + SideBySide.example_config().replace("\n", "\n  ").rstrip())
    print("ours: bottomless-cli -e PROXY -b bench-ours -d TMPDIR/ours/app.db replicate "
          f"--status-file FILE {' '.join(ours_args)}".rstrip() + " (defaults: --interval 1, "
          f"--checkpoint-pages 1000, zstd), run from {describe_source(ours_src)}")
    print("both daemons talk to SeaweedFS through their own counting proxy "
          "(bottomless_dev/proxy.py); restores go to SeaweedFS directly")


def command_line(module: str) -> str:
    return "$ python -m " + " ".join([module, *sys.argv[1:]])
