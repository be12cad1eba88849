"""replicate --dir: a directory of databases, picked up as they come, let go of as they go
(issue 19), and what an idle one costs."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottomless_core.config import read_config
from bottomless_core.errors import ConfigError
from bottomless_core.fleet import Directory, Watcher, database_files
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, insert_rows, integrity, open_wal_db
from tests.procs import cli_env, poll
from tests.test_daemon import Daemon


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def _new_db(path: Path, rows: int = 10, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = open_wal_db(path)
    insert_rows(conn, rows, start=start)
    conn.close()


def _add(path: Path, rows: int, start: int) -> None:
    conn = sqlite3.connect(path)
    insert_rows(conn, rows, start=start)
    conn.close()


def _restored(run: Cli, tmp_path: Path, name: str) -> dict:
    out = tmp_path / "restored" / name
    out.parent.mkdir(exist_ok=True)
    run("--db-name", name, "restore", "-o", str(out), "--force")
    assert integrity(out) == "ok"
    return dump(out)


def _running(d: Daemon) -> dict[str, dict]:
    return {s["db_name"]: s for s in d.status() if s["state"] == "running"}


# --- what a directory holds (no server) ---------------------------------------------------

def test_database_files_pattern_recursion_and_side_files(tmp_path: Path) -> None:
    for name in ("a.db", "a.db-wal", "a.db-shm", "b.sqlite", ".a.db.bottomless-lock",
                 "sub/c.db", "sub/deeper/d.db", "sub/c.db-journal"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert sorted(n for n, _ in database_files(Directory(tmp_path))) == ["a.db"]
    assert sorted(n for n, _ in database_files(Directory(tmp_path, recursive=True))) == [
        "a.db", "sub/c.db", "sub/deeper/d.db"]
    assert [n for n, _ in database_files(Directory(tmp_path, "*.sqlite"))] == ["b.sqlite"]


def test_watcher_reports_a_non_database_once_until_it_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _new_db(tmp_path / "a.db")
    (tmp_path / "junk.db").write_bytes(b"not a database")
    journal = tmp_path / "journal.db"
    conn = sqlite3.connect(journal)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    w = Watcher(Directory(tmp_path))
    new, gone = w.scan()
    assert [n for n, _ in new] == ["a.db"] and gone == []
    w.follow("a.db", tmp_path / "a.db")
    assert caplog.text.count("event=skipped") == 2
    assert "not in WAL mode" in caplog.text and "not an SQLite database" in caplog.text
    assert w.scan() == ([], [])  # nothing new, nothing said again
    assert caplog.text.count("event=skipped") == 2
    conn.execute("PRAGMA journal_mode=WAL")  # changed: looked at again, and followed now
    conn.close()
    new, _ = w.scan()
    assert [n for n, _ in new] == ["journal.db"]
    w.follow("journal.db", journal)
    (tmp_path / "a.db").unlink()
    assert w.scan() == ([], ["a.db"])


def test_directories_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('bucket = "fleet"\ninterval = 2\n[[directories]]\npath = "tenants"\n'
                    'recursive = true\nprefix = "t-"\npattern = "*.sqlite"\n')
    read = read_config(path)
    assert read.databases == []
    (d,) = read.directories
    assert d.directory == Directory(tmp_path / "tenants", "*.sqlite", True)
    db = d.database("eu/acme.sqlite", tmp_path / "tenants/eu/acme.sqlite")
    assert db.db_name == "t-eu%2Facme.sqlite" and db.bucket == "fleet"
    assert db.settings.interval == 2
    for text, message in (("[[directories]]\npath = 'x'\nrecursive = 'yes'\n", "recursive"),
                          ("[[directories]]\npath = 'x'\ndb_name = 'y'\n", "unknown key"),
                          ("[[directories]]\npath = 'x'\nprefix = 'x/'\n", "prefix"),
                          ("[[databases]]\npath = 'x'\ndb_name = 'a/b'\n", "holds '/'"),
                          ("bucket = 'x'\n", r"or \[\[directories\]\]")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_config(path)


# --- the daemon on a directory -------------------------------------------------------------

def test_a_directory_of_databases_as_they_come_and_go(run: Cli, tmp_path: Path,
                                                      daemons: list[Daemon]) -> None:
    tenants = tmp_path / "tenants"
    _new_db(tenants / "a.db", 20)
    _new_db(tenants / "eu" / "b.db", 30)
    _new_db(tenants / "gone.db", 5)
    _new_db(tenants / "replaced.db", 7)
    (tenants / "junk.db").write_text("not a database")
    d = Daemon([], cli_env(run), tmp_path,
               options=("--dir", str(tenants), "--recursive", "--prefix", "t-"))
    daemons.append(d)
    names = {"t-a.db", "t-eu%2Fb.db", "t-gone.db", "t-replaced.db"}
    poll("four databases backed up", lambda: set(_running(d)) == names)
    t = time.time()
    _add(tenants / "a.db", 5, start=1000)
    _new_db(tenants / "eu" / "new.db", 3)
    (tenants / "gone.db").unlink()
    for side in ("-wal", "-shm"):
        (tenants / f"gone.db{side}").unlink(missing_ok=True)
    _new_db(tmp_path / "other.db", 9, start=500)
    os.replace(tmp_path / "other.db", tenants / "replaced.db")
    for side in ("-wal", "-shm"):
        if (tmp_path / f"other.db{side}").exists():
            os.replace(tmp_path / f"other.db{side}", tenants / f"replaced.db{side}")
    want = {"t-a.db", "t-eu%2Fb.db", "t-eu%2Fnew.db", "t-replaced.db"}
    poll("the new one followed and the removed one let go of",
         lambda: set(_running(d)) == want
         and all((s["last_success"] or 0) > t for s in _running(d).values()))
    d.signal(signal.SIGTERM)
    assert d.wait() == 0, d.text()[-3000:]
    text = d.text()
    assert text.count("event=skipped") == 1 and "junk.db: not an SQLite database" in text
    assert "db=t-gone.db event=gone" in text
    assert "sync_failed" not in text  # a removed database is not an error
    assert not (tenants / ".gone.db.bottomless-lock").exists()  # nor is its lock left over
    assert (tenants / ".a.db.bottomless-lock").exists()
    for name, path in (("t-a.db", "a.db"), ("t-eu%2Fb.db", "eu/b.db"),
                       ("t-eu%2Fnew.db", "eu/new.db"), ("t-replaced.db", "replaced.db")):
        assert _restored(run, tmp_path, name) == dump(tenants / path), name
    assert len(_restored(run, tmp_path, "t-gone.db")["t"]) == 5  # its last state stays
    out = run("--db-name", "t-eu/b.db", "ls", code=2)  # (libSQL could not read that name)
    assert "write it 't-eu%2Fb.db'" in out.stderr


def test_a_database_another_replicator_holds_is_taken_when_free(
        run: Cli, tmp_path: Path, daemons: list[Daemon]) -> None:
    tenants = tmp_path / "tenants"
    _new_db(tenants / "a.db", 4)
    _new_db(tenants / "b.db", 6)
    one = Daemon(["-d", str(tenants / "b.db")], cli_env(run), tmp_path, name="one")
    daemons.append(one)
    poll("b.db backed up by the first daemon", lambda: _running(one))
    fleet = Daemon([], cli_env(run), tmp_path, options=("--dir", str(tenants)), name="fleet")
    daemons.append(fleet)
    poll("a.db backed up by the directory's", lambda: set(_running(fleet)) == {"a.db"})
    poll("b.db named as waiting", lambda: "event=waiting" in fleet.text())
    one.signal(signal.SIGTERM)
    assert one.wait() == 0
    poll("b.db taken over once free", lambda: set(_running(fleet)) == {"a.db", "b.db"})
    fleet.signal(signal.SIGTERM)
    assert fleet.wait() == 0
    assert fleet.text().count("event=waiting") == 1


def test_an_idle_database_sends_no_request(run: Cli, s3: SeaweedServer, tmp_path: Path,
                                           daemons: list[Daemon]) -> None:
    tenants = tmp_path / "tenants"
    for i in range(5):
        _new_db(tenants / f"db{i}.db", 3)
    with Proxy(s3.port) as proxy:
        d = Daemon([], cli_env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint), tmp_path,
                   options=("--dir", str(tenants)))
        daemons.append(d)
        poll("all backed up", lambda: len(_running(d)) == 5)
        # the start-up writes settle (compaction of the first batches, the status file)
        poll("quiet", lambda: _quiet_for(proxy, 2.0), deadline=60)
        before = proxy.totals().requests
        until = time.monotonic() + 3.0
        while time.monotonic() < until:  # three seconds of five idle databases
            assert proxy.totals().requests == before, proxy.summary()
            time.sleep(0.1)
        t = time.time()
        _add(tenants / "db3.db", 2, start=100)
        poll("the commit shipped", lambda: (_running(d)["db3.db"]["last_success"] or 0) > t)
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
    assert _restored(run, tmp_path, "db3.db") == dump(tenants / "db3.db")


def _quiet_for(proxy: Proxy, seconds: float) -> bool:
    """No request for ``seconds`` (polled: True once so)."""
    n = proxy.totals().requests
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proxy.totals().requests != n:
            return False
        time.sleep(0.05)
    return True


def test_once_over_a_directory(run: Cli, tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    _new_db(tenants / "a.db", 3)
    _new_db(tenants / "b.db", 4)
    conn = sqlite3.connect(tenants / "journal.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    out = run("replicate", "--once", "--dir", str(tenants))
    assert "journal.db: skipped: not in WAL mode" in out.stderr
    assert "a.db: new generation" in out.stdout and "b.db: new generation" in out.stdout
    assert _restored(run, tmp_path, "b.db") == dump(tenants / "b.db")
    out = run("replicate", "--once", "--dir", str(tmp_path / "nope"), code=2)
    assert "no such directory" in out.stderr
    out = run("-d", str(tenants / "a.db"), "replicate", "--once", "--dir", str(tenants),
              code=2)
    assert "not -d/--database and --dir" in out.stderr


def test_status_of_many_databases(run: Cli, tmp_path: Path) -> None:
    import json

    dbs = [{"db_name": f"t{i}.db", "state": "running", "lag_seconds": 0.0,
            "frames_shipped": i} for i in range(40)]
    dbs[7].update(state="retrying", last_error="cannot reach S3")
    dbs[9]["lag_seconds"] = 42.0
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"updated": time.time(), "pid": os.getpid(), "system": "",
                                "databases": dbs}))
    out = run("status", "--status-file", str(path)).stdout
    assert "40 databases: 1 retrying, 39 running; worst lag 42.0s" in out
    assert "t7.db" in out and "cannot reach S3" in out and "t9.db" in out
    assert "t8.db" not in out  # a well one has no line of its own
    out = run("status", "--status-file", str(path), "--all").stdout
    assert all(f"t{i}.db" in out for i in range(40))


def test_a_database_listed_and_in_a_directory_is_followed_once(
        run: Cli, tmp_path: Path, daemons: list[Daemon]) -> None:
    tenants = tmp_path / "tenants"
    _new_db(tenants / "a.db", 4)
    _new_db(tenants / "b.db", 5)
    config = tmp_path / "b.toml"
    config.write_text(f'[[databases]]\npath = "{tenants / "a.db"}"\ndb_name = "listed-a"\n'
                      f'[[directories]]\npath = "{tenants}"\n')
    d = Daemon([], cli_env(run), tmp_path, options=("--config", str(config)))
    daemons.append(d)
    poll("both backed up", lambda: set(_running(d)) == {"listed-a", "b.db"})
    poll("the twin named once", lambda: "same file as the database 'listed-a'" in d.text())
    _add(tenants / "a.db", 3, start=100)
    t = time.time()
    poll("shipped", lambda: (_running(d)["listed-a"]["last_success"] or 0) > t)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert d.text().count("event=waiting") == 1
    assert _restored(run, tmp_path, "listed-a") == dump(tenants / "a.db")
