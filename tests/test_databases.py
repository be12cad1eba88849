"""databases / ls --all: every database of a bucket in bounded requests (names of nested
databases, written %2F, and names with '/' an older writer may have left); against SeaweedFS
and a directory."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyrage import x25519

from bottomless_core import catalog, inventory, layout
from bottomless_core.replicator import ReplicateOptions, replicate_once
from bottomless_core.retention import plan_removal
from bottomless_core.store.s3 import S3Store
from tests.chains import build_chain
from tests.conftest import Cli
from tests.helpers import insert_rows, open_wal_db

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _pages(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * 4096


def _replicate(run: Cli, conn: sqlite3.Connection, db: Path, *args: str, rows: int = 50,
               start: int = 0) -> None:
    insert_rows(conn, rows, start=start)
    run(*args, "-d", str(db), "replicate", "--once")


class _Requests(Counter[str]):
    """Requests a store sends, by operation (ObjectStore.count_requests)."""

    def sent(self, operation: str, payload: int) -> None:
        self[operation] += 1

    def answered(self, operation: str, received: int) -> None:
        pass


@pytest.fixture
def fleet(run: Cli, tmp_path: Path, storage: S3Store) -> dict:
    """app.db (two generations, the newest with batches and packs, stamped at known times),
    tenants%2Fa.db and tenants%2Fdeep%2Fb.db (as replicate --dir names nested ones), ns-foo
    (-n foo), secret.db (encrypted), old.db (an rm --older-than stopped after its
    tombstone) and gone.db (only its tombstone left, as libSQL's delete of a whole database
    leaves it until it is done).
    Returns the expected sizes and generations."""
    sizes, conns = {}, []

    def at(t: datetime) -> ReplicateOptions:
        return ReplicateOptions(clock=lambda: t.timestamp())

    app = tmp_path / "app.db"
    conn = open_wal_db(app)
    conns.append(conn)
    insert_rows(conn, 100)
    replicate_once(app, storage, options=at(T0))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for step in (1, 2, 3):
        insert_rows(conn, 100, start=step * 1000)
        replicate_once(app, storage, options=at(T0 + timedelta(seconds=100 * step)))
    sizes["app.db"] = _pages(conn)

    ident = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(ident) + "\n")
    for name, args in (("tenants%2Fa.db", ("--db-name", "tenants%2Fa.db")),
                       ("tenants%2Fdeep%2Fb.db", ("--db-name", "tenants%2Fdeep%2Fb.db")),
                       ("ns-foo", ("-n", "foo")),
                       ("secret.db", ("--age-recipient", str(ident.to_public()))),
                       ("old.db", ()), ("gone.db", ())):
        db = tmp_path / name.replace("/", "_")
        conn = open_wal_db(db)
        conns.append(conn)
        _replicate(run, conn, db, *args, rows=20 * len(name))
        _replicate(run, conn, db, *args, rows=30, start=10_000)  # a batch
        sizes[name] = _pages(conn)
        if name == "old.db":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _replicate(run, conn, db, rows=10, start=20_000)
            sizes[name] = _pages(conn)
    # rm --older-than's first step: a crash right after it leaves the tombstone
    plan = plan_removal(storage, "old.db", older_than=datetime.now(UTC) + timedelta(days=1))
    assert plan.tombstone is not None
    storage.put(layout.tombstone_key("old.db"), layout.encode_tombstone(plan.tombstone))
    gone = catalog.newest_generation(storage, "gone.db")
    assert gone is not None
    storage.put(layout.tombstone_key("gone.db"),
                layout.encode_tombstone(int(layout.generation_time(gone).timestamp())))
    run("--db-name", "gone.db", "rm", "-g", str(gone), "--force")
    for conn in conns:
        conn.close()
    gens = {name: list(catalog.list_generations(storage, name))
            for name in ("app.db", "tenants%2Fa.db", "tenants%2Fdeep%2Fb.db", "ns-foo", "secret.db",
                         "old.db")}
    return {"sizes": sizes, "gens": gens, "key": tmp_path / "key.txt",
            "tombstone": plan.tombstone}


NAMES = ["app.db", "gone.db", "ns-foo", "old.db", "secret.db", "tenants%2Fa.db",
         "tenants%2Fdeep%2Fb.db"]


def test_json(run: Cli, fleet: dict) -> None:
    facts = json.loads(run("databases", "--json").stdout)
    assert [f["name"] for f in facts] == NAMES
    by = {f["name"]: f for f in facts}
    gens, sizes = fleet["gens"], fleet["sizes"]
    for name, f in by.items():
        if name == "gone.db":
            continue
        assert f["generation"] == str(gens[name][0]), name
        assert f["generations"] == len(gens[name]), name
        assert f["created_at"] == layout.generation_time(gens[name][0]).isoformat(), name
        assert f["complete"] is True and f["problem"] is None, name
        if name != "secret.db":
            assert (f["size_bytes"], f["page_size"], f["encryption"]) == (
                sizes[name], 4096, "none"), name
    app = by["app.db"]
    assert len(gens["app.db"]) == 2
    assert app["last_commit_at"] == "2024-01-01T00:05:00+00:00"
    assert app["age_from"] == "last_commit"
    age = (datetime.now(UTC) - datetime(2024, 1, 1, 0, 5, tzinfo=UTC)).total_seconds()
    assert abs(app["age_seconds"] - age) < 60
    for name in ("tenants%2Fa.db", "ns-foo"):
        assert by[name]["age_from"] == "last_commit" and 0 <= by[name]["age_seconds"] < 600
    # without the key: encrypted, size unknown; with it, the size too
    assert [by["secret.db"][k] for k in ("encryption", "size_bytes", "page_size")] == [
        "age", None, None]
    keyed = json.loads(run("--age-identity", str(fleet["key"]), "databases", "--json").stdout)
    secret = next(f for f in keyed if f["name"] == "secret.db")
    assert (secret["encryption"], secret["size_bytes"]) == ("age", fleet["sizes"]["secret.db"])
    old = by["old.db"]
    assert old["tombstone"] is True and old["deleted"] is False and old["generations"] == 2
    assert old["tombstone_at"] == datetime.fromtimestamp(fleet["tombstone"], UTC).isoformat()
    gone = by["gone.db"]
    assert {k: gone[k] for k in ("generation", "generations", "size_bytes", "tombstone",
                                 "deleted", "age_seconds")} == {
        "generation": None, "generations": 0, "size_bytes": None, "tombstone": True,
        "deleted": True, "age_seconds": None}
    assert all(not by[n]["tombstone"] for n in NAMES if n not in ("old.db", "gone.db"))


def _rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by database name (columns are two spaces or more apart)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["database", "newest", "generation", "age", "size", "encrypted",
                                "generations", "tombstone"], lines[0]
    assert set(lines[1].strip()) == {"─"}
    rows = {}
    for line in lines[2:-1]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def test_table_and_ls_all(run: Cli, fleet: dict) -> None:
    out = run("databases")
    bucket = run.env["LIBSQL_BOTTOMLESS_BUCKET"]
    assert out.stdout.splitlines()[-1] == f"7 databases in bucket {bucket!r}"
    rows = _rows(out.stdout)
    assert list(rows) == NAMES
    unaged = {name: row[:1] + row[2:] for name, row in rows.items()}  # (the ages move on)
    assert {name: row[:1] + row[2:] for name, row in _rows(run("ls", "--all").stdout).items()
            } == unaged
    gens = fleet["gens"]
    app = rows["app.db"]
    assert app[0] == str(gens["app.db"][0])
    assert re.fullmatch(r"\d+d \d+h", app[1]), app  # since its last commit, 2024-01-01
    assert re.fullmatch(r"\d+[sm]", rows["ns-foo"][1]), rows["ns-foo"]
    assert app[2:] == [f"{fleet['sizes']['app.db'] / 1000:.1f} kB", "no", "2", "-"]
    assert rows["secret.db"][2:5] == ["-", "age", "1"]
    assert rows["tenants%2Fdeep%2Fb.db"][0] == str(gens["tenants%2Fdeep%2Fb.db"][0])
    assert rows["old.db"][4:] == ["2", "yes"]
    assert rows["gone.db"] == ["- (deleted)", "-", "-", "-", "0", "yes"]
    keyed = _rows(run("--age-identity", str(fleet["key"]), "databases").stdout)
    assert keyed["secret.db"][2] == f"{fleet['sizes']['secret.db'] / 1000:.1f} kB"


def _restored_sizes(run: Cli, tmp_path: Path, names: tuple[str, ...]) -> None:
    facts = {f["name"]: f for f in json.loads(run("databases", "--json").stdout)}
    for name in names:
        target = tmp_path / f"restored-{name.replace('/', '_')}"
        run("--db-name", name, "restore", "-o", str(target))
        assert target.stat().st_size == facts[name]["size_bytes"], name


def test_sizes_are_what_a_restore_gives(run: Cli, fleet: dict, tmp_path: Path) -> None:
    _restored_sizes(run, tmp_path, ("app.db", "ns-foo", "old.db"))


def test_sizes_of_nested_names(run: Cli, fleet: dict, tmp_path: Path) -> None:
    _restored_sizes(run, tmp_path, ("tenants%2Fa.db", "tenants%2Fdeep%2Fb.db"))


def test_bounded_requests(fleet: dict, storage: S3Store) -> None:
    """One listing for the names (and the generations), then per database a listing of its
    newest generation and one small read (a tombstone: one more)."""
    requests = _Requests()
    assert storage.count_requests(requests)
    listed = catalog.scan_databases(storage)
    assert [db.name for db in listed] == NAMES
    assert requests == {"ListObjectsV2": 1}  # one level: no name holds '/'

    requests.clear()
    summaries = inventory.describe_databases(storage, listed)
    with_generations = len(NAMES) - 1
    assert requests["ListObjectsV2"] == with_generations
    # one read each (the encrypted one: no identity, no second read to decrypt it), and the
    # 2 tombstones
    assert requests["GetObject"] == with_generations + 2
    assert set(requests) == {"ListObjectsV2", "GetObject"}
    assert [s.name for s in summaries] == NAMES
    assert [s.problem for s in summaries] == [None] * len(NAMES)


def test_names_with_slashes_and_dashes(storage: S3Store) -> None:
    """A generation prefix is told from a "directory" by its id, at every depth; ns-foo is
    not ns, and a level deeper than MAX_NAME_DEPTH is not listed."""
    gen = layout.new_generation_id()
    deep = "/".join(f"d{i}" for i in range(catalog.MAX_NAME_DEPTH)) + ".db"
    too_deep = "/".join(f"e{i}" for i in range(catalog.MAX_NAME_DEPTH + 1)) + ".db"
    for name in ("ns", "ns-foo", "ns-foo-bar", "a/b-c", "a-b/c", deep, too_deep):
        storage.put(layout.object_key(name, gen, layout.META), b"x")
    storage.put("ns-foo-notagen/x", b"x")
    storage.put("tenants/x.tombstone", layout.encode_tombstone(0))
    storage.put("tenants/x.lease", b"{}")
    listed = catalog.scan_databases(storage)
    assert [(db.name, db.generations, db.has_tombstone) for db in listed] == [
        ("a-b/c", [gen], False), ("a/b-c", [gen], False), (deep, [gen], False),
        ("ns", [gen], False), ("ns-foo", [gen], False), ("ns-foo-bar", [gen], False),
        ("tenants/x", [], True)]
    assert list(catalog.list_databases(storage)) == [db.name for db in listed][:-1]


def test_empty_bucket(run: Cli, bucket: str) -> None:
    out = run("databases")
    assert (out.stdout, out.stderr) == ("", f"no databases in bucket {bucket!r}\n")
    assert run("ls", "--all", "--json").stdout == "[]\n"


def test_ls_all_refuses_the_options_of_one_database(run: Cli) -> None:
    out = run("ls", "--all", "-v", code=2)
    assert out.stderr.startswith("error: ls --all lists the bucket's databases")


def test_file_backend(run: Cli, tmp_path: Path) -> None:
    endpoint = ("-e", (tmp_path / "store").as_uri())
    conns = []
    for i, name in enumerate(("x.db", "tenants%2Fy.db")):
        db = tmp_path / f"f{i}.db"
        conn = open_wal_db(db)
        conns.append(conn)
        insert_rows(conn, 40)
        run(*endpoint, "--db-name", name, "-d", str(db), "replicate", "--once",
            "--create-bucket")
        insert_rows(conn, 40, start=100)
        run(*endpoint, "--db-name", name, "-d", str(db), "replicate", "--once")
    facts = json.loads(run(*endpoint, "databases", "--json").stdout)
    assert [(f["name"], f["generations"], f["size_bytes"], f["encryption"]) for f in facts] == [
        ("tenants%2Fy.db", 1, _pages(conns[1]), "none"), ("x.db", 1, _pages(conns[0]), "none")]
    assert list(_rows(run(*endpoint, "ls", "--all").stdout)) == ["tenants%2Fy.db", "x.db"]
    out = run(*endpoint, "-b", "nope", "databases", code=1)
    assert out.stderr.startswith("error: bucket 'nope' does not exist") and len(
        out.stderr.splitlines()) == 1
    for conn in conns:
        conn.close()


def test_restore_hint_names_nested_databases(run: Cli, tmp_path: Path) -> None:
    """restore --from-dir under another name says which databases the copy holds, nested
    ones too."""
    db = tmp_path / "a.db"
    conn = open_wal_db(db)
    insert_rows(conn, 20)
    run("--db-name", "tenants%2Fa.db", "-d", str(db), "replicate", "--once")
    conn.close()
    copy = tmp_path / "copy"
    run("--db-name", "tenants%2Fa.db", "copy", "--to-dir", str(copy))
    out = run("-d", str(tmp_path / "other.db"), "restore", "--from-dir", str(copy), code=1)
    assert f"{copy} holds 'tenants%2Fa.db': give --db-name tenants%2Fa.db" in out.stderr


def _summary(storage: S3Store, name: str) -> inventory.DatabaseSummary:
    listed = [db for db in catalog.scan_databases(storage) if db.name == name]
    return inventory.describe_database(storage, listed[0])


def _restored_size(run: Cli, tmp_path: Path, name: str) -> int:
    target = tmp_path / f"restored-{name}"
    run("--db-name", name, "restore", "-o", str(target))
    return target.stat().st_size


def test_size_from_a_snapshot_a_pack_and_a_parent(run: Cli, storage: S3Store,
                                                   tmp_path: Path) -> None:
    """The size of a generation without frames comes from its snapshot's SQLite header; one
    whose newest frame is in a page pack from the pack's header; a snapshot-less one without
    frames (libSQL's, just after its checkpoint) from its parent's state."""
    src = tmp_path / "src.db"
    conn = sqlite3.connect(src)
    insert_rows(conn, 300)
    conn.close()
    run("--db-name", "snap.db", "create", "-s", str(src))
    s = _summary(storage, "snap.db")
    assert s.last_commit is None and s.size == src.stat().st_size
    ident = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(str(ident) + "\n")
    run("--age-recipient", str(ident.to_public()), "--db-name", "snap-age.db", "create", "-s",
        str(src))
    facts = {f["name"]: f for f in json.loads(run("--age-identity", str(key), "databases",
                                                      "--json").stdout)}
    assert (facts["snap-age.db"]["encryption"], facts["snap-age.db"]["size_bytes"]) == (
        "age", src.stat().st_size)

    db = tmp_path / "packed.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    replicate_once(db, storage, options=ReplicateOptions(clock=lambda: T0.timestamp()))
    insert_rows(conn, 200, start=1000)
    replicate_once(db, storage, options=ReplicateOptions(clock=lambda: T0.timestamp() + 100))
    replicate_once(db, storage, options=ReplicateOptions(clock=lambda: T0.timestamp() + 400))
    g = catalog.describe_generation(storage, "packed.db",
                                    catalog.newest_generation(storage, "packed.db"))
    assert max(k.last for k, _ in g.packs) == g.contiguous_frame  # (the newest frame: packed)
    s = _summary(storage, "packed.db")
    assert s.size == _pages(conn) == _restored_size(run, tmp_path, "packed.db")
    assert s.last_commit == T0 + timedelta(seconds=100)
    conn.close()

    build_chain(tmp_path / "chain.db", storage, children=1)
    child = catalog.describe_generation(storage, "chain.db",
                                        catalog.newest_generation(storage, "chain.db"))
    assert child.snapshot is None
    storage.delete_many(o.key for _, o in [*child.batches, *child.packs])
    s = _summary(storage, "chain.db")
    assert s.last_commit is None and s.encryption == "none"
    assert s.size == _restored_size(run, tmp_path, "chain.db")
