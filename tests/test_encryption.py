"""Client-side age encryption (--age-recipient / --age-identity), S3 server-side encryption
(--sse), and libSQL's --encryption-key refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519

from bottomless_core import catalog, layout
from bottomless_core.agekeys import AgeKeys
from bottomless_core.database import ReadLock
from bottomless_core.errors import ConfigError
from bottomless_core.replicator import ReplicateOptions, Replicator
from bottomless_core.store.age import AgeStore
from bottomless_core.store.base import AGE_MAGIC
from bottomless_core.store.config import ServerSideEncryption, StorageConfig
from bottomless_core.store.s3 import S3Store
from tests.chains import T0, Driver
from tests.conftest import Cli
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db

MARK = "PLAINTEXT-ROW-MARKER"

# Restores of buckets holding age objects are not cross-checked with libSQL's rules (it cannot
# decrypt them); the plaintext restores of this module still are.
pytestmark = pytest.mark.libsql_exempt("encrypted: libSQL cannot read age objects",
                                       encrypted=True)


def _key(tmp_path: Path, name: str = "key.txt") -> tuple[x25519.Identity, Path]:
    ident = x25519.Identity.generate()
    path = tmp_path / name
    path.write_text(f"# public key: {ident.to_public()}\n{ident}\n")
    return ident, path


def _marked_rows(conn: sqlite3.Connection, n: int, start: int = 0) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)",
                     ((i, f"{MARK}-{i:08d}") for i in range(start, start + n)))
    conn.execute("COMMIT")


def _one_error(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _objects(storage: S3Store) -> dict[str, bytes]:
    return {o.key: storage.get(o.key) for o in storage.list_objects("")}


def test_encrypted_replicate_restore(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    ident, key_file = _key(tmp_path)
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 3000)
    enc = ("--age-recipient", str(ident.to_public()))
    # raw compression: any plaintext row would be visible in the objects as it is
    run(*enc, "-d", str(db), "replicate", "--once", "--compression", "raw")
    _marked_rows(conn, 500, start=10_000)
    conn.execute(f"UPDATE t SET v = v || '-{MARK}' WHERE id % 5 = 0")
    run(*enc, "-d", str(db), "replicate", "--once", "--compression", "raw")
    expected = dump_conn(conn)
    conn.close()

    objects = _objects(storage)
    gen = catalog.newest_generation(storage, "app.db")
    g = catalog.describe_generation(storage, "app.db", gen)
    assert g.snapshot is not None and len(g.batches) >= 2
    for key, data in objects.items():
        assert MARK.encode() not in data, key
        name = key.rsplit("/", 1)[-1]
        if layout.BatchKey.parse(name) or layout.snapshot_codec(name):
            assert data.startswith(AGE_MAGIC), key
        else:  # .meta, .changecounter, .dep, the lease: readable as ever
            assert not data.startswith(AGE_MAGIC), key
    assert layout.Meta.decode(objects[g.key(layout.META)]).page_size == 4096
    # the age CLI's format: the plaintext of a batch is the compressed batch
    batch_key = g.batches[0][1].key
    assert MARK.encode() in pyrage.decrypt(objects[batch_key], [ident])

    assert "age (client-side)" in run("-d", str(db), "ls", "-v").stdout

    target = tmp_path / "restored.db"
    err = run("-d", str(db), "restore", "-o", str(target), code=2).stderr
    _one_error(err, "objects are encrypted", "--age-identity")
    assert not target.exists()
    _, other = _key(tmp_path, "other.txt")
    err = run("--age-identity", str(other), "-d", str(db), "restore", "-o", str(target),
              code=2).stderr
    _one_error(err, "none of the --age-identity keys")
    assert not target.exists()

    run("--age-identity", str(key_file), "-d", str(db), "restore", "-o", str(target))
    assert dump(target) == expected
    assert integrity(target) == "ok"
    # the secret key itself in the variable (a container's secret)
    again = tmp_path / "again.db"
    run("-d", str(db), "restore", "-o", str(again),
        env={"LIBSQL_BOTTOMLESS_AGE_IDENTITY": str(ident)})
    assert dump(again) == expected
    assert _objects(storage) == objects  # reading changed nothing


def test_zstd_snapshot_is_age_of_zstd(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    ident, key_file = _key(tmp_path)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops team\n{ident.to_public()}\n")
    db = tmp_path / "z.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 200)
    conn.close()  # checkpointed: everything is in the snapshot
    err = run("--age-recipient", str(key_file), "-d", str(db), "replicate", "--once",
              code=2).stderr
    _one_error(err, "is a secret key")
    assert "AGE-SECRET-KEY" not in err
    run("-d", str(db), "replicate", "--once",
        env={"LIBSQL_BOTTOMLESS_AGE_RECIPIENT": str(recipients)})  # a recipients file
    g = catalog.describe_generation(storage, "z.db", catalog.newest_generation(storage, "z.db"))
    assert g.snapshot is not None
    plain = pyrage.decrypt(storage.get(g.snapshot.key), [ident])
    image = zstandard.ZstdDecompressor().decompressobj().decompress(plain)
    assert image.startswith(b"SQLite format 3\0") and MARK.encode() in image


def test_encrypted_chain_snapshot_command_and_copy(run: Cli, tmp_path: Path,
                                                   storage: S3Store) -> None:
    """Generations without a snapshot (the daemon's, after its checkpoint), the `snapshot`
    command that gives one a snapshot, and copy -> restore --from-dir: all encrypted."""
    ident, key_file = _key(tmp_path)
    db = tmp_path / "chain.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 400)
    d = Driver(db, AgeStore(storage, AgeKeys((ident.to_public(),), ())))
    try:
        d.sync()
        d.at(10).checkpoint()
        _marked_rows(conn, 400, start=1000)
        d.at(20).sync()
    finally:
        d.close()
    expected = dump_conn(conn)
    conn.close()
    newest = catalog.newest_generation(storage, "chain.db")
    assert catalog.describe_generation(storage, "chain.db", newest).snapshot is None
    keys = ("--age-recipient", str(ident.to_public()), "--age-identity", str(key_file))
    err = run("--db-name", "chain.db", "snapshot", code=2).stderr
    _one_error(err, "is encrypted", "--age-recipient")
    run(*keys, "--db-name", "chain.db", "snapshot")
    g = catalog.describe_generation(storage, "chain.db", newest)
    assert g.snapshot is not None and storage.get(g.snapshot.key).startswith(AGE_MAGIC)
    for o in storage.list_objects(""):
        assert MARK.encode() not in storage.get(o.key), o.key

    copy = tmp_path / "copy"
    run("--db-name", "chain.db", "copy", "--to-dir", str(copy))  # as stored: no key needed
    for path in copy.rglob("*"):
        if path.is_file():
            assert MARK.encode() not in path.read_bytes(), path
    target = tmp_path / "offline.db"
    offline = {"LIBSQL_BOTTOMLESS_ENDPOINT": "http://127.0.0.1:1"}
    err = run("--db-name", "chain.db", "restore", "--from-dir", str(copy), "-o", str(target),
              code=2, env=offline).stderr
    _one_error(err, "--age-identity")
    run("--age-identity", str(key_file), "--db-name", "chain.db", "restore", "--from-dir",
        str(copy), "-o", str(target), env=offline)
    assert dump(target) == expected


def test_plaintext_generations_stay_readable(run: Cli, tmp_path: Path,
                                             storage: S3Store) -> None:
    """A bucket from before encryption: old generations restore without a key."""
    ident, key_file = _key(tmp_path)
    db = tmp_path / "mix.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    run("-d", str(db), "replicate", "--once")
    old = catalog.newest_generation(storage, "mix.db")
    before = dump_conn(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    insert_rows(conn, 100, start=500)
    run("--age-recipient", str(ident.to_public()), "-d", str(db), "replicate", "--once")
    conn.close()
    out = run("-d", str(db), "ls", "-v", "--json").stdout
    assert '"encryption": "age"' in out and '"encryption": "none"' in out
    target = tmp_path / "old.db"
    run("-d", str(db), "restore", "-g", str(old), "-o", str(target))
    assert dump(target) == before
    new = tmp_path / "new.db"
    run("--age-identity", str(key_file), "-d", str(db), "restore", "-o", str(new))
    assert len(dump(new)["t"]) == 200


def test_damaged_encrypted_batch(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    ident, key_file = _key(tmp_path)
    db = tmp_path / "d.db"
    conn = open_wal_db(db)
    insert_rows(conn, 100)
    run("--age-recipient", str(ident.to_public()), "-d", str(db), "replicate", "--once")
    insert_rows(conn, 100, start=500)
    run("--age-recipient", str(ident.to_public()), "-d", str(db), "replicate", "--once")
    conn.close()
    g = catalog.describe_generation(storage, "d.db", catalog.newest_generation(storage, "d.db"))
    key = g.batches[-1][1].key
    storage.put(key, storage.get(key)[:-20])
    target = tmp_path / "t.db"
    target.write_bytes(b"keep me")
    err = run("--age-identity", str(key_file), "-d", str(db), "restore", "-o", str(target),
              "--force", code=1).stderr
    _one_error(err, key, "damaged encrypted object")
    assert target.read_bytes() == b"keep me"


@pytest.mark.parametrize("args,needles", [
    (("--age-recipient", "age1notakey"), ("not an X25519 public key",)),
    (("--age-recipient", "/nonexistent/recipients.txt"), ("neither a public key",)),
    (("--age-identity", "/nonexistent/key.txt"), ("cannot read it",)),
    (("--age-identity", "AGE-SECRET-KEY-1XYZ"), ("not an X25519 secret key",)),
    (("--encryption-key", "s3cr3t-libsql-key"), ("page-level", "--age-recipient",
                                                 "--age-identity")),
    (("--sse", "DES"), ("AES256 or aws:kms",)),
    (("--sse-kms-key-id", "k1"), ("needs --sse aws:kms",)),
    (("--sse", "AES256", "--sse-kms-key-id", "k1"), ("needs --sse aws:kms",)),
])
def test_bad_encryption_options(run: Cli, tmp_path: Path, storage: S3Store,
                                args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    conn.close()
    kept = db.read_bytes()
    for command in (("replicate", "--once"), ("restore", "-o", str(tmp_path / "r.db"))):
        err = run(*args, "-d", str(db), *command, code=2).stderr
        line = _one_error(err, *needles)
        assert "s3cr3t" not in line and "XYZ" not in line
    assert db.read_bytes() == kept
    assert list(storage.list_objects("")) == []
    assert not (tmp_path / "r.db").exists()


def test_encryption_key_variable_refused(run: Cli, tmp_path: Path) -> None:
    err = run("-d", str(tmp_path / "a.db"), "ls", code=2,
              env={"LIBSQL_BOTTOMLESS_ENCRYPTION_KEY": "k"}).stderr
    _one_error(err, "LIBSQL_BOTTOMLESS_ENCRYPTION_KEY", "--age-recipient")


def test_sse_with_a_directory_is_refused(run: Cli, tmp_path: Path) -> None:
    err = run("-e", f"file://{tmp_path}", "--sse", "AES256", "-d", str(tmp_path / "a.db"),
              "ls", code=2).stderr
    _one_error(err, "server-side encryption", "--age-recipient")


class _Recorder:
    """Stands in for the boto3 client: records what every upload asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def put_object(self, **kwargs: object) -> dict:
        self.calls.append(("put_object", kwargs))
        return {"ETag": '"x"'}

    def upload_fileobj(self, stream: object, bucket: str, key: str, **kwargs: object) -> None:
        self.calls.append(("upload_fileobj", kwargs))


@pytest.mark.parametrize("sse,expected", [
    (ServerSideEncryption("AES256"), {"ServerSideEncryption": "AES256"}),
    (ServerSideEncryption("aws:kms", "arn:aws:kms:eu:1:key/k"),
     {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:eu:1:key/k"}),
])
def test_sse_on_every_upload(sse: ServerSideEncryption, expected: dict) -> None:
    import io

    store = S3Store(StorageConfig("http://127.0.0.1:1", "b", "us-east-1", "a", "s", sse=sse))
    store._client = _Recorder()  # type: ignore[assignment]
    store.put("k", b"x")
    store.put("db.lease", b"{}", if_none_match=True)
    store.upload("g/db.zstd", io.BytesIO(b"x"), metadata={"sha256": "0"})
    calls = store._client.calls  # type: ignore[attr-defined]
    assert [c[1]["ServerSideEncryption"] for c in calls[:2]] == [expected[
        "ServerSideEncryption"]] * 2
    for _, kwargs in calls[:2]:
        assert {k: kwargs[k] for k in expected} == expected
    extra = calls[2][1]["ExtraArgs"]
    assert {k: extra[k] for k in expected} == expected and extra["Metadata"] == {"sha256": "0"}


def test_sse_aes256_round_trip(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    """The local S3 server accepts SSE-S3: replicate with it, restore."""
    db = tmp_path / "s.db"
    conn = open_wal_db(db)
    insert_rows(conn, 300)
    run("--sse", "AES256", "-d", str(db), "replicate", "--once")
    insert_rows(conn, 300, start=1000)
    run("--sse", "AES256", "-d", str(db), "replicate", "--once")
    expected = dump_conn(conn)
    conn.close()
    target = tmp_path / "r.db"
    run("-d", str(db), "restore", "-o", str(target))
    assert dump(target) == expected


def test_streams_are_bounded_and_report_the_source_error() -> None:
    """A snapshot streams through the cipher in pieces; a failing download is reported as
    itself, not as a damaged object."""
    import io

    from bottomless_core.errors import StorageError
    from bottomless_core.store.age import decrypting_reader, encrypting_reader

    ident = x25519.Identity.generate()
    plain = bytes(range(256)) * (12 << 12)  # 12 MiB
    with encrypting_reader(io.BytesIO(plain), [ident.to_public()]) as sealed:
        pieces = []
        while piece := sealed.read(1 << 20):
            assert len(piece) <= 1 << 20
            pieces.append(piece)
    data = b"".join(pieces)
    assert data.startswith(AGE_MAGIC) and pyrage.decrypt(data, [ident]) == plain
    with decrypting_reader(io.BytesIO(data), "k", [ident]) as opened:
        assert opened.read() == plain

    class Failing:
        def __init__(self) -> None:
            self.body, self.reads = io.BytesIO(data), 0

        def read(self, size: int = -1, /) -> bytes:
            self.reads += 1
            if self.reads > 2:
                raise StorageError("S3 endpoint kept failing")
            return self.body.read(size)

    with pytest.raises(StorageError, match="kept failing"), \
            decrypting_reader(Failing(), "k", [ident]) as opened:
        while opened.read(1 << 20):
            pass


def test_encrypted_daemon_with_background_snapshots(run: Cli, tmp_path: Path,
                                                    storage: S3Store) -> None:
    """The daemon's own checkpoints, snapshot-less generations and background snapshots, all
    through the age layer: no row in the bucket, every one back with the identity."""
    import json
    import signal
    import time

    from tests.procs import cli_env, cli_proc, poll

    ident, key_file = _key(tmp_path)
    db = tmp_path / "d.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 100)
    status = tmp_path / "status.json"

    def caught_up_after(t: float) -> bool:
        try:
            dbs = json.loads(status.read_text())["databases"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return False
        return bool(dbs) and all(d["behind_since"] is None and (d["last_success"] or 0) > t
                                 for d in dbs)

    proc = cli_proc(cli_env(run), "--age-recipient", str(ident.to_public()), "-d", str(db),
                    "replicate", "--compression", "raw", "--interval", "0.1",
                    "--checkpoint-pages", "20", "--snapshot-max-chain", "1",
                    "--status-file", str(status))
    try:
        poll("the first sync", lambda: caught_up_after(0) or proc.poll() is not None)
        for i in range(1, 6):
            _marked_rows(conn, 400, start=i * 1000)
            t = time.time()
            poll("the daemon to catch up", lambda t=t: caught_up_after(t))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "event=snapshot generation=" in err  # one was taken in the background
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    expected = dump_conn(conn)
    conn.close()
    gens = [catalog.describe_generation(storage, "d.db", g)
            for g in catalog.list_generations(storage, "d.db")]
    assert len(gens) > 1  # the daemon's checkpoints started generations
    for key, data in _objects(storage).items():
        assert MARK.encode() not in data, key
    target = tmp_path / "r.db"
    run("--age-identity", str(key_file), "-d", str(db), "restore", "-o", str(target))
    assert dump(target) == expected and integrity(target) == "ok"


def test_config_keys(tmp_path: Path) -> None:
    from bottomless_core.config import load_config
    from bottomless_core.errors import ConfigError

    ident, key_file = _key(tmp_path)
    config = tmp_path / "b.toml"
    config.write_text(f'''
age_recipient = ["{ident.to_public()}"]
sse = "aws:kms"
sse_kms_key_id = "alias/backups"
[[databases]]
path = "a.db"
age_identity = "{key_file}"
restore_if_missing = true
[[databases]]
path = "b.db"
age_recipient = []
sse = ""
''')
    a, b = load_config(config)
    assert a.age.encrypting and len(a.age.identities) == 1 and a.settings.restore_if_missing
    assert a.sse == ServerSideEncryption("aws:kms", "alias/backups")
    assert not b.age.encrypting and b.sse is None and not b.settings.restore_if_missing
    for bad, needle in (('sse = "DES"', "AES256 or aws:kms"),
                        ('age_recipient = "age1nope"', "not an X25519 public key"),
                        ("restore_if_missing = 1", "true or false")):
        config.write_text(f'[[databases]]\npath = "a.db"\n{bad}\n')
        with pytest.raises(ConfigError, match=needle):
            load_config(config)


def test_create_encrypted(run: Cli, tmp_path: Path, storage: S3Store) -> None:
    ident, key_file = _key(tmp_path)
    src = tmp_path / "seed.db"
    conn = sqlite3.connect(src, isolation_level=None)
    _marked_rows(conn, 500)
    expected = dump_conn(conn)
    conn.close()
    run("--age-recipient", str(ident.to_public()), "create", "-s", str(src))
    for key, data in _objects(storage).items():
        assert MARK.encode() not in data, key
    target = tmp_path / "r.db"
    run("--age-identity", str(key_file), "--db-name", "seed.db", "restore", "-o", str(target))
    assert dump(target) == expected


def _encrypted_chain(tmp_path: Path, storage: S3Store, ident: x25519.Identity,
                     plain_child: bool = False) -> Path:
    """chain.db: an encrypted generation and a snapshot-less child; with ``plain_child`` the
    child's batches were written without a recipient (its parent alone is encrypted)."""
    db = tmp_path / "chain.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 400)
    now = [T0]
    replicator = Replicator(db, AgeStore(storage, AgeKeys((ident.to_public(),), ())),
                            options=ReplicateOptions(clock=lambda: now[0]))
    lock = ReadLock(db)
    try:
        lock.acquire()
        replicator.sync(lock)
        now[0] += 10  # a generation a second: the child comes after its parent's second
        assert replicator.checkpoint(lock).done
        if plain_child:
            replicator.storage = AgeStore(storage)
        _marked_rows(conn, 400, start=1000)
        replicator.sync(lock)
    finally:
        replicator.close()
        lock.close()
        conn.close()
    return db


@pytest.mark.parametrize("plain_child", [False, True])
def test_snapshot_of_an_encrypted_chain_needs_a_recipient(
        run: Cli, tmp_path: Path, storage: S3Store, plain_child: bool) -> None:
    """With the identity but no recipient, `snapshot` refuses (it would upload the rows in
    the clear), also when only the parent the child restores through is encrypted."""
    ident, key_file = _key(tmp_path)
    _encrypted_chain(tmp_path, storage, ident, plain_child)
    newest = catalog.newest_generation(storage, "chain.db")
    before = _objects(storage)
    err = run("--age-identity", str(key_file), "--db-name", "chain.db", "snapshot", "-g",
              str(newest), code=2).stderr
    _one_error(err, "--age-recipient")
    assert "AGE-SECRET-KEY" not in err
    assert _objects(storage).keys() == before.keys()  # no snapshot uploaded
    run("--age-identity", str(key_file), "--age-recipient", str(ident.to_public()),
        "--db-name", "chain.db", "snapshot", "-g", str(newest))
    g = catalog.describe_generation(storage, "chain.db", newest)
    assert g.snapshot is not None and storage.get(g.snapshot.key).startswith(AGE_MAGIC)


class _CountingStore:
    """A store that counts the objects opened for reading."""

    def __init__(self, raw: S3Store) -> None:
        self.raw, self.opened = raw, 0

    @property
    def stored(self) -> _CountingStore:  # objects are read as stored through this one
        return self

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)

    def open_object(self, key: str) -> object:
        self.opened += 1
        return self.raw.open_object(key)


def test_continuing_an_encrypted_generation_needs_a_recipient(
        run: Cli, tmp_path: Path, storage: S3Store) -> None:
    ident, _ = _key(tmp_path)
    enc = ("--age-recipient", str(ident.to_public()))
    db = tmp_path / "c.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 300)
    run(*enc, "-d", str(db), "replicate", "--once")
    _marked_rows(conn, 10, start=5000)
    run(*enc, "-d", str(db), "replicate", "--once")  # the generation has a batch now
    _marked_rows(conn, 300, start=10_000)
    before = _objects(storage).keys()
    err = run("-d", str(db), "replicate", "--once", "--compression", "raw", code=2).stderr
    _one_error(err, "is encrypted", "--age-recipient")
    after = _objects(storage)
    assert {k for k in after if k not in before} <= {"c.db.lease"}
    for data in after.values():
        assert MARK.encode() not in data
    # the daemon's path: the verdict is read once per generation, not per poll
    counting = _CountingStore(storage)
    replicator = Replicator(db, AgeStore(counting))  # type: ignore[arg-type]
    lock = ReadLock(db)
    try:
        lock.acquire()
        for _ in range(3):
            with pytest.raises(ConfigError, match="--age-recipient"):
                replicator.sync(lock)
    finally:
        replicator.close()
        lock.close()
    assert counting.opened == 1  # one read (its snapshot), not one per poll
    out = run(*enc, "-d", str(db), "replicate", "--once").stdout
    assert "shipped" in out
    conn.close()


def test_new_plaintext_generation_after_an_encrypted_one_is_refused(
        run: Cli, tmp_path: Path, storage: S3Store) -> None:
    """The app checkpointed between runs, so the next run starts a generation with a full
    snapshot: without the recipient that snapshot would hold every row in the clear."""
    ident, _ = _key(tmp_path)
    enc = ("--age-recipient", str(ident.to_public()))
    db = tmp_path / "n.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 300)
    run(*enc, "-d", str(db), "replicate", "--once")
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    _marked_rows(conn, 10, start=5000)
    before = _objects(storage).keys()
    err = run("-d", str(db), "replicate", "--once", code=2).stderr
    _one_error(err, "is encrypted", "a new generation's snapshot would follow it",
               "--age-recipient")
    after = _objects(storage)
    assert {k for k in after if k not in before} <= {"n.db.lease"}
    for data in after.values():
        assert MARK.encode() not in data
    out = run(*enc, "-d", str(db), "replicate", "--once").stdout
    assert "new generation" in out
    conn.close()


def test_plain_generation_continued_with_a_recipient_is_mixed(
        run: Cli, tmp_path: Path, storage: S3Store) -> None:
    """The other way round is allowed (restore reads both); ls says "mixed"."""
    ident, key_file = _key(tmp_path)
    db = tmp_path / "p.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 100)
    run("-d", str(db), "replicate", "--once")
    _marked_rows(conn, 100, start=1000)
    out = run("--age-recipient", str(ident.to_public()), "-d", str(db), "replicate",
              "--once").stdout
    assert "shipped" in out
    expected = dump_conn(conn)
    conn.close()
    assert '"encryption": "mixed"' in run("-d", str(db), "ls", "-v", "--json").stdout
    assert "mixed" in run("-d", str(db), "ls", "-v").stdout
    target = tmp_path / "r.db"
    run("--age-identity", str(key_file), "-d", str(db), "restore", "-o", str(target))
    assert dump(target) == expected


@pytest.mark.parametrize("args,env", [
    (("--age-recipient", ""), {}),
    (("--age-recipient", "   "), {}),
    (("--age-recipient", " , "), {}),
    ((), {"LIBSQL_BOTTOMLESS_AGE_RECIPIENT": ""}),
    ((), {"LIBSQL_BOTTOMLESS_AGE_RECIPIENT": "  "}),
])
def test_empty_recipient_is_refused(run: Cli, tmp_path: Path, storage: S3Store,
                                    args: tuple[str, ...], env: dict[str, str]) -> None:
    db = tmp_path / "e.db"
    conn = open_wal_db(db)
    insert_rows(conn, 10)
    conn.close()
    err = run(*args, "-d", str(db), "replicate", "--once", code=2, env=env).stderr
    _one_error(err, "empty age recipient")
    assert list(storage.list_objects("")) == []


def test_key_variables_are_not_split_on_spaces(run: Cli, tmp_path: Path,
                                               storage: S3Store) -> None:
    """An identity path with spaces, a whole key file's text in the variable; recipients
    listed with commas, a recipients file whose path has spaces."""
    ident, key_file = _key(tmp_path)
    other = x25519.Identity.generate()
    spaced = tmp_path / "my keys"
    spaced.mkdir()
    id_path = spaced / "my key.txt"
    id_path.write_text(key_file.read_text())
    rcpt_path = spaced / "recipients list.txt"
    rcpt_path.write_text(f"{ident.to_public()}\n")
    db = tmp_path / "s.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 100)
    run("-d", str(db), "replicate", "--once",
        env={"LIBSQL_BOTTOMLESS_AGE_RECIPIENT": f"{rcpt_path}, {other.to_public()}"})
    _marked_rows(conn, 100, start=1000)
    run("-d", str(db), "replicate", "--once",
        env={"LIBSQL_BOTTOMLESS_AGE_RECIPIENT": f"{other.to_public()} {ident.to_public()}"})
    expected = dump_conn(conn)
    conn.close()
    for data in _objects(storage).values():
        assert MARK.encode() not in data
    whole = (f"# created: 2024-01-01T00:00:00Z\n# public key: {ident.to_public()}\n"
             f"{ident}\n")
    for value in (str(id_path), whole, str(other)):
        target = tmp_path / "r.db"
        target.unlink(missing_ok=True)
        run("-d", str(db), "restore", "-o", str(target),
            env={"LIBSQL_BOTTOMLESS_AGE_IDENTITY": value})
        assert dump(target) == expected
    run("--age-identity", str(id_path), "-d", str(db), "restore", "-o", str(target),
        "--force")
    err = run("-d", str(db), "ls", code=2,
              env={"LIBSQL_BOTTOMLESS_AGE_IDENTITY": "# public key only\nAGE-SECRET-KEY-1X"}
              ).stderr
    _one_error(err, "not an X25519 secret key")
    assert "AGE-SECRET-KEY-1X" not in err


def test_config_key_files_are_relative_to_the_config(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Key files named in the config file are found beside it, like database paths; given
    on the command line they stay relative to the working directory. "" is refused."""
    from bottomless_core.config import load_config

    conf = tmp_path / "conf"
    conf.mkdir()
    ident, _ = _key(conf, "id.txt")
    (conf / "recipients.txt").write_text(f"{ident.to_public()}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = conf / "b.toml"
    config.write_text('age_identity = "id.txt"\n[[databases]]\npath = "a.db"\n'
                      'age_recipient = "recipients.txt"\n')
    (db,) = load_config(config)
    assert len(db.age.identities) == 1 and db.age.encrypting
    config.write_text('[[databases]]\npath = "a.db"\n')
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(config, {"age_identity": ["id.txt"]})
    for bad in ('age_recipient = ""', 'age_recipient = ["  "]', 'age_recipient = " , "'):
        config.write_text(f'[[databases]]\npath = "a.db"\n{bad}\n')
        with pytest.raises(ConfigError, match="empty age recipient"):
            load_config(config)


def test_age_keygen_makes_a_key_pair_that_works(run: Cli, tmp_path: Path,
                                                storage: S3Store) -> None:
    """Issue 16: the docs used age-keygen without saying where it comes from."""
    key = tmp_path / "age-key.txt"
    public = run("age-keygen", "-o", str(key)).stdout.strip()
    assert public.startswith("age1")
    assert key.stat().st_mode & 0o777 == 0o600
    assert f"# public key: {public}" in key.read_text()
    assert run("age-keygen", "-y", str(key)).stdout.strip() == public
    before = key.read_bytes()
    out = run("age-keygen", "-o", str(key), code=2)
    assert out.stderr.startswith("error: ") and "not overwriting" in out.stderr
    assert key.read_bytes() == before
    db = tmp_path / "app.db"
    conn = open_wal_db(db)
    _marked_rows(conn, 20)
    run("--age-recipient", public, "-d", str(db), "replicate", "--once")
    assert all(MARK.encode() not in storage.get(o.key) for o in storage.list_objects(""))
    run("--age-identity", str(key), "-d", str(db), "restore", "-o", str(tmp_path / "r.db"))
    assert dump(tmp_path / "r.db") == dump_conn(conn)
    conn.close()
    stdout = run("age-keygen").stdout  # no -o: the key file itself, as age-keygen writes it
    assert x25519.Identity.from_str(stdout.splitlines()[-1])
