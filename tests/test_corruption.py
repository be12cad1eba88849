"""Every object of a bucket corrupted once: detected, reported with its key, and never a
silently wrong database (issue 10, docs/reliability.md).

The golden bucket (tests/workload.py) holds every kind of object: snapshots (of a daemon
generation and of a cron one), seed and shipped batches of generations with and without a
snapshot, ``.meta``, ``.changecounter``, ``.dep`` (both kinds of metadata) and a tombstone.
Each object in turn is truncated, has one bit flipped, is emptied, deleted, or replaced by the
same object of another generation (with its metadata, as a copy would carry it). Then every
restore that could be affected (the newest, ``-g`` of each generation, ``--utc-time`` inside
each) and ``verify`` of the object's generation run, and each must either

- give exactly the state the undamaged bucket gives, or
- give a state the database really had, with a ``warning:``/``note:`` line that names the
  object (or its generation), or
- fail with one ``error:`` line that names the object (or its generation), leaving no file;

and ``verify`` must not pass silently when the restore of its generation was affected.

Fast form (about a minute): one or two objects of each kind, and the restores of their own
generation, the newest and the deepest chain through them. BOTTOMLESS_LONG=1: every object,
every restore.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bottomless_core import layout
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import storage_for
from tests.faults import LONG, configure_clients, digest, figures
from tests.helpers import integrity
from tests.workload import T0, Golden, build_golden, run_cli

MUTATIONS = ("truncate", "flip", "empty", "delete", "swap")

# Damaged on purpose: libSQL's restore reads damaged objects its own way (a truncated or empty
# .changecounter panics in get_remote_change_counter), which is not what these tests check.
pytestmark = pytest.mark.libsql_exempt("every object damaged on purpose")


@dataclass
class Env:
    s3: SeaweedServer
    bucket: str
    storage: S3Store
    env: dict[str, str]
    golden: Golden
    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(s3: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    mp = pytest.MonkeyPatch()
    configure_clients(monkeypatch=mp)
    bucket = f"c-{secrets.token_hex(6)}"
    storage = storage_for(s3, bucket)
    storage.create_bucket()
    env = {**s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": bucket,
           "LIBSQL_BOTTOMLESS_ENDPOINT": s3.endpoint}
    golden = build_golden(storage, env, tmp_path_factory.mktemp("golden"), "app.db")
    w = Env(s3, bucket, storage, env, golden)
    client = storage._client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                  Prefix="app.db"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/") or obj["Key"].endswith(".lease"):
                continue
            r = client.get_object(Bucket=bucket, Key=obj["Key"])
            w.objects[obj["Key"]] = (r["Body"].read(), dict(r.get("Metadata", {})))
    yield w
    mp.undo()


# --- what to corrupt --------------------------------------------------------------------

def _kind(key: str) -> str:
    if key.endswith(".tombstone"):
        return "tombstone"
    name = key.rsplit("/", 1)[1]
    if layout.snapshot_codec(name) is not None:
        return "snapshot"
    if layout.BatchKey.parse(name) is not None:
        return "batch"
    return name  # .meta, .dep, .changecounter


def _gen_of(w: Env, key: str) -> str | None:
    if "/" not in key:
        return None
    gen = layout.generation_from_prefix("app.db", key.split("/", 1)[0] + "/")
    return w.golden.label(gen) if gen is not None else None


# fast form: (generation, kind, which of its objects of that kind) -- every kind, both kinds
# of snapshot (daemon A, cron C), of .dep (parent-frames B, base: snapshot C) and of batch
# (seed, shipped)
FAST = (("A", "snapshot", 0), ("C", "snapshot", 0), ("A", "batch", 0), ("B", "batch", 0),
        ("C", "batch", -1), ("B", ".meta", 0), ("B", ".dep", 0), ("C", ".dep", 0),
        ("C", ".changecounter", 0), (None, "tombstone", 0))


def _targets_of(w: Env) -> list[str]:
    """The objects to corrupt: all of them (long), or one or two of every kind (fast)."""
    keys = sorted(w.objects)
    if LONG:
        return keys
    chosen = []
    for gen, kind, i in FAST:
        group = sorted(k for k in keys if _gen_of(w, k) == gen and _kind(k) == kind)
        chosen.append(group[i])
    return chosen


def _relevant(targets: list[Target], kind: str, gen: str | None) -> list[Target]:
    """The restores a corruption can affect: every one (long); else the newest, the object's
    generation (-g and --utc-time) and the deepest chain through it."""
    if LONG:
        return targets
    if kind == "tombstone":
        names = {"newest", "-g A", "--utc-time in A", "--utc-time before A"}
    else:
        names = {"newest", f"-g {gen}", f"--utc-time in {gen}"}
        if gen in ("A", "B"):
            names.add("-g B2")
    return [t for t in targets if t.name in names]


def _partner(w: Env, key: str) -> str | None:
    """The same object of another generation: the nearest older one that has it, else the
    nearest newer one (for a batch: the one at the same position)."""
    kind, gen = _kind(key), _gen_of(w, key)
    if kind == "tombstone" or gen is None:
        return None
    order = ["A", "B", "B2", "C"]  # oldest first
    if gen not in order:
        return None
    i = order.index(gen)
    candidates = [*reversed(order[:i]), *order[i + 1:]]
    mine = sorted(k for k in w.objects if _gen_of(w, k) == gen and _kind(k) == kind)
    pos = mine.index(key)
    for other in candidates:
        theirs = sorted(k for k in w.objects if _gen_of(w, k) == other and _kind(k) == kind)
        if len(theirs) > pos:
            return theirs[pos]
    return None


def _mutate(w: Env, key: str, how: str) -> str | None:
    """Damage ``key`` in the bucket; return a description, or None if it does not apply."""
    body, meta = w.objects[key]
    client = w.storage._client
    if how == "delete":
        client.delete_object(Bucket=w.bucket, Key=key)
        return "deleted"
    if how == "truncate":
        new = body[:len(body) // 2]
    elif how == "flip":
        i = len(body) // 2
        new = body[:i] + bytes([body[i] ^ 0x10]) + body[i + 1:]
    elif how == "empty":
        new = b""
    else:
        if _kind(key) == "tombstone":  # one per database: another removal's, covering more
            new = layout.encode_tombstone(
                int(layout.generation_time(w.golden.gens["B2"]).timestamp()))
            _put(w, key, new, meta)
            return "replaced by a later removal's tombstone"
        other = _partner(w, key)
        if other is None:
            return None
        _put(w, key, *w.objects[other])
        return f"replaced by {other}"
    _put(w, key, new, meta)
    return how


def _put(w: Env, key: str, body: bytes, meta: dict[str, str]) -> None:
    """Replace ``key``. Deleted first: SeaweedFS answers a PUT over an empty object only
    after the client's read timeout (60 s), which made this test take a quarter of an hour."""
    client = w.storage._client
    client.delete_object(Bucket=w.bucket, Key=key)
    client.put_object(Bucket=w.bucket, Key=key, Body=body, Metadata=meta)


