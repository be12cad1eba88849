"""What the tool does to local files: symlinked databases, the restored file's mode and owner, a
database an application has open, verify's temporary file, several databases of a config
(issue 11, items 1, 8, 10a, 10b and "Also")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bottomless_core import catalog
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db
from tests.libsql_check import assert_libsql_agrees, raw_store
from tests.procs import DEADLINE, App, cli_env, cli_proc, lines, one_error_line


def _backed_up(run: Cli, db: Path, rows: int = 20) -> dict:
    """A database with ``rows`` rows, backed up, closed; returns its state."""
    conn = open_wal_db(db)
    insert_rows(conn, rows)
    run("-d", str(db), "replicate", "--once")
    state = dump_conn(conn)
    conn.close()
    return state


def _diverge(db: Path) -> bytes:
    """Local commits the bucket does not have; returns the file's bytes afterwards."""
    conn = open_wal_db(db)
    insert_rows(conn, 5, start=90_000)
    conn.close()  # checkpoints the WAL into the file
    return db.read_bytes()


# --- symlinks -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["directory", "file"])
def test_symlinked_database(run: Cli, tmp_path: Path, storage: S3Store, kind: str) -> None:
    """The app writes through the link; SQLite puts -wal and -shm beside the target."""
    real = tmp_path / "real"
    real.mkdir()
    if kind == "directory":
        link = tmp_path / "link"
        link.symlink_to(real, target_is_directory=True)
        path, target = link / "app.db", real / "app.db"
    else:
        link = path = tmp_path / "app.db"
        target = real / "data.db"
        target.touch()
        link.symlink_to(target)
    conn = open_wal_db(path)
    insert_rows(conn, 50)
    assert (real / f"{target.name}-wal").stat().st_size > 0
    out = run("-d", str(path), "replicate", "--once")
    assert "new generation" in out.stdout
    insert_rows(conn, 50, start=50)
    out = run("-d", str(path), "replicate", "--once")
    assert "shipped" in out.stdout, out.stdout
    expected = dump_conn(conn)
    assert len(expected["t"]) == 100
    conn.close()
    restored = tmp_path / "restored.db"
    run("--db-name", "app.db", "restore", "-o", str(restored))
    assert dump(restored) == expected

    # restore --force through the link replaces the target's content; the link stays a link
    before = _diverge(path)
    assert target.read_bytes() == before
    run("-d", str(path), "restore", "--force")
    assert link.is_symlink() and link.resolve() == (real if kind == "directory" else target)
    assert dump(target) == expected and integrity(target) == "ok"
    beside = {p.name for p in tmp_path.iterdir() if not p.name.startswith("restored.db")}
    assert beside == {link.name, "real"}  # nothing left beside the link


# --- mode and owner -------------------------------------------------------------------------

def test_restore_keeps_the_mode_and_owner_of_the_file_it_replaces(run: Cli,
                                                                  tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    expected = _backed_up(run, db)
    before = _diverge(db)
    os.chmod(db, 0o664)
    owner = (1234, 2345) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(db, *owner)
    run("-d", str(db), "restore", "--force")
    st = db.stat()
    assert db.read_bytes() != before and dump(db) == expected  # it was replaced
    assert stat.S_IMODE(st.st_mode) == 0o664
    assert (st.st_uid, st.st_gid) == owner


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o007, 0o660)])
def test_restore_to_a_new_file_gets_the_umask_mode(run: Cli, tmp_path: Path, umask: int,
                                                    mode: int, s3: SeaweedServer,
                                                    storage: S3Store) -> None:
    expected = _backed_up(run, tmp_path / "app.db")
    out = tmp_path / "new.db"
    p = cli_proc(cli_env(run), "--db-name", "app.db", "restore", "-o", str(out), umask=umask)
    _, stderr = p.communicate(timeout=DEADLINE)
    assert p.returncode == 0, stderr
    assert dump(out) == expected
    assert_libsql_agrees(raw_store(storage, s3), "app.db", out)  # a restore in a subprocess
    assert stat.S_IMODE(out.stat().st_mode) == mode


# --- a database an application has open ------------------------------------------------------

