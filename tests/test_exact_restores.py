"""Restores that are exact: a point in time never includes a later commit, and a snapshot is
a consistent database on its own (issue 11, items 13 and 14)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bottomless_core import catalog, layout
from bottomless_core.codec import decompress
from bottomless_core.replicator import ReplicateOptions
from bottomless_core.restore import restore
from bottomless_core.store.s3 import S3Store
from tests.chains import T0, Driver, iso
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db
from tests.procs import lines


def _restore(run: Cli, out: Path, *args: str) -> dict:
    out.unlink(missing_ok=True)
    run("--db-name", "app.db", "restore", "-o", str(out), *args)
    assert integrity(out) == "ok"
    return dump(out)


def test_point_in_time_never_includes_a_later_commit(run: Cli, tmp_path: Path,
                                                     storage: S3Store) -> None:
    """A commit shipped at s + 0.9 may have been made at s + 0.5: its batch is stamped s + 1,
    so a restore at s + 0.3 leaves it out and a restore at s + 1 has it."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    d = Driver(db, storage)
    insert_rows(conn, 10)
    assert d.at(0).sync().new_generation
    before = dump_conn(conn)
    insert_rows(conn, 10, start=100)
    assert d.at(10.9).sync().frames_shipped > 0
    after = dump_conn(conn)
    d.close()
    conn.close()
    gen = catalog.newest_generation(storage, "app.db")
    assert gen is not None
    stamps = [k.timestamp for k, _ in catalog.describe_generation(storage, "app.db",
                                                                   gen).batches]
    assert stamps[-1] == T0 + 11, stamps
    out = tmp_path / "r.db"
    assert _restore(run, out, "--utc-time", iso(10.3)) == before
    assert _restore(run, out, "--utc-time", iso(10.95)) == before
    assert _restore(run, out, "--utc-time", iso(11)) == after
    assert _restore(run, out) == after


def _dump_image(path: Path) -> tuple[str, dict]:
    """integrity_check and rows of a database image, read as the file alone (no WAL)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return ok, dump_conn(conn)
    finally:
        conn.close()


def test_snapshot_alone_is_the_state_at_the_capture(run: Cli, tmp_path: Path,
                                                   storage: S3Store) -> None:
    """The app's checkpoint has copied some WAL frames into the main file, not all (a reader
    holds it back): the main file alone is an older state than the committed one. The
    snapshot object must still be exactly the committed state."""
    db = tmp_path / "app.db"
    app = open_wal_db(db)
    insert_rows(app, 300, size=500)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 300
    insert_rows(app, 300, start=1000, size=500)
    app.execute("UPDATE t SET v = 'changed after the reader began' WHERE id % 3 = 0")
    app.execute("DELETE FROM t WHERE id % 7 = 0")
    busy, wal_frames, copied = app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert 0 < copied < wal_frames, (busy, wal_frames, copied)
    expected = dump_conn(app)
    run("-d", str(db), "replicate", "--once")
    gen = catalog.newest_generation(storage, "app.db")
    assert gen is not None
    g = catalog.describe_generation(storage, "app.db", gen)
    assert g.snapshot is not None and g.snapshot_codec is not None
    image = tmp_path / "image.db"
    image.write_bytes(decompress(storage.get(g.snapshot.key), g.snapshot_codec))
    assert _dump_image(image) == ("ok", expected)
    reader.execute("ROLLBACK")
    reader.close()
    app.close()

    # the replicator died right after the snapshot: no .meta, no batches
    storage.delete_many([g.key(layout.META)] + [o.key for _, o in g.batches])
    out = tmp_path / "r.db"
    res = run("--db-name", "app.db", "restore", "-o", str(out))
    notes = lines(res.stderr)
    assert len(notes) == 1 and notes[0].startswith("note: ") and str(gen) in notes[0], \
        res.stderr
    assert integrity(out) == "ok" and dump(out) == expected


def test_a_gap_left_by_a_cut_ship_is_refilled_from_the_wal(tmp_path: Path,
                                                           storage: S3Store) -> None:
    """Batches go up side by side, so a ship cut short can leave batch k missing and k+1
    stored. While the local WAL still holds those frames, the next run ships on from the gap
    in the same generation; the stored batch after it becomes a checked repeat."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 20)
    d = Driver(db, storage)
    d.replicator.options = ReplicateOptions(max_batch_frames=4, clock=lambda: d.now)
    d.at(0).sync()
    insert_rows(conn, 200, start=1000, size=2000)
    d.at(10).sync()
    g = catalog.describe_generation(storage, "app.db", d.replicator.newest.id)
    assert len(g.batches) > 4
    lost = g.batches[2][1].key  # as if its upload never finished
    storage.delete_many([lost])
    d.close()
    d = Driver(db, storage)
    result = d.at(20).sync()
    d.close()
    assert "refills a gap" in result.reason and result.generation == g.id
    again = catalog.describe_generation(storage, "app.db", g.id)
    assert again.contiguous_frame == again.last_frame
    out = tmp_path / "r.db"
    done = restore(storage, "app.db", out)
    assert done.damaged is None
    assert dump(out) == dump_conn(conn)
    conn.close()
