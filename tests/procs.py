"""bottomless-cli and applications as real processes: start them, poll them with a deadline,
read what they said."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Cli

DEADLINE = 60.0


def poll(what: str, check: Callable[[], object], deadline: float = DEADLINE,
         every: float = 0.02) -> object:
    """Call ``check`` until it returns something truthy (returned) or the deadline passes."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def cli_env(run: Cli, **extra: str) -> dict[str, str]:
    return {**os.environ, **run.env, **extra}


def cli_proc(env: dict[str, str], *args: str, **popen: object) -> subprocess.Popen[str]:
    """``bottomless-cli ARGS`` in a process of its own, stdout and stderr captured."""
    return subprocess.Popen([sys.executable, "-m", "bottomless_cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, **popen)  # type: ignore[call-overload]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def one_error_line(stderr: str, *needles: str) -> str:
    got = lines(stderr)
    assert len(got) == 1, stderr
    assert got[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in got[0], got[0]
    return got[0]


APP = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
print("ready", flush=True)
sys.stdin.read()  # holds the database open until the test closes our stdin
conn.close()
"""


class App:
    """An application process that keeps a connection to the database open."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", APP, str(db)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(DEADLINE)
