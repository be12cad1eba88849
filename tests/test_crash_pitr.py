"""Randomized crash test of the daemon and point-in-time restore.

A writer process (tests/random_writer.py) makes random transactions (some of 1-5 MB) and
checkpoints of every kind; the daemon follows it with small --checkpoint-pages and
--max-batch-frames, and is SIGKILLed at random moments (some right after it logs a checkpoint,
a new generation, a background snapshot or a ship, some while it ships a big transaction),
restarted, and SIGTERMed once. At the end everything is shipped and the bucket is checked:

- restore of the newest state equals the writer's final state, row for row;
- restore --utc-time T, for random T over the run and for T at and around commit times,
  generation creation times, whole seconds (batch stamps), kills and restarts, gives exactly
  the state after some commit n (meta.n says which, the writer's model gives every row) with
  commit_time(n) <= T, passes integrity_check, and misses no commit older than
  T - GRANULARITY (more around the windows where the daemon was down: commits made then
  become visible only once it is back);
- the newest state and every whole-second T (each random T is also restored at its whole
  second) restored with libSQL's own rules (tests/libsql_restore.py, from the raw bucket) give
  the same rows as ours;
- a T before the first generation is refused ("no generation");
- verify and ls -v --json succeed, and the only incomplete generations are ones a kill
  interrupted.

Fast by default (about 50 s). BOTTOMLESS_LONG=1: 300 s of writes, 24 kills, 3 SIGTERMs, ~270
restores (about 10 minutes). BOTTOMLESS_CRASH_SEED=N replays a scenario's choices (the seed is
in every failure message; the moments of the kills still depend on timing). Each run leaves
summary.json, ls.json, the writer's and the daemons' logs in its tmp_path.

test_a_ship_cut_short_leaves_every_time_restorable is what the randomized test found, made
deterministic in-process.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import random
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from bottomless_cli.main import cli
from bottomless_core import catalog
from bottomless_core.database import ReadLock
from bottomless_core.errors import StorageError
from bottomless_core.replicator import ReplicateOptions, Replicator
from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.libsql_check import RawS3, check_restored
from tests.libsql_restore import generation_to_timestamp, latest_generation_before
from tests.random_writer import Model, init_db, plan, value

LONG = os.environ.get("BOTTOMLESS_LONG") == "1"
WRITER = Path(__file__).with_name("random_writer.py")

INTERVAL = 0.1  # the daemon's --interval
# A commit is in a batch captured at the next poll, stamped with the next whole second
# (docs/format.md): a restore at T must hold every commit older than INTERVAL + 1 s. On top of
# that a poll can be held up by the work of the one before: a snapshot generation, an upload,
# our checkpoint waiting up to 1 s (CHECKPOINT_BUSY_MS) for the writer's lock.
PROCESSING_SLACK = 1.5
GRANULARITY = INTERVAL + 1.0 + PROCESSING_SLACK
RESTORE_WORKERS = 2
# When a kill comes: at a random moment, or right after the daemon logs one of these events,
# or while it ships a big transaction.
MOMENTS = ("random", "random", "checkpoint", "generation", "snapshot", "shipped", "big", "big")
DEADLINE = 90.0  # for anything we wait on (daemon start, catch-up, exit, one restore)


@dataclass(frozen=True)
class Plan:
    seed: int
    page_size: int
    checkpoint_pages: int
    max_batch_frames: int
    snapshot_max_chain: int
    snapshot_wal_fraction: float
    compaction_levels: str  # the daemon compacts while it is killed, too (issue 17)
    writer_seconds: float
    kills: int  # SIGKILLs while the writer runs
    sigterms: int  # clean stops (and restarts) while the writer runs
    random_restores: int
    edge_commits: int  # commits whose times are used as edge cases

    @classmethod
    def make(cls, seed: int) -> Plan:
        rng = random.Random(f"{seed}:plan")
        page_size = rng.choice((1024, 4096, 4096, 8192))
        # Small batches, so that one ship uploads several side by side (UPLOAD_THREADS); not
        # below 128 KiB, or the daemon cannot ship as fast as the writer writes (one PUT per
        # 32 KiB made it fall seconds behind).
        batch_bytes = rng.choice((128 << 10, 256 << 10, 1 << 20, 0))
        return cls(
            seed=seed,
            page_size=page_size,
            checkpoint_pages=rng.randint(50, 200),
            max_batch_frames=batch_bytes // page_size or 10_000,
            snapshot_max_chain=rng.choice((2, 4, 8, 32)),
            snapshot_wal_fraction=rng.choice((0.2, 0.5, 2.0)),
            compaction_levels=rng.choice(("1s,2s,4s", "2s,6s", "3s,6s,12s", "30s,5m,1h",
                                          "off")),
            writer_seconds=300.0 if LONG else 22.0,
            kills=24 if LONG else 3,
            sigterms=3 if LONG else 1,
            random_restores=100 if LONG else 10,
            edge_commits=8 if LONG else 2,
        )


# --- processes ------------------------------------------------------------------------------

class Daemon:
    """``bottomless-cli replicate`` as a subprocess, its log and status file."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, index: int) -> None:
        self.status_file = workdir / f"status-{index}.json"
        self.log = workdir / f"daemon-{index}.log"
        self._log_f = open(self.log, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.started = time.time()
        self.proc = subprocess.Popen(
            [*argv, "--status-file", str(self.status_file)], env=env, stdout=self._log_f,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._offset = 0

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_file.read_text())["databases"][0]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
            return None

    def caught_up_after(self, t: float) -> bool:
        s = self.status()
        return (s is not None and s["behind_since"] is None
                and (s["last_success"] or 0) > t)

    def new_log_lines(self) -> list[str]:
        """Lines of the log written since the last call."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode(errors="replace").splitlines()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_f.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        finally:
            self._log_f.close()


# Runs bottomless-cli commands one after the other in one process (the same click entry point,
# exit codes and output as a subprocess), so that a restore does not pay for Python's start.
CLI_WORKER = r"""
import contextlib, io, json, sys, time
from bottomless_cli.main import cli
for line in sys.stdin:
    out, err, code, started = io.StringIO(), io.StringIO(), 0, time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(args=json.loads(line), prog_name="bottomless-cli")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    print("@@" + json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                             "seconds": time.monotonic() - started}), flush=True)