def test_restore_refuses_a_database_open_in_another_process(run: Cli, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    expected = _backed_up(run, db)
    before = _diverge(db)
    app = App(db)
    try:
        res = run("-d", str(db), "restore", code=1)
        one_error_line(res.stderr, str(db), f"pid {app.pid}", "--force")
        assert db.read_bytes() == before
        res = run("-d", str(db), "restore", "--force")
        warning = lines(res.stderr)
        assert len(warning) == 1, res.stderr
        assert warning[0].startswith("warning: replaced ") and str(app.pid) in warning[0]
    finally:
        app.stop()
    assert dump(db) == expected


def test_restore_if_flags_do_nothing_when_there_is_nothing_to_do(run: Cli,
                                                                 tmp_path: Path) -> None:
    target = tmp_path / "new.db"
    # no backup at all
    res = run("-d", str(target), "restore", "--if-replica-exists")
    assert len(lines(res.stdout)) == 1 and "nothing to restore" in res.stdout
    assert not lines(res.stderr) and not target.exists()
    # the database exists
    db = tmp_path / "app.db"
    expected = _backed_up(run, db)
    before = _diverge(db)
    res = run("-d", str(db), "restore", "--if-db-not-exists")
    assert len(lines(res.stdout)) == 1 and "nothing to restore" in res.stdout
    assert not lines(res.stderr) and db.read_bytes() == before
    # an empty file, as a fresh volume has: restored, as with no file at all
    target.touch()
    run("--db-name", "app.db", "-d", str(target), "restore", "--if-db-not-exists",
        "--if-replica-exists")
    assert dump(target) == expected


# --- verify writes in $TMPDIR only ----------------------------------------------------------

def test_verify_writes_nothing_beside_the_database(run: Cli, tmp_path: Path, s3: SeaweedServer,
                                                   storage: S3Store) -> None:
    ro, scratch = tmp_path / "ro", tmp_path / "scratch"
    ro.mkdir()
    scratch.mkdir()
    db = ro / "app.db"
    conn = open_wal_db(db)
    for i in range(4):
        insert_rows(conn, 2000, start=i * 10_000, size=1000)  # a few MB: verify takes a while
    run("-d", str(db), "replicate", "--once")
    conn.close()
    listing = sorted(os.listdir(ro))
    os.chmod(ro, 0o555)
    try:
        env = cli_env(run, TMPDIR=str(scratch))
        for args in (["verify"], ["restore", "--verify"]):
            # As root the mode does not stop a write: watch the directory while it runs.
            p = cli_proc(env, "-d", str(db), *args)
            seen_ro: set[str] = set()
            seen_scratch: set[str] = set()
            while p.poll() is None:
                seen_ro.update(os.listdir(ro))
                seen_scratch.update(os.listdir(scratch))
            stdout, stderr = p.communicate(timeout=DEADLINE)
            assert p.returncode == 0, stderr
            assert "verified" in stdout and "integrity ok" in stdout
            assert sorted(seen_ro | set(os.listdir(ro))) == listing, seen_ro
            # the watching does see files come and go: the restore happened in $TMPDIR
            assert any(name.endswith(".restoring") for name in seen_scratch), seen_scratch
            assert os.listdir(scratch) == []
    finally:
        os.chmod(ro, 0o755)
    # What verify restored in its subprocess: libSQL's rules read the same rows.
    assert_libsql_agrees(raw_store(storage, s3), "app.db", dump(db))


# --- replicate --once --config: a broken database does not stop the others -----------------

def test_once_config_backs_up_the_others_after_a_broken_database(run: Cli, tmp_path: Path,
                                                                 storage: S3Store) -> None:
    states = {}
    for name in ("first", "third"):
        conn = open_wal_db(tmp_path / f"{name}.db")
        insert_rows(conn, 10, start=len(states) * 1000)
        states[name] = dump_conn(conn)
        conn.close()
    (tmp_path / "second.db").write_bytes(b"this is not a database\n" * 100)
    config = tmp_path / "bottomless.toml"
    config.write_text("".join(f'[[databases]]\npath = "{n}.db"\ndb_name = "{n}"\n\n'
                              for n in ("first", "second", "third")))
    res = run("replicate", "--once", "--config", str(config), code=1)
    errors = lines(res.stderr)
    about_second = [e for e in errors if "not an SQLite database" in e]
    assert len(about_second) == 1 and "second" in about_second[0], res.stderr
    assert all(e.startswith("error: ") for e in errors) and len(errors) <= 2, res.stderr
    assert "second" in errors[-1] and "first" not in errors[-1] and "third" not in errors[-1]
    out = lines(res.stdout)
    assert len(out) == 2 and out[0].startswith("first: new generation") and \
        out[1].startswith("third: new generation"), res.stdout
    assert catalog.newest_generation(storage, "second") is None
    for name, state in states.items():
        target = tmp_path / f"restored-{name}.db"
        run("--db-name", name, "restore", "-o", str(target))
        assert dump(target) == state
