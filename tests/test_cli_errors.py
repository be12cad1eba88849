"""Bad input: one clear error line, a non-zero exit, nothing damaged locally or in the bucket."""

from __future__ import annotations

import http.server
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bottomless_core import catalog
from bottomless_core.codec import Codec, compress, decompress
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import insert_rows, integrity, open_wal_db


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _snapshot(storage: S3Store) -> dict[str, bytes]:
    return {o.key: storage.get(o.key) for o in storage.list_objects("")}


@pytest.fixture
def backed_up(run: Cli, tmp_path: Path, storage: S3Store) -> Path:
    """app.db replicated in three batches; the local file is kept."""
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    for i in range(3):
        insert_rows(conn, 50, start=i * 100)
        run("-d", str(db), "replicate", "--once")
    conn.close()
    return db


def test_unreachable_endpoint(run: Cli, backed_up: Path) -> None:
    before = backed_up.read_bytes()
    out = run("-e", "http://127.0.0.1:9", "-d", str(backed_up), "ls", code=1,
              env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"})
    _one_error_line(out.stderr, "cannot reach S3 endpoint http://127.0.0.1:9")
    out = run("-e", "http://127.0.0.1:9", "databases", code=1,
              env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"})
    _one_error_line(out.stderr, "cannot reach S3 endpoint http://127.0.0.1:9")
    out = run("-e", "http://127.0.0.1:9", "-d", str(backed_up), "replicate", "--once", code=1,
              env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"})
    _one_error_line(out.stderr, "cannot reach")
    assert backed_up.read_bytes() == before


def test_missing_bucket(run: Cli, backed_up: Path) -> None:
    for args in (["ls"], ["replicate", "--once"], ["restore", "--force"], ["rm", "-g",
                 "00000000-0000-7000-8000-000000000000"], ["databases"], ["ls", "--all"]):
        out = run("-b", "no-such-bucket", "-d", str(backed_up), *args, code=1)
        _one_error_line(out.stderr, "bucket 'no-such-bucket' does not exist",
                        "--create-bucket")  # (issue 16: the S3 one did not say)


class _WebPage(http.server.BaseHTTPRequestHandler):
    """A web server, not S3: every request gets a page with the class's status."""

    status = 200

    def _page(self) -> None:
        body = b"<!DOCTYPE html><html><body><p>Welcome<br></body></html>"
        self.send_response(type(self).status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("status", [200, 404, 403])
def test_an_endpoint_that_is_no_s3_server(run: Cli, backed_up: Path, status: int) -> None:
    """Issue 16: a web server's 404 said 'bucket does not exist', a 200 page listed nothing
    (ls exit 0) or failed deep in the lease."""
    handler = type("Page", (_WebPage,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    before = backed_up.read_bytes()
    try:
        for args in (["ls"], ["replicate", "--once"], ["restore", "--force"], ["databases"]):
            out = run("-e", endpoint, "-d", str(backed_up), *args, code=1,
                      env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"})
            _one_error_line(out.stderr, f"the endpoint {endpoint} does not answer as S3",
                            "text/html page")
            assert "HTTP 500" not in out.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert backed_up.read_bytes() == before


def test_create_bucket_only_when_asked(run: Cli, tmp_path: Path, s3: SeaweedServer) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 5)
    out = run("-b", "fresh-bucket-1", "-d", str(db), "replicate", "--once", code=1)
    _one_error_line(out.stderr, "does not exist")
    run("-b", "fresh-bucket-1", "-d", str(db), "replicate", "--once", "--create-bucket")
    out = run("-b", "fresh-bucket-1", "-d", str(db), "ls")
    assert len(out.stdout.split()) == 1
    conn.close()


def test_bad_credentials(run: Cli, backed_up: Path, s3: SeaweedServer, storage: S3Store) -> None:
    secret = "definitely-wrong-secret"
    before = _snapshot(storage)
    for args in (["ls"], ["replicate", "--once"], ["restore", "--force"], ["databases"]):
        out = run("-d", str(backed_up), *args, code=1, env={"AWS_SECRET_ACCESS_KEY": secret})
        _one_error_line(out.stderr, "refused the credentials")
        assert secret not in out.output and s3.secret_key not in out.output
    assert _snapshot(storage) == before


def test_no_credentials_at_all(run: Cli, backed_up: Path, tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None,
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    out = run("-d", str(backed_up), "ls", code=1, env=env)
    _one_error_line(out.stderr, "no S3 credentials")
    out = run("-d", str(backed_up), "ls", code=1, env={**env, "AWS_PROFILE": "nobody"})
    _one_error_line(out.stderr, "AWS profile 'nobody' not found")


def test_unknown_generation(run: Cli, backed_up: Path, tmp_path: Path) -> None:
    unknown = "e4ce6826-0000-7000-8000-000000000000"
    for args in (["restore", "-g", unknown, "-o", str(tmp_path / "x.db")],
                 ["rm", "-g", unknown], ["verify", "-g", unknown]):
        out = run("-d", str(backed_up), *args, code=1)
        _one_error_line(out.stderr, unknown, "not found")
    out = run("-d", str(backed_up), "restore", "-g", "not-a-uuid", code=2)
    _one_error_line(out.stderr, "not a generation id")


@pytest.mark.parametrize("args", [["restore", "--utc-time"], ["rm", "--older-than"],
                                  ["ls", "--newer-than"]])
@pytest.mark.parametrize("text", ["next tuesday-ish", ""])
def test_unparsable_date(run: Cli, backed_up: Path, args: list[str], text: str) -> None:
    out = run("-d", str(backed_up), *args, text, code=2)
    _one_error_line(out.stderr, "cannot parse date/time")


def test_non_sqlite_file(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not a database\n" * 20)
    out = run("-d", str(bogus), "replicate", "--once", code=1)
    _one_error_line(out.stderr, "not an SQLite database")
    assert bogus.read_text().startswith("this is not")
    assert not list(storage.list_objects(""))
    out = run("-d", str(tmp_path / "missing.db"), "replicate", "--once", code=1)
    _one_error_line(out.stderr, "no such database file")
    empty = tmp_path / "empty.db"
    empty.touch()
    out = run("-d", str(empty), "replicate", "--once", code=1)
    _one_error_line(out.stderr, "empty")


def test_rollback_journal_database(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    db = tmp_path / "journal.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    out = run("-d", str(db), "replicate", "--once", code=1)
    _one_error_line(out.stderr, "not in WAL mode")
    assert db.read_bytes() == before
    assert not db.with_name("journal.db-wal").exists()
    assert not list(storage.list_objects(""))


def _batches(storage: S3Store, name: str = "app.db") -> list:
    gen = next(catalog.list_generations(storage, name))
    return catalog.describe_generation(storage, name, gen).batches


def _corrupt_case(storage: S3Store, case: str) -> str:
    gen = next(catalog.list_generations(storage, "app.db"))
    g = catalog.describe_generation(storage, "app.db", gen)
    middle = g.batches[1][1].key
    if case == "bad zstd":
        storage.put(middle, b"\x28\xb5\x2f\xfd garbage garbage")
        return "corrupt zstd"
    if case == "bad checksum":
        raw = bytearray(decompress(storage.get(middle), Codec.ZSTD))
        raw[24 + 2000] ^= 0xFF  # a byte in the first frame's page
        storage.put(middle, compress(bytes(raw), Codec.ZSTD))
        return "fails its checksum"
    if case == "missing batch":
        storage.delete_many([middle])
        return "WAL batch missing"
    if case == "truncated batch":
        storage.put(middle, storage.get(middle)[:-10])
        return "truncated or corrupt object"
    assert g.snapshot is not None
    info = storage.head(g.snapshot.key)
    assert info is not None
    storage.put(g.snapshot.key, storage.get(g.snapshot.key)[:-10], metadata=info.metadata)
    return "truncated or corrupt snapshot"


@pytest.mark.parametrize("case", ["bad zstd", "bad checksum", "missing batch",
                                  "truncated batch", "truncated snapshot"])
def test_corrupt_objects(run: Cli, backed_up: Path, storage: S3Store, case: str) -> None:
    message = _corrupt_case(storage, case)
    before_bucket = _snapshot(storage)
    before_local = backed_up.read_bytes()
    if case == "missing batch":
        # frames after a gap cannot be applied, but up to it is a committed state: restore
        # gives it, with a warning; verify reports the damage (below)
        out = run("-d", str(backed_up), "restore", "-o", str(backed_up.with_name("r.db")))
        assert "warning: " in out.stderr and message in out.stderr
        assert integrity(backed_up.with_name("r.db")) == "ok"
        backed_up.with_name("r.db").unlink()
        out = run("-d", str(backed_up), "verify", code=1)
        _one_error_line(out.stderr, "a restore stops at the last commit before frame")
        return
    out = run("-d", str(backed_up), "restore", "--force", code=1)
    _one_error_line(out.stderr, message)
    assert backed_up.read_bytes() == before_local  # the existing database is untouched
    assert not [p for p in backed_up.parent.iterdir() if "restoring" in p.name]
    assert _snapshot(storage) == before_bucket
    out = run("-d", str(backed_up), "verify", code=1)
    _one_error_line(out.stderr, message)


def test_debug_shows_traceback(run: Cli, tmp_path: Path) -> None:
    out = run("--debug", "-d", str(tmp_path / "missing.db"), "replicate", "--once", code=1)
    assert "Traceback" in out.stderr
    assert "error: " in out.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["-d", "{tmp}", "restore"], "is a directory"),
    (["restore", "--no-such-option"], "No such option"),
    (["rm", "--keep-last", "0"], "--keep-last"),
    (["-d", "{tmp}/app.db", "restore", "-o", "{tmp}"], "is a directory"),
    (["ls", "-d"], "option -d needs a value"),  # (after the command: issue 16)
])
def test_usage_errors_are_one_line_too(tmp_path: Path, args: list[str], needle: str) -> None:
    """Option values click refuses read like every other error (the installed command)."""
    argv = [a.format(tmp=tmp_path) for a in args]
    out = subprocess.run([sys.executable, "-m", "bottomless_cli.main", "-e",
                          f"file://{tmp_path}/b", *argv], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 2, out
    _one_error_line(out.stderr, needle)


@pytest.mark.parametrize("command", ["rm", "restore", "ls", "verify", "copy", "snapshot"])
def test_an_empty_generation_is_a_usage_error(run: Cli, backed_up: Path, tmp_path: Path,
                                              storage: S3Store, command: str) -> None:
    """Issue 16: `rm -g ""` gave 'unexpected ValueError' with exit 1."""
    before = _snapshot(storage)
    extra = ["--to-dir", str(tmp_path / "copy")] if command == "copy" else []
    out = run("-d", str(backed_up), command, "-g", "", *extra, code=2)
    _one_error_line(out.stderr, "-g/--generation is empty")
    assert _snapshot(storage) == before


def test_a_full_disk_where_the_lock_file_lives(run: Cli, backed_up: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: 'unexpected OSError' without the path."""
    import errno
    import os

    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".bottomless-lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    before = backed_up.read_bytes()
    out = run("-d", str(backed_up), "replicate", "--once", code=1)
    _one_error_line(out.stderr, f".{backed_up.name}.bottomless-lock",
                    "cannot write the replicator lock file (No space left on device)")
    monkeypatch.undo()
    run("-d", str(backed_up), "replicate", "--once")  # the lock was let go
    assert backed_up.read_bytes() == before