def _repair(w: Env, key: str) -> None:
    _put(w, key, *w.objects[key])


# --- what to restore --------------------------------------------------------------------

@dataclass
class Target:
    name: str
    args: tuple[str, ...]
    expected: str | None  # digest; None: "no generation" is the right answer
    chain: tuple[str, ...]  # generations it reads


def _all_targets(g: Golden) -> list[Target]:
    gens = g.gens
    return [
        Target("newest", (), g.final["C"], ("C",)),
        Target("-g A", ("-g", str(gens["A"])), g.final["A"], ("A",)),
        Target("-g B", ("-g", str(gens["B"])), g.final["B"], ("A", "B")),
        Target("-g B2", ("-g", str(gens["B2"])), g.final["B2"], ("A", "B", "B2")),
        Target("-g C", ("-g", str(gens["C"])), g.final["C"], ("C",)),
        *(Target(f"--utc-time in {label}", ("--utc-time", _iso(t)), g.at(t),
                 {"A": ("A",), "B": ("A", "B"), "B2": ("A", "B", "B2"), "C": ("C",)}[label])
          for label, t in g.points.items()),
        Target("--utc-time before A", ("--utc-time", _iso(T0 - 50)), None, ()),
    ]


def _iso(t: float) -> str:
    from tests.workload import utc

    return utc(t)


@dataclass
class Seen:
    target: Target
    code: int
    lines: list[str]
    digest: str | None

    @property
    def exact(self) -> bool:
        """What the undamaged bucket gives (for a time before every generation: the refusal)."""
        if self.target.expected is None:
            return self.code != 0 and len(self.lines) == 1 and "no generation" in self.lines[0]
        return self.code == 0 and self.digest == self.target.expected and not self.lines