"""


class CliWorker:
    def __init__(self, cli: list[str], env: dict[str, str]) -> None:
        self.base = cli[3:]  # after "python -m bottomless_cli.main"
        self.proc = subprocess.Popen([sys.executable, "-c", CLI_WORKER], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def __call__(self, *args: str) -> dict:
        """Run one command; a command that takes longer than DEADLINE kills the worker."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        watchdog = threading.Timer(DEADLINE, self.proc.kill)
        watchdog.start()
        try:
            self.proc.stdin.write(json.dumps([*self.base, *args]) + "\n")
            self.proc.stdin.flush()
            for line in self.proc.stdout:
                if line.startswith("@@"):
                    return json.loads(line[2:])
        finally:
            watchdog.cancel()
        raise AssertionError(f"bottomless-cli {' '.join(args)}: no answer within {DEADLINE}s "
                             f"(worker exit {self.proc.wait()})")

    def close(self) -> None:
        self.proc.kill()  # SIGTERM would only interrupt the command being run
        self.proc.wait()


def poll(what: str, check: Callable[[], bool], deadline: float = DEADLINE,
         step: float = 0.02) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen | Daemon]]:
    started: list[subprocess.Popen | Daemon] = []
    yield started
    for p in started:
        if isinstance(p, Daemon):
            p.kill()
        elif p.poll() is None:
            p.kill()
            p.wait()


# --- what the writer committed --------------------------------------------------------------

@dataclass
class Commits:
    """Commit n happened between before[n] and after[n] (unix seconds)."""

    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)

    @classmethod
    def read(cls, log: Path, commit0: tuple[float, float]) -> Commits:
        c = cls([commit0[0]], [commit0[1]])
        for line in log.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "c":
                n, tb, ta = int(parts[1]), float(parts[2]), float(parts[3])
                assert n == len(c.before), f"commit log out of order at {line!r}"
                c.before.append(tb)
                c.after.append(ta)
        return c

    @property
    def last(self) -> int:
        return len(self.after) - 1

    def last_before(self, t: float) -> int:
        """The newest commit that had returned by ``t`` (-1 if none)."""
        return bisect.bisect_right(self.after, t) - 1


