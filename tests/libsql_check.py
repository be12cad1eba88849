"""The cross-check: every restore of ours is done again with the reference reader
(tests/libsql_restore.py, libSQL's rules), from the raw bucket, and the two must hold the same
rows.

``check_restored`` compares one restore; ``CrossCheck`` wraps ``bottomless_core.restore.restore``
for a test (tests/conftest.py installs it in every test: CLI commands run through CliRunner are
in-process too) and collects what disagreed. Restores in subprocesses call ``check_restored``
themselves (tests/test_crash_pitr.py).

What is compared is only what a user would see: the rows of every table, and that libSQL's
result passes integrity_check (the Rust CLI verifies after restoring). It does not look at how
either reader got there, so fixes in the writer (generation ids, refills) change nothing here.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import boto3
from botocore.config import Config

from tests import libsql_restore as lr
from tests.helpers import dump

AGE_MAGIC = b"age-encryption.org/v1"
LOG_ENV = "BOTTOMLESS_LIBSQL_CHECK_LOG"  # a file: one JSON line per cross-checked restore
KEEP_ENV = "BOTTOMLESS_LIBSQL_CHECK_KEEP"  # a directory: each disagreement's bucket, kept


# --- the raw bucket -------------------------------------------------------------------------

class RawS3:
    """The bucket as it is stored, read with boto3 straight from the S3 server (not through
    the test's store, which may be a proxy, a fault injector or a decrypting wrapper)."""

    _clients: ClassVar[dict[tuple[str, str], Any]] = {}
    _guard = threading.Lock()

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str) -> None:
        self.bucket = bucket
        with self._guard:
            client = self._clients.get((endpoint, access_key))
            if client is None:
                client = self._clients[(endpoint, access_key)] = boto3.session.Session().client(
                    "s3", endpoint_url=endpoint, region_name="us-east-1",
                    aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                    config=Config(s3={"addressing_style": "path"},
                                  retries={"max_attempts": 3, "mode": "standard"}))
        self.client = client

    def list_objects(self, prefix: str) -> Iterator[SimpleNamespace]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield SimpleNamespace(key=obj["Key"], size=obj["Size"], etag=obj["ETag"])

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def metadata(self, key: str) -> dict[str, str]:
        return dict(self.client.head_object(Bucket=self.bucket, Key=key).get("Metadata", {}))


def file_store(root: Path, bucket: str) -> Any:
    """Our directory store, for copies of a bucket."""
    from bottomless_core.store.files import FileStore

    return FileStore(root, bucket)


_KEPT: dict[tuple, Path] = {}


def keep_bucket(raw: Any, db_name: str, what: str) -> Path | None:
    """With BOTTOMLESS_LIBSQL_CHECK_KEEP=DIR: the objects of ``db_name`` (user metadata too)
    copied into a new directory bucket under DIR, to look at a disagreement afterwards
    (``-e file://DIR/N -b bucket``, or tests.libsql_restore on a FileStore)."""
    root = os.environ.get(KEEP_ENV)
    if not root:
        return None
    listed = listing(raw, db_name)
    if listed in _KEPT:  # the same bucket state again
        with open(_KEPT[listed] / "what.txt", "a") as f:
            f.write(what + "\n")
        return _KEPT[listed]
    where = _KEPT[listed] = Path(tempfile.mkdtemp(prefix="disagreement-", dir=root))
    (where / "what.txt").write_text(what + "\n")
    copy = file_store(where, "bucket")
    copy.create_bucket()
    for obj in raw.list_objects(db_name):
        meta = raw.metadata(obj.key) if hasattr(raw, "metadata") else None
        copy.put(obj.key, raw.get(obj.key), meta)
    return where


def raw_store(store: Any, s3: Any = None) -> Any:
    """What the reference reader reads: below any wrapper (a decrypting store names the one
    it wraps ``raw``, ``inner`` or ``stored``), an S3 store as a RawS3 on the test's server, a
    directory store as it is."""
    seen = {id(store)}
    while True:
        below = [getattr(store, a, None) for a in ("stored", "raw", "inner")]
        below = [b for b in below if b is not None and id(b) not in seen]
        if not below:
            break
        store = below[0]
        seen.add(id(store))
    if isinstance(getattr(store, "dir", None), Path):  # a FileStore: a directory, no wrapper
        return store
    if s3 is not None and isinstance(getattr(store, "bucket", None), str):
        return RawS3(s3.endpoint, store.bucket, s3.access_key, s3.secret_key)
    return store