def _restore(w: Env, t: Target, out: Path) -> tuple[Seen, list[str]]:
    """Run one restore; return what it did and what is wrong with it."""
    res = run_cli(w.env, "--db-name", "app.db", "restore", "-o", str(out), *t.args)
    problems = []
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        problems.append(f"{t.name}: crashed: {res.exception!r}")
    if "Traceback" in res.stderr:
        problems.append(f"{t.name}: traceback on stderr")
    got = None
    if res.exit_code == 0:
        if not out.exists():
            problems.append(f"{t.name}: exit 0 but no file")
        else:
            if integrity(out) != "ok":
                problems.append(f"{t.name}: restored file fails integrity_check")
            got = digest(out)
    else:
        if out.exists():
            problems.append(f"{t.name}: failed but left {out}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"{t.name}: failure is not one error line: {lines}")
    leftovers = [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.")]
    if leftovers:
        problems.append(f"{t.name}: left temporary files {leftovers}")
    return Seen(t, res.exit_code, lines, got), problems


def _names(text: str, key: str, gen: uuid.UUID | None) -> bool:
    return key in text or (gen is not None and str(gen) in text)


def test_every_object_corrupted_once(world: Env, tmp_path: Path) -> None:
    w, g = world, world.golden
    targets = _all_targets(g)
    # the undamaged bucket gives exactly what the model says
    for t in targets:
        seen, problems = _restore(w, t, tmp_path / "clean.db")
        (tmp_path / "clean.db").unlink(missing_ok=True)
        assert not problems, problems
        if t.expected is None:
            assert seen.code != 0 and "no generation" in seen.lines[0], seen
        else:
            assert seen.exact, (t.name, seen)
    problems: list[str] = []
    report: list[str] = []
    n = 0
    with figures("corruption") as fig:
        for key in _targets_of(w):
            gen_label = _gen_of(w, key)
            gen = g.gens.get(gen_label) if gen_label else None
            kind = _kind(key)
            relevant = _relevant(targets, kind, gen_label)
            for how in MUTATIONS:
                what = _mutate(w, key, how)
                if what is None:
                    continue
                n += 1
                case = f"{key} {what}"
                trailing = _trailing(w, key, how)
                fig.add(f"corrupted {kind}")
                fig.add("corruptions")
                try:
                    seen_all = []
                    for t in relevant:
                        out = tmp_path / f"r{n}-{len(seen_all)}.db"
                        seen, bad = _restore(w, t, out)
                        fig.add("restores compared")
                        seen_all.append(seen)
                        problems += [f"{case}: {b}" for b in bad]
                        problems += _judge(case, seen, g, key, gen, trailing)
                        out.unlink(missing_ok=True)
                    verify_args = ("-g", str(gen)) if gen is not None and gen_label != "Z" \
                        else ()
                    v = run_cli(w.env, "--db-name", "app.db", "verify", *verify_args)
                    fig.add("verifies")
                    v_lines = [x for x in v.stderr.splitlines() if x.strip()]
                    own = next((s for s in seen_all
                                if s.target.args == verify_args), None)
                    affected = own is not None and not own.exact
                    spoke = v.exit_code != 0 or any(
                        x.startswith(("warning:", "note:")) for x in v_lines)
                    if affected and not spoke and not trailing:
                        problems.append(f"{case}: verify {' '.join(verify_args)} passed "
                                        f"silently, but the restore gave {own}")
                    if v.exit_code != 0 and (len(v_lines) != 1
                                             or not v_lines[0].startswith("error: ")):
                        problems.append(f"{case}: verify failure is not one line: {v_lines}")
                    detected = spoke or any(not s.exact and (s.code != 0 or s.lines)
                                            for s in seen_all)
                    harmless = all(s.exact for s in seen_all)
                    fig.add("detected" if detected else "harmless (nothing affected)"
                            if harmless else "undetectable: newest batch deleted"
                            if trailing else "undetected")
                    named = [x for s in seen_all for x in s.lines if _names(x, key, None)]
                    if detected and named:
                        fig.add("detected, message names the key")
                    report.append(f"{case}: " + "; ".join(
                        f"{s.target.name}: " + (
                            "exact" if s.exact else
                            f"exit {s.code} {s.lines[:1]}" if s.code else
                            f"{'expected' if s.digest == s.target.expected else 'OTHER'} "
                            f"state {s.lines[:1]}") for s in seen_all)
                        + f"; verify: exit {v.exit_code} {v_lines[:1]}")
                finally:
                    _repair(w, key)
        fig.notes = problems
    (tmp_path / "report.txt").write_text("\n".join(report) + "\n")
    assert not problems, f"{len(problems)} problems in {n} corruptions:\n" + "\n".join(
        problems) + f"\n(report: {tmp_path / 'report.txt'})"


def _trailing(w: Env, key: str, how: str) -> bool:
    """The newest batch of its generation, deleted: the format cannot tell that from a ship
    that never happened (there is no manifest), so a restore gives the last state the bucket
    still holds -- a committed state, older than the one lost."""
    if how != "delete" or _kind(key) != "batch":
        return False
    gen = _gen_of(w, key)
    return key == max(k for k in w.objects if _gen_of(w, k) == gen and _kind(k) == "batch")


def _judge(case: str, seen: Seen, g: Golden, key: str, gen: uuid.UUID | None,
           trailing: bool = False) -> list[str]:
    """Is what a restore did acceptable after this corruption?"""
    t = seen.target
    if seen.code != 0:
        text = " ".join(seen.lines)
        if t.expected is not None and not _names(text, key, gen) and "tombstone" not in key:
            return [f"{case}: {t.name}: the error does not name the object: {text}"]
        return []
    if t.expected is None:
        return [f"{case}: {t.name}: restored a database where there is none to restore"]
    if seen.digest == t.expected:
        return []
    if seen.digest not in g.history:
        return [f"{case}: {t.name}: WRONG DATABASE: a state the database never had "
                f"(messages: {seen.lines})"]
    said = [x for x in seen.lines if x.startswith(("warning:", "note:"))
            and _names(x, key, gen)]
    if not said and not trailing:
        return [f"{case}: {t.name}: an older state than expected, without a warning that "
                f"names the object (messages: {seen.lines})"]
    return []
