"""Fault injection for the reliability tests (tests/test_reliability.py, docs/reliability.md).

- The faults themselves come from ``bottomless_dev.proxy.Proxy`` (``arm({n: kind})``): an
  HTTP/1.1 proxy in front of the S3 server that numbers every request it sees (1, 2, ...) and,
  for the request numbers it is armed with, answers ``503 SlowDown`` or ``500 InternalError``
  itself, drops the connection half-way through the request body (the server never sees the
  request), forwards the request and drops the connection half-way through the response (the
  server did apply it), forwards it and never answers (a stall past the client's read
  timeout), or SIGKILLs the client process as the request arrives.
- ``ForkCli``: a process that has imported bottomless-cli once and forks a child for each
  command, so that a test can SIGKILL real processes at every step without paying a second
  of interpreter start-up per run.
- ``digest``: what a database holds (every row of every table), as one hash.
- ``clone``: a copy of one database's objects under another name in the same bucket.
- ``Figures``: counters a test adds to; written as JSON lines to ``$BOTTOMLESS_FIGURES``
  (``python -m tests.faults FILE`` sums them up for docs/reliability.md).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

LONG = os.environ.get("BOTTOMLESS_LONG") == "1"
READ_TIMEOUT = 1.0  # the clients' read timeout in these tests: a stall costs about this much

# --- bottomless-cli as forked processes -----------------------------------------------------

_ZYGOTE = r"""
import json, os, sys, traceback
import bottomless_cli.main as main_module
import bottomless_core.restore, bottomless_core.retention  # everything, before any fork
sys.path.insert(0, os.getcwd())
import tests.faults as faults
faults.configure_clients(None)
import botocore.session
botocore.session.get_session().create_client("s3", region_name="us-east-1")  # warm the loader
for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        _, status = os.waitpid(req["wait"], 0)
        code = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                else -os.WTERMSIG(status))
        print(json.dumps({"code": code}), flush=True)
        continue
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setpgid(0, 0)
            os.environ.clear()
            os.environ.update(req["env"])
            out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            nul = os.open(os.devnull, os.O_RDONLY)
            os.dup2(nul, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            faults.configure_clients(req.get("read_timeout"))
            try:
                main_module.cli.main(args=req["args"], prog_name="bottomless-cli")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


@dataclass
class Child:
    """One forked bottomless-cli process."""

    forker: ForkCli
    pid: int
    stdout_path: Path
    stderr_path: Path
    code: int | None = None

    def wait(self, timeout: float = 60.0) -> int:
        if self.code is None:
            self.code = self.forker._wait(self.pid, timeout)
        return self.code

    def poll(self) -> int | None:
        """The exit code if the process has ended (without reaping it), else None."""
        if self.code is not None:
            return self.code
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return self.wait()
        return self.wait() if state in ("Z", "X") else None

    def kill(self) -> None:
        if self.code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class ForkCli:
    """A zygote that has imported bottomless-cli; ``start(args)`` forks a child running
    ``bottomless-cli ARGS`` with ``env``, its output in files under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._n = 0
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._guard = threading.Lock()

    def _ask(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._guard:
            watchdog = threading.Timer(timeout, self.proc.kill)
            watchdog.start()
            try:
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            finally:
                watchdog.cancel()
        if not line:
            raise AssertionError(f"the fork server died (or {req} took more than {timeout}s)")
        return json.loads(line)

    def start(self, args: list[str], env: dict[str, str],
              read_timeout: float | None = READ_TIMEOUT) -> Child:
        self._n += 1
        out = self.workdir / f"child-{self._n}.out"
        err = self.workdir / f"child-{self._n}.err"
        got = self._ask({"args": args, "env": env, "stdout": str(out), "stderr": str(err),
                         "read_timeout": read_timeout}, 30.0)
        return Child(self, got["pid"], out, err)

    def _wait(self, pid: int, timeout: float) -> int:
        try:
            return self._ask({"wait": pid}, timeout)["code"]
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _set(obj: Any, name: str, value: Any, monkeypatch: Any = None) -> None:
    if monkeypatch is not None:
        monkeypatch.setattr(obj, name, value)
    else:
        setattr(obj, name, value)


def configure_clients(read_timeout: float | None = READ_TIMEOUT, monkeypatch: Any = None) -> None:
    """How S3 clients are made in these tests (``monkeypatch``: undone after the test).

    - The read timeout: 60 s in StorageConfig, not configurable from the environment or the
      command line (``StorageConfig.from_env`` does not read one); shortened here so that a
      stall costs a second, not a minute.
    - One botocore data loader for every client: each new boto3 session otherwise parses the
      S3 service model again (0.3 s per command, most of a small restore).
    """
    import botocore.loaders
    import botocore.session

    from bottomless_core.store import config as store_config

    if read_timeout is not None:
        config_cls = store_config.StorageConfig
        original = config_cls.from_env.__func__  # type: ignore[attr-defined]
        original = getattr(original, "_bottomless_original", original)

        def from_env(cls: type, *args: Any, **kwargs: Any) -> Any:
            return replace(original(cls, *args, **kwargs), read_timeout=read_timeout)

        from_env._bottomless_original = original  # type: ignore[attr-defined]
        _set(config_cls, "from_env", classmethod(from_env), monkeypatch)

    global _LOADER
    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    loader = _LOADER
    _set(botocore.session, "create_loader", lambda *a, **k: loader, monkeypatch)


_LOADER: Any = None


# --- what a database holds ------------------------------------------------------------------

def digest(path: Path | str) -> str:
    """SHA-256 over every row of every table (read through SQLite, read-only)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return digest_conn(conn)
    finally:
        conn.close()


def digest_conn(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256()
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    for t in tables:
        h.update(f"\0table {t}\0".encode())
        for row in conn.execute(f"SELECT * FROM {t} ORDER BY rowid"):
            for v in row:
                if isinstance(v, bytes):
                    h.update(b"b%d:" % len(v) + v)
                else:
                    s = repr(v).encode()
                    h.update(b"v%d:" % len(s) + s)
            h.update(b"\n")
    return h.hexdigest()


# --- the bucket -----------------------------------------------------------------------------

def objects_of(client: Any, bucket: str, db_name: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Every object of a database (generations, tombstone, lease): key -> (body, metadata)."""
    out: dict[str, tuple[bytes, dict[str, str]]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                  Prefix=db_name):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rest = key[len(db_name):]
            if not (rest.startswith("-") or rest in (".tombstone", ".lease")):
                continue
            if key.endswith("/"):
                continue
            r = client.get_object(Bucket=bucket, Key=key)
            out[key] = (r["Body"].read(), dict(r.get("Metadata", {})))
    return out


def put_objects(client: Any, bucket: str, src: str, dst: str,
                objects: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    """Write ``objects`` (keys of database ``src``) as the objects of database ``dst``."""
    for key, (body, meta) in objects.items():
        client.put_object(Bucket=bucket, Key=dst + key[len(src):], Body=body, Metadata=meta)


def clone(client: Any, bucket: str, src: str, dst: str) -> None:
    put_objects(client, bucket, src, dst, objects_of(client, bucket, src))


# --- figures for docs/reliability.md --------------------------------------------------------

@dataclass
class Figures:
    """Counts of one test, appended to $BOTTOMLESS_FIGURES as one JSON line when it ends."""

    test: str
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def write(self) -> None:
        path = os.environ.get("BOTTOMLESS_FIGURES")
        if not path:
            return
        with open(path, "a") as f:
            f.write(json.dumps({"test": self.test, "long": LONG, "counts": self.counts,
                                "notes": self.notes}) + "\n")


@contextlib.contextmanager
def figures(test: str) -> Iterator[Figures]:
    fig = Figures(test)
    try:
        yield fig
    finally:
        fig.write()


def _summarize(path: str) -> None:
    total: collections.Counter[str] = collections.Counter()
    per_test: dict[str, collections.Counter[str]] = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        c = collections.Counter(rec["counts"])
        total.update(c)
        per_test.setdefault(rec["test"], collections.Counter()).update(c)
    for test, c in per_test.items():
        print(f"{test}:")
        for k in sorted(c):
            print(f"  {k}: {c[k]}")
    print("total:")
    for k in sorted(total):
        print(f"  {k}: {total[k]}")


if __name__ == "__main__":
    _summarize(sys.argv[1])
