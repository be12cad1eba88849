"""Generations without a snapshot of their own (after the daemon's checkpoints): round trips
through chains, point-in-time restores inside each generation, snapshot, ls and rm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottomless_core import catalog, layout
from bottomless_core.store.s3 import S3Store
from tests.chains import build_chain, iso
from tests.conftest import Cli
from tests.helpers import dump

GENERATIONS = 6  # one with a snapshot, then five that restore through their parents


@pytest.fixture
def chain(tmp_path: Path, storage: S3Store) -> Iterator[dict]:
    """Generation k (k >= 1) starts at our checkpoint at k*100+20 s (tests.chains.build_chain)."""
    db = tmp_path / "app.db"
    states, gens = build_chain(db, storage, GENERATIONS - 1)
    yield {"db": db, "states": states, "gens": gens}


def _restore(run: Cli, out: Path, *args: str) -> dict:
    out.unlink(missing_ok=True)
    run("--db-name", "app.db", "restore", "-o", str(out), *args)
    return dump(out)


def test_latest_and_every_generation(run: Cli, chain: dict, tmp_path: Path) -> None:
    out = tmp_path / "r.db"
    states = chain["states"]
    assert _restore(run, out) == states[-1][1]
    # -g of each generation: the state at its end (the last sync before the next checkpoint)
    for k, gen in enumerate(reversed(chain["gens"])):
        assert _restore(run, out, "-g", str(gen)) == states[2 * k + 1][1], k


def test_utc_time_inside_every_generation(run: Cli, chain: dict, tmp_path: Path) -> None:
    out = tmp_path / "r.db"
    states = chain["states"]
    for i, (t, state) in enumerate(states):
        assert _restore(run, out, "--utc-time", iso(t + 0.5)) == state, t
        if i:  # just before a batch's stamp: the previous state, never a later commit
            assert _restore(run, out, "--utc-time", iso(t - 0.5)) == states[i - 1][1], t
    for k in range(1, GENERATIONS):
        # after a generation starts, before its first batch: its parent's final state
        assert _restore(run, out, "--utc-time", iso(k * 100 + 30)) == states[2 * k - 1][1]


def test_ls_shows_what_each_generation_restores_from(run: Cli, chain: dict) -> None:
    facts = json.loads(run("--db-name", "app.db", "ls", "-v", "--json").stdout)
    assert [f["chain_depth"] for f in facts] == list(range(GENERATIONS - 1, -1, -1))
    assert [f["has_snapshot"] for f in facts] == [False] * (GENERATIONS - 1) + [True]
    assert all(f["complete"] for f in facts)
    text = run("--db-name", "app.db", "ls", "-v").stdout
    assert "parent chain: 5 generations back to a snapshot" in text
    assert "its own snapshot" in text


def test_snapshot_command_shortens_the_chain(run: Cli, chain: dict, tmp_path: Path,
                                             storage: S3Store) -> None:
    gens = chain["gens"]  # newest first
    middle = gens[2]
    out = run("--db-name", "app.db", "snapshot", "-g", str(middle))
    assert f"generation {middle}: uploaded a snapshot" in out.stdout
    out = run("--db-name", "app.db", "snapshot", "-g", str(middle))
    assert "already has a snapshot" in out.stdout
    g = catalog.describe_generation(storage, "app.db", middle)
    assert g.snapshot is not None
    info = storage.head(g.snapshot.key)  # it says whose it is: a copy elsewhere is refused
    assert info is not None and info.metadata["generation"] == str(middle)
    facts = json.loads(run("--db-name", "app.db", "ls", "-v", "--json").stdout)
    assert [f["chain_depth"] for f in facts] == [2, 1, 0, 2, 1, 0]
    # the chain no longer goes back further than the new snapshot, and restores the same
    restored = _restore(run, tmp_path / "r.db")
    assert restored == chain["states"][-1][1]
    assert _restore(run, tmp_path / "r.db", "-g", str(gens[1])) == chain["states"][-3][1]
    # the newest (default) gets one too; then nothing needs a chain any more
    run("--db-name", "app.db", "snapshot")
    assert catalog.describe_generation(storage, "app.db", gens[0]).snapshot is not None
    assert _restore(run, tmp_path / "r.db") == chain["states"][-1][1]


def test_rm_never_strands_a_chain(run: Cli, chain: dict, tmp_path: Path,
                                  storage: S3Store) -> None:
    gens = chain["gens"]
    oldest = gens[-1]
    out = run("--db-name", "app.db", "rm", "-g", str(oldest), "-v", code=1)
    assert out.stderr.startswith(f"error: generation {oldest} was not removed: generation")
    assert "restores through it" in out.stderr and len(out.stderr.splitlines()) == 1
    assert list(catalog.list_generations(storage, "app.db")) == gens
    out = run("--db-name", "app.db", "rm", "--older-than", "2100-01-01", "-v")
    assert "Removed 0 generations" in out.stdout
    # once a generation has a snapshot, what lies before it can go
    run("--db-name", "app.db", "snapshot", "-g", str(gens[2]))
    out = run("--db-name", "app.db", "rm", "--older-than", "2100-01-01", "-v")
    assert "Removed 3 generations" in out.stdout
    assert list(catalog.list_generations(storage, "app.db")) == gens[:3]
    assert _restore(run, tmp_path / "r.db") == chain["states"][-1][1]


def _batches(storage: S3Store, gen: object) -> list[str]:
    g = catalog.describe_generation(storage, "app.db", gen)  # type: ignore[arg-type]
    return [o.key for _, o in g.batches]


@pytest.mark.parametrize("damage", ["middle batch", "last batch", ".meta", "whole parent"])
def test_parent_that_lost_objects_is_a_clear_error(run: Cli, chain: dict, storage: S3Store,
                                                   tmp_path: Path, damage: str) -> None:
    gens = chain["gens"]
    parent = gens[2]
    batches = _batches(storage, parent)
    assert len(batches) == 2
    if damage == "middle batch":
        storage.delete_many([batches[0]])
        needle = f"generation {parent}: WAL batch missing (frames 1.."
    elif damage == "last batch":
        storage.delete_many([batches[-1]])
        needle = f"generation {parent}: has frames up to"
    elif damage == ".meta":
        key = layout.object_key("app.db", parent, layout.META)
        storage.delete_many([key])
        needle = f"({key} is missing)"
    else:
        storage.delete_many(o.key for o in storage.list_objects(
            layout.generation_prefix("app.db", parent)))
        needle = f"restores through {parent}, which is missing"
    out = tmp_path / "r.db"
    res = run("--db-name", "app.db", "restore", "-o", str(out), code=1)
    assert needle in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
    # generations that do not go through the damaged one still restore
    assert _restore(run, out, "-g", str(gens[3])) == chain["states"][5][1]
