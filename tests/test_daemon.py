"""replicate as a daemon: a writer in another process, app checkpoints, outages, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bottomless_core import catalog
from bottomless_core.store.s3 import S3Store
from bottomless_dev.proxy import Proxy
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import Cli
from tests.helpers import dump, insert_rows, integrity, open_wal_db
from tests.procs import one_error_line

WRITER = Path(__file__).with_name("writer.py")
DEADLINE = 60.0


def poll(what: str, check: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    def __init__(self, args: list[str], env: dict[str, str], workdir: Path,
                 options: tuple[str, ...] = (), name: str = "daemon") -> None:
        self.status_file = workdir / f"{name}.json"
        self.log = workdir / f"{name}.log"
        self._log_f = open(self.log, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bottomless_cli.main", *args, "replicate", "--interval",
             "0.1", "--status-file", str(self.status_file), *options],
            env=env, stdout=self._log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def status(self) -> list[dict]:
        try:
            return json.loads(self.status_file.read_text())["databases"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return []

    def caught_up_after(self, t: float) -> bool:
        dbs = self.status()
        return bool(dbs) and all(d["behind_since"] is None and (d["last_success"] or 0) > t
                                 for d in dbs)

    def wait_caught_up(self, t: float) -> None:
        """Poll until caught up after ``t``; on timeout, fail with the status and the log."""
        try:
            poll("the daemon to catch up", lambda: self.caught_up_after(t))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status {self.status()}; log:\n"
                                 f"{self.text()[-3000:]}") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_f.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_f.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def _env(run: Cli, **extra: str) -> dict[str, str]:
    return {**os.environ, **run.env, **extra}


def _writer(db: Path, acked: Path, seconds: float, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(db), str(acked), str(seconds),
                             *extra])


def _acked_ids(acked: Path) -> set[int]:
    return {int(line) * 10 + k for line in acked.read_text().split() for k in range(10)}


def _restored_ids(run: Cli, tmp_path: Path, name: str = "app.db") -> set[int]:
    out = tmp_path / f"restored-{name}"
    run("--db-name", name, "restore", "-o", str(out), "--force")
    assert integrity(out) == "ok"
    return {row[0] for row in dump(out)["t"]}


def _new_db(path: Path) -> None:
    conn = open_wal_db(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.close()


def _daemon_on_new_db(run: Cli, tmp_path: Path, daemons: list[Daemon],
                      options: tuple[str, ...] = ()) -> tuple[Path, Path, Daemon]:
    """app.db with an empty table, a daemon replicating it, and where the writer acks go."""
    db, acked = tmp_path / "app.db", tmp_path / "acked"
    _new_db(db)
    d = Daemon(["-d", str(db)], _env(run), tmp_path, options)
    daemons.append(d)
    return db, acked, d


def test_follows_a_writer_and_ships_everything_on_sigterm(run: Cli, tmp_path: Path,
                                                          daemons: list[Daemon]) -> None:
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons)
    poll("daemon start", lambda: d.caught_up_after(0))
    writer = _writer(db, acked, 4.0)
    poll("a first ship while the writer runs",
         lambda: any(s["frames_shipped"] > 0 for s in d.status()))
    assert writer.poll() is None  # shipping happens while the app writes
    assert writer.wait(DEADLINE) == 0
    d.signal()
    assert d.wait() == 0, d.text()
    ids = _acked_ids(acked)
    assert len(ids) > 100
    assert ids <= _restored_ids(run, tmp_path)
    assert "event=shipped" in d.text() and "event=stopping" in d.text()


def test_killed_writer_loses_nothing_acknowledged(run: Cli, tmp_path: Path,
                                                  daemons: list[Daemon]) -> None:
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons)
    writer = _writer(db, acked, 30.0)
    poll("commits", lambda: acked.exists() and len(acked.read_text().split()) > 200)
    writer.kill()  # the application dies mid-write
    writer.wait()
    killed_at = time.time()
    d.wait_caught_up(killed_at)
    d.signal()
    assert d.wait() == 0, d.text()
    assert _acked_ids(acked) <= _restored_ids(run, tmp_path)


def test_aggressive_app_checkpoints_lose_nothing(run: Cli, tmp_path: Path, storage: S3Store,
                                                 daemons: list[Daemon]) -> None:
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons)
    writer = _writer(db, acked, 3.0, "--autocheckpoint", "10", "--truncate-every", "40")
    assert writer.wait(DEADLINE) == 0
    done = time.time()
    d.wait_caught_up(done)
    d.signal()
    assert d.wait() == 0, d.text()
    assert _acked_ids(acked) <= _restored_ids(run, tmp_path)
    assert len(list(catalog.list_generations(storage, "app.db"))) >= 1


def test_daemon_checkpoints_and_starts_generations(run: Cli, tmp_path: Path, storage: S3Store,
                                                   daemons: list[Daemon]) -> None:
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons, ("--checkpoint-pages", "300"))
    poll("daemon start", lambda: d.caught_up_after(0))
    writer = _writer(db, acked, 2.0, "--autocheckpoint", "0")  # the app never checkpoints
    assert writer.wait(DEADLINE) == 0
    done = time.time()
    d.wait_caught_up(done)
    assert d.status()[0]["checkpoints"] >= 1  # the WAL passed 300 frames while the app wrote
    # With no writer running, push the WAL past the threshold once more and wait for the
    # daemon's checkpoint of it: the app's next write must then start a new generation.
    checkpoints = d.status()[0]["checkpoints"]
    conn = open_wal_db(db)
    insert_rows(conn, 400, start=10**8, size=4000)
    poll("a checkpoint by the daemon", lambda: d.status()[0]["checkpoints"] > checkpoints)
    before = len(list(catalog.list_generations(storage, "app.db")))
    conn.execute("INSERT INTO t VALUES (-1, 'after the checkpoint')")  # restarts the WAL
    conn.close()
    poll("a new generation after the checkpoint",
         lambda: len(list(catalog.list_generations(storage, "app.db"))) > before)
    d.signal()
    assert d.wait() == 0, d.text()
    assert "event=checkpoint " in d.text()
    assert _acked_ids(acked) | {-1, 10**8 + 399} <= _restored_ids(run, tmp_path)


def test_outage_retries_and_catches_up(run: Cli, tmp_path: Path, s3: SeaweedServer,
                                       daemons: list[Daemon]) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db, autocheckpoint=1000)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    proxy = Proxy(s3.port)
    try:
        env = _env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint,
                   LIBSQL_BOTTOMLESS_S3_MAX_RETRIES="0")
        d = Daemon(["-d", str(db)], env, tmp_path, ("--checkpoint-pages", "5"))
        daemons.append(d)
        conn.execute("INSERT INTO t VALUES (1, 'before')")
        t = time.time()
        poll("first ship", lambda: d.caught_up_after(t))
        proxy.down()
        for i in range(2, 400):
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 500))
        poll("the outage to be noticed",
             lambda: any(s["last_error"] and s["behind_since"] for s in d.status()))
        assert "cannot reach" in d.status()[0]["last_error"]
        # the WAL cannot be checkpointed during the outage (said at a failed sync that sees it
        # past 10 x 5 frames: on a loaded machine the first one may come before the inserts)
        poll("the WAL growing warning", lambda: "event=wal_growing" in d.text())
        proxy.up()
        back = time.time()
        poll("catching up", lambda: d.caught_up_after(back))
        d.signal()
        assert d.wait() == 0, d.text()
        log = d.text()
        assert "event=sync_failed" in log and "event=recovered" in log
        conn.close()
        assert _restored_ids(run, tmp_path) == set(range(1, 400))
    finally:
        proxy.close()


def test_signals_during_an_outage(run: Cli, tmp_path: Path, s3: SeaweedServer,
                                  daemons: list[Daemon]) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    proxy = Proxy(s3.port)
    try:
        for retries, signals, code in (("0", 1, 1), ("8", 2, 128 + signal.SIGTERM)):
            env = _env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint,
                       LIBSQL_BOTTOMLESS_S3_MAX_RETRIES=retries)
            proxy.up()
            d = Daemon(["-d", str(db)], env, tmp_path, name=f"d{signals}")
            daemons.append(d)
            poll("start", lambda d=d: d.caught_up_after(0))
            proxy.down()
            conn.execute("INSERT INTO t(v) VALUES ('committed during the outage')")
            d.signal()
            if signals == 2:  # the final ship is still retrying: a second signal ends it now
                poll("the first signal", lambda d=d: "event=stopping" in d.text())
                started = time.monotonic()
                d.signal()
                assert d.wait(10) == code
                assert time.monotonic() - started < 5
            else:  # the final ship fails: committed frames are left behind -> non-zero exit
                assert d.wait() == code, d.text()
                assert "error: stopped with committed frames not shipped" in d.text()
        conn.close()
    finally:
        proxy.close()


def test_config_with_several_databases(run: Cli, tmp_path: Path, storage: S3Store,
                                       daemons: list[Daemon]) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _new_db(a)
    _new_db(b)
    config = tmp_path / "bottomless.toml"
    config.write_text(f'bucket = "{storage.bucket}"\n\n[[databases]]\npath = "a.db"\n\n'
                      '[[databases]]\npath = "b.db"\ndb_name = "second"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottomless_cli.main", "replicate", "--config", str(config),
         "--interval", "0.1", "--status-file", str(tmp_path / "multi.json")],
        env=_env(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wa = _writer(a, tmp_path / "acked-a", 2.0)
        wb = _writer(b, tmp_path / "acked-b", 2.0, "--start", "100000")
        assert wa.wait(DEADLINE) == 0 and wb.wait(DEADLINE) == 0
        done = time.time()

        def caught_up() -> bool:
            try:
                dbs = json.loads((tmp_path / "multi.json").read_text())["databases"]
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            return len(dbs) == 2 and all(x["behind_since"] is None and
                                         (x["last_success"] or 0) > done for x in dbs)

        poll("both databases to catch up", caught_up)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _acked_ids(tmp_path / "acked-a") <= _restored_ids(run, tmp_path, "a.db")
    assert _acked_ids(tmp_path / "acked-b") <= _restored_ids(run, tmp_path, "second")
    out = run("status", "--status-file", str(tmp_path / "multi.json"), code=1)  # stopped
    assert "second" in out.stdout and "a.db" in out.stdout and "stopped" in out.stdout
    assert out.stderr.startswith("error: the daemon is not running")


def test_checkpoints_start_generations_without_snapshots(run: Cli, tmp_path: Path,
                                                         storage: S3Store,
                                                         daemons: list[Daemon]) -> None:
    """After the daemon's own checkpoint the next generation restores through its parent;
    the snapshot policy (here: 3 in a row; while writes outrun the checkpoints it waits, but
    never past twice that) gives some of them a snapshot, uploaded in the background."""
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons,
                                     ("--checkpoint-pages", "100", "--snapshot-max-chain", "3"))
    poll("daemon start", lambda: d.caught_up_after(0))
    # (at most one generation a second: 8 s of writes make at least 6 checkpoints)
    writer = _writer(db, acked, 8.0, "--autocheckpoint", "0")
    assert writer.wait(DEADLINE) == 0
    done = time.time()
    d.wait_caught_up(done)
    status = d.status()[0]
    assert status["checkpoints"] >= 6, status
    d.signal()
    assert d.wait() == 0, d.text()
    facts = json.loads(run("--db-name", "app.db", "ls", "-v", "--json").stdout)
    assert all(f["complete"] for f in facts)
    with_snapshot = [f for f in facts if f["has_snapshot"]]
    assert len(facts) >= 5 and 2 <= len(with_snapshot) < len(facts), facts
    assert max(f["chain_depth"] for f in facts) <= 5
    assert "event=snapshot " in d.text()  # a background one, not only the first
    assert _acked_ids(acked) <= _restored_ids(run, tmp_path)
    run("--db-name", "app.db", "verify")


def test_removing_the_generation_being_written(run: Cli, tmp_path: Path, storage: S3Store,
                                               daemons: list[Daemon]) -> None:
    """rm -g of the daemon's current generation: it notices before its next upload and starts
    a new generation, so the bucket keeps a restorable newest generation."""
    db, _, d = _daemon_on_new_db(run, tmp_path, daemons)
    conn = open_wal_db(db)
    insert_rows(conn, 50)
    t = time.time()
    poll("first ship", lambda: d.caught_up_after(t))
    current = d.status()[0]["generation"]
    run("--db-name", "app.db", "rm", "-g", current, code=1)  # the newest: refused
    run("--db-name", "app.db", "rm", "-g", current, "--force")
    insert_rows(conn, 50, start=1000)
    t = time.time()
    poll("a new generation", lambda: d.caught_up_after(t) and
         d.status()[0]["generation"] != current)
    conn.close()
    assert "event=generation_removed" in d.text()
    gens = [str(g) for g in catalog.list_generations(storage, "app.db")]
    assert current not in gens and gens
    assert _restored_ids(run, tmp_path) == set(range(50)) | set(range(1000, 1050))
    d.signal()
    assert d.wait() == 0, d.text()


def test_a_status_file_that_cannot_be_written_stops_nothing(run: Cli, tmp_path: Path,
                                                            daemons: list[Daemon]) -> None:
    db = tmp_path / "app.db"
    _new_db(db)
    # the last --status-file given wins: a path whose directory does not exist
    d = Daemon(["-d", str(db)], _env(run), tmp_path,
               ("--status-file", str(tmp_path / "no-such-dir" / "status.json")))
    daemons.append(d)
    conn = open_wal_db(db)
    insert_rows(conn, 20)
    conn.close()
    poll("the rows to be shipped",
         lambda: "event=shipped" in d.text() or "event=generation" in d.text())
    assert d.proc.poll() is None
    assert d.text().count("event=status_file_failed") == 1
    d.signal()
    assert d.wait() == 0, d.text()
    assert _restored_ids(run, tmp_path) == set(range(20))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint(run: Cli, tmp_path: Path, daemons: list[Daemon]) -> None:
    import urllib.request

    port = _free_port()
    db, _, d = _daemon_on_new_db(run, tmp_path, daemons,
                                 ("--metrics-addr", f"127.0.0.1:{port}"))
    poll("daemon start", lambda: d.caught_up_after(0))
    conn = open_wal_db(db)  # kept open: the frames stay in the WAL for the daemon to ship
    insert_rows(conn, 200)
    t = time.time()
    poll("the rows to be shipped", lambda: d.caught_up_after(t))

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        values = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    m = scrape()
    assert m['bottomless_wal_frames_shipped_total{database="app.db"}'] > 0
    assert m['bottomless_wal_bytes_shipped_total{database="app.db"}'] > 0
    assert m['bottomless_replication_lag_seconds{database="app.db"}'] == 0
    assert m['bottomless_last_success_timestamp_seconds{database="app.db"}'] > t - 60
    assert m['bottomless_snapshots_total{database="app.db"}'] >= 1
    assert m['bottomless_replicating{database="app.db"}'] == 1
    puts = [v for k, v in m.items()
            if k.startswith("bottomless_s3_requests_total") and 'operation="PutObject"' in k]
    assert puts and puts[0] > 0
    assert any(k.startswith("bottomless_s3_sent_bytes_total") for k in m)
    conn.close()
    d.signal()
    assert d.wait() == 0, d.text()


def test_the_daemon_compacts_beside_its_syncs(run: Cli, tmp_path: Path, storage: S3Store,
                                              daemons: list[Daemon]) -> None:
    """Issue 17: with 1 s / 3 s windows the daemon merges what it ships into page packs in
    the background (from its own copies of the batches), and a restore reads them."""
    db, acked, d = _daemon_on_new_db(run, tmp_path, daemons,
                                     ("--compaction-levels", "1s,3s"))
    poll("daemon start", lambda: d.caught_up_after(0))
    writer = _writer(db, acked, 5.0, "--autocheckpoint", "0")
    assert writer.wait(DEADLINE) == 0
    d.wait_caught_up(time.time())
    poll("packs", lambda: d.status()[0]["packs_written"] >= 3)
    d.signal()
    assert d.wait() == 0, d.text()
    assert "event=compacted" in d.text() and "event=compaction_failed" not in d.text()
    gens = list(catalog.list_generations(storage, "app.db"))
    packs = [k for g in gens for k, _ in catalog.describe_generation(storage, "app.db",
                                                                       g).packs]
    assert {k.level for k in packs} >= {1}, packs
    out = run("--db-name", "app.db", "verify").stdout
    assert "page packs" in out and "integrity ok" in out
    assert _acked_ids(acked) <= _restored_ids(run, tmp_path)


def _forge_last_frame(storage: S3Store, db_name: str) -> str:
    """Change a byte of the page of the newest batch's last frame and give the frame the
    checksum that makes it valid again: a backup that restores cleanly to a wrong state."""
    from bottomless_core import walsum
    from bottomless_core.codec import compress, decompress
    from bottomless_core.wal import FRAME_HEADER_SIZE

    g = catalog.describe_generation(storage, db_name, catalog.newest_generation(storage,
                                                                                db_name))
    assert g.meta is not None and g.batches
    key, obj = g.batches[-1]
    size = FRAME_HEADER_SIZE + g.meta.page_size
    data = bytearray(decompress(storage.get(obj.key), key.codec))
    last = len(data) - size
    if len(data) > size:  # the chain value before it: the previous frame's stored checksum
        prev = last - size
        seed = (int.from_bytes(data[prev + 16:prev + 20], "big"),
                int.from_bytes(data[prev + 20:prev + 24], "big"))
    else:
        prev = g.batches[-2][1] if len(g.batches) > 1 else None
        assert prev is not None, "a generation with one one-frame batch"
        pdata = decompress(storage.get(prev.key), g.batches[-2][0].codec)
        seed = (int.from_bytes(pdata[-size + 16:-size + 20], "big"),
                int.from_bytes(pdata[-size + 20:-size + 24], "big"))
    data[last + size - 50] ^= 0x01  # in the cell content area, at the end of the page
    c = walsum.checksum(bytes(data[last:last + 8]) + bytes(data[last + 24:last + size]), seed,
                        False)
    data[last + 16:last + 24] = c[0].to_bytes(4, "big") + c[1].to_bytes(4, "big")
    storage.put(obj.key, compress(bytes(data), key.codec))
    return obj.key


def test_verify_every_catches_a_page_changed_in_the_bucket(run: Cli, tmp_path: Path,
                                                          storage: S3Store,
                                                          daemons: list[Daemon]) -> None:
    """Issue 15: --verify-every restores the newest state and compares it page by page with
    the database at the same frame; a page changed behind the daemon's back in the bucket
    (its checksum recomputed, so that restores still succeed) is reported within a period,
    in the log, the status and the metrics, and a fresh snapshot takes over."""
    db, _, d = _daemon_on_new_db(run, tmp_path, daemons,
                                 ("--verify-every", "2s", "--compaction-levels", "off"))
    conn = open_wal_db(db)
    insert_rows(conn, 200, size=300)
    poll("a verification that matches", lambda: (d.status() or [{}])[0].get(
        "verify_last_success"))
    assert d.status()[0]["verify_failures"] == 0
    before = d.status()[0]["generation"]
    forged = _forge_last_frame(storage, "app.db")
    out = tmp_path / "forged.db"
    run("--db-name", "app.db", "restore", "-o", str(out))  # restores fine: silently wrong
    assert integrity(out) == "ok" and dump(out) != dump(db)
    poll("the mismatch", lambda: d.status()[0]["verify_failures"] >= 1, deadline=30)
    s = d.status()[0]
    assert "differs from the local database" in s["verify_last_error"], s
    poll("a new generation", lambda: d.status()[0]["generation"] != before)
    assert "event=verify_failed" in d.text()
    assert forged.split("/")[0].removeprefix("app.db-") in d.text()
    d.signal()
    assert d.wait() == 0, d.text()
    conn.close()
    out.unlink()
    run("--db-name", "app.db", "restore", "-o", str(out))
    assert dump(out) == dump(db)  # the fresh snapshot holds the database as it is


def test_an_endpoint_down_at_start_is_retried(run: Cli, tmp_path: Path, s3: SeaweedServer,
                                              daemons: list[Daemon]) -> None:
    """Issue 16: the daemon exited at once ('cannot reach S3 endpoint') when the endpoint
    was down as it started, so the container recipe ran the app with no backup. Now it
    retries with backoff and says so in the log, the status and the metrics."""
    import urllib.request

    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 30)
    port = _free_port()
    proxy = Proxy(s3.port)
    try:
        proxy.down()
        env = _env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint,
                   LIBSQL_BOTTOMLESS_S3_MAX_RETRIES="0")
        d = Daemon(["-d", str(db)], env, tmp_path, ("--metrics-addr", f"127.0.0.1:{port}"))
        daemons.append(d)
        poll("the outage in the status", lambda: any(
            s["state"] == "retrying" and "cannot reach" in (s["last_error"] or "")
            for s in d.status()))
        assert d.proc.poll() is None, d.text()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'bottomless_replicating{database="app.db"} 0.0' in metrics
        assert b'bottomless_errors_total{database="app.db",kind="storage"}' in metrics
        assert "event=endpoint_unreachable" in d.text()
        proxy.up()
        back = time.time()
        d.wait_caught_up(back)
        insert_rows(conn, 20, start=100)
        d.wait_caught_up(time.time())
        d.signal()
        assert d.wait() == 0, d.text()
    finally:
        proxy.close()
    conn.close()
    assert _restored_ids(run, tmp_path) == set(range(30)) | set(range(100, 120))


def test_a_missing_bucket_stops_that_database_not_the_others(run: Cli, tmp_path: Path,
                                                             storage: S3Store,
                                                             daemons: list[Daemon]) -> None:
    """Issue 16: with --config, one missing bucket stopped every database."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _new_db(a)
    _new_db(b)
    config = tmp_path / "bottomless.toml"
    config.write_text(f'bucket = "{storage.bucket}"\n[[databases]]\npath = "a.db"\n'
                      '[[databases]]\npath = "b.db"\nbucket = "no-such-bucket-16"\n')
    d = Daemon([], _env(run), tmp_path, ("--config", str(config)))
    daemons.append(d)
    conn = open_wal_db(a)
    insert_rows(conn, 25)
    conn.close()
    written = time.time()

    def state(name: str) -> dict:
        return next((s for s in d.status() if s["db_name"] == name), {})

    poll("a.db shipped while b.db is stopped", lambda: (state("a.db").get("last_success") or 0)
         > written and state("b.db").get("state") == "failed")
    assert state("a.db")["state"] == "running"
    assert "does not exist" in state("b.db")["last_error"]
    assert "event=not_started" in d.text()
    d.signal()
    assert d.wait() == 1
    last = [line for line in d.text().splitlines() if line.strip()][-1]
    assert last.startswith("error: 1 of 2 databases not replicated: b.db: bucket "
                           "'no-such-bucket-16' does not exist"), d.text()
    assert _restored_ids(run, tmp_path, "a.db") == set(range(25))


