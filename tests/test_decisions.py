"""The core's decisions, fast, against the file backend (real databases, real syncs, a bucket
that is a directory): what replicate does with the newest generation, what rm removes and
keeps, which chain restore uses. Plus the CLI end to end with ``-e file://``."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import bottomless_cli.context
from bottomless_cli.main import cli
from bottomless_core import catalog, layout
from bottomless_core.catalog import BASE_METADATA, PARENT_FRAMES_METADATA
from bottomless_core.errors import (
    CorruptBackupError,
    LeaseHeldError,
    NotFoundError,
    StorageError,
)
from bottomless_core.lease import LeaseRecord, lease_key, system_id, writer_identity
from bottomless_core.replicator import (
    ONCE_SNAPSHOT_MIN_WAL,
    ReplicateOptions,
    ReplicateResult,
    replicate_once,
)
from bottomless_core.restore import plan_restore
from bottomless_core.retention import plan_removal, remove_generations
from bottomless_core.store.files import FileStore
from tests.chains import T0, Driver, when
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db

ROOT = Path(__file__).resolve().parent.parent
NAME = "app.db"


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path / "backups", "bucket")
    s.create_bucket()
    return s


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database held open by its application (so that nothing checkpoints on close)."""
    path = tmp_path / NAME
    conn = open_wal_db(path)
    insert_rows(conn, 20)
    yield path, conn
    conn.close()


def once(path: Path, store: FileStore, at: float = 0.0, name: str = NAME,
         **options: int) -> ReplicateResult:
    """replicate --once with the clock at T0 + ``at`` (without compaction unless asked: these
    tests look at the batches; tests/test_compaction.py at the packs)."""
    options.setdefault("compaction_levels", ())  # type: ignore[arg-type]
    opts = ReplicateOptions(clock=lambda: T0 + at, **options)  # type: ignore[arg-type]
    return replicate_once(path, store, name, opts)


def newest(store: FileStore, name: str = NAME) -> catalog.Generation:
    gen = catalog.newest_generation(store, name)
    assert gen is not None
    return catalog.describe_generation(store, name, gen)


def restart_wal(conn: sqlite3.Connection, rows_from: int) -> None:
    """The application checkpoints (while no replicator runs) and writes again."""
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    insert_rows(conn, 5, start=rows_from)


def restored(store: FileStore, out: Path, **kwargs: object) -> dict:
    from bottomless_core.restore import restore

    out.unlink(missing_ok=True)
    restore(store, NAME, out, **kwargs)  # type: ignore[arg-type]
    assert integrity(out) == "ok"
    return dump(out)


# --- replicate: the decision table -----------------------------------------------------------

