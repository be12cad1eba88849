"""create --source-db -> restore; copy --to-dir -> restore --from-dir with no S3 reachable."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from bottomless_core import catalog, layout
from bottomless_core.store.s3 import S3Store
from tests.chains import Driver
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db

UNREACHABLE = "http://127.0.0.1:1"  # nothing listens: any request to S3 would fail


def _rollback_db(path: Path, rows: int) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    insert_rows(conn, rows)
    conn.execute("CREATE INDEX tv ON t(v)")
    expected = dump_conn(conn)
    conn.close()
    return expected


def test_create_from_rollback_journal_db_then_restore(run: Cli, tmp_path: Path,
                                                      storage: S3Store) -> None:
    src = tmp_path / "seed.db"
    expected = _rollback_db(src, 3000)
    before = src.read_bytes()
    out = run("--db-name", "app.db", "create", "--source-db", str(src))
    assert out.stdout.startswith("new generation ")
    assert src.read_bytes() == before  # the source is only read
    gens = list(catalog.list_generations(storage, "app.db"))
    assert len(gens) == 1
    g = catalog.describe_generation(storage, "app.db", gens[0])
    assert g.complete and g.snapshot is not None and g.parent is None
    target = tmp_path / "restored.db"
    run("--db-name", "app.db", "restore", "-o", str(target))
    assert dump(target) == expected
    assert integrity(target) == "ok"
    # The restored file is in WAL mode: a replicator can take it from there.
    conn = open_wal_db(target)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    insert_rows(conn, 10, start=100_000)
    conn.close()
    run("-d", str(target), "--db-name", "app.db", "replicate", "--once")
    again = tmp_path / "again.db"
    run("--db-name", "app.db", "restore", "-o", str(again))
    assert dump(again) == dump(target)


def test_create_while_another_process_writes(run: Cli, tmp_path: Path) -> None:
    """The copy is one read transaction: whatever the writer does meanwhile, the generation
    holds a state that was committed (rows come in whole transactions of 100)."""
    src = tmp_path / "busy.db"
    conn = open_wal_db(src)
    insert_rows(conn, 100)
    conn.close()
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(src)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    try:
        run("--db-name", "busy.db", "create", "-s", str(src))
    finally:
        writer.terminate()
        writer.wait()
    target = tmp_path / "restored.db"
    run("--db-name", "busy.db", "restore", "-o", str(target))
    assert integrity(target) == "ok"
    rows = dump(target)["t"]
    assert len(rows) >= 100 and len(rows) % 100 == 0
    assert [r[0] for r in rows] == list(range(len(rows)))


_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
n = 100
print("writing", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t(id, v) VALUES (?, ?)",
                     ((i, "w" * 200) for i in range(n, n + 100)))
    conn.execute("COMMIT")
    n += 100
"""


