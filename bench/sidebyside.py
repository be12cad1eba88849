"""The side-by-side benchmarks' setup: our daemon vs Litestream 0.5 (bench_scale, bench_burst).

One SeaweedFS, two buckets, one counting proxy (bottomless_dev.proxy) in front of it per tool,
both daemons, everything undone on exit (``SideBySide``). The pieces: bench/workload.py (the
databases and the writer process), bench/processes.py (daemons, timed runs, CPU accounting),
bench/trackers.py (when each commit reached the bucket, from the uploads the proxies captured),
bench/report.py (tables, percentiles, the setup description).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Daemon, Timed, binary, go_env, run_timed, start_daemon, wait_until
from bench.trackers import LitestreamTracker, OursTracker, Tracker, ltx_level, ltx_txids
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer

OURS_BUCKET = "bench-ours"
FRESH_BUCKET = "bench-fresh"
LS_BUCKET = "bench-litestream"
DB_NAME = "app.db"
REPO = Path(__file__).resolve().parents[1]  # the checkout our daemon runs from by default


@dataclass
class Tool:
    name: str
    db: Path
    proxy: Proxy
    tracker: Tracker
    daemon: Daemon | None = None
    cpu_at_reset: float = 0.0
    initial_sync_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


def create_bucket(server: SeaweedServer, name: str) -> None:
    import boto3
    from botocore.config import Config

    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                 aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=name)


def litestream_yml(db: Path, endpoint: str) -> str:
    """Litestream 0.5 config: one S3 replica; every other setting is Litestream's default.
    Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    return (f"dbs:\n"
            f"  - path: {db}\n"
            f"    replica:\n"
            f"      type: s3\n"
            f"      bucket: {LS_BUCKET}\n"
            f"      path: {DB_NAME}\n"
            f"      endpoint: {endpoint}\n"
            f"      region: us-east-1\n"
            f"      force-path-style: true\n")


