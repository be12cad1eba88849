"""rm: an interrupted removal never strands a generation it kept, and planning a removal over
many generations costs a handful of requests (issue 11, items 6 and 10c)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bottomless_core import catalog, layout
from bottomless_core.errors import NotFoundError
from bottomless_core.restore import plan_restore
from bottomless_core.retention import plan_removal, remove_generations
from bottomless_core.store.s3 import S3Store
from tests.chains import build_chain, iso, when
from tests.conftest import Cli
from tests.helpers import dump

CHILDREN = 3


@pytest.fixture
def chain(tmp_path: Path, storage: S3Store, run: Cli) -> Iterator[dict]:
    """G0 (snapshot, batches at 0 and 10 s), then G1..G3 made by our checkpoints at k*100+20
    (batches at k*100+50 and k*100+110); G1 is then given a snapshot of its own, so G2 and G3
    restore through G1 and no further: G0 is the only generation rm may delete."""
    states, gens = build_chain(tmp_path / "app.db", storage, CHILDREN)  # newest first
    run("--db-name", "app.db", "snapshot", "-g", str(gens[-2]))
    yield {"states": states, "gens": gens}


def _restore(run: Cli, out: Path, *args: str) -> dict:
    out.unlink(missing_ok=True)
    run("--db-name", "app.db", "restore", "-o", str(out), *args)
    return dump(out)


class Crash(Exception):
    pass


@pytest.mark.parametrize("rule", ["older_than", "keep_last"])
def test_interrupted_removal_leaves_every_kept_generation_restorable(
        run: Cli, chain: dict, storage: S3Store, tmp_path: Path, rule: str) -> None:
    gens, states = chain["gens"], chain["states"]
    g0, kept = gens[-1], gens[:-1]
    if rule == "older_than":
        plan = plan_removal(storage, "app.db", older_than=when(10_000))
    else:
        plan = plan_removal(storage, "app.db", keep_last=1)
    assert plan.remove == [g0]
    assert {g for g, _ in plan.keep} >= set(kept[1:])  # kept as dependencies of the newest
    assert plan.tombstone is not None

    def crash(keys: object) -> int:
        raise Crash

    storage.delete_many = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        remove_generations(storage, "app.db", plan)
    del storage.delete_many
    tomb = catalog.read_tombstone(storage, "app.db")
    assert tomb is not None and catalog.is_dead(tomb, g0)
    with pytest.raises(NotFoundError, match="tombstone"):
        plan_restore(storage, "app.db", g0)
    assert [g for g in gens if not catalog.is_dead(tomb, g)] == kept

    out = tmp_path / "r.db"
    for k, gen in enumerate(reversed(kept), start=1):  # G1, G2, G3
        # -g: the state at the generation's end
        assert _restore(run, out, "-g", str(gen)) == states[2 * k + 1][1], k
        # --utc-time inside its window: before its first batch, after each batch
        assert _restore(run, out, "--utc-time", iso(k * 100 + 30)) == states[2 * k - 1][1], k
        for i in (2 * k, 2 * k + 1):
            t, state = states[i]
            assert _restore(run, out, "--utc-time", iso(t + 0.5)) == state, (k, t)
    assert _restore(run, out) == states[-1][1]


def test_rm_dry_run_over_many_generations_makes_few_requests(
        run: Cli, storage: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    base = 1_700_000_000 * 10**9
    gens = [layout.new_generation_id(base + i * 10**9) for i in range(500)]  # oldest first
    objects = {}
    for i, g in enumerate(gens):
        objects[layout.object_key("many", g, "db.zstd")] = b"x"
        objects[layout.object_key("many", g, layout.META)] = layout.Meta(4096, (1, 2)).encode()
        if i:
            objects[layout.object_key("many", g, layout.DEPENDENCY)] = gens[i - 1].bytes
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: storage.put(*kv), objects.items()))

    sent: list[str] = []
    plain_init = S3Store.__init__

    def counting_init(self: S3Store, *args: object, **kwargs: object) -> None:
        plain_init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._client.meta.events.register(
            "before-send.s3", lambda request, **_: sent.append(f"{request.method} "
                                                               f"{request.url}"))

    monkeypatch.setattr(S3Store, "__init__", counting_init)
    oldest = gens[0]
    out = run("--db-name", "many", "rm", "-g", str(oldest), "--dry-run")
    assert out.stdout.splitlines()[0].startswith(f"would remove {oldest}")
    assert "Would remove 1 generation\n" in out.stdout
    assert 2 <= len(sent) < 20, sent  # the counter sees requests; there are few of them
    for args in (["--older-than", datetime.fromtimestamp(1_700_000_250, UTC).isoformat()],
                 ["--keep-last", "10"]):
        sent.clear()
        out = run("--db-name", "many", "rm", *args, "--dry-run")
        assert "Would remove" in out.stdout and "Would remove 0 " not in out.stdout
        assert 2 <= len(sent) < 20, (args, sent)
    assert len(list(catalog.list_generations(storage, "many"))) == 500  # a dry run

