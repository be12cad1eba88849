"""Temporary files written beside a database (snapshot images, restores in progress).

Each is named ``.NAME.bottomless-HOST-PID-RANDOM.KIND`` so that a later run can tell leftovers
of a process that died (SIGKILL, power loss) from files a live process is still writing (only
files of this host are judged: a pid means nothing in another host's or container's process
table), and each is registered while it exists so that a signal handler can remove them before
exiting.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import threading
from pathlib import Path

_LIVE: set[Path] = set()
_GUARD = threading.Lock()


def owned_temp_path(beside: Path, kind: str) -> Path:
    """A new, registered temporary path in the directory of ``beside`` (not created)."""
    path = beside.with_name(f".{beside.name}.bottomless-{host_tag()}-{os.getpid()}-"
                            f"{secrets.token_hex(4)}.{kind}")
    with _GUARD:
        _LIVE.add(path)
    return path


def discard(path: Path) -> None:
    """Remove a temporary file (if it exists) and forget it."""
    path.unlink(missing_ok=True)
    with _GUARD:
        _LIVE.discard(path)


def forget(path: Path) -> None:
    """The file became something permanent (renamed into place): stop tracking it."""
    with _GUARD:
        _LIVE.discard(path)


def remove_all_owned() -> None:
    """Remove every temporary file this process still has (signal handlers, exit)."""
    with _GUARD:
        paths = list(_LIVE)
        _LIVE.clear()
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def host_tag() -> str:
    """This host's name, made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a running (not zombie) process of this system?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _alive(pid: int) -> bool:
    return pid == os.getpid() or pid_alive(pid)


def remove_stale(beside: Path) -> list[Path]:
    """Remove leftovers of dead processes beside ``beside``; return what was removed."""
    return _remove_stale(beside.parent, re.escape(f".{beside.name}"))


def remove_stale_in(directory: Path) -> list[Path]:
    """Remove leftovers of dead processes of every database in ``directory`` (one listing
    for all of them: ``replicate --dir``)."""
    return _remove_stale(directory, r"\..+")


def _remove_stale(directory: Path, name: str) -> list[Path]:
    pattern = re.compile(name + re.escape(f".bottomless-{host_tag()}-")
                         + r"(\d+)-[0-9a-f]+\.\w+$")
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not _alive(int(m[1])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