def test_create_bad_inputs(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some words " * 20)
    err = run("--db-name", "x.db", "create", "-s", str(text), code=1).stderr
    assert err.startswith("error: ") and "not an SQLite database" in err
    assert len(err.strip().splitlines()) == 1
    err = run("--db-name", "x.db", "create", "-s", str(tmp_path / "missing.db"), code=1).stderr
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.db"
    empty.touch()
    assert "empty" in run("--db-name", "x.db", "create", "-s", str(empty), code=1).stderr
    assert list(storage.list_objects("")) == []  # nothing was written
    assert text.read_text().startswith("not a database")


def _generations_with_chain(run: Cli, db: Path) -> dict[str, list[tuple]]:
    """A generation with a snapshot and batches, then a second one (after a checkpoint)."""
    conn = open_wal_db(db)
    insert_rows(conn, 500)
    run("-d", str(db), "replicate", "--once")
    insert_rows(conn, 500, start=1000)
    run("-d", str(db), "replicate", "--once")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    insert_rows(conn, 300, start=5000)
    conn.execute("UPDATE t SET v = 'changed' WHERE id % 3 = 0")
    run("-d", str(db), "replicate", "--once")
    expected = dump_conn(conn)
    conn.close()
    return expected


def test_copy_then_restore_from_dir_without_s3(run: Cli, tmp_path: Path,
                                               storage: S3Store) -> None:
    db = tmp_path / "app.db"
    expected = _generations_with_chain(run, db)
    gens = list(catalog.list_generations(storage, "app.db"))
    assert len(gens) == 2
    copy = tmp_path / "usb" / "backup"
    out = run("-d", str(db), "copy", "--to-dir", str(copy))
    assert f"copied generation {gens[0]}" in out.stdout
    # Same names as in the bucket, same bytes; the lease and other databases stay behind.
    newest = layout.generation_prefix("app.db", gens[0])
    for obj in storage.list_objects(newest):
        assert (copy / obj.key).read_bytes() == storage.get(obj.key)
    target = tmp_path / "offline.db"
    offline = {"LIBSQL_BOTTOMLESS_ENDPOINT": UNREACHABLE,
               "AWS_ACCESS_KEY_ID": "none", "AWS_SECRET_ACCESS_KEY": "none"}
    run("-d", str(target), "--db-name", "app.db", "restore", "--from-dir", str(copy),
        env=offline)
    assert dump(target) == expected
    assert integrity(target) == "ok"
    # And the older generation, copied on its own.
    old = tmp_path / "old"
    run("-d", str(db), "copy", "-g", str(gens[1]), "--to-dir", str(old))
    assert sorted(p.name for p in old.iterdir() if not p.name.startswith(".")) == [
        f"app.db-{gens[1]}"]
    old_db = tmp_path / "old.db"
    run("--db-name", "app.db", "restore", "--from-dir", str(old), "-o", str(old_db),
        env=offline)
    assert integrity(old_db) == "ok"
    assert len(dump(old_db)["t"]) == 1000


def test_copy_follows_a_snapshotless_chain(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    """A daemon's generation without a snapshot is copied with the parents it needs."""
    db = tmp_path / "chain.db"
    conn = open_wal_db(db)
    insert_rows(conn, 200)
    d = Driver(db, storage)
    try:
        d.sync()
        d.at(10).checkpoint()
        insert_rows(conn, 200, start=1000)
        d.at(20).sync()
    finally:
        d.close()
    expected = dump_conn(conn)
    conn.close()
    newest = catalog.describe_generation(storage, "chain.db",
                                         catalog.newest_generation(storage, "chain.db"))
    assert newest.snapshot is None and newest.parent is not None
    copy = tmp_path / "copy"
    out = run("-d", str(db), "copy", "--to-dir", str(copy))
    assert "and the 1 generation it restores through" in out.stdout  # (not "1 generations")
    target = tmp_path / "offline.db"
    run("--db-name", "chain.db", "restore", "--from-dir", str(copy), "-o", str(target),
        env={"LIBSQL_BOTTOMLESS_ENDPOINT": UNREACHABLE})
    assert dump(target) == expected


def test_copy_and_from_dir_bad_inputs(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    conn.close()
    run("-d", str(db), "replicate", "--once")
    before = sorted((o.key, o.size) for o in storage.list_objects(""))
    err = run("-d", str(db), "copy", "-g", "nope", "--to-dir", str(tmp_path / "c"),
              code=2).stderr
    assert err.startswith("error: not a generation id")
    unknown = "0190b2c4-0000-7000-8000-000000000000"
    err = run("-d", str(db), "copy", "-g", unknown, "--to-dir", str(tmp_path / "c"),
              code=1).stderr
    assert err.startswith(f"error: generation {unknown}")
    assert not (tmp_path / "c").exists()  # a failed copy leaves no directory behind
    err = run("-d", str(db), "restore", "--from-dir", str(tmp_path / "missing"), "-o",
              str(tmp_path / "x.db"), code=1).stderr
    assert err.startswith("error: ") and "no such directory" in err
    (tmp_path / "emptydir").mkdir()
    err = run("-d", str(db), "restore", "--from-dir", str(tmp_path / "emptydir"), "-o",
              str(tmp_path / "x.db"), code=1).stderr
    assert err.startswith("error: no generation of 'app.db'")
    assert not (tmp_path / "x.db").exists()
    # A copy over an existing database without --force is refused; the file stays.
    copy = tmp_path / "c"
    run("-d", str(db), "copy", "--to-dir", str(copy))
    kept = db.read_bytes()
    err = run("-d", str(db), "restore", "--from-dir", str(copy), code=1).stderr
    assert "already exists" in err and db.read_bytes() == kept
    assert sorted((o.key, o.size) for o in storage.list_objects("")) == before


def test_create_refused_while_a_replicator_holds_the_lease(run: Cli, tmp_path: Path,
                                                          storage: S3Store) -> None:
    from bottomless_core.lease import Lease

    src = tmp_path / "seed.db"
    _rollback_db(src, 10)
    lease = Lease(storage, "seed.db", "otherhost:/srv/seed.db")
    lease.acquire()
    try:
        err = run("create", "-s", str(src), code=1).stderr
        assert "otherhost" in err and err.startswith("error: ")
    finally:
        lease.release()
    assert catalog.newest_generation(storage, "seed.db") is None
