"""Compaction (issue 17): batches of sealed windows merged into page packs, level by level;
restores, point-in-time restores included, read the packs and agree with the batches (and the
libSQL reference reader, which skips the packs, agrees too: tests/conftest.py)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottomless_core import catalog, layout, pack
from bottomless_core.compactor import Compactor, check_packs
from bottomless_core.errors import StorageError
from bottomless_core.replicator import ReplicateOptions, ReplicateResult, replicate_once
from bottomless_core.restore import restore
from bottomless_core.store.files import FileStore
from bottomless_core.store.s3 import S3Store
from bottomless_core.writer import Writer
from tests.chains import T0, when
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db

NAME = "app.db"
STEP = 7  # seconds between the syncs of a history


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path / "backups", "bucket")
    s.create_bucket()
    return s


def once(db: Path, store: object, at: float, **options: object) -> ReplicateResult:
    opts = ReplicateOptions(clock=lambda: T0 + at, **options)  # type: ignore[arg-type]
    return replicate_once(db, store, NAME, opts)  # type: ignore[arg-type]


def history(db: Path, conn: sqlite3.Connection, store: object, syncs: int,
            **options: object) -> dict[int, dict]:
    """``syncs`` writes (updates of hot rows and inserts), one --once after each, STEP seconds
    apart; returns the state after each sync by its time."""
    insert_rows(conn, 20)
    states: dict[int, dict] = {}
    for i in range(syncs):
        conn.execute("UPDATE t SET v = ? WHERE id = ?", (f"v{i}" * 30, i % 20))
        if i % 3 == 0:
            insert_rows(conn, 5, start=1000 + i * 10, size=300)
        once(db, store, i * STEP, **options)
        states[i * STEP] = dump_conn(conn)
    return states


def newest(store: object) -> catalog.Generation:
    gen = catalog.newest_generation(store, NAME)  # type: ignore[arg-type]
    assert gen is not None
    return catalog.describe_generation(store, NAME, gen)  # type: ignore[arg-type]


def restored(store: object, out: Path, **kw: object) -> tuple[dict, object]:
    out.unlink(missing_ok=True)
    result = restore(store, NAME, out, **kw)  # type: ignore[arg-type]
    assert integrity(out) == "ok"
    return dump(out), result


def _state_at(states: dict[int, dict], t: float) -> dict:
    return states[max(k for k in states if k <= t)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    path = tmp_path / NAME
    conn = open_wal_db(path)
    yield path, conn
    conn.close()


def test_levels_newest_and_every_point_in_time(db: tuple[Path, sqlite3.Connection],
                                              store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    states = history(path, conn, store, 120, compaction_levels=(30, 300))
    g = newest(store)
    levels = {k.level for k, _ in g.packs}
    assert levels == {1, 2}, g.packs
    ones = sorted(k for k, _ in g.packs if k.level == 1)
    assert ones[0].first == 1
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(ones))
    # a pack ends at a commit and says so in its name, header and commit list
    key, obj = next((k, o) for k, o in g.packs if k.level == 2)
    index = pack.read_index(store.get(obj.key))
    assert (index.info.first_frame, index.info.last_frame) == (key.first, key.last)
    assert index.commits[-1] == (key.last, key.timestamp)
    assert index.info.last_stamp == key.timestamp
    got, result = restored(store, tmp_path / "r.db")
    assert got == dump_conn(conn)
    assert result.packs_applied >= 2 and result.batches_applied < 10  # not 120
    for t in range(0, 120 * STEP, 5):
        got, _ = restored(store, tmp_path / "r.db", utc_time=when(t))
        assert got == _state_at(states, t), t
    assert check_packs(store, [newest(store)]) == []


def test_nothing_is_compacted_twice_and_holes_wait(db: tuple[Path, sqlite3.Connection],
                                                  store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    history(path, conn, store, 40, compaction_levels=())
    g = newest(store)
    hole = g.batches[20][1].key
    store.delete_many([hole])  # a ship cut short
    g = newest(store)
    c = Compactor(Writer(store, NAME), (30, 300), clock=lambda: T0 + 1000)
    first = c.run(g)
    assert first.packs and max(k.last for k in first.packs) < g.batches[20][0].first
    assert c.run(newest(store)).packs == []  # sealed windows done; after the hole: waits
    got, _ = restored(store, tmp_path / "r.db")  # up to the hole (a warning), packs or not
    assert len(got["t"]) > 20


def test_a_compaction_cut_short_goes_on_where_it_stopped(
        db: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    class FailingUploads(FileStore):
        allowed = 1 << 30

        def upload(self, key, stream, metadata=None, on_progress=None):  # type: ignore[no-untyped-def]
            if layout.PackKey.parse(key.rsplit("/", 1)[-1]) is not None:
                if self.allowed <= 0:
                    raise StorageError("killed")
                self.allowed -= 1
            return super().upload(key, stream, metadata, on_progress)

    path, conn = db
    store = FailingUploads(tmp_path / "backups", "bucket")
    store.create_bucket()
    states = history(path, conn, store, 60, compaction_levels=())
    whole = Compactor(Writer(store, NAME), (30, 300), clock=lambda: T0 + 2000).run(
        newest(store))
    names = sorted(k.name for k in whole.packs)
    store.delete_many(newest(store).key(n) for n in names)
    for cut in (0, 3, 7):
        store.allowed = cut
        with pytest.raises(StorageError):
            Compactor(Writer(store, NAME), (30, 300), clock=lambda: T0 + 2000).run(
                newest(store))
        store.allowed = 1 << 30
        assert len(newest(store).packs) == cut
        got, _ = restored(store, tmp_path / "r.db")
        assert got == dump_conn(conn)
        Compactor(Writer(store, NAME), (30, 300), clock=lambda: T0 + 2000).run(newest(store))
        assert sorted(k.name for k, _ in newest(store).packs) == names  # the same, no more
        store.delete_many(newest(store).key(n) for n in names)
    for t in range(0, 60 * STEP, 17):
        got, _ = restored(store, tmp_path / "r.db", utc_time=when(t))
        assert got == _state_at(states, t)


@pytest.mark.libsql_exempt("drop_compacted_batches removes batches libSQL's restore needs; "
                           "docs/format.md says what it then loses")
def test_dropping_compacted_batches(db: tuple[Path, sqlite3.Connection], store: FileStore,
                                    tmp_path: Path) -> None:
    path, conn = db
    states = history(path, conn, store, 60, compaction_levels=(30, 300),
                     drop_compacted_batches=True)
    g = newest(store)
    ones = [k for k, _ in g.packs if k.level == 1]
    covered = max(k.last for k in ones)
    assert all(k.last > covered for k, _ in g.batches)  # the batches packs hold are gone
    got, result = restored(store, tmp_path / "r.db")
    assert got == dump_conn(conn) and result.damaged is None
    boundaries = sorted(k.timestamp for k in ones)
    for t in range(0, 60 * STEP, 11):
        got, result = restored(store, tmp_path / "r.db", utc_time=when(t))
        assert result.damaged is None  # a coarser point in time, not damage
        if t >= boundaries[-1]:
            continue
        # inside a window whose batches are gone: the state at the window's start
        start = max((b for b in boundaries if b <= t), default=None)
        assert got == (_state_at(states, start) if start is not None else got)
    # the next run does not take the removed batches for a hole to refill
    insert_rows(conn, 5, start=90_000)
    again = once(path, store, 60 * STEP + 30, compaction_levels=(30, 300),
                 drop_compacted_batches=True)
    assert not again.new_generation and "continues" in again.reason
    assert restored(store, tmp_path / "r.db")[0] == dump_conn(conn)


def test_damaged_packs_are_errors_and_verify_compares_them(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    import io

    from bottomless_core.errors import CorruptBackupError

    path, conn = db
    history(path, conn, store, 40, compaction_levels=(30, 300))
    g = newest(store)
    _, obj = max(g.packs, key=lambda p: p[0].last - p[0].first)
    original = store.get(obj.key)
    data = bytearray(original)
    offset, length = pack.read_index(original).group_range(0)
    data[offset + length // 2] ^= 0x10
    store.put(obj.key, bytes(data))
    with pytest.raises(CorruptBackupError, match="damaged page group"):
        restored(store, tmp_path / "r.db")
    problems = check_packs(store, [newest(store)])
    assert len(problems) == 1 and obj.key in problems[0]
    store.put(obj.key, original)
    assert check_packs(store, [newest(store)]) == []
    # a pack that decodes but holds a wrong page: a restore cannot tell, verify can
    index = pack.read_index(original)
    forged = [(p, bytes(b) if i else bytes(len(b)))
              for i, (p, b) in enumerate(pack.iter_pages(original))]
    out = io.BytesIO()
    pack.write_pack(out, index.info, forged, index.commits)
    store.put(obj.key, out.getvalue())
    problems = check_packs(store, [newest(store)])
    assert len(problems) == 1 and "differs from the batches" in problems[0], problems


def test_cli_once_compacts_and_ls_says_what_a_restore_fetches(run: Cli, tmp_path: Path,
                                                             storage: S3Store) -> None:
    db = tmp_path / NAME
    conn = open_wal_db(db)
    states = history(db, conn, storage, 40, compaction_levels=(30, 300))
    facts = run("--db-name", NAME, "ls", "-v", "--json").stdout
    import json

    (f,) = json.loads(facts)
    assert f["page_packs"]["L1"] >= 5 and f["page_packs"]["L2"] >= 1
    plan = f["restore_fetches"]
    assert plan["packs"] >= 2 and plan["objects"] < 15 and plan["batches"] < 10
    out = tmp_path / "r.db"
    res = run("--db-name", NAME, "restore", "-o", str(out))
    assert "page packs" in res.stdout and dump(out) == dump_conn(conn)
    at = 20 * STEP + 3
    out.unlink()
    run("--db-name", NAME, "restore", "-o", str(out), "--utc-time",
        when(at).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert dump(out) == _state_at(states, at)
    assert "integrity ok" in run("--db-name", NAME, "verify").stdout
    conn.close()
