"""ls, rm, restore -g / --utc-time / -o, verify: end to end through the CLI."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bottomless_core import catalog, layout
from bottomless_core.errors import NotFoundError
from bottomless_core.replicator import ReplicateOptions, replicate_once
from bottomless_core.restore import plan_restore
from bottomless_core.retention import plan_removal, remove_generations
from bottomless_core.store.s3 import S3Store
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _at(t: datetime) -> ReplicateOptions:
    return ReplicateOptions(clock=lambda: t.timestamp())


@pytest.fixture
def history(tmp_path: Path, storage: S3Store) -> dict:
    """Two generations with batches stamped at known times; returns the expected states."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    states = {}
    insert_rows(conn, 10)
    replicate_once(db, storage, options=_at(T0))
    states[0] = dump_conn(conn)
    for step in (1, 2):
        insert_rows(conn, 10, start=step * 100)
        replicate_once(db, storage, options=_at(T0 + timedelta(seconds=100 * step)))
        states[step] = dump_conn(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    insert_rows(conn, 10, start=300)
    replicate_once(db, storage, options=_at(T0 + timedelta(seconds=300)))
    states[3] = dump_conn(conn)
    conn.close()
    gens = list(catalog.list_generations(storage, "app.db"))
    return {"db": db, "states": states, "gens": gens}


def test_ls_plain_verbose_json_limit(run: Cli, history: dict) -> None:
    newest, oldest = history["gens"]
    out = run("--db-name", "app.db", "ls")
    assert out.stdout.split() == [str(newest), str(oldest)]
    out = run("--db-name", "app.db", "ls", "-l", "1")
    assert out.stdout.split() == [str(newest)]
    out = run("--db-name", "app.db", "ls", "-v")
    for label in ("created at (UTC)", "change counter", "consistent WAL frame",
                  "WAL frame checksum", "snapshot size", "parent generation", "WAL batches"):
        assert label in out.stdout
    facts = json.loads(run("--db-name", "app.db", "ls", "-v", "--json").stdout)
    assert [f["generation"] for f in facts] == [str(newest), str(oldest)]
    assert facts[0]["parent"] == str(oldest)
    assert facts[1]["wal_batches"] == 3
    assert facts[1]["created_at"].startswith("2024-01-01T00:00:00")
    assert facts[0]["snapshot"]["size"] > 0
    plain = json.loads(run("--db-name", "app.db", "ls", "--json").stdout)
    assert [p["generation"] for p in plain] == [str(newest), str(oldest)]
    out = run("--db-name", "app.db", "ls", "--older-than", "2024-01-01T00:02:00Z")
    assert out.stdout.split() == [str(oldest)]
    out = run("--db-name", "app.db", "ls", "--newer-than", "2024-01-01T00:02:00Z")
    assert out.stdout.split() == [str(newest)]


@pytest.mark.parametrize(("when", "state"), [
    ("2024-01-01T00:00:30Z", 0), ("2024-01-01 00:01:40", 1), ("2024-01-01T00:03:00+00:00", 1),
    ("2024-01-01T00:04:00+00:00", 2),
    ("2024-01-01T01:00:00Z", 3), ("2024-01-01T02:00:00+01:00", 3),
])
def test_restore_utc_time(run: Cli, history: dict, tmp_path: Path, when: str,
                          state: int) -> None:
    out_db = tmp_path / "at.db"
    run("--db-name", "app.db", "restore", "--utc-time", when, "-o", str(out_db))
    assert dump(out_db) == history["states"][state]
    assert integrity(out_db) == "ok"


def test_restore_utc_time_before_everything(run: Cli, history: dict, tmp_path: Path) -> None:
    out = run("--db-name", "app.db", "restore", "-u", "2023-12-31", "-o",
              str(tmp_path / "x.db"), code=1)
    assert "no generation" in out.stderr
    assert not (tmp_path / "x.db").exists()


def test_restore_given_generation_to_output(run: Cli, history: dict, tmp_path: Path) -> None:
    oldest = history["gens"][1]
    out_db = tmp_path / "old.db"
    run("-d", str(history["db"]), "restore", "-g", str(oldest), "-o", str(out_db))
    assert dump(out_db) == history["states"][2]
    assert history["db"].exists()  # -o leaves -d alone


def test_verify_and_restore_verify(run: Cli, history: dict, tmp_path: Path) -> None:
    out = run("--db-name", "app.db", "verify")
    assert "integrity ok" in out.stdout and "change counter" in out.stdout
    oldest = history["gens"][1]
    out = run("--db-name", "app.db", "verify", "-g", str(oldest))
    # its 3 batches, compacted into one pack when the next generation replaced it
    assert "5 frames from 0 batches and 1 page pack," in out.stdout, out.stdout
    target = tmp_path / "never.db"
    out = run("-d", str(target), "--db-name", "app.db", "restore", "--verify")
    assert "verified" in out.stdout
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if "restoring" in p.name]