def listing(raw: Any, db_name: str) -> tuple:
    """Every object of ``db_name`` (and of names it prefixes) except leases, which a running
    replicator renews: the state a restore reads."""
    return tuple((o.key, getattr(o, "size", None), getattr(o, "etag", None)
                  or getattr(o, "last_modified", None))
                 for o in raw.list_objects(db_name)
                 if not (o.key.endswith(".lease") and "/" not in o.key))


class Frozen:
    """``raw`` restricted to the keys of one listing: objects added later are not seen."""

    def __init__(self, raw: Any, keys: tuple) -> None:
        self.raw = raw
        self.keys = sorted(k for k, _, _ in keys)

    def list_objects(self, prefix: str) -> Iterator[SimpleNamespace]:
        for key in self.keys:
            if key.startswith(prefix):
                yield SimpleNamespace(key=key)

    def get(self, key: str) -> bytes:
        return self.raw.get(key)


def encrypted_objects(raw: Any, db_name: str) -> list[str]:
    """Data objects of ``db_name`` that are age files (libSQL cannot read them)."""
    found = []
    for obj in raw.list_objects(f"{db_name}-"):
        name = obj.key.rpartition("/")[2]
        if name.startswith("db.") or lr.parse_frame_range(obj.key) is not None:
            with contextlib.suppress(Exception):
                if raw.get(obj.key)[:len(AGE_MAGIC)] == AGE_MAGIC:
                    found.append(obj.key)
    return found


# --- one comparison -------------------------------------------------------------------------

@dataclass
class Outcome:
    """One cross-checked restore. ``problem`` set: the readers disagree."""

    what: str  # the restore asked for
    ours: str = ""
    libsql: str = ""
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def line(self) -> str:
        parts = [self.what, f"ours: {self.ours}", f"libSQL: {self.libsql}", *self.notes]
        if self.problem:
            parts.insert(1, f"DISAGREE: {self.problem}")
        if self.skipped:
            parts.insert(1, f"not compared: {self.skipped}")
        return "\n    ".join(parts)


def _describe(rows: dict[str, list]) -> str:
    return ", ".join(f"{t}: {len(r)} rows" for t, r in rows.items()) or "no tables"


def _first_difference(a: dict[str, list], b: dict[str, list]) -> str:
    if a.keys() != b.keys():
        return f"tables {sorted(a)} != {sorted(b)}"
    for table in a:
        if a[table] != b[table]:
            ours, theirs = set(a[table]), set(b[table])
            only_ours = sorted(ours - theirs)[:3]
            only_theirs = sorted(theirs - ours)[:3]
            return (f"table {table}: {len(a[table])} rows vs {len(b[table])}; only ours "
                    f"{[r[0] for r in only_ours]}..., only libSQL's "
                    f"{[r[0] for r in only_theirs]}...")
    return "equal"


def check_restored(raw: Any, db_name: str, ours: Path | dict, *,
                   generation: uuid.UUID | None = None, utc_time: datetime | None = None,
                   what: str = "restore", ours_note: str = "") -> Outcome:
    """Restore with libSQL's rules (``generation``/``utc_time`` as our restore was asked)
    from ``raw`` and compare with our result (its path, or its rows). A page size libSQL
    cannot restore (its set_page_size bug) is noted, and the rest of its rules still checked
    with that bug left out."""
    out = Outcome(what)
    ours_rows = dump(ours) if isinstance(ours, Path) else ours
    out.ours = f"{ours_note} {_describe(ours_rows)}".strip()
    workdir = Path(tempfile.mkdtemp(prefix="libsql-check-"))
    try:
        path = workdir / "libsql.db"
        try:
            try:
                result = lr.restore(raw, db_name, path, generation=generation,
                                    utc_time=utc_time)
            except lr.PageSizeBug as exc:
                out.notes.append(f"libSQL cannot restore this page size ({exc}); compared "
                                 "with that bug left out")
                result = lr.restore(raw, db_name, path, generation=generation,
                                    utc_time=utc_time, page_size_bug=False)
        except lr.LibsqlRestoreError as exc:
            out.libsql = f"fails: {exc}"
            out.problem = "libSQL's restore fails"
            return out
        if not result.restored:
            out.libsql = f"restores nothing: {result.why} (generation {result.generation})"
            out.problem = "libSQL restores nothing"
            return out
        chain = f" through {len(result.stack)} generations" if len(result.stack) > 1 else ""
        head = (f"generation {result.generation}{chain}, {result.frames_applied} frames "
                f"applied [{result.stopped()}]")
        try:
            check = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
            try:
                ok = check.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                check.close()
            theirs = dump(path) if ok == "ok" else None
        except sqlite3.DatabaseError as exc:
            ok, theirs = str(exc), None
        if theirs is None:
            out.libsql = f"{head}: integrity_check: {ok}"
            out.problem = "libSQL's result fails integrity_check (its CLI's verify fails)"
            return out
        out.libsql = f"{head}: {_describe(theirs)}"
        if theirs != ours_rows:
            out.problem = f"different rows: {_first_difference(ours_rows, theirs)}"
        return out
    finally:
        if out.problem:
            with contextlib.suppress(Exception):
                kept = keep_bucket(raw.raw if isinstance(raw, Frozen) else raw, db_name,
                                   out.line())
                if kept:
                    out.notes.append(f"bucket kept in {kept}")
        shutil.rmtree(workdir, ignore_errors=True)


