"""One writer per database name in a bucket: a lease object that a second host refuses to
take while it is alive.

``DB.lease`` holds JSON: who writes (host and real path of the database), a random token for
this process, its pid and the running system it belongs to (boot id and pid namespace), and
until when the lease holds. A live lease is never taken over from another process, even one
naming the same host and path (cloned machines, containers with one hostname, a lock file
deleted under a running daemon): only when it has lapsed, was released, or its holder is
provably gone (same running system, and its pid is dead).

A replicator takes it before writing anything, renews it while it runs and marks it released
when it stops. Writes are conditional (If-None-Match / If-Match on the ETag) where the server
supports them, and read back either way, so two replicators racing for it cannot both believe
they won. The previous holder's identity also tells a replicator whether the newest
generation is its own: a different database file under the same name starts cleanly instead
of being taken as a continuation.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LeaseHeldError, PreconditionFailedError, StorageError
from .store.base import ObjectStore
from .tempfiles import pid_alive

log = logging.getLogger("bottomless.lease")

LEASE_SUFFIX = ".lease"
LEASE_TTL = 60.0  # seconds a lease holds without renewal: a dead writer blocks others this long
LEASE_RENEW = 15.0  # renewed this often when time passes (renew()), four chances to lapse
# Before a write (ensure()), the lease is renewed when less than this is left of it: a write
# (a ship, a pack, a snapshot part) never outlives the lease, and an idle database renews
# nothing at all (issue 19: an idle database costs no request).
WRITE_MARGIN = 40.0
ACQUIRE_TRIES = 5
_HELD_TOKENS: set[str] = set()  # tokens of the leases this process holds now


def lease_key(db_name: str) -> str:
    return db_name + LEASE_SUFFIX


def _read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def system_id() -> str:
    """This running system as seen by pids: boot id and pid namespace ("" where unknown)."""
    boot = _read_boot_id()
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}" if boot else ""


def writer_identity(db_path: Path) -> str:
    """Who writes: this host and the database's real path."""
    return f"{socket.gethostname()}:{db_path}"


@dataclass(frozen=True)
class LeaseRecord:
    writer: str
    pid: int
    token: str
    expires: float  # unix time; 0 once released
    renewed: float
    system: str = ""  # system_id() of the holder; "" in leases of older versions

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaseRecord | None:
        try:
            d = json.loads(data)
            return cls(str(d["writer"]), int(d["pid"]), str(d["token"]), float(d["expires"]),
                       float(d["renewed"]), str(d.get("system", "")))
        except (ValueError, KeyError, TypeError):
            return None


class Lease:
    """The lease of one database name, held by this process while it replicates."""

    def __init__(self, storage: ObjectStore, db_name: str, identity: str,
                 ttl: float = LEASE_TTL, renew_every: float = LEASE_RENEW,
                 clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.key = lease_key(db_name)
        self.identity = identity
        self.ttl = ttl
        self.renew_every = renew_every
        self.clock = clock
        self.token = secrets.token_hex(8)
        self.previous_writer: str | None = None  # who held it before this process
        self._etag: str | None = None
        self._renewed = 0.0
        self._expires = 0.0  # when the lease we wrote last lapses
        self._guard = threading.RLock()  # the syncs and the background uploads renew it
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        self._held = value
        (_HELD_TOKENS.add if value else _HELD_TOKENS.discard)(self.token)

    def _record(self, expires: float) -> LeaseRecord:
        now = self.clock()
        return LeaseRecord(self.identity, os.getpid(), self.token, expires, now, system_id())

    @staticmethod
    def _holder_gone(current: LeaseRecord) -> bool:
        """A live lease of another holder that may be taken now: it ran on this very system
        and its process is dead (a daemon killed and restarted), or it is this process and no
        Lease of it holds that token any more (a run whose release failed)."""
        here = system_id()
        if not here or current.system != here:
            return False
        if current.pid == os.getpid():
            return current.token not in _HELD_TOKENS
        return not pid_alive(current.pid)

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the live holder."""
        for _ in range(ACQUIRE_TRIES):
            got = self.storage.get_with_metadata(self.key)
            current = LeaseRecord.decode(got[0]) if got is not None else None
            now = self.clock()
            if current is not None and current.token != self.token:
                if current.expires > now and not self._holder_gone(current):
                    raise LeaseHeldError(
                        f"{self.key}: {current.writer} (pid {current.pid}) is replicating this "
                        f"database name into the bucket (lease renewed "
                        f"{max(0.0, now - current.renewed):.0f}s ago, expires in "
                        f"{current.expires - now:.0f}s); two writers would corrupt its "
                        "generations: stop the other replicator, or give this one another "
                        "--db-name")
                if self.previous_writer is None:
                    self.previous_writer = current.writer
            try:
                self._write(self._record(now + self.ttl),
                            etag=got[2] if got is not None else None, create=got is None)
            except PreconditionFailedError:
                continue  # someone wrote it meanwhile: look again
            if self._confirm():
                self.held = True
                return
        raise LeaseHeldError(f"{self.key}: could not take the lease (another replicator keeps "
                             "writing it)")

    def _write(self, record: LeaseRecord, etag: str | None, create: bool) -> None:
        self._etag = self.storage.put(self.key, record.encode(), if_match=etag,
                                      if_none_match=create)
        self._renewed = self.clock()
        self._expires = record.expires

    def _confirm(self) -> bool:
        """Read it back: a server that ignores conditions must not let two writers win."""
        got = self.storage.get_with_metadata(self.key)
        record = LeaseRecord.decode(got[0]) if got is not None else None
        if record is None or record.token != self.token:
            return False
        self._etag = got[2] if got is not None else self._etag
        return True

    def renew(self, force: bool = False) -> None:
        """Extend the lease when it is due; LeaseHeldError if another writer took it."""
        with self._guard:
            self._renew(force)

    def _renew(self, force: bool) -> None:
        if not self.held or (not force and self.clock() - self._renewed < self.renew_every):
            return
        try:
            self._write(self._record(self.clock() + self.ttl), etag=self._etag, create=False)
        except PreconditionFailedError:
            got = self.storage.get_with_metadata(self.key)
            record = LeaseRecord.decode(got[0]) if got is not None else None
            if record is None or record.token != self.token:
                self.held = False
                who = record.writer if record is not None else "nobody (it was deleted)"
                raise LeaseHeldError(f"{self.key}: the lease was taken over by {who} while "
                                     "this replicator could not renew it") from None
            self._etag = got[2] if got is not None else None
            self._write(self._record(self.clock() + self.ttl), etag=self._etag, create=False)

    def ensure(self) -> None:
        """About to write: make sure the lease holds for at least WRITE_MARGIN more seconds
        (one conditional PUT when it does not; LeaseHeldError when another writer took it
        while this one was idle). Nothing is sent while it holds long enough."""
        with self._guard:
            if self.held and self._expires - self.clock() < WRITE_MARGIN:
                self._renew(force=True)

    def release(self) -> None:
        """Mark the lease free (kept, so that the next writer knows who wrote last)."""
        if not self.held:
            return
        self.held = False
        try:
            self._write(self._record(0.0), etag=self._etag, create=False)
        except StorageError as exc:  # it lapses on its own
            log.warning("event=lease_release_failed key=%s error=%r", self.key, str(exc))