def test_rm_generation_verbose(run: Cli, history: dict, storage: S3Store) -> None:
    newest, oldest = history["gens"]
    out = run("--db-name", "app.db", "rm", "-g", str(oldest), "--dry-run")
    assert out.stdout.splitlines()[-1] == "Would remove 1 generation"  # (issue 16: not "1
    assert len(list(catalog.list_generations(storage, "app.db"))) == 2  # generations")
    out = run("--db-name", "app.db", "rm", "-g", str(oldest), "-v")
    assert "Removed 1 generation (" in out.stdout
    assert list(catalog.list_generations(storage, "app.db")) == [newest]
    assert not list(storage.list_objects(layout.generation_prefix("app.db", oldest)))


def test_rm_older_than_keeps_newest(run: Cli, history: dict, storage: S3Store,
                                    tmp_path: Path) -> None:
    newest = history["gens"][0]
    out = run("--db-name", "app.db", "rm", "--older-than", "2030-01-01", "-v")
    assert f"kept {newest}: it is the newest generation" in out.stderr
    assert "Removed 1 generation (" in out.stdout
    assert list(catalog.list_generations(storage, "app.db")) == [newest]
    assert catalog.read_tombstone(storage, "app.db") is None  # removed once the work is done
    run("--db-name", "app.db", "restore", "-o", str(tmp_path / "r.db"))
    assert dump(tmp_path / "r.db") == history["states"][3]


def test_rm_interrupted_leaves_the_tombstone(history: dict, storage: S3Store) -> None:
    """A crash half-way through rm --older-than: the half-deleted generation is refused."""
    newest, oldest = history["gens"]
    plan = plan_removal(storage, "app.db", older_than=datetime(2030, 1, 1, tzinfo=UTC))
    assert plan.remove == [oldest] and plan.tombstone is not None

    class Crash(Exception):
        pass

    def crash(keys: object) -> int:
        raise Crash

    storage.delete_many = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        remove_generations(storage, "app.db", plan)
    tomb = catalog.read_tombstone(storage, "app.db")
    assert tomb is not None
    assert catalog.is_dead(tomb, oldest) and not catalog.is_dead(tomb, newest)
    with pytest.raises(NotFoundError, match="tombstone"):
        plan_restore(storage, "app.db", oldest)
    assert plan_restore(storage, "app.db").generation.id == newest
    # a later rm with an earlier date finishes the interrupted one before lifting the tombstone
    del storage.delete_many
    plan = plan_removal(storage, "app.db", older_than=datetime(2000, 1, 1, tzinfo=UTC))
    assert plan.remove == [oldest]
    remove_generations(storage, "app.db", plan)
    assert list(catalog.list_generations(storage, "app.db")) == [newest]
    assert catalog.read_tombstone(storage, "app.db") is None


def test_snapshot_generation_whose_snapshot_is_gone(run: Cli, history: dict,
                                                   storage: S3Store) -> None:
    """A generation that starts from its own snapshot never falls back to its parent: with
    the snapshot gone that would apply its frames to the wrong base."""
    newest, _ = history["gens"]
    snap = catalog.describe_generation(storage, "app.db", newest).snapshot
    assert snap is not None
    storage.delete_many([snap.key])
    out = run("--db-name", "app.db", "verify", code=1)
    assert f"starts from its own snapshot, which is missing ({snap.key})" in out.stderr


def test_ls_with_thousands_of_generations(run: Cli, storage: S3Store) -> None:
    base = 1_700_000_000 * 10**9
    gens = [layout.new_generation_id(base + i * 10**9) for i in range(1100)]
    names = [".meta", ".changecounter", "db.zstd"]
    keys = [layout.object_key("many", g, n) for g in gens for n in names]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: storage.put(k, b"x"), keys))
    out = run("--db-name", "many", "ls")
    listed = [uuid.UUID(line) for line in out.stdout.split()]
    assert listed == list(reversed(gens))  # newest first, one line each, across pages
    assert run("--db-name", "many", "ls", "-l", "3").stdout.split() == [
        str(g) for g in reversed(gens[-3:])]