def expected_states(seed: int, wanted: list[int]) -> Iterator[tuple[int, Model]]:
    """The model after each commit of ``wanted`` (ascending), replaying from commit 0."""
    model = Model()
    for n in wanted:
        while model.n < n:
            k = model.n + 1
            model.apply(k, plan(model, seed, k))
        yield n, model


_DIGESTS: dict[tuple[int, int, int], bytes] = {}


def _expected_digest(row_id: int, ver: int, length: int) -> bytes:
    key = (row_id, ver, length)
    d = _DIGESTS.get(key)
    if d is None:
        d = _DIGESTS[key] = hashlib.blake2b(value(row_id, ver, length)).digest()
    return d


SCHEMA = [("meta", "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL)"),
          ("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, ver INTEGER NOT NULL, v BLOB NOT NULL)")]


def read_n(path: Path) -> int:
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute("SELECT n FROM meta WHERE id = 0").fetchone()[0]
    finally:
        conn.close()


def compare(path: Path, model: Model, immutable: bool = True) -> list[str]:
    """Differences between the database at ``path`` and the model (every row)."""
    query = "mode=ro&immutable=1" if immutable else "mode=ro"
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?{query}", uri=True)
    problems: list[str] = []
    try:
        check = conn.execute("PRAGMA integrity_check").fetchall()
        if check != [("ok",)]:
            problems.append(f"integrity_check: {check[:5]}")
        schema = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        if schema != SCHEMA:
            problems.append(f"schema {schema}")
            return problems
        meta = conn.execute("SELECT id, n FROM meta").fetchall()
        if meta != [(0, model.n)]:
            problems.append(f"meta {meta} != {[(0, model.n)]}")
        ids: list[int] = []
        bad = 0
        for row_id, ver, v in conn.execute("SELECT id, ver, v FROM t ORDER BY id"):
            ids.append(row_id)
            want = model.rows.get(row_id)
            if (want is None or want != (ver, len(v))
                    or hashlib.blake2b(v).digest() != _expected_digest(row_id, ver, len(v))):
                bad += 1
                if bad <= 3:
                    problems.append(f"row {row_id}: ver={ver} len={len(v)}, expected "
                                    f"{'absent' if want is None else want}")
        if ids != model.ids:
            missing = sorted(set(model.ids) - set(ids))
            extra = sorted(set(ids) - set(model.ids))
            problems.append(f"row ids differ: {len(missing)} missing {missing[:5]}, "
                            f"{len(extra)} extra {extra[:5]}")
        if bad > 3:
            problems.append(f"... {bad} rows differ in all")
    finally:
        conn.close()
    return problems


# --- the run --------------------------------------------------------------------------------

@dataclass
class Outage:
    """The daemon was not following from ``start`` (kill or stop signal) until ``ready``
    (the restarted daemon had caught up)."""

    kind: str  # "kill" | "term" | "start"
    start: float
    restarted: float
    ready: float
    trigger: str = ""


@dataclass
class Restore:
    t_us: int | None  # None: the newest state
    why: str
    out: Path
    code: int = -1
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def t(self) -> float | None:
        return None if self.t_us is None else self.t_us / 1e6

    @property
    def iso(self) -> str:
        assert self.t_us is not None
        secs, us = divmod(self.t_us, 1_000_000)
        return datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{us:06d}Z"


