"""The daemon checks its own backup (``--verify-every``): the state the bucket restores to is
compared page by page with the local database at the same frame.

No peer does this (Litestream removed its validator). A job, in the background at the lowest
CPU priority, pins the local database with a read transaction, copies that state into a
temporary image (the snapshot code's image: main file pages, with the newest captured WAL
frame of each page over them) and lets go of the pin; it waits until the daemon has shipped
up to that frame, restores the bucket's state after exactly that frame into a second file,
and compares the two. A mismatch never stops replication: it is reported (log, status,
metrics) and the next sync starts a generation with a fresh snapshot. Memory stays bounded
(files, read a MiB at a time); the disk holds two copies of the database meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .capture import capture_wal
from .database import ReadLock, wal_path
from .errors import BottomlessError
from .restore import restore
from .snapshot import image_chunks
from .tempfiles import discard, owned_temp_path
from .wal import Checksum

log = logging.getLogger("bottomless.selfcheck")

SHIP_WAIT = 600.0  # seconds the job waits for the daemon to ship up to the pinned frame
COMPARE_CHUNK = 1 << 20


@dataclass
class LocalState:
    """What the local database held at a pinned read transaction."""

    path: Path  # its image
    wal_checksum: Checksum | None  # the WAL cycle (header checksum); None: no WAL frames
    frames: int  # committed WAL frames of that cycle in it
    page_size: int


@dataclass
class VerifyOutcome:
    ok: bool
    generation: uuid.UUID | None = None
    frame: int = 0
    first_bad_page: int | None = None
    error: str | None = None  # why it failed, or could not run (then ok is False too)
    skipped: bool = False  # could not run (not a mismatch): e.g. not shipped in time


def copy_local_state(db_path: Path) -> LocalState:
    """Pin the database, copy the state of the pin into an image beside it, let go."""
    pin = ReadLock(db_path)
    image = owned_temp_path(db_path, "verify-local")
    try:
        pin.acquire()
        page_size = pin.db_header().page_size
        capture = capture_wal(wal_path(db_path), None, pin.wal_index())
        try:
            with open(image, "xb") as out:
                for chunk in image_chunks(pin, capture, page_size):
                    out.write(chunk)
            header = capture.header
            return LocalState(image, header.checksum if header is not None and
                              capture.frame_count else None, capture.frame_count, page_size)
        finally:
            capture.close()
    except BaseException:
        discard(image)
        raise
    finally:
        pin.close()


def first_difference(a: Path, b: Path, page_size: int) -> int | None:
    """The first page (1-based) where two images differ, or None when they are equal (a
    length difference counts as the first page past the shorter)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        page = 1
        while True:
            ca, cb = fa.read(COMPARE_CHUNK), fb.read(COMPARE_CHUNK)
            if ca != cb:
                for i in range(0, max(len(ca), len(cb)), page_size):
                    if ca[i:i + page_size] != cb[i:i + page_size]:
                        return page + i // page_size
            if not ca:
                return None
            page += len(ca) // page_size


class VerifyJob(threading.Thread):
    """One self-verification (see the module docstring)."""

    def __init__(self, db_path: Path, db_name: str, store_of: Callable[[], object],
                 position: Callable[[], tuple[uuid.UUID, Checksum | None, int] | None],
                 ship_wait: float = SHIP_WAIT) -> None:
        """``position``: where the bucket is, (newest generation, its WAL cycle's header
        checksum, frames of it shipped), as the daemon knows it (None: nothing yet)."""
        super().__init__(name=f"verify-{db_name}", daemon=True)
        self.db_path, self.db_name = db_path, db_name
        self.store_of, self.position = store_of, position
        self.ship_wait = ship_wait
        self.outcome: VerifyOutcome | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError):  # this thread only, and what it starts
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            self.outcome = self._verify()
        except BottomlessError as exc:
            self.outcome = VerifyOutcome(False, error=str(exc))
        except Exception as exc:  # a bug or a local failure: reported, replication goes on
            log.exception("db=%s event=verify_crashed", self.db_name)
            self.outcome = VerifyOutcome(False, error=f"{type(exc).__name__}: {exc}")

    def _verify(self) -> VerifyOutcome:
        local = copy_local_state(self.db_path)
        restored = owned_temp_path(self.db_path, "verify-restored")
        try:
            deadline = time.monotonic() + self.ship_wait
            while True:
                where = self.position()
                if where is not None and (
                        (local.frames and where[1] == local.wal_checksum
                         and where[2] >= local.frames)
                        or (not local.frames and where[2] == 0)):
                    break
                if time.monotonic() > deadline or self.stop.wait(0.2):
                    return VerifyOutcome(False, skipped=True,
                                         error="the daemon did not ship up to the pinned "
                                               "frame in time (or started a new generation)")
            gen = where[0]
            # no WAL frame: the main file, which is what the generation starts from
            restore(self.store_of(), self.db_name, restored, generation=gen,  # type: ignore[arg-type]
                    upto_frame=local.frames or None, base_only=not local.frames, force=True)
            bad = first_difference(local.path, restored, local.page_size)
            return VerifyOutcome(bad is None, gen, local.frames, bad,
                                 None if bad is None else
                                 f"page {bad} of generation {gen} at frame {local.frames} "
                                 "differs from the local database")
        finally:
            discard(local.path)
            discard(restored)