def test_global_options_after_the_command(run: Cli, history: dict, tmp_path: Path) -> None:
    """Issue 16: `ls -d app.db` said "No such option '-d'"."""
    newest, oldest = history["gens"]
    db = str(history["db"])
    assert run("ls", "-d", db).stdout.split() == [str(newest), str(oldest)]
    assert run("ls", "--db-name=app.db", "-l", "1").stdout.split() == [str(newest)]
    assert run("-b", "elsewhere", "ls", "-d", db, "-b", run.env["LIBSQL_BOTTOMLESS_BUCKET"]
               ).stdout.split() == [str(newest), str(oldest)]  # the later one wins
    out = tmp_path / "r.db"
    run("restore", "-o", str(out), "-d", db)
    assert dump(out) == history["states"][3]


def test_a_name_without_backups(run: Cli, history: dict) -> None:
    """Issue 16: `ls` of a name with no backups printed nothing."""
    bucket = run.env["LIBSQL_BOTTOMLESS_BUCKET"]
    for args in ([], ["-v"]):
        out = run("--db-name", "nothing.db", "ls", *args)
        assert out.stdout == ""
        assert out.stderr == f"no generations of 'nothing.db' in bucket '{bucket}'\n"
    out = run("--db-name", "app.db", "ls", "--older-than", "2000-01-01")
    assert "no generations of 'app.db' matching --older-than/--newer-than" in out.stderr
    assert run("--db-name", "nothing.db", "ls", "--json").stdout.strip() == "[]"


def test_times_are_said_with_four_digit_years(run: Cli, history: dict) -> None:
    """Issue 16: `-u 0001-01-01` was echoed as `1-01-01`."""
    out = run("--db-name", "app.db", "restore", "-u", "0001-01-01", "-o", "x.db", code=1)
    assert "created at or before 0001-01-01 00:00:00 UTC" in out.stderr
    out = run("--db-name", "app.db", "rm", "--older-than", "0099-01-01", "--dry-run")
    assert out.stdout.splitlines()[-1] == "Would remove 0 generations"


def test_restore_from_a_directory_under_another_name(run: Cli, history: dict,
                                                     tmp_path: Path) -> None:
    """Issue 16: `restore --from-dir` with another -d gave no hint about --db-name."""
    copy = tmp_path / "copy"
    run("--db-name", "app.db", "copy", "--to-dir", str(copy))
    out = run("-d", str(tmp_path / "other.db"), "restore", "--from-dir", str(copy), code=1)
    assert f"{copy} holds 'app.db': give --db-name app.db" in out.stderr
    assert len(out.stderr.splitlines()) == 1
    run("-d", str(tmp_path / "other.db"), "--db-name", "app.db", "restore", "--from-dir",
        str(copy))
    assert dump(tmp_path / "other.db") == history["states"][3]


def test_once_says_which_options_are_the_daemons(run: Cli, tmp_path: Path) -> None:
    """Issue 16: --once silently ignored --retention, --metrics-addr, --status-file."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 5)
    out = run("-d", str(db), "replicate", "--once", "--retention", "7d", "--metrics-addr",
              "127.0.0.1:9", "--status-file", str(tmp_path / "s.json"), "--compression", "gzip")
    notes = [line for line in out.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: --retention, --metrics-addr, --status-file apply to the daemon "
                     "only (replicate without --once): ignored here"]
    assert not (tmp_path / "s.json").exists()
    out = run("-d", str(db), "replicate", "--once", "--compression", "gzip")
    assert "note:" not in out.stderr
    conn.close()


def test_sizes_say_what_they_count(run: Cli, tmp_path: Path) -> None:
    """Issue 16: `replicate` said `snapshot 148 bytes` where `ls -v` said 363 for the same
    object (the image before encryption; the object stored)."""
    from pyrage import x25519

    recipient = str(x25519.Identity.generate().to_public())
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 50)
    out = run("--age-recipient", recipient, "-d", str(db), "replicate", "--once")
    assert re.search(r"snapshot [\d,]+ bytes compressed, before age encryption, "
                     r"\d+ frames? in 1 batch$", out.stdout.strip()), out.stdout
    out = run("-d", str(db), "ls", "-v")
    assert re.search(r"snapshot size +[\d,]+ bytes stored \(compressed, age-encrypted\)",
                     out.stdout), out.stdout
    conn.close()