def _fmt(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S.%f")


class Run:
    def __init__(self, s3: SeaweedServer, bucket: str, tmp: Path, plan_: Plan,
                 procs: list[subprocess.Popen | Daemon]) -> None:
        self.plan = plan_
        self.tmp = tmp
        self.db = tmp / "app.db"
        self.db_name = f"crash-{plan_.seed}-{secrets.token_hex(3)}"
        self.env = {**os.environ, **s3.env(), "PYTHONUNBUFFERED": "1"}
        self.cli = [sys.executable, "-m", "bottomless_cli.main", "-e", s3.endpoint, "-b",
                    bucket, "--db-name", self.db_name]
        self.procs = procs
        self.rng = random.Random(f"{plan_.seed}:chaos")
        self.daemons: list[Daemon] = []
        self.outages: list[Outage] = []
        self.log = tmp / "writer.log"
        self._writer_offset = 0

    def daemon_argv(self) -> list[str]:
        p = self.plan
        return [*self.cli, "-d", str(self.db), "replicate", "--interval", str(INTERVAL),
                "--checkpoint-pages", str(p.checkpoint_pages),
                "--max-batch-frames", str(p.max_batch_frames),
                "--snapshot-max-chain", str(p.snapshot_max_chain),
                "--snapshot-wal-fraction", str(p.snapshot_wal_fraction),
                "--compaction-levels", p.compaction_levels]

    def start_daemon(self) -> Daemon:
        d = Daemon(self.daemon_argv(), self.env, self.tmp, len(self.daemons))
        self.daemons.append(d)
        self.procs.append(d)
        return d

    def wait_ready(self, d: Daemon) -> float:
        def ready() -> bool:
            if d.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {d.proc.returncode}:\n{d.text()}")
            return d.caught_up_after(d.started)
        poll("the daemon to start and catch up", ready)
        return time.time()

    def cli_run(self, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess:
        return subprocess.run([*self.cli, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    # chaos while the writer runs

    def chaos(self, writer: subprocess.Popen) -> None:
        p = self.plan
        actions = ["kill"] * p.kills + ["term"] * p.sigterms
        self.rng.shuffle(actions)
        moments = [self.rng.choice(MOMENTS) for _ in actions]
        if not LONG:  # few kills: make two of them the kind that finds the most
            kill_at = [i for i, a in enumerate(actions) if a == "kill"]
            for i in kill_at[:2]:
                moments[i] = "big"
        # Spread the actions over the writer's run, leaving its last seconds undisturbed.
        budget = p.writer_seconds - 6.0
        started = time.monotonic()
        for i, action in enumerate(actions):
            if writer.poll() is not None:
                break
            remaining = budget - (time.monotonic() - started)
            slot = remaining / (len(actions) - i)
            if slot < 1.0:
                break
            d = self.daemons[-1]
            trigger = self._await_moment(d, writer, max(0.2, slot - 3.0), moments[i])
            if writer.poll() is not None:
                break
            start = time.time()
            if action == "kill":
                d.kill()
            else:
                code = d.stop()
                assert code == 0, f"SIGTERM: daemon exited {code}:\n{d.text()}"
            # How long the daemon stays down is a random choice, not synchronisation.
            time.sleep(self.rng.choice((0.0, 0.05, 0.3, 1.0, 2.0)))
            restarted = time.time()
            ready = self.wait_ready(self.start_daemon())
            self.outages.append(Outage(action, start, restarted, ready, trigger))

    def _await_moment(self, d: Daemon, writer: subprocess.Popen, within: float,
                      kind: str) -> str:
        """Wait for a random moment, or for the daemon to log an interesting event (then kill
        at once or a few milliseconds later), or for a big transaction to be committed (then
        kill about when the daemon ships it, in several batches side by side). Returns what
        triggered."""
        if kind == "big":
            self._writer_lines()
            end = time.monotonic() + within
            while time.monotonic() < end and writer.poll() is None:
                if any(line.startswith("c ") and int(line.split()[4]) >= 1 << 20
                       for line in self._writer_lines()):
                    delay = self.rng.choice((0.0, 0.05, 0.08, 0.1, 0.1, 0.12, 0.15, 0.25))
                    time.sleep(delay)
                    return f"big+{delay * 1000:.0f}ms"
                time.sleep(0.002)
            return "big (not seen: random)"
        pattern = {"checkpoint": "event=checkpoint ", "generation": "event=generation ",
                   "snapshot": "event=snapshot_started", "shipped": "event=shipped "}.get(kind)
        if pattern is None:
            time.sleep(self.rng.uniform(0.2, within))
            return "random"
        d.new_log_lines()  # only what happens from now on
        end = time.monotonic() + within
        while time.monotonic() < end and writer.poll() is None:
            if any(pattern in line for line in d.new_log_lines()):
                delay = self.rng.choice((0.0, 0.0, 0.002, 0.01, 0.03))
                if delay:
                    time.sleep(delay)
                return f"{kind}+{delay * 1000:.0f}ms"
            time.sleep(0.002)
        return f"{kind} (not seen: random)"

    def _writer_lines(self) -> list[str]:
        """Lines of the writer's log written since the last call."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._writer_offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._writer_offset += end
        return data[:end].decode().splitlines()

    # the rules

    def bound(self, t: float) -> float:
        """Every commit that returned by this time must be in a restore at ``t``."""
        b = t - GRANULARITY
        for o in self.outages:
            if o.start - GRANULARITY < t < o.ready + GRANULARITY:
                b = min(b, o.start - GRANULARITY)
        return b


def test_crash_and_point_in_time_restores(s3: SeaweedServer, bucket: str, storage: S3Store,
                                          tmp_path: Path,
                                          procs: list[subprocess.Popen | Daemon]) -> None:
    seed = int(os.environ.get("BOTTOMLESS_CRASH_SEED") or secrets.randbelow(10**6))
    p = Plan.make(seed)
    run = Run(s3, bucket, tmp_path, p, procs)
    began = time.monotonic()
    context = f"seed={seed} (BOTTOMLESS_CRASH_SEED={seed} to replay) {p}, dir {tmp_path}"

    # Commit 0 and the first daemon.
    commit0 = init_db(run.db, p.page_size)
    first = time.time()
    d = run.start_daemon()
    run.outages.append(Outage("start", first, first, run.wait_ready(d)))

    writer = subprocess.Popen([sys.executable, str(WRITER), str(run.db), str(run.log),
                               str(p.writer_seconds), str(seed)], env=run.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(writer)
    run.chaos(writer)
    _, err = writer.communicate(timeout=p.writer_seconds + DEADLINE)
    assert writer.returncode == 0, f"writer failed: {err.decode(errors='replace')}\n{context}"
    writer_done = time.time()
    d = run.daemons[-1]
    poll("the daemon to ship the writer's last commit", lambda: d.caught_up_after(writer_done))
    stopped = time.time()
    assert d.stop() == 0, f"final SIGTERM: {d.text()}\n{context}"
    commits = Commits.read(run.log, commit0)
    final = commits.last
    phases = {"write": time.monotonic() - began}

    # What is in the bucket.
    ls = run.cli_run("ls", "-v", "--json")
    assert ls.returncode == 0, f"ls -v --json: {ls.stderr}\n{context}"
    generations = sorted(json.loads(ls.stdout), key=lambda g: g["created_at"])
    (tmp_path / "ls.json").write_text(ls.stdout)
    gen_times = [datetime.fromisoformat(g["created_at"]).timestamp() for g in generations]
    problems: list[str] = []
    kills = [o for o in run.outages if o.kind == "kill"]
    for i, g in enumerate(generations):
        if not g["complete"]:
            successor = gen_times[i + 1] if i + 1 < len(generations) else math.inf
            # A child generation is stamped up to 1 s ahead of its creation.
            if not any(gen_times[i] <= k.start + 1.001 and successor >= k.start
                       for k in kills):
                problems.append(f"generation {g['generation']} (created "
                                f"{_fmt(gen_times[i])}) is incomplete, and no kill explains "
                                "it")
        elif g["chain_depth"] is None:
            problems.append(f"generation {g['generation']}: broken chain (ls -v)")
    gapped = []  # generations whose batches do not run from frame 1 without a hole
    for g in generations:
        desc = catalog.describe_generation(storage, run.db_name, uuid.UUID(g["generation"]))
        if desc.contiguous_frame != desc.last_frame:
            gapped.append(f"{g['generation']} (frames after {desc.contiguous_frame} up to "
                          f"{desc.last_frame})")
    verify = run.cli_run("verify")
    if verify.returncode != 0:
        problems.append(f"verify failed: {verify.stderr.strip()}")

    phases["ls+verify"] = time.monotonic() - began
    # The restores.
    rng = random.Random(f"{seed}:restores")
    t0, t1 = commits.after[0], stopped + 3.0
    wanted: list[tuple[float, str]] = []
    wanted += [(rng.uniform(t0 - 1.0, t1), "random") for _ in range(p.random_restores)]
    # ...and each at its whole second, where libSQL's restore must agree with ours (below).
    wanted += [(float(math.floor(t)), "the whole second of a random T") for t, _ in wanted]
    for n in rng.sample(range(1, final + 1), min(final, p.edge_commits)):
        tb, ta = commits.before[n], commits.after[n]
        wanted += [(ta, f"after commit {n} returned"), (ta + 0.001, f"1 ms after commit {n}"),
                   (tb - 0.000001, f"just before commit {n} began"),
                   (math.ceil(ta), f"the whole second after commit {n}"),
                   (math.ceil(ta) - 0.000001, f"just before the whole second after commit {n}")]
    for gt in rng.sample(gen_times, min(len(gen_times), p.edge_commits + 2)):
        wanted += [(gt, "a generation's creation time"),
                   (gt - 0.001, "1 ms before a generation's creation time")]
    for o in run.outages:
        if o.kind != "start":
            # While the daemon is down the bucket stays as the signal left it: a T then sees
            # every batch the stopped daemon wrote (stamped at most 1 s ahead).
            wanted += [(o.start, f"the {o.kind} signal"),
                       (o.start + 1.0, f"1 s after the {o.kind} signal"),
                       (o.restarted, f"the restart after the {o.kind}"),
                       (o.ready, f"ready after the {o.kind}")]
    wanted.append((gen_times[0] - 0.001, "1 ms before the first generation"))
    restores = [Restore(None, "newest", tmp_path / "restored-newest.db")]
    restores += [Restore(round(t * 1e6), why, tmp_path / f"restored-{i}.db")
                 for i, (t, why) in enumerate(wanted)]

    def do(worker: CliWorker, mine: list[Restore]) -> None:
        try:
            for r in mine:
                args = ["restore", "-o", str(r.out)]
                if r.t_us is not None:
                    args += ["--utc-time", r.iso]
                got = worker(*args)
                r.code, r.stdout, r.stderr = got["code"], got["stdout"], got["stderr"]
                r.seconds = got["seconds"]
        finally:
            worker.close()

    workers = [CliWorker(run.cli, run.env) for _ in range(RESTORE_WORKERS)]
    procs.extend(w.proc for w in workers)
    with ThreadPoolExecutor(len(workers)) as pool:
        for f in [pool.submit(do, w, restores[i::len(workers)]) for i, w in enumerate(workers)]:
            f.result()

    phases["restores"] = time.monotonic() - began
    first_gen = gen_times[0]
    raw = RawS3(s3.endpoint, bucket, s3.access_key, s3.secret_key)
    libsql_compared = 0
    checked: list[tuple[int, Restore]] = []
    worst_lag = 0.0  # the oldest commit a restore left out, in seconds before its T
    for r in restores:
        label = "newest" if r.t is None else f"T={r.iso} ({r.why})"
        if r.t is not None and r.t < first_gen:
            if r.code == 0 or "no generation" not in r.stderr:
                problems.append(f"{label}: before the first generation ({_fmt(first_gen)}), "
                                f"expected 'no generation', got exit {r.code} "
                                f"{r.stderr.strip()} {r.stdout.strip()}")
            elif r.t_us % 1_000_000 == 0:  # libSQL's rules find none either
                theirs = latest_generation_before(raw, run.db_name,
                                                  datetime.fromtimestamp(r.t, tz=UTC))
                if theirs is not None:
                    secs, nanos = generation_to_timestamp(theirs)
                    problems.append(f"{label}: libSQL's rules choose generation {theirs} "
                                    f"(created {_fmt(secs + nanos / 1e9)}), ours none")
            continue
        if r.code != 0:
            problems.append(f"{label}: restore failed (exit {r.code}): {r.stderr.strip()}")
            continue
        n = read_n(r.out)
        checked.append((n, r))
        how = f"{r.stdout.strip()} {r.stderr.strip()}".strip()
        if r.t is None:
            if n != final:
                problems.append(f"{label}: holds commit {n}, the writer's last is {final}")
            continue
        if not 0 <= n <= final:
            problems.append(f"{label}: holds commit {n}, which was never made")
            continue
        if commits.before[n] > r.t:
            problems.append(f"{label}: holds commit {n}, which began at "
                            f"{_fmt(commits.before[n])}, after T [{how}]")
        required = max(0, commits.last_before(run.bound(r.t)))
        if n < final and run.bound(r.t) == r.t - GRANULARITY:  # outside outages
            worst_lag = max(worst_lag, r.t - commits.after[n + 1])
        if n < required:
            problems.append(
                f"{label}: holds commit {n} (returned {_fmt(commits.after[n])}) but commit "
                f"{required} returned at {_fmt(commits.after[required])}, more than "
                f"{r.t - commits.after[required]:.2f}s before T (granularity "
                f"{GRANULARITY}s, outside the daemon's outages) [{how}]")

    # Content: replay the writer's model once, in commit order.
    checked.sort(key=lambda x: x[0])
    states = expected_states(seed, sorted({n for n, _ in checked} | {final}))
    current: tuple[int, Model] = next(states)
    for n, r in checked:
        while current[0] < n:
            current = next(states)
        for diff in compare(r.out, current[1]):
            problems.append(f"{'newest' if r.t is None else r.iso} ({r.why}), commit {n}: "
                            f"{diff}")
        if r.t_us is None or r.t_us % 1_000_000 == 0:  # libSQL reads it the same way
            libsql_compared += 1
            outcome = check_restored(
                raw, run.db_name, r.out, what=f"{'newest' if r.t is None else r.iso} "
                f"({r.why}), commit {n}", ours_note=r.stdout.strip(),
                utc_time=None if r.t is None else datetime.fromtimestamp(r.t, tz=UTC))
            if outcome.problem:
                problems.append(f"libSQL's rules disagree: {outcome.line()}")
        r.out.unlink()  # a long run restores a few GB
    while current[0] < final:
        current = next(states)
    for diff in compare(run.db, current[1], immutable=False):  # the harness itself
        problems.append(f"local database (not a restore!): {diff}")

    phases["compare"] = time.monotonic() - began
    summary = {
        "seed": seed, "plan": p.__dict__, "seconds": round(time.monotonic() - began, 1),
        "phases": {k: round(v, 1) for k, v in phases.items()},
        "commits": final, "generations": len(generations),
        "incomplete_generations": sum(not g["complete"] for g in generations),
        "gapped_generations": gapped,
        "restores_stopped_at_a_gap": sum("batch missing" in r.stderr for r in restores),
        "kills": len(kills), "sigterms": sum(o.kind == "term" for o in run.outages),
        "restores": len(restores), "compared": len(checked),
        "compared_with_libsql_rules": libsql_compared,
        "worst_lag": round(worst_lag, 2),
        "restore_seconds": sorted(round(r.seconds, 1) for r in restores)[::-1][:8],
        "outages": [(o.kind, o.trigger, round(o.ready - o.start, 2)) for o in run.outages],
        "problems": problems,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "problems"}))
    assert not problems, (f"{len(problems)} problems, {context}:\n  " + "\n  ".join(problems))


def test_restored_n_reveals_the_commit() -> None:
    """The harness: replaying plan() from commit 0 is deterministic, and every commit changes
    the content (so a restore that lands on the wrong commit is told apart)."""
    a = [dict(m.rows) for _, m in expected_states(5, [10, 40])]
    b = [dict(m.rows) for _, m in expected_states(5, [10, 40])]
    assert a == b and a[0] != a[1]
    model = Model()
    for n in range(1, 200):
        ops = plan(model, 5, n)
        assert ops, f"commit {n} changes nothing"
        model.apply(n, ops)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
                        Restore(1_700_000_000_123_456, "", Path()).iso)


class _DiesDuringOnePut(S3Store):
    """The PUT of one WAL batch never lands, as when the process is killed while it is in
    flight; the batches uploaded beside it (UPLOAD_THREADS) land."""

    lost: str | None = None  # e.g. "000000000001-": the batch that starts at frame 1
    landed: str = ""  # ...which fails once the batch starting so has landed beside it

    def put(self, key: str, data: bytes, *args: object, **kwargs: object) -> str:
        prefix, _, name = key.rpartition("/")
        if self.lost is not None and name.startswith(self.lost):
            poll(f"{self.landed}* to land beside {name}",
                 lambda: any(o.key.rpartition("/")[2].startswith(self.landed)
                             for o in self.list_objects(prefix + "/")))
            raise StorageError(f"simulated: the replicator died while writing {key}")
        return super().put(key, data, *args, **kwargs)  # type: ignore[arg-type]


def test_a_ship_cut_short_leaves_every_time_restorable(s3: SeaweedServer, bucket: str,
                                                       tmp_path: Path, run: Cli) -> None:
    """What the randomized test found, made deterministic: the daemon uploads a ship's
    batches side by side, so a kill (or a PUT that fails for good) can leave batch k missing
    and batch k+1 stored. Until the next generation starts, a restore at any T after that
    batch's stamp must still give an exact earlier state, not an error."""
    t0 = 1_700_000_000.0
    now = [t0]
    db = tmp_path / "app.db"
    init_db(db, 4096)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, 1, ?)", ((i, value(i, 1, 100)) for i in range(5)))
    conn.execute("UPDATE meta SET n = 1")
    conn.execute("COMMIT")
    storage = _DiesDuringOnePut(StorageConfig(s3.endpoint, bucket, "us-east-1", s3.access_key,
                                              s3.secret_key))
    replicator = Replicator(db, storage, "gap.db",
                            ReplicateOptions(max_batch_frames=8, clock=lambda: now[0]))
    lock = ReadLock(db)
    try:
        lock.acquire()
        now[0] = t0 + 0.5
        replicator.sync(lock)  # a new generation holding commit 1
        lock.renew()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, 2, ?)",
                         ((i, value(i, 2, 3000)) for i in range(100, 160)))
        conn.execute("UPDATE meta SET n = 2")
        conn.execute("COMMIT")  # about 60 frames: 8 batches of 8, uploaded 4 at a time
        now[0] = t0 + 10.5
        g = catalog.newest_generation(storage, "gap.db")
        assert g is not None
        shipped = catalog.describe_generation(storage, "gap.db", g).last_frame
        storage.lost, storage.landed = f"{shipped + 1:012d}-", f"{shipped + 9:012d}-"
        with pytest.raises(StorageError, match="simulated"):
            replicator.sync(lock)
    finally:
        lock.close()
        replicator.close()
        conn.close()
    batches = [k for k, _ in catalog.describe_generation(storage, "gap.db", g).batches]
    assert batches[0].first == 1 and batches[-1].first > shipped + 1  # the gap is there
    assert all(k.first != shipped + 1 for k in batches)

    def restore(*when: str) -> tuple[int | None, str]:
        out = tmp_path / f"restored-{len(list(tmp_path.iterdir()))}.db"
        result = CliRunner().invoke(cli, ["--db-name", "gap.db", "restore", "-o", str(out),
                                          *when], env=run.env)
        if result.exit_code != 0:
            return None, f"restore {' '.join(when)} failed: {result.stderr.strip()}"
        return read_n(out), ""

    def at(seconds: float) -> str:
        return datetime.fromtimestamp(t0 + seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # The host is gone: restore the newest state from what the bucket holds.
    newest_after_crash = restore()
    # The daemon restarted instead: the app closed its connection meanwhile (the WAL is gone),
    # so the gap cannot be refilled: a new generation starts, and the batches after the gap,
    # which no restore could use, are removed from the old one.
    storage.lost = None
    now[0] = t0 + 30.5
    replicator = Replicator(db, storage, "gap.db", ReplicateOptions(clock=lambda: now[0]))
    lock = ReadLock(db)
    try:
        lock.acquire()
        assert "gap" in replicator.sync(lock).reason
    finally:
        lock.close()
        replicator.close()
    verified = CliRunner().invoke(cli, ["--db-name", "gap.db", "verify"], env=run.env)
    assert verified.exit_code == 0, verified.stderr
    assert restore("--utc-time", at(5)) == (1, "")
    assert restore("--utc-time", at(40)) == (2, "")
    assert restore() == (2, "")
    # After the batches that landed, before the new generation.
    in_window = restore("--utc-time", at(20))
    assert newest_after_crash[0] == 1 and in_window[0] == 1, (
        f"newest, before the restart: {newest_after_crash}; at T in the window, after it: "
        f"{in_window}")