def test_status_of_a_killed_daemon(run: Cli, tmp_path: Path, daemons: list[Daemon]) -> None:
    """Issue 16: after SIGKILL, `status` still said running (exit 0); its table wrapped
    generation ids at 80 columns."""
    _, _, d = _daemon_on_new_db(run, tmp_path, daemons)
    poll("daemon start", lambda: d.caught_up_after(0))
    generation = d.status()[0]["generation"]
    out = run("status", "--status-file", str(d.status_file))
    assert f"pid {d.proc.pid}: running" in out.stdout
    assert generation in out.stdout  # on one line, whole
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    d.proc.kill()
    d.wait()
    out = run("status", "--status-file", str(d.status_file), code=1)
    assert generation in out.stdout  # the last status written is still shown
    line = one_error_line(out.stderr, "not running (last update", f"pid {d.proc.pid} gone)")
    assert line.startswith("error: the daemon is not running")
    out = run("status", "--status-file", str(d.status_file), "--json", code=1)
    assert json.loads(out.stdout)["pid"] == d.proc.pid


def test_point_in_time_inside_an_outage(run: Cli, tmp_path: Path, s3: SeaweedServer,
                                        daemons: list[Daemon]) -> None:
    """Issue 16, the bound docs/operations.md states: commits made during an outage carry
    the time they were shipped after it, so `restore -u T` for a T inside the outage gives
    the state from before the outage (not 'one poll interval plus a second' before T)."""
    import datetime as dt

    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    proxy = Proxy(s3.port)
    try:
        env = _env(run, LIBSQL_BOTTOMLESS_ENDPOINT=proxy.endpoint,
                   LIBSQL_BOTTOMLESS_S3_MAX_RETRIES="0")
        d = Daemon(["-d", str(db)], env, tmp_path)
        daemons.append(d)
        d.wait_caught_up(time.time())
        proxy.down()
        insert_rows(conn, 10, start=100)  # committed during the outage
        committed = time.time()
        poll("the outage to be noticed", lambda: any(s["last_error"] for s in d.status()))
        inside = committed + 2  # well after the commits, before the endpoint is back
        poll("a moment inside the outage", lambda: time.time() > inside + 1)
        proxy.up()
        back = time.time()
        d.wait_caught_up(back)
        d.signal()
        assert d.wait() == 0, d.text()
    finally:
        proxy.close()
    conn.close()

    def restored_at(t: float) -> set[int]:
        out = tmp_path / f"at-{t}.db"
        when = dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
        run("--db-name", "app.db", "restore", "-u", when, "-o", str(out))
        return {row[0] for row in dump(out)["t"]}

    assert restored_at(inside) == set(range(10))
    assert restored_at(time.time() + 2) == set(range(10)) | set(range(100, 110))