# --- every in-process restore of a test -----------------------------------------------------

class CrossCheck:
    """Wraps ``restore`` for one test: after each restore of ours that succeeded, the same
    restore (same generation argument, same utc_time) with libSQL's rules from the raw
    bucket, as it was listed during ours."""

    def __init__(self, test: str, s3: Any, original: Callable[..., Any]) -> None:
        self.test = test
        self.s3 = s3
        self.original = original
        self.signature = inspect.signature(original)
        self.outcomes: list[Outcome] = []
        self.encrypted: list[str] = []
        self._depth = threading.local()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._depth, "n", 0):  # a restore inside ours (none today): not again
            return self.original(*args, **kwargs)
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        raw, before = None, None
        try:
            raw = raw_store(a["storage"], self.s3)
            before = listing(raw, a["db_name"])
        except Exception:
            raw = None
        self._depth.n = 1
        try:
            result = self.original(*args, **kwargs)
        finally:
            self._depth.n = 0
        if raw is not None:
            try:
                self._check(raw, before, a, result)
            except Exception:
                self.outcomes.append(Outcome(self._what(a), problem="the cross-check failed:\n"
                                             + traceback.format_exc()))
        return result

    @staticmethod
    def _what(a: dict[str, Any]) -> str:
        asked = [f"restore {a['db_name']}"]
        if a.get("generation") is not None:
            asked.append(f"-g {a['generation']}")
        if a.get("utc_time") is not None:
            asked.append(f"--utc-time {a['utc_time'].isoformat()}")
        for flag in ("verify_only", "base_only"):
            if a.get(flag):
                asked.append(flag)
        return " ".join(asked)

    def _check(self, raw: Any, before: tuple, a: dict[str, Any], result: Any) -> None:
        what, db_name = self._what(a), a["db_name"]
        after = listing(raw, db_name)
        if after != before:
            self._log(Outcome(what, skipped="the bucket changed while we restored"))
            return
        if a.get("verify_only"):
            rows = self._rows_of_a_second_restore(a, result)
        else:
            rows = dump(Path(getattr(result, "path", None) or a["target"]))
        ours_note = (f"generation {result.generation}"
                     + (f" through {len(result.chain)} generations"
                        if len(getattr(result, "chain", [])) > 1 else "")
                     + f", {result.frames_applied} frames:")
        generation, utc_time = a.get("generation"), a.get("utc_time")
        if a.get("base_only"):
            # What libSQL's snapshot command does: the parent (.dep) restored completely.
            generation = lr.get_dependency(raw, db_name, result.generation)
            utc_time = None
            what += f" (libSQL: its snapshot command, restore -g {generation})"
        outcome = check_restored(Frozen(raw, after), db_name, rows, generation=generation,
                                 utc_time=utc_time, what=what, ours_note=ours_note)
        if outcome.problem and encrypted_objects(raw, db_name):
            outcome.skipped = "encrypted objects (age): libSQL cannot read them"
            outcome.problem = None
            self.encrypted.append(what)
        self._log(outcome)

    def _rows_of_a_second_restore(self, a: dict[str, Any], result: Any) -> dict[str, list]:
        """verify deletes what it restored: the same restore again, kept this time."""
        workdir = Path(tempfile.mkdtemp(prefix="libsql-check-verify-"))
        try:
            target = workdir / "ours.db"
            self.original(a["storage"], a["db_name"], target, generation=result.generation,
                          utc_time=a.get("utc_time"), force=True)
            return dump(target)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _log(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        log = os.environ.get(LOG_ENV)
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"test": self.test, "at": datetime.now(UTC).isoformat(),
                                    "what": outcome.what, "ours": outcome.ours,
                                    "libsql": outcome.libsql, "problem": outcome.problem,
                                    "skipped": outcome.skipped, "notes": outcome.notes})
                        + "\n")

    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]


def assert_libsql_agrees(raw: Any, db_name: str, ours: Path | dict, **kwargs: Any) -> None:
    """For restores the wrapper does not see (another process made them)."""
    outcome = check_restored(raw, db_name, ours, **kwargs)
    assert outcome.problem is None, outcome.line()
