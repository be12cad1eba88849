"""Every S3 request failed once, and replicate --once killed at every request (issue 10,
docs/reliability.md).

For each command (``replicate --once`` starting a generation and shipping to one, the daemon,
``restore``, ``restore --utc-time``, ``rm``, ``snapshot``) a clean run through the proxy
counts its requests; then the command runs again with request N failed, for N = 1..count,
with each fault kind (503, 500, connection dropped mid-request or mid-response, a stall past
the client's 1 s read timeout). Retries are off (``LIBSQL_BOTTOMLESS_S3_MAX_RETRIES=0``) so
that every fault reaches the code under test. Each run must succeed or exit non-zero with one
``error:`` line; a clean run afterwards completes the work; the bucket then restores to the
last committed state; a failed restore leaves the file it would replace byte for byte as it
was; replicate never changes what the local database holds.

Fast form: five N per command (the first, the last, three between), a different fault kind
each. BOTTOMLESS_LONG=1: every N with every kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bottomless_core import catalog, layout
from bottomless_core.store.s3 import S3Store
from bottomless_dev.proxy import FAULT_KINDS, Proxy
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import storage_for
from tests.faults import (
    LONG,
    ForkCli,
    configure_clients,
    digest,
    figures,
    objects_of,
    put_objects,
)
from tests.workload import T0, App, Driver, run_cli, utc

BATCH = "4"  # --max-batch-frames: several batches per ship


@dataclass
class Outcome:
    """What a run did (click's Result for in-process runs; this for forked ones)."""

    exit_code: int
    stderr: str
    exception: BaseException | None = None


Result = Any  # click.testing.Result or Outcome


@dataclass
class Template:
    """A database's local files (db, -wal) and, under ``name``, its objects in the bucket."""

    name: str
    files: Path  # a directory holding app.db (and app.db-wal)
    state: str  # what the local database holds
    history: list[str]  # every committed state, oldest first
    gens: dict[str, uuid.UUID] = field(default_factory=dict)
    points: dict[str, tuple[float, str]] = field(default_factory=dict)  # --utc-time -> state


@dataclass
class World:
    s3: SeaweedServer
    bucket: str
    storage: S3Store
    proxy: Proxy
    forks: ForkCli
    tmp: Path
    direct: dict[str, str]  # bottomless-cli's environment, straight to the server
    faulty: dict[str, str]  # ... through the proxy, no retries
    new: Template  # WAL frames, nothing in the bucket yet
    ship: Template  # a generation in the bucket; more frames in the local WAL
    full: Template  # Z (snapshot), A (snapshot, batches), B (no snapshot, .dep -> A)
    runs: int = 0

    def run_dir(self) -> Path:
        self.runs += 1
        d = self.tmp / f"run{self.runs}"
        d.mkdir()
        return d


def _copy_files(src: Path, dst: Path) -> Path:
    for f in src.iterdir():
        shutil.copy2(f, dst / f.name)
    return dst / "app.db"


def _freeze(app: App, dst: Path) -> None:
    """Copy the database's files while the application holds them open (no -shm): a crash
    image, WAL frames included (closing the last connection would checkpoint them away)."""
    dst.mkdir(parents=True)
    for suffix in ("", "-wal"):
        src = Path(f"{app.db}{suffix}")
        if src.exists():
            shutil.copy2(src, dst / f"app.db{suffix}")


def _build(storage: S3Store, tmp: Path) -> tuple[Template, Template, Template]:
    # new: a WAL holding several transactions, no generation yet
    (tmp / "new").mkdir(parents=True)
    app = App(tmp / "new" / "app.db", rows=120)
    app.update(0, 20, 3)
    app.append(10)
    _freeze(app, tmp / "t-new")
    new = Template("new.db", tmp / "t-new", app.state, list(app.history))
    app.close()
    # ship: a generation with a snapshot, then more commits in the WAL
    (tmp / "ship").mkdir()
    app = App(tmp / "ship" / "app.db", rows=120)
    app.update(0, 10)
    d = Driver(app.db, storage, "ship.db")
    assert d.at(0).sync().new_generation
    d.close()
    app.update(10, 40, 3)
    app.append(10)
    _freeze(app, tmp / "t-ship")
    ship = Template("ship.db", tmp / "t-ship", app.state, list(app.history))
    app.close()
    # full: Z, then (after the application's checkpoint) A with a snapshot, then B
    (tmp / "full").mkdir()
    app = App(tmp / "full" / "app.db", rows=120)
    app.update(0, 10)
    d = Driver(app.db, storage, "full.db")
    assert d.at(-100).sync().new_generation
    d.close()
    app.checkpoint()
    app.update(10, 20)
    d = Driver(app.db, storage, "full.db")
    r = d.at(0).sync()
    assert r.new_generation and not r.snapshotless, r
    app.update(20, 40, 2)
    d.at(10).sync()
    d.at(15).checkpoint()
    app.update(40, 60)
    r = d.at(20).sync()
    assert r.new_generation and r.snapshotless, r
    mid = app.state
    app.update(60, 80, 2)
    d.at(30).sync()
    d.close()
    _freeze(app, tmp / "t-full")
    gens = dict(zip(("B", "A", "Z"), catalog.list_generations(storage, "full.db"), strict=True))
    full = Template("full.db", tmp / "t-full", app.state, list(app.history), gens,
                    {"in B": (T0 + 25, mid)})
    app.close()
    return new, ship, full


@pytest.fixture(scope="module")
def world(s3: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    configure_clients(monkeypatch=mp)
    tmp = tmp_path_factory.mktemp("reliability")
    bucket = f"r-{secrets.token_hex(6)}"
    storage = storage_for(s3, bucket)
    storage.create_bucket()
    proxy = Proxy(s3.port)
    forks = ForkCli(tmp)
    direct = {**s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": bucket,
              "LIBSQL_BOTTOMLESS_ENDPOINT": s3.endpoint}
    faulty = {**direct, "LIBSQL_BOTTOMLESS_ENDPOINT": proxy.endpoint,
              "LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"}
    new, ship, full = _build(storage, tmp / "templates")
    try:
        yield World(s3, bucket, storage, proxy, forks, tmp, direct, faulty, new, ship, full)
    finally:
        forks.close()
        proxy.close()
        mp.undo()
        storage.delete_many(obj.key for obj in storage.list_objects(""))
        storage._client.delete_bucket(Bucket=bucket)


# --- checks -----------------------------------------------------------------------------

def _failure_problems(res: Result) -> list[str]:
    """A run that failed must say so in one ``error:`` line (and crash nowhere)."""
    problems = []
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        problems.append(f"crashed: {res.exception!r}")
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    if "Traceback" in res.stderr:
        problems.append("traceback on stderr")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines: {res.stderr.strip()!r}")
    return problems


def _restored(w: World, name: str, *args: str) -> str:
    out = w.run_dir() / "check.db"
    res = run_cli(w.direct, "--db-name", name, "restore", "-o", str(out), *args)
    assert res.exit_code == 0, (name, args, res.stderr)
    return digest(out)


def _fresh_name(w: World, template: Template) -> str:
    name = f"{template.name[:-3]}-{secrets.token_hex(3)}.db"
    objs = {k: v for k, v in _objects(w, template.name).items() if not k.endswith(".lease")}
    put_objects(w.storage._client, w.bucket, template.name, name, objs)
    return name


def _objects(w: World, name: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    return objects_of(w.storage._client, w.bucket, name)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the commands -----------------------------------------------------------------------

@dataclass
class Case:
    """One command against a fresh copy of a template: ``run`` it (through the proxy, or
    straight to the server), then ``finish`` cleanly and ``check`` the outcome."""

    w: World
    name: str = ""
    dir: Path = Path()
    before: str = ""

    def prepare(self) -> None:
        self.dir = self.w.run_dir()

    def run(self, env: dict[str, str]) -> Result:
        raise NotImplementedError

    def finish(self, failed: bool) -> None:
        if failed:
            res = self.run(self.w.direct)
            assert res.exit_code == 0, ("the clean run after a failure failed", res.stderr)

    def check(self, res: Result) -> list[str]:
        return []


class ReplicateOnce(Case):
    template: Template

    def prepare(self) -> None:
        super().prepare()
        self.db = _copy_files(self.template.files, self.dir)
        self.name = (_fresh_name(self.w, self.template) if self.template is self.w.ship
                     else f"new-{secrets.token_hex(3)}.db")

    def run(self, env: dict[str, str]) -> Result:
        return run_cli(env, "-d", str(self.db), "--db-name", self.name, "replicate", "--once",
                       "--max-batch-frames", BATCH)

    def finish(self, failed: bool) -> None:
        res = self.run(self.w.direct)  # always: a run that "succeeded" must leave nothing
        assert res.exit_code == 0, ("the clean run after a failure failed", res.stderr)

    def check(self, res: Result) -> list[str]:
        problems = []
        if digest(self.db) != self.template.state:
            problems.append("the local database changed")
        if _restored(self.w, self.name) != self.template.state:
            problems.append("the bucket does not restore to the last committed state")
        return problems


class ReplicateNew(ReplicateOnce):
    @property
    def template(self) -> Template:  # type: ignore[override]
        return self.w.new


class ReplicateShip(ReplicateOnce):
    @property
    def template(self) -> Template:  # type: ignore[override]
        return self.w.ship


class Restore(Case):
    args: tuple[str, ...] = ()

    def expected(self) -> str:
        return self.w.full.state

    def prepare(self) -> None:
        super().prepare()
        self.out = self.dir / "restored.db"
        conn = sqlite3.connect(self.out)  # a database restore --force would replace
        conn.execute("CREATE TABLE other (x)")
        conn.execute("INSERT INTO other VALUES ('keep me')")
        conn.commit()
        conn.close()
        self.before = _file_hash(self.out)

    def run(self, env: dict[str, str]) -> Result:
        return run_cli(env, "--db-name", "full.db", "restore", "--force", "-o", str(self.out),
                       *self.args)

    def finish(self, failed: bool) -> None:
        if failed:
            problems = []
            if _file_hash(self.out) != self.before:
                problems.append("a failed restore modified the database it would replace")
            leftovers = [p.name for p in self.dir.iterdir() if p.name != "restored.db"]
            if leftovers:
                problems.append(f"a failed restore left {leftovers}")
            assert not problems, problems
            super().finish(failed)

    def check(self, res: Result) -> list[str]:
        if digest(self.out) != self.expected():
            return ["the restore is not the expected state"]
        return []


class RestoreAt(Restore):
    @property
    def args(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("--utc-time", utc(self.w.full.points["in B"][0]))

    def expected(self) -> str:
        return self.w.full.points["in B"][1]


class Rm(Case):
    def prepare(self) -> None:
        super().prepare()
        self.name = _fresh_name(self.w, self.w.full)

    def run(self, env: dict[str, str]) -> Result:
        return run_cli(env, "--db-name", self.name, "rm", "-g", str(self.w.full.gens["Z"]))

    def finish(self, failed: bool) -> None:
        if failed:
            res = self.run(self.w.direct)
            gone = "not found" in res.stderr  # the failed run had deleted it all
            assert res.exit_code == 0 or gone, ("the clean run after a failure failed",
                                                res.stderr)

    def check(self, res: Result) -> list[str]:
        problems = []
        z = layout.generation_prefix(self.name, self.w.full.gens["Z"])
        left = [k for k in _objects(self.w, self.name) if k.startswith(z)]
        if left:
            problems.append(f"generation Z still has {left}")
        if _restored(self.w, self.name) != self.w.full.state:
            problems.append("the bucket does not restore to the last committed state")
        return problems


class Snapshot(Case):
    def prepare(self) -> None:
        super().prepare()
        self.name = _fresh_name(self.w, self.w.full)

    def run(self, env: dict[str, str]) -> Result:
        return run_cli(env, "--db-name", self.name, "snapshot", "-g",
                       str(self.w.full.gens["B"]))

    def check(self, res: Result) -> list[str]:
        problems = []
        g = catalog.describe_generation(self.w.storage, self.name, self.w.full.gens["B"])
        if g.snapshot is None:
            problems.append("generation B has no snapshot")
        for args in ((), ("-g", str(self.w.full.gens["B"]))):
            if _restored(self.w, self.name, *args) != self.w.full.state:
                problems.append(f"restore {args} is not the last committed state")
        return problems


class Daemon(Case):
    """The daemon (a forked process) from the ``new`` template: it starts a generation,
    ships, checkpoints; the application writes again, which starts a snapshot-less child
    generation; SIGTERM once everything is shipped."""

    def prepare(self) -> None:
        super().prepare()
        self.db = _copy_files(self.w.new.files, self.dir)
        self.name = f"daemon-{secrets.token_hex(3)}.db"
        self.status = self.dir / "status.json"
        self.state = ""

    def _status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        dbs = data.get("databases", [data]) if isinstance(data, dict) else data
        return dbs[0] if dbs else {}

    def _until(self, child: Any, ok: Callable[[dict[str, Any]], bool], what: str) -> bool:
        """Poll the status file until ``ok``; False if the daemon exited first."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = self._status()
            if s and ok(s):
                return True
            if child.poll() is not None:
                return False
            time.sleep(0.05)  # polling the status file, with a deadline
        raise AssertionError(f"timed out waiting for {what}: {self._status()}")

    def run(self, env: dict[str, str]) -> Result:
        import signal

        environ = {**env, "PATH": os.environ.get("PATH", ""), "HOME": str(self.dir)}
        self.status.unlink(missing_ok=True)
        child = self.w.forks.start(
            ["-d", str(self.db), "--db-name", self.name, "replicate", "--interval", "0.05",
             "--checkpoint-pages", "4", "--max-batch-frames", BATCH,
             "--status-file", str(self.status)], environ)
        try:
            if not self._until(child, lambda s: s.get("checkpoints", 0) >= 1
                               and s.get("behind_since") is None, "the first checkpoint"):
                return Outcome(child.wait(), child.stderr)  # gave up at start-up
            first = self._status().get("generation")
            app = App(self.db, rows=0)
            app.update(0, 30, 2)
            self.state = app.state
            app.close()
            # (not generations_started: a child whose creation was cut short by a failed
            # request and then completed by the next poll is not counted there)
            if not self._until(child, lambda s: s.get("generation") != first
                               and s.get("behind_since") is None, "the child generation"):
                return Outcome(child.wait(), child.stderr)
            child.signal(signal.SIGTERM)
            code = child.wait(60)
        finally:
            child.kill()
        return Outcome(code, child.stderr)

    def finish(self, failed: bool) -> None:
        """A daemon rides out failed requests once running; one that gave up at start-up
        (one error line, exit 1) is started again, as a supervisor would."""
        if failed:
            res = self.run(self.w.direct)
            assert res.exit_code == 0, ("the clean run after a failure failed", res.stderr)

    def check(self, res: Result) -> list[str]:
        problems = []
        if digest(self.db) != self.state:
            problems.append("the local database lost a commit")
        if _restored(self.w, self.name) != self.state:
            problems.append("the bucket does not restore to the last committed state")
        return problems


COMMANDS: dict[str, type[Case]] = {
    "replicate --once (new generation)": ReplicateNew,
    "replicate --once (ship)": ReplicateShip,
    "daemon": Daemon,
    "restore": Restore,
    "restore --utc-time": RestoreAt,
    "rm": Rm,
    "snapshot": Snapshot,
}


def _plan(count: int, offset: int) -> list[tuple[int, str]]:
    """(request number, fault kind) pairs: all of them (long), or five spread over the run
    with a different kind each (fast)."""
    if LONG:
        return [(n, k) for n in range(1, count + 1) for k in FAULT_KINDS]
    picks = sorted({1, count, *(1 + (count - 1) * i // 4 for i in (1, 2, 3))})
    return [(n, FAULT_KINDS[(i + offset) % len(FAULT_KINDS)]) for i, n in enumerate(picks)]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_request_fails_once(world: World, command: str) -> None:
    w = world
    case = COMMANDS[command](w)
    case.prepare()
    w.proxy.arm()
    res = case.run(w.faulty)
    assert res.exit_code == 0, (command, "clean run", res.stderr)
    count = w.proxy.count
    assert count > 0
    assert not case.check(res), (command, "clean run", case.check(res))
    problems: list[str] = []
    offset = list(COMMANDS).index(command)
    with figures(f"requests failed: {command}") as fig:
        fig.add("requests in a clean run", count)
        for n, kind in _plan(count, offset):
            case = COMMANDS[command](w)
            case.prepare()
            w.proxy.arm({n: kind})
            res = case.run(w.faulty)
            fired = [str(r) for r in w.proxy.fired]
            w.proxy.arm()
            what = f"{command}: request {n} {kind} ({fired or 'not reached'})"
            if not fired:
                fig.add("not reached")
            failed = res.exit_code != 0
            if failed:
                problems += [f"{what}: {p}" for p in _failure_problems(res)]
            try:
                case.finish(failed)
            except AssertionError as exc:
                problems.append(f"{what}: {exc}")
                continue
            problems += [f"{what}: {p}" for p in case.check(res)]
            if fired:
                fig.add(f"failed {kind}")
                fig.add("failed, then a clean exit 0" if not failed
                        else "failed, then exit 1 with one error line")
        fig.notes = problems
    assert not problems, "\n".join(problems)


def test_replicate_killed_at_every_request(world: World) -> None:
    """replicate --once (a new generation, then a ship) SIGKILLed as request N arrives: the
    bucket restores to a committed state (or has no generation yet); the next run completes."""
    w = world
    env = {**w.faulty, "PATH": os.environ.get("PATH", "")}
    problems: list[str] = []
    with figures("kill points: replicate --once") as fig:
        for template in (w.new, w.ship):
            case: ReplicateOnce = ReplicateNew(w) if template is w.new else ReplicateShip(w)
            case.prepare()
            w.proxy.arm()
            res = case.run(w.faulty)
            assert res.exit_code == 0, res.stderr
            count = w.proxy.count
            ns = range(1, count + 1) if LONG else sorted(
                {1, 2, count // 3, count // 2, 2 * count // 3, count})
            for n in ns:
                case = ReplicateNew(w) if template is w.new else ReplicateShip(w)
                case.prepare()
                w.proxy.arm({n: "kill"})
                child = w.forks.start(["-d", str(case.db), "--db-name", case.name,
                                       "replicate", "--once", "--max-batch-frames", BATCH], env)
                w.proxy.set_kill_pid(child.pid)
                code = child.wait(60)
                w.proxy.arm()
                what = f"{template.name} killed at request {n}"
                fig.add("kill points tried")
                fig.add("killed" if code == -9 else f"exit {code} (not killed)")
                out = w.run_dir() / "after-kill.db"
                r = run_cli(w.direct, "--db-name", case.name, "restore", "-o", str(out))
                if r.exit_code == 0:
                    if digest(out) not in template.history:
                        problems.append(f"{what}: restores to a state never committed")
                    fig.add("restored to a committed state after the kill")
                elif "no generation" not in r.stderr:
                    problems.append(f"{what}: restore after the kill: {r.stderr.strip()}")
                else:
                    fig.add("no generation yet after the kill")
                res = case.run(w.direct)
                if res.exit_code != 0:
                    problems.append(f"{what}: the next run failed: {res.stderr.strip()}")
                    continue
                problems += [f"{what}: {p}" for p in case.check(res)]
        fig.notes = problems
    assert not problems, "\n".join(problems)
