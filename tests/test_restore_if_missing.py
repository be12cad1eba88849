"""replicate --restore-if-missing: a container's start-up with a thrown-away disk."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from pyrage import x25519

from bottomless_core import catalog
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db
from tests.libsql_check import assert_libsql_agrees, raw_store
from tests.procs import cli_env, cli_proc, poll


def _seed(run: Cli, tmp_path: Path, *opts: str) -> dict[str, list[tuple]]:
    """A backup of app.db made on another "host" (another path, same --db-name)."""
    other = tmp_path / "other" / "app.db"
    other.parent.mkdir()
    conn = open_wal_db(other)
    insert_rows(conn, 800)
    run(*opts, "-d", str(other), "--db-name", "app.db", "replicate", "--once")
    insert_rows(conn, 200, start=5000)
    run(*opts, "-d", str(other), "--db-name", "app.db", "replicate", "--once")
    expected = dump_conn(conn)
    conn.close()
    return expected


def test_once_restores_a_missing_database_then_replicates(run: Cli, tmp_path: Path,
                                                          storage: S3Store) -> None:
    expected = _seed(run, tmp_path)
    db = tmp_path / "data" / "app.db"  # the directory does not exist either
    out = run("-d", str(db), "replicate", "--once", "--restore-if-missing").stdout
    assert "was missing; restored generation" in out
    assert dump(db) == expected and integrity(db) == "ok"
    conn = open_wal_db(db)
    insert_rows(conn, 300, start=9000)
    after = dump_conn(conn)
    out = run("-d", str(db), "replicate", "--once", "--restore-if-missing").stdout
    assert "restored" not in out  # the database has content now: never touched
    conn.close()
    target = tmp_path / "again.db"
    run("-d", str(db), "restore", "-o", str(target))
    assert dump(target) == after and integrity(target) == "ok"


def test_empty_file_and_empty_bucket(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    db = tmp_path / "app.db"
    out = run("-d", str(db), "replicate", "--once", "--restore-if-missing").stdout
    assert "no backup of 'app.db'" in out and "empty database" in out
    assert catalog.newest_generation(storage, "app.db") is not None
    conn = open_wal_db(db)
    insert_rows(conn, 50)
    run("-d", str(db), "replicate", "--once")
    expected = dump_conn(conn)
    conn.close()
    # a 0-byte file (e.g. a volume mount created it) counts as missing
    empty = tmp_path / "fresh" / "app.db"
    empty.parent.mkdir()
    empty.touch()
    out = run("-d", str(empty), "replicate", "--once", "--restore-if-missing").stdout
    assert "was empty; restored" in out
    assert dump(empty) == expected
    # a WAL left without its database: said so, and nothing is written over it
    orphan = tmp_path / "orphan" / "app.db"
    orphan.parent.mkdir()
    Path(f"{orphan}-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(100))
    err = run("-d", str(orphan), "replicate", "--once", "--restore-if-missing",
              code=1).stderr
    assert err.startswith("error: ") and "app.db-wal beside it holds 104 bytes" in err
    assert not orphan.exists() and Path(f"{orphan}-wal").stat().st_size == 104


@pytest.mark.libsql_exempt("encrypted: libSQL cannot read age objects", encrypted=True)
def test_encrypted_backup_needs_the_identity(run: Cli, tmp_path: Path,
                                            storage: S3Store) -> None:
    ident = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{ident}\n")
    enc = ("--age-recipient", str(ident.to_public()))
    expected = _seed(run, tmp_path, *enc)
    before = sorted((o.key, o.size) for o in storage.list_objects("") if
                    not o.key.endswith(".lease"))
    db = tmp_path / "app.db"
    err = run(*enc, "-d", str(db), "replicate", "--once", "--restore-if-missing",
              code=2).stderr
    assert err.startswith("error: objects are encrypted") and len(err.splitlines()) == 1
    assert not db.exists()
    assert sorted((o.key, o.size) for o in storage.list_objects("") if
                  not o.key.endswith(".lease")) == before
    out = run(*enc, "--age-identity", str(key), "-d", str(db), "replicate", "--once",
              "--restore-if-missing").stdout
    assert "restored generation" in out and "warning" not in out
    assert dump(db) == expected
    # restored without a recipient: the database is back, but nothing is replicated in clear
    # on top of the encrypted backup: one error naming the option
    bare = tmp_path / "bare" / "app.db"
    before = sorted((o.key, o.size) for o in storage.list_objects("") if
                    not o.key.endswith(".lease"))
    res = run("--age-identity", str(key), "-d", str(bare), "replicate", "--once",
              "--restore-if-missing", code=2)
    assert "restored generation" in res.stdout and dump(bare) == expected
    assert res.stderr.startswith("error: generation ") and "--age-recipient" in res.stderr
    assert sorted((o.key, o.size) for o in storage.list_objects("") if
                  not o.key.endswith(".lease")) == before


def _caught_up_after(status_file: Path, t: float) -> bool:
    try:
        dbs = json.loads(status_file.read_text())["databases"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
    return bool(dbs) and all(d["behind_since"] is None and (d["last_success"] or 0) > t
                             for d in dbs)


def test_daemon_restores_then_replicates(run: Cli, tmp_path: Path, storage: S3Store,
                                         s3: SeaweedServer) -> None:
    expected = _seed(run, tmp_path)
    # The daemon's restore runs in its own process: libSQL's rules read the same bucket so.
    assert_libsql_agrees(raw_store(storage, s3), "app.db", expected)
    db = tmp_path / "data" / "app.db"
    status = tmp_path / "status.json"
    proc = cli_proc(cli_env(run), "-d", str(db), "replicate", "--restore-if-missing",
                    "--interval", "0.1", "--status-file", str(status))
    try:
        poll("the daemon's first sync", lambda: _caught_up_after(status, 0)
             or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        assert dump(db) == expected
        conn = open_wal_db(db)
        insert_rows(conn, 400, start=20_000)
        conn.execute("UPDATE t SET v = 'x' WHERE id % 11 = 0")
        after = dump_conn(conn)
        t = time.time()
        poll("the daemon to ship the new rows", lambda: _caught_up_after(status, t))
        conn.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "event=restore_if_missing" in err and "was missing; restored" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    target = tmp_path / "again.db"
    run("-d", str(db), "restore", "-o", str(target))
    assert dump(target) == after and integrity(target) == "ok"