def test_first_backup_then_continue_then_nothing(db: tuple[Path, sqlite3.Connection],
                                                 store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    first = once(path, store)
    assert first.new_generation and first.reason == "no generation in the bucket yet"
    g = newest(store)
    assert g.id == first.generation and g.snapshot is not None and g.complete
    assert g.parent is None and not store.exists(g.key(layout.DEPENDENCY))
    assert g.last_frame == first.wal_frames > 0

    insert_rows(conn, 10, start=100)
    more = once(path, store, 10)
    assert not more.new_generation and more.generation == first.generation
    assert more.reason == "local WAL continues the newest generation"
    assert more.frames_shipped > 0 and more.last_frame == more.wal_frames

    idle = once(path, store, 20)
    assert not idle.uploaded_anything and idle.last_frame == more.last_frame
    assert restored(store, tmp_path / "r.db") == dump_conn(conn)


@pytest.mark.parametrize("writes_after", [True, False])
def test_checkpoint_the_replicator_did_not_see_starts_a_generation(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path,
        writes_after: bool) -> None:
    path, conn = db
    first = once(path, store)
    if writes_after:
        restart_wal(conn, 100)
    else:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    second = once(path, store, 10)
    assert second.new_generation and second.snapshot_bytes > 0
    assert second.reason == ("WAL was restarted (checkpoint) since the last run" if writes_after
                             else "WAL was checkpointed away since the last run")
    g = newest(store)
    assert g.parent == first.generation and g.own_base  # .dep says: its own snapshot
    got = store.get_with_metadata(g.key(layout.DEPENDENCY))
    assert got is not None and got[1].get(BASE_METADATA) == "snapshot"
    assert restored(store, tmp_path / "r.db") == dump_conn(conn)


def _generation_with_a_gap(path: Path, conn: sqlite3.Connection, store: FileStore,
                           ) -> catalog.Generation:
    once(path, store, max_batch_frames=2)
    insert_rows(conn, 40, start=100, size=400)
    once(path, store, 10, max_batch_frames=2)
    g = newest(store)
    assert len(g.batches) >= 3
    store.delete_many([g.batches[1][1].key])
    return g


def test_gap_is_refilled_while_the_wal_still_holds_it(db: tuple[Path, sqlite3.Connection],
                                                      store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    g = _generation_with_a_gap(path, conn, store)
    insert_rows(conn, 5, start=500)
    result = once(path, store, 20)
    assert not result.new_generation and result.generation == g.id
    assert result.reason == f"refills a gap in generation {g.id}"
    again = newest(store)
    assert again.contiguous_frame == again.last_frame
    assert restored(store, tmp_path / "r.db") == dump_conn(conn)


def _ranges(g: catalog.Generation) -> list[tuple[int, int]]:
    return [(k.first, k.last) for k, _ in g.batches]


def _no_overlaps(g: catalog.Generation) -> None:
    """Batches follow each other exactly (libSQL's restore stops at one that does not)."""
    ranges = _ranges(g)
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), ranges
    assert ranges[0][0] == 1


def test_refill_ships_only_the_missing_frames(db: tuple[Path, sqlite3.Connection],
                                             store: FileStore) -> None:
    """Issue 15: the refill used to re-ship every frame after the hole under a new stamp, so
    two batches held the same frames and libSQL's restore stopped at the second (silently,
    132 of 160 rows). Now exactly the hole is shipped, stamped no later than the batch after
    it (stamps keep growing in listing order)."""
    path, conn = db
    g = _generation_with_a_gap(path, conn, store)
    lost = g.batches[1][0]
    once(path, store, 20)
    again = newest(store)
    _no_overlaps(again)
    refill = next(k for k, _ in again.batches if k.first == lost.first)
    assert (refill.first, refill.last) == (lost.first, lost.last)
    assert refill.timestamp <= again.batches[2][0].timestamp
    stamps = [k.timestamp for k, _ in again.batches]
    assert stamps == sorted(stamps)


class _FailingPuts(FileStore):
    """A bucket whose ``put`` fails after ``allowed`` more calls (a process killed mid-ship)."""

    allowed = 1 << 30

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        if layout.BatchKey.parse(key.rsplit("/", 1)[-1]) is not None:
            if self.allowed <= 0:
                raise StorageError("killed")
            self.allowed -= 1
        return super().put(key, data, metadata, if_match=if_match,
                           if_none_match=if_none_match)


def test_refill_cut_short_at_every_batch_leaves_no_overlap(tmp_path: Path) -> None:
    """The refill is one PUT per missing batch: cut after any of them, the bucket still has
    no overlapping ranges, the next run finishes it, and the restore is the whole WAL."""
    for cut in range(4):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        path = root / NAME
        conn = open_wal_db(path)
        insert_rows(conn, 20)
        store = _FailingPuts(root / "backups", "bucket")
        store.create_bucket()
        once(path, store, max_batch_frames=2)
        insert_rows(conn, 40, start=100, size=400)
        once(path, store, 10, max_batch_frames=2)
        g = newest(store)
        holes = [g.batches[i][1].key for i in (1, 3, 5)]  # three holes, like parallel uploads
        store.delete_many(holes)
        store.allowed = cut
        with contextlib.suppress(StorageError):
            once(path, store, 20, max_batch_frames=2)
        store.allowed = 1 << 30
        ranges = _ranges(newest(store))
        assert all(b[0] > a[1] for a, b in itertools.pairwise(ranges)), ranges
        once(path, store, 30, max_batch_frames=2)
        _no_overlaps(newest(store))
        assert restored(store, root / "r.db") == dump_conn(conn)
        conn.close()


@pytest.mark.libsql_exempt("an overlapping batch put by hand, as older versions refilled: "
                           "libSQL stops at it (which is why verify reports it)")
def test_overlapping_batches_restore_once_and_verify_reports_them(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    """A bucket written by an older version (a refill that repeated frames): restore applies
    them once and says so; verify calls it damage (libSQL's restore stops there)."""
    from bottomless_core.restore import restore

    path, conn = db
    g = _generation_with_a_gap(path, conn, store)
    once(path, store, 20)  # refilled: no overlap now, so make one as the old code did
    k, _info = newest(store).batches[1]
    repeat = layout.BatchKey(k.first, newest(store).batches[2][0].last, k.timestamp + 5,
                             k.codec)
    from bottomless_core.codec import compress, decompress

    frames = b"".join(decompress(store.get(i.key), key.codec)
                      for key, i in newest(store).batches[1:3])
    store.put(g.key(repeat.name), compress(frames, repeat.codec))
    out = tmp_path / "o.db"
    result = restore(store, NAME, out)
    assert result.overlaps and result.overlap_note in result.warnings
    assert dump(out) == dump_conn(conn)
    root = store.dir.parent
    res = _cli("-e", f"file://{root}", "-b", "bucket", "--db-name", NAME, "verify", code=1)
    assert "overlap" in res.stderr, res.stderr


def test_generation_times_are_whole_seconds_at_or_after_the_snapshot(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    """Issue 15: libSQL compares generation times in whole seconds; a snapshot generation
    made at T0+0.4 carried T0+0.4 and was taken for a restore at T0 (with 32 later commits).
    Every generation we create now has a whole-second time at or after what it holds, and
    our restore compares the same way (a generation of second S is chosen at T = S)."""
    path, conn = db
    first = once(path, store, 0.4)
    assert layout.generation_time(first.generation) == when(1)
    insert_rows(conn, 5, start=900)
    restart_wal(conn, 950)
    second = once(path, store, 1.2)  # same second as the first's time: one second later
    assert second.new_generation
    assert layout.generation_time(second.generation) == when(2)
    assert str(second.generation) < str(first.generation)
    with pytest.raises(NotFoundError):
        restored(store, tmp_path / "r.db", utc_time=when(0))
    assert plan_restore(store, NAME, utc_time=when(1)).generation.id == first.generation
    assert plan_restore(store, NAME, utc_time=when(2)).generation.id == second.generation
    assert restored(store, tmp_path / "r.db", utc_time=when(2)) == dump_conn(conn)


def test_child_of_a_removed_parent_gets_a_snapshot(tmp_path: Path, store: FileStore) -> None:
    """Issue 16: ``rm -g --force`` of the newest generation between our checkpoint and the
    next write used to leave a child whose parent was gone (restore failed, children piled
    up on it). The daemon now checks the parent before the child and takes a snapshot."""
    path = tmp_path / NAME
    conn = open_wal_db(path)
    d = Driver(path, store)
    dropped: list[uuid.UUID] = []
    d.replicator.on_child_dropped = dropped.append
    try:
        insert_rows(conn, 10)
        parent = d.at(0).sync()
        outcome = d.at(10).checkpoint()
        remove_generations(store, NAME, plan_removal(store, NAME, generation=parent.generation,
                                                     force=True))
        insert_rows(conn, 5, start=100)
        result = d.at(20).sync()
        assert result.new_generation and not result.snapshotless, result
        assert result.reason == (f"generation {parent.generation} was removed from the bucket "
                                 "before its child was written")
        assert dropped == [outcome.child]
        g = newest(store)
        assert g.snapshot is not None and g.parent is None
        assert restored(store, tmp_path / "r.db") == dump_conn(conn)
        insert_rows(conn, 5, start=200)
        d.at(30).sync()
        assert restored(store, tmp_path / "r.db") == dump_conn(conn)
    finally:
        d.close()
        conn.close()


def test_once_takes_a_snapshot_past_the_wal_fraction(db: tuple[Path, sqlite3.Connection],
                                                     store: FileStore, tmp_path: Path) -> None:
    """Issue 17: cron runs on a WAL that is never checkpointed used to continue one
    generation for ever, so a restore replayed everything since its snapshot; the daemon's
    WAL-fraction rule now applies to --once too (a generation with a fresh snapshot)."""
    path, conn = db
    first = once(path, store, snapshot_wal_fraction=0.5)
    size = path.stat().st_size
    rows = 0
    while True:
        insert_rows(conn, 50, start=1000 + rows, size=4000)
        rows += 50
        result = once(path, store, 10 + rows, snapshot_wal_fraction=0.5)
        if result.new_generation:
            break
        assert result.generation == first.generation and rows < 3000
    assert "bytes of WAL since the last snapshot" in result.reason
    # not before the WAL is worth a snapshot (a small database is not snapshotted every run)
    assert path.with_name(NAME + "-wal").stat().st_size >= ONCE_SNAPSHOT_MIN_WAL
    g = newest(store)
    assert g.snapshot is not None and g.parent == first.generation and g.own_base
    assert restored(store, tmp_path / "r.db") == dump_conn(conn)
    assert path.stat().st_size + path.with_name(NAME + "-wal").stat().st_size > 1.4 * size


def test_gap_the_wal_no_longer_holds_starts_a_generation(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    g = _generation_with_a_gap(path, conn, store)
    restart_wal(conn, 1000)
    result = once(path, store, 20)
    assert result.new_generation
    assert result.reason == f"generation {g.id} has a gap in its WAL batches"
    old = catalog.describe_generation(store, NAME, g.id)
    assert old.last_frame == old.contiguous_frame  # the batches after the gap are gone
    assert restored(store, tmp_path / "r.db") == dump_conn(conn)


def test_incomplete_newest_starts_a_generation(db: tuple[Path, sqlite3.Connection],
                                               store: FileStore) -> None:
    path, conn = db
    first = once(path, store)
    store.delete_many([newest(store).key(layout.META)])
    insert_rows(conn, 5, start=100)
    result = once(path, store, 10)
    assert result.new_generation
    assert result.reason == f"generation {first.generation} is incomplete (no .meta)"


def test_fewer_local_frames_than_shipped_starts_a_generation(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    """An older copy of the database put back (same WAL header, fewer frames)."""
    path, conn = db
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{path}{suffix}", copy / f"{NAME}{suffix}")
    expected = dump_conn(conn)
    insert_rows(conn, 30, start=100, size=1000)
    shipped = once(path, store)
    conn.close()
    for suffix in ("", "-wal"):
        shutil.copyfile(copy / f"{NAME}{suffix}", f"{path}{suffix}")
    Path(f"{path}-shm").unlink(missing_ok=True)
    app = sqlite3.connect(path)  # held: the replicator's connection is not the last one
    try:
        result = once(path, store, 10)
        assert result.new_generation
        assert result.reason == (f"local WAL has {result.wal_frames} committed frames, bucket "
                                 f"has {shipped.last_frame}")
        assert 0 < result.wal_frames < shipped.last_frame
        assert restored(store, tmp_path / "r.db") == expected
    finally:
        app.close()


def test_unchanged_database_file_adopts_a_new_wal(tmp_path: Path, store: FileStore) -> None:
    """Backed up with an empty WAL: later runs continue the same generation as long as the
    main file is still the snapshot, whatever WAL follows."""
    path = tmp_path / NAME
    conn = open_wal_db(path)
    try:
        insert_rows(conn, 20)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        first = once(path, store)
        assert first.new_generation and first.wal_frames == 0
        again = once(path, store, 10)
        assert not again.uploaded_anything
        assert again.reason == "database file unchanged since the newest snapshot"
        insert_rows(conn, 5, start=100)
        third = once(path, store, 20)
        assert not third.new_generation and third.frames_shipped > 0
        assert third.reason == "database file unchanged since the newest snapshot"
        g = newest(store)
        assert g.meta is not None and g.meta.checksum != (0, 0)  # rewritten for the new WAL
        assert restored(store, tmp_path / "r.db") == dump_conn(conn)
    finally:
        conn.close()


def test_another_database_file_under_the_same_name_starts_cleanly(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    other = tmp_path / "elsewhere" / NAME
    other.parent.mkdir()
    other_conn = open_wal_db(other)
    insert_rows(other_conn, 3)
    try:
        once(other, store)  # the other file wrote last (and released its lease)
        result = once(path, store, 10)
        assert result.new_generation and result.reason.startswith(
            f"the newest generation was written by {socket.gethostname()}:{other}")
        assert newest(store).parent is None  # no .dep: not a continuation of the other file
        insert_rows(conn, 5, start=100)
        assert once(path, store, 20).reason == "local WAL continues the newest generation"
    finally:
        other_conn.close()


def test_foreign_writer_in_the_lease(db: tuple[Path, sqlite3.Connection],
                                     store: FileStore) -> None:
    path, _ = db
    now = time.time()
    live = LeaseRecord("otherhost:/srv/app.db", 4242, "t0", now + 60, now)
    store.put(lease_key(NAME), live.encode())
    with pytest.raises(LeaseHeldError, match=r"otherhost:/srv/app.db \(pid 4242\)"):
        once(path, store)
    assert catalog.newest_generation(store, NAME) is None
    expired = LeaseRecord("otherhost:/srv/app.db", 4242, "t0", now - 1, now - 61)
    store.put(lease_key(NAME), expired.encode())
    result = once(path, store)
    assert result.new_generation and "written by otherhost:/srv/app.db" in result.reason
    record = LeaseRecord.decode(store.get(lease_key(NAME)))
    assert record is not None and record.writer.endswith(str(path)) and record.expires == 0


def test_live_lease_of_the_same_host_and_path(db: tuple[Path, sqlite3.Connection],
                                              store: FileStore) -> None:
    """Same host name and path is not enough to take a live lease (cloned machines, one
    hostname for several containers): only a holder that is provably dead on this system."""
    path, _ = db
    me = writer_identity(path.resolve())
    now = time.time()
    elsewhere = LeaseRecord(me, 4242, "t0", now + 60, now, "another-boot/pid:[1]")
    store.put(lease_key(NAME), elsewhere.encode())
    with pytest.raises(LeaseHeldError, match="pid 4242"):
        once(path, store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive_here = LeaseRecord(me, sleeper.pid, "t1", now + 60, now, system_id())
        store.put(lease_key(NAME), alive_here.encode())
        with pytest.raises(LeaseHeldError, match=f"pid {sleeper.pid}"):
            once(path, store)
    finally:
        sleeper.kill()
        sleeper.wait()
    dead_here = LeaseRecord(me, sleeper.pid, "t1", now + 60, now, system_id())
    store.put(lease_key(NAME), dead_here.encode())  # a daemon killed and restarted
    assert once(path, store).new_generation
    assert catalog.newest_generation(store, NAME) is not None


def test_child_after_our_checkpoint_then_removed_generation(tmp_path: Path,
                                                            store: FileStore) -> None:
    path = tmp_path / NAME
    conn = open_wal_db(path)
    d = Driver(path, store)
    try:
        insert_rows(conn, 10)
        parent = d.at(0).sync()
        d.at(10).checkpoint()
        quiet = d.at(15).sync()
        assert not quiet.new_generation
        assert quiet.reason == "no new WAL cycle since our checkpoint"
        insert_rows(conn, 5, start=100)
        child = d.at(20).sync()
        assert child.new_generation and child.snapshotless
        assert child.reason == "continues its parent after our checkpoint"
        g = newest(store)
        assert g.snapshot is None and g.parent == parent.generation
        assert g.parent_frames is not None and g.parent_frames > 0
        got = store.get_with_metadata(g.key(layout.DEPENDENCY))
        assert got is not None and PARENT_FRAMES_METADATA in got[1]
        assert restored(store, tmp_path / "r.db") == dump_conn(conn)

        # rm -g of the generation being written: the next sync starts another one
        assert not plan_removal(store, NAME, generation=g.id).remove  # the newest: --force
        remove_generations(store, NAME, plan_removal(store, NAME, generation=g.id,
                                                     force=True))
        insert_rows(conn, 5, start=200)
        again = d.at(30).sync()
        assert again.new_generation
        assert again.reason == f"generation {g.id} was removed from the bucket"
        assert [x for x in catalog.list_generations(store, NAME)] == [again.generation,
                                                                      parent.generation]
        assert restored(store, tmp_path / "r.db") == dump_conn(conn)
    finally:
        d.close()
        conn.close()


# --- generations to plan with ------------------------------------------------------------------

def snapshot_generations(path: Path, conn: sqlite3.Connection, store: FileStore,
                         times: list[float]) -> list[uuid.UUID]:
    """One generation with a snapshot at each T0 + t (the app checkpoints in between);
    returned oldest first."""
    gens = []
    for i, t in enumerate(times):
        if i:
            restart_wal(conn, 1000 * i)
        result = once(path, store, t)
        assert result.new_generation
        gens.append(result.generation)
    return gens


def chain_generations(path: Path, conn: sqlite3.Connection, store: FileStore,
                      children: int) -> list[uuid.UUID]:
    """G0 with a snapshot at T0, then snapshot-less children made by our checkpoints at
    k*100+20 (each ships at k*100+50); oldest first."""
    d = Driver(path, store)
    try:
        gens = [d.at(0).sync().generation]
        for k in range(1, children + 1):
            d.at(k * 100 + 20).checkpoint()
            insert_rows(conn, 5, start=k * 1000)
            result = d.at(k * 100 + 50).sync()
            assert result.snapshotless
            gens.append(result.generation)
        return gens
    finally:
        d.close()


def fake_generation(store: FileStore, at: float, snapshot: bool,
                    parent: uuid.UUID | None = None) -> uuid.UUID:
    """The objects of a generation, written by hand (contents that plans never read)."""
    gen = layout.new_generation_id(int((T0 + at) * 1e9))
    store.put(layout.object_key(NAME, gen, layout.META), layout.Meta(4096, (1, 2)).encode())
    if snapshot:
        store.put(layout.object_key(NAME, gen, "db.zstd"), b"image")
    if parent is not None:
        store.put(layout.object_key(NAME, gen, layout.DEPENDENCY), parent.bytes)
    return gen


def dead(tomb: int | None, gens: list[uuid.UUID]) -> list[uuid.UUID]:
    return [g for g in gens if catalog.is_dead(tomb, g)]


# --- rm: retention plans ----------------------------------------------------------------------

def test_the_newest_generation_is_always_kept(db: tuple[Path, sqlite3.Connection],
                                              store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = snapshot_generations(path, conn, store, [0, 100, 200])
    plan = plan_removal(store, NAME, older_than=when(10_000))
    assert plan.remove == [g1, g0]
    assert plan.keep == [(g2, "it is the newest generation")]
    assert dead(plan.tombstone, [g0, g1, g2]) == [g0, g1]
    plan = plan_removal(store, NAME, keep_last=1)
    assert plan.remove == [g1, g0] and not plan.keep


def test_older_than_keeps_the_generation_that_covers_the_date(
        db: tuple[Path, sqlite3.Connection], store: FileStore, tmp_path: Path) -> None:
    path, conn = db
    g0, g1, g2, g3 = snapshot_generations(path, conn, store, [0, 100, 200, 300])
    plan = plan_removal(store, NAME, older_than=when(150))
    assert plan.remove == [g0]
    assert [g for g, _ in plan.keep] == [g1] and "covers" in plan.keep[0][1]
    assert dead(plan.tombstone, [g0, g1, g2, g3]) == [g0]
    # created exactly at the date: it covers it, and is not "older than" it
    plan = plan_removal(store, NAME, older_than=layout.generation_time(g1))
    assert plan.remove == [g0] and plan.keep == []
    remove_generations(store, NAME, plan_removal(store, NAME, older_than=when(150)))
    assert list(catalog.list_generations(store, NAME)) == [g3, g2, g1]
    assert catalog.read_tombstone(store, NAME) is None  # deleted once the removal is done
    assert plan_restore(store, NAME, utc_time=when(150)).generation.id == g1


def test_keep_last(db: tuple[Path, sqlite3.Connection], store: FileStore) -> None:
    path, conn = db
    g0, g1, g2, g3 = snapshot_generations(path, conn, store, [0, 100, 200, 300])
    plan = plan_removal(store, NAME, keep_last=2)
    assert plan.remove == [g1, g0] and plan.keep == []
    assert dead(plan.tombstone, [g0, g1, g2, g3]) == [g0, g1]
    assert plan_removal(store, NAME, keep_last=10).remove == []
    result = remove_generations(store, NAME, plan)
    assert result.generations == 2 and result.objects > 0
    assert list(catalog.list_generations(store, NAME)) == [g3, g2]
    assert not any(store.dir.glob(f"{NAME}-{g0}*"))  # the emptied directory went too


def test_dependencies_of_snapshotless_chains_are_kept(db: tuple[Path, sqlite3.Connection],
                                                      store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = chain_generations(path, conn, store, 2)
    plan = plan_removal(store, NAME, generation=g0)
    assert plan.remove == [] and plan.tombstone is None
    assert plan.keep == [(g0, f"generation {g2} has no snapshot and restores through it")]
    plan = plan_removal(store, NAME, older_than=when(10_000))
    assert plan.remove == [] and plan.tombstone is None
    assert [g for g, _ in plan.keep] == [g2, g1, g0]
    plan = plan_removal(store, NAME, generation=g2)  # the newest: only with force
    assert plan.remove == [] and [g for g, _ in plan.keep] == [g2]
    plan = plan_removal(store, NAME, generation=g2, force=True)  # nothing restores through it
    assert plan.remove == [g2] and plan.keep == []


def test_the_tombstone_never_covers_a_kept_generation(store: FileStore) -> None:
    """The newest restores through the oldest, past a generation that may go: no tombstone
    can cover the one in the middle without covering the oldest too."""
    old = fake_generation(store, 0, snapshot=True)
    middle = fake_generation(store, 100, snapshot=True)
    new = fake_generation(store, 200, snapshot=False, parent=old)
    plan = plan_removal(store, NAME, keep_last=1)
    assert plan.remove == [middle]
    assert plan.keep == [(old, f"generation {new} has no snapshot and restores through it")]
    assert plan.tombstone is None or not catalog.is_dead(plan.tombstone, old)
    remove_generations(store, NAME, plan)
    assert [g.id for g in plan_restore(store, NAME).chain] == [old, new]
    # a removal interrupted after its tombstone is finished by the next one
    older = fake_generation(store, -100, snapshot=True)
    store.put(layout.tombstone_key(NAME), layout.encode_tombstone(int(T0 - 50)))
    plan = plan_removal(store, NAME, keep_last=10)
    assert plan.remove == [older] and not catalog.is_dead(plan.tombstone, old)


# --- restore: which chain ---------------------------------------------------------------------

def test_restore_picks_the_newest_a_given_one_or_one_by_time(
        db: tuple[Path, sqlite3.Connection], store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = snapshot_generations(path, conn, store, [0, 100, 200])
    assert [g.id for g in plan_restore(store, NAME).chain] == [g2]
    assert [g.id for g in plan_restore(store, NAME, generation=g0).chain] == [g0]
    assert plan_restore(store, NAME, utc_time=when(150)).generation.id == g1
    created = layout.generation_time(g1)  # the whole second at or after T0 + 100
    assert created == when(100)
    assert plan_restore(store, NAME, utc_time=created).generation.id == g1  # at, or before
    assert plan_restore(store, NAME, utc_time=created - timedelta(microseconds=1)
                        ).generation.id == g0
    with pytest.raises(NotFoundError, match=r"no generation of 'app\.db' created at or before"):
        plan_restore(store, NAME, utc_time=when(-1))
    with pytest.raises(NotFoundError, match=rf"generation {uuid.UUID(int=7)} of 'app\.db' not "
                                            r"found in bucket 'bucket'"):
        plan_restore(store, NAME, generation=uuid.UUID(int=7))
    store.put(layout.tombstone_key(NAME), layout.encode_tombstone(int(T0 + 100)))
    with pytest.raises(NotFoundError, match="deleted \\(tombstone\\)"):
        plan_restore(store, NAME, generation=g1)
    with pytest.raises(NotFoundError):  # everything at or before that time is dead
        plan_restore(store, NAME, utc_time=when(150))
    assert plan_restore(store, NAME).generation.id == g2


def test_restore_follows_a_chain_to_its_snapshot(db: tuple[Path, sqlite3.Connection],
                                                 store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = chain_generations(path, conn, store, 2)
    assert [g.id for g in plan_restore(store, NAME).chain] == [g0, g1, g2]
    assert [g.id for g in plan_restore(store, NAME, generation=g1).chain] == [g0, g1]
    # after G1 started (at 120), before its first batch: G1 is chosen, through G0
    assert [g.id for g in plan_restore(store, NAME, utc_time=when(130)).chain] == [g0, g1]
    assert plan_restore(store, NAME, utc_time=when(119)).generation.id == g0


def test_incomplete_generations_are_skipped_or_used_alone(
        db: tuple[Path, sqlite3.Connection], store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = chain_generations(path, conn, store, 2)
    store.delete_many([layout.object_key(NAME, g2, layout.META)])
    plan = plan_restore(store, NAME)
    assert [g.id for g in plan.chain] == [g0, g1]
    assert plan.notes == [f"skipped generation {g2}: incomplete (its creation was "
                          "interrupted)"]
    with pytest.raises(CorruptBackupError, match=f"generation {g2} is incomplete"):
        plan_restore(store, NAME, generation=g2)
    # an incomplete one with a snapshot: that snapshot alone
    restart_wal(conn, 5000)
    g3 = once(path, store, 1000).generation
    store.delete_many([layout.object_key(NAME, g3, layout.META)])
    plan = plan_restore(store, NAME)
    assert [g.id for g in plan.chain] == [g3]
    assert plan.notes == [f"generation {g3} is incomplete (its creation was interrupted): "
                          "its snapshot is used alone"]


def test_a_missing_parent_is_an_error_naming_it(db: tuple[Path, sqlite3.Connection],
                                                store: FileStore) -> None:
    path, conn = db
    g0, g1, g2 = chain_generations(path, conn, store, 2)
    store.delete_many(o.key for o in store.list_objects(layout.generation_prefix(NAME, g1)))
    with pytest.raises(CorruptBackupError) as err:
        plan_restore(store, NAME)
    assert str(err.value) == (f"generation {g2} restores through {g1}, which is missing from "
                              f"the bucket ({layout.generation_prefix(NAME, g1)})")
    assert [g.id for g in plan_restore(store, NAME, generation=g0).chain] == [g0]


def test_a_missing_own_snapshot_is_an_error_naming_it(db: tuple[Path, sqlite3.Connection],
                                                      store: FileStore) -> None:
    """A generation that starts from its own snapshot never falls back to its parent."""
    path, conn = db
    once(path, store)
    restart_wal(conn, 100)
    g = once(path, store, 10).generation
    key = layout.object_key(NAME, g, "db.zstd")
    store.delete_many([key])
    with pytest.raises(CorruptBackupError, match=f"starts from its own snapshot, which is "
                                                 f"missing \\({key}\\)"):
        plan_restore(store, NAME)


# --- the CLI with -e file:// ------------------------------------------------------------------

def _cli(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), env={"LIBSQL_BOTTOMLESS_ENDPOINT": None,
                                                      "LIBSQL_BOTTOMLESS_BUCKET": None},
                                catch_exceptions=False)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result


def test_cli_round_trip_with_a_file_endpoint(db: tuple[Path, sqlite3.Connection],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_s3(*_: object, **__: object) -> None:
        raise AssertionError("a file: endpoint must not build an S3 client")

    monkeypatch.setattr(bottomless_cli.context, "S3Store", no_s3)
    path, conn = db
    endpoint = (tmp_path / "backups").as_uri()
    g = ["-e", endpoint, "-b", "bk", "-d", str(path)]
    missing = _cli(*g, "replicate", "--once", code=1)
    assert missing.stderr.startswith(f"error: bucket 'bk' does not exist at {endpoint}")
    out = _cli(*g, "replicate", "--once", "--create-bucket").stdout
    assert "new generation" in out
    insert_rows(conn, 50, start=100)
    assert "shipped" in _cli(*g, "replicate", "--once").stdout
    expected = dump_conn(conn)

    restored_db = tmp_path / "restored.db"
    out = _cli(*g, "restore", "-o", str(restored_db)).stdout
    assert out.startswith(f"restored {restored_db} from generation")
    assert dump(restored_db) == expected and integrity(restored_db) == "ok"
    assert "verified generation" in _cli(*g, "verify").stdout
    gens = _cli(*g, "ls").stdout.split()
    facts = json.loads(_cli(*g, "ls", "-v", "--json").stdout)
    assert [f["generation"] for f in facts] == gens and len(gens) == 1
    assert "already has a snapshot" in _cli(*g, "snapshot").stdout

    # a relative file: endpoint is relative to the working directory
    monkeypatch.chdir(tmp_path)
    rel = ["-e", "file:backups", "-b", "bk", "--db-name", NAME]
    assert _cli(*rel, "ls").stdout.split() == gens
    restart_wal(conn, 500)
    _cli(*g, "replicate", "--once")
    out = _cli(*rel, "rm", "--keep-last", "1", "-v").stdout
    assert f"removed {gens[0]}" in out
    assert len(_cli(*rel, "ls").stdout.split()) == 1
    _cli(*rel, "restore", "-o", str(restored_db), "--force")
    assert dump(restored_db) == dump_conn(conn)


def wait_for(status: Path, check: Callable[[dict], bool]) -> None:
    """Until the daemon's status file says everything committed is shipped and ``check``."""
    state = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = json.loads(status.read_text())["databases"][0]
        except (FileNotFoundError, ValueError, KeyError, IndexError):
            state = None
        if state and state["lag_seconds"] == 0 and check(state):
            return
        time.sleep(0.05)
    raise AssertionError(f"the daemon did not get there: {state}")


def test_daemon_with_a_file_endpoint(db: tuple[Path, sqlite3.Connection],
                                     tmp_path: Path) -> None:
    path, conn = db
    store = FileStore(tmp_path / "backups", "bk")
    store.create_bucket()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIBSQL_BOTTOMLESS_ENDPOINT":
           store.root.as_uri(), "LIBSQL_BOTTOMLESS_BUCKET": "bk"}
    status = tmp_path / "status.json"
    proc = subprocess.Popen([sys.executable, "-m", "bottomless_cli.main", "-d", str(path),
                             "replicate", "--interval", "0.1", "--checkpoint-pages", "20",
                             "--status-file", str(status)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i in range(5):
            insert_rows(conn, 20, start=100 + i * 100, size=500)
            time.sleep(0.15)
        wait_for(status, lambda s: s["checkpoints"] > 0)
        insert_rows(conn, 5, start=1000)  # the first write after its checkpoint: a child
        wait_for(status, lambda s: s["generations_started"] >= 2)
        expected = dump_conn(conn)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(list(catalog.list_generations(store, NAME))) >= 2  # after its checkpoints
    assert restored(store, tmp_path / "r.db") == expected