class SideBySide(contextlib.ExitStack):
    """Temp dir, SeaweedFS, buckets, proxies, both daemons; everything undone on exit.
    Our daemon and restore run from ``ours_src`` (a source tree; default this checkout)."""

    def __init__(self, prefix: str, ours_src: Path = REPO,
                 ours_args: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.prefix = prefix
        self.ours_src = ours_src.resolve()
        self.ours_args = ours_args  # extra options for our daemon

    def __enter__(self) -> SideBySide:
        super().__enter__()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        self.tmp = Path(self.enter_context(tempfile.TemporaryDirectory(prefix=self.prefix)))
        self.server = self.enter_context(SeaweedServer())
        for bucket in (OURS_BUCKET, LS_BUCKET):
            create_bucket(self.server, bucket)
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith("LIBSQL_BOTTOMLESS_")},
                    "AWS_ACCESS_KEY_ID": self.server.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        # python -m puts the cwd first on sys.path: ours runs from ours_src, whatever is
        # installed; PYTHONPATH too, for anything it starts itself
        self.ours_env = {**self.env, "PYTHONPATH": str(self.ours_src)}
        for d in ("ours", "litestream"):
            (self.tmp / d).mkdir()
        ours_proxy = self.enter_context(Proxy(self.server.port, spool=self.tmp / "spool-ours"))
        ls_proxy = self.enter_context(Proxy(self.server.port, spool=self.tmp / "spool-ls"))
        self.ours = Tool("ours", self.tmp / "ours" / DB_NAME, ours_proxy,
                         OursTracker(ours_proxy))
        self.ls = Tool("litestream", self.tmp / "litestream" / DB_NAME, ls_proxy,
                       LitestreamTracker(ls_proxy))
        self.callback(self._stop_daemons)

    @property
    def server_pid(self) -> int | None:
        proc = getattr(self.server, "_proc", None)  # SeaweedServer keeps its process private
        return proc.pid if proc is not None else None

    @property
    def tools(self) -> tuple[Tool, Tool]:
        return self.ours, self.ls

    def _stop_daemons(self) -> None:
        for tool in self.tools:
            if tool.daemon is not None:
                tool.daemon.stop()

    def copy_database(self, source: Path) -> None:
        for tool in self.tools:
            shutil.copyfile(source, tool.db)

    @staticmethod
    def example_config() -> str:
        return litestream_yml(Path("TMPDIR/litestream") / DB_NAME, "http://127.0.0.1:PROXYPORT")

    @property
    def litestream_config(self) -> str:
        return litestream_yml(self.ls.db, self.ls.proxy.endpoint)

    def start(self, timeout: float = 900) -> None:
        """Start both daemons and wait for both initial syncs (ours: the status file shows a
        finished sync; Litestream: TXID 1 is in L0, the L9 snapshot and the first L1
        compaction, which runs on the next 30 s boundary)."""
        status = self.tmp / "ours-status.json"
        started = time.time()
        self.ours.daemon = start_daemon(
            "ours", [sys.executable, "-m", "bottomless_cli.main", "-e", self.ours.proxy.endpoint,
                     "-b", OURS_BUCKET, "-d", str(self.ours.db), "replicate",
                     "--status-file", str(status), *self.ours_args],
            self.ours_env, self.tmp / "ours.log", cwd=self.ours_src)
        config = self.tmp / "litestream.yml"
        config.write_text(self.litestream_config)
        self.ls.daemon = start_daemon(
            "litestream", [binary("litestream"), "replicate", "-config", str(config)],
            {**go_env(), **{k: v for k, v in self.env.items() if k != "AWS_CA_BUNDLE"}},
            self.tmp / "litestream.log")
        daemons = (self.ours.daemon, self.ls.daemon)

        def ours_ready() -> bool:
            try:
                db = json.loads(status.read_text())["databases"][0]
            except (OSError, ValueError, KeyError, IndexError):
                return False
            return db["last_success"] is not None and db["state"] == "running"

        def ls_ready() -> bool:
            have = {(ltx_level(u.key), ltx_txids(u.key)[0]) for u in self.ls.proxy.puts()
                    if ltx_level(u.key) is not None}
            return {(0, 1), (1, 1), (9, 1)} <= have

        self.ours.initial_sync_s = wait_until(ours_ready, timeout, "our initial sync",
                                              daemons) - started
        self.ls.initial_sync_s = wait_until(ls_ready, timeout, "Litestream's initial sync",
                                            daemons) - started

    def reset(self) -> None:
        """Start of the measured window: forget the counts, note the daemons' CPU."""
        for tool in self.tools:
            tool.proxy.reset()
            tool.tracker = type(tool.tracker)(tool.proxy)
            assert tool.daemon is not None
            tool.cpu_at_reset = tool.daemon.cpu()

    def fresh_snapshot_restore(self, target: Path) -> Timed:
        """Back up our final database once more, as a single fresh snapshot, into a bucket of
        its own, and time restoring that: the yardstick for restoring through chains."""
        create_bucket(self.server, FRESH_BUCKET)
        base = [sys.executable, "-m", "bottomless_cli.main", "-e", self.server.endpoint,
                "-b", FRESH_BUCKET, "--db-name", "fresh", "-d", str(self.ours.db)]
        run_timed([*base, "replicate", "--once"], self.ours_env, cwd=self.ours_src)
        return run_timed([*base, "restore", "-o", str(target)], self.ours_env,
                         cwd=self.ours_src)

    def restore(self, tool: Tool, target: Path) -> Timed:
        """Restore tool's backup to target, straight from SeaweedFS (not through the proxy)."""
        if tool is self.ours:
            cmd = [sys.executable, "-m", "bottomless_cli.main", "-e", self.server.endpoint,
                   "-b", OURS_BUCKET, "-d", str(tool.db), "restore", "-o", str(target)]
            return run_timed(cmd, self.ours_env, cwd=self.ours_src)
        config = self.tmp / "litestream-restore.yml"
        config.write_text(litestream_yml(self.ls.db, self.server.endpoint))
        cmd = [binary("litestream"), "restore", "-config", str(config), "-o", str(target),
               str(self.ls.db)]
        return run_timed(cmd, {**go_env(), **{k: v for k, v in self.env.items()
                                               if k != "AWS_CA_BUNDLE"}})


def wait_caught_up(tool: Tool, last_marker: int, timeout: float) -> float:
    """Decode new uploads until the bucket holds ``last_marker``; return that moment."""
    assert tool.daemon is not None

    def check() -> bool:
        tool.tracker.update()
        return last_marker in tool.tracker.found

    wait_until(check, timeout, f"{tool.name} to catch up", (tool.daemon,))
    return tool.tracker.found[last_marker]
