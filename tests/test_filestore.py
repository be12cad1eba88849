"""What the file backend does beyond the ObjectStore contract (tests/test_store_contract.py):
AWS S3's byte order of keys, MD5 ETags, conditional writes that hold between processes,
emptied directories that go, writes never seen half done, keys a directory cannot hold, and
one-line errors for local failures. No server needed."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bottomless_core.errors import (
    BucketNotFoundError,
    ConfigError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
)
from bottomless_core.store.base import ObjectStore
from bottomless_core.store.config import StorageConfig, file_root
from bottomless_core.store.files import FileStore
from bottomless_core.store.opener import open_backend
from bottomless_core.store.s3 import S3Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path / "backups", "bucket")
    s.create_bucket()
    return s


def _keys(store: FileStore, prefix: str = "", start_after: str | None = None) -> list[str]:
    return [o.key for o in store.list_objects(prefix, start_after)]


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# --- the interface ----------------------------------------------------------------------------

def test_both_backends_are_object_stores(store: FileStore) -> None:
    assert isinstance(store, ObjectStore)
    assert isinstance(S3Store(StorageConfig("http://127.0.0.1:9", "b")), ObjectStore)


def test_open_store_picks_the_backend_from_the_endpoint(store: FileStore, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_backend(f"file://{tmp_path}/b", "x")
    assert isinstance(s, FileStore) and s.dir == tmp_path / "b" / "x"
    assert s.where == (tmp_path / "b").as_uri() and s.bucket == "x"
    rel = open_backend("file:rel/dir", "x")
    assert isinstance(rel, FileStore) and rel.dir == tmp_path / "rel" / "dir" / "x"
    assert file_root("file://localhost/srv/b") == Path("/srv/b")
    assert file_root("file:///srv/with%20space") == Path("/srv/with space")
    assert file_root("http://127.0.0.1:9000") is None and file_root(None) is None
    for bad in ("file://host/srv/b", "file:", "file://"):
        with pytest.raises(ConfigError):
            open_backend(bad, "x")
    with pytest.raises(ConfigError, match="bucket"):
        open_backend("file:///srv", "../etc")
    s3 = open_backend("http://127.0.0.1:9", "x", {"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"})
    assert isinstance(s3, S3Store) and s3.config.max_attempts == 1
    seen: list[StorageConfig] = []

    def fake_s3(config: StorageConfig) -> ObjectStore:
        seen.append(config)
        return store

    assert open_backend("http://127.0.0.1:9", "x", s3=fake_s3) is store
    assert seen[0].endpoint == "http://127.0.0.1:9" and seen[0].bucket == "x"


# --- listing ----------------------------------------------------------------------------------

KEYS = ["a-b", "a.c", "a/.x", "a/b-c", "a/b/c", "a/b0", "a0", "app.db-0/.meta",
        "app.db-0/000000000001-000000000002-5.zstd", "app.db-1/db.zstd", "app.db.lease", "b",
        "Z", "é/1", "ns/app.db-2/.dep"]


def test_keys_list_in_aws_byte_order(store: FileStore) -> None:
    """What the contract suite leaves out (SeaweedFS lists a "directory" a/ before a-b): the
    file store lists in AWS S3's byte order, a directory sorting as NAME/."""
    for k in reversed(KEYS):
        store.put(k, k.encode())
    ordered = sorted(KEYS, key=lambda k: k.encode())
    assert ordered.index("a-b") < ordered.index("a.c") < ordered.index("a/.x")
    assert _keys(store) == ordered
    assert _keys(store, "", start_after="a/b") == ordered[ordered.index("a/b-c"):]
    assert _keys(store, "a", start_after="a/") == [k for k in ordered
                                                   if k.startswith("a") and k > "a/"]


def test_temporary_files_and_empty_directories_do_not_list(store: FileStore) -> None:
    for k in KEYS:
        store.put(k, b"x")
    (store.dir / "app.db-9").mkdir()
    (store.dir / "app.db-9" / ".db.zstd.bottomless-tmp-0123456789abcdef").write_bytes(b"x")
    (store.dir / "app.db-8").mkdir()
    assert list(store.list_prefixes("app.db-")) == ["app.db-0/", "app.db-1/"]
    assert not any(k.startswith(("app.db-8", "app.db-9")) for k in _keys(store))
    with pytest.raises(StorageError, match="delimiter"):
        list(store.list_prefixes("", delimiter="-"))


def test_deleting_removes_emptied_directories(store: FileStore) -> None:
    store.put("app.db-0/.meta", b"m")
    store.put("app.db-0/db.zstd", b"s")
    store.put("deep/er/key", b"k")
    assert store.delete_many(["app.db-0/"]) == 1  # not empty: nothing happens
    assert _keys(store, "app.db-0/") == ["app.db-0/.meta", "app.db-0/db.zstd"]
    assert store.delete_many(iter(["app.db-0/.meta", "app.db-0/db.zstd", "missing",
                                   "app.db-0/"])) == 4
    assert not (store.dir / "app.db-0").exists()
    assert store.delete_many(["deep/er/key"]) == 1
    assert not (store.dir / "deep").exists()
    assert list(store.list_prefixes("")) == [] and _keys(store) == []
    assert store.delete_many([]) == 0


# --- objects, metadata, ETags -----------------------------------------------------------------

def test_metadata_and_etags(store: FileStore) -> None:
    etag = store.put("g/.dep", b"0123456789abcdef", {"Parent-Frames": "12", "base": "x"})
    assert etag == '"' + hashlib.md5(b"0123456789abcdef").hexdigest() + '"'
    info = store.head("g/.dep")
    assert info is not None and info.size == 16
    assert info.metadata == {"parent-frames": "12", "base": "x"}
    assert store.get_with_metadata("g/.dep") == (b"0123456789abcdef", info.metadata, etag)
    assert store.put("g/.dep", b"other") != etag
    assert store.get_with_metadata("g/.dep") == (b"other", {}, store.put("g/.dep", b"other"))
    assert store.exists("g/.dep") and not store.exists("g/none") and not store.exists("g")
    assert store.head("g/none") is None and store.get_with_metadata("g/none") is None
    assert store.get_optional("g/none") is None and store.get_optional("g") is None
    with pytest.raises(NotFoundError, match="reading g/none: no such object"):
        store.get("g/none")
    # nothing of the store's own shows as an object
    assert _keys(store) == ["g/.dep"]


def test_uploads_and_streams(store: FileStore) -> None:
    data = os.urandom(3 << 20) + b"tail"
    seen: list[int] = []
    store.upload("g/db.zstd", io.BytesIO(data), {"sha256": "abc"}, on_progress=seen.append)
    assert sum(seen) == len(data) and len(seen) > 1
    head = store.head("g/db.zstd")
    assert head is not None and head.metadata == {"sha256": "abc"}
    assert store.get("g/db.zstd") == data
    with store.open_object("g/db.zstd") as body:
        assert body.read(10) == data[:10]
        assert body.read() == data[10:]
    with pytest.raises(NotFoundError), store.open_object("g/none"):
        pass
    assert list(store.stale_uploads("")) == []
    store.abort_upload("g/db.zstd", "x")
    assert store.get("g/db.zstd") == data


def test_keys_a_directory_cannot_hold_are_refused(store: FileStore) -> None:
    for bad in ("", "../x", "a/../../x", "a//b", "./a", "/abs", "a/.x.bottomless-meta.json",
                ".bottomless-lock", "a/.b.bottomless-tmp-0123456789abcdef"):
        with pytest.raises(StorageError, match="cannot hold"):
            store.put(bad, b"x")
    store.put("k", b"x")
    with pytest.raises(StorageError, match=r"k/x.*is an object"):
        store.put("k/x", b"y")
    store.put("d/x", b"y")
    with pytest.raises(StorageError, match="objects exist under d/"):
        store.put("d", b"y")
    assert _keys(store) == ["d/x", "k"]


# --- conditional writes -----------------------------------------------------------------------

def test_conditional_puts(store: FileStore) -> None:
    first = store.put("app.db.lease", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailedError, match="exists"):
        store.put("app.db.lease", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailedError, match="changed"):
        store.put("app.db.lease", b"two", if_match='"0000"')
    assert store.get("app.db.lease") == b"one"
    second = store.put("app.db.lease", b"two", if_match=first)
    assert store.put("app.db.lease", b"three", if_match=second.strip('"')) != second
    with pytest.raises(PreconditionFailedError, match="gone"):  # as SeaweedFS answers
        store.put("other.lease", b"x", if_match=first)
    assert store.get_optional("other.lease") is None


RACE_CREATE = """
import sys, time
from pathlib import Path
from bottomless_core.store.files import FileStore
from bottomless_core.errors import PreconditionFailedError
store = FileStore(Path(sys.argv[1]), "bucket")
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
try:
    store.put("race.lease", sys.argv[3].encode(), if_none_match=True)
    print("won")
except PreconditionFailedError:
    print("lost")
"""

RACE_COUNT = """
import sys
from pathlib import Path
from bottomless_core.store.files import FileStore
from bottomless_core.errors import PreconditionFailedError
store = FileStore(Path(sys.argv[1]), "bucket")
done = retries = 0
while done < int(sys.argv[2]):
    data, _, etag = store.get_with_metadata("counter")
    try:
        store.put("counter", str(int(data) + 1).encode(), if_match=etag)
        done += 1
    except PreconditionFailedError:
        retries += 1
print(retries)
"""


def test_two_processes_racing_for_a_conditional_put(store: FileStore, tmp_path: Path) -> None:
    """If-None-Match: exactly one creator wins. If-Match: read-modify-write loses no update."""
    go = tmp_path / "go"
    procs = [_python(RACE_CREATE, str(store.root), str(go), f"p{i}") for i in range(6)]
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    won = [i for i, (out, _) in enumerate(outs) if out.strip() == "won"]
    assert len(won) == 1, outs
    assert store.get("race.lease") == f"p{won[0]}".encode()

    store.put("counter", b"0")
    procs = [_python(RACE_COUNT, str(store.root), "25") for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert store.get("counter") == b"100"


def test_threads_writing_into_a_directory_that_deletes_empty(store: FileStore) -> None:
    """A delete removes the directory it empties; a put racing it into that directory must
    still land (it creates the directory again)."""
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for i in range(200):
                store.put(f"g/{name}", str(i).encode())
                store.delete_many([f"g/{name}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(f"k{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _keys(store) == []


# --- atomicity --------------------------------------------------------------------------------

SLOW_WRITER = """
import sys, time
from pathlib import Path
from bottomless_core.store.files import FileStore
from bottomless_core.store.opener import open_backend

class Endless:
    reads = 0
    def read(self, size=-1):
        self.reads += 1
        if self.reads == 4:
            print("writing", flush=True)
        if self.reads > 4:
            time.sleep(0.01)
        return b"x" * 65536

FileStore(Path(sys.argv[1]), "bucket").upload(sys.argv[2], Endless(), {"sha256": "new"})
"""


@pytest.mark.parametrize("existing", [False, True])
def test_a_killed_writer_never_leaves_a_partial_object(store: FileStore, existing: bool) -> None:
    key = "app.db-0/db.zstd"
    if existing:
        store.put(key, b"old snapshot", {"sha256": "old"})
    proc = _python(SLOW_WRITER, str(store.root), key)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    temps = list((store.dir / "app.db-0").glob(".db.zstd.bottomless-tmp-*"))
    assert temps and temps[0].stat().st_size > 0  # it was killed half-way through
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    if existing:
        assert store.get(key) == b"old snapshot"
        head = store.head(key)
        assert head is not None and head.metadata == {"sha256": "old"}
        assert _keys(store) == [key]
        assert list(store.list_prefixes("")) == ["app.db-0/"]
    else:
        assert store.head(key) is None and store.get_optional(key) is None
        assert _keys(store) == [] and list(store.list_prefixes("")) == []
    store.put(key, b"next")  # the leftover is in nobody's way
    assert store.get(key) == b"next"


def test_metadata_of_a_write_that_died_between_its_renames_is_not_attached(
        store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metadata lands first, then the data: a writer killed in between must not leave the
    old bytes carrying the new metadata."""
    store.put("g/db.zstd", b"old", {"sha256": "old"})
    real_replace = os.replace

    def die_on_the_data(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "db.zstd":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_the_data)
    with pytest.raises(KeyboardInterrupt):
        store.put("g/db.zstd", b"new", {"sha256": "new"})
    monkeypatch.undo()
    head = store.head("g/db.zstd")
    assert store.get("g/db.zstd") == b"old"
    assert head is not None and head.metadata.get("sha256") != "new"
    assert _keys(store) == ["g/db.zstd"]


# --- errors -----------------------------------------------------------------------------------

def test_a_missing_bucket_is_one_clear_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path, "nope")
    for call in (store.check_bucket, lambda: _keys(store), lambda: list(store.list_prefixes("")),
                 lambda: store.get("k"), lambda: store.get_optional("k"),
                 lambda: store.head("k"), lambda: store.put("g/k", b"x"),
                 lambda: store.get_with_metadata("k")):
        with pytest.raises(BucketNotFoundError) as err:
            call()
        assert str(err.value).startswith(f"bucket 'nope' does not exist at {tmp_path.as_uri()}")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "nope").exists()  # a write never creates the bucket
    store.ensure_bucket()
    store.check_bucket()
    store.ensure_bucket()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="not a directory"):
        FileStore(tmp_path, "file").check_bucket()
    # an endpoint naming a file (-e file:///srv/app.db): said so, also when creating
    for call in (FileStore(tmp_path / "file", "bk").ensure_bucket,
                 FileStore(tmp_path / "file", "bk").check_bucket):
        with pytest.raises(StorageError, match=f"{tmp_path / 'file'} is a file, not a dir"):
            call()


def test_local_failures_are_one_line(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=r"^writing g/k: no space left on the device of "):
        store.put("g/k", b"x")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _keys(store) == []  # and no temporary file left behind
    assert not list(store.dir.rglob("*bottomless-tmp*"))

    real_open = os.open

    def denied(path: str | Path, *args: object, **kwargs: object) -> int:
        if "bottomless-tmp" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StorageError, match=r"^writing g/k: permission denied in the file store"):
        store.put("g/k", b"x")
    monkeypatch.setattr(os, "open", real_open)

    def eio(*_: object) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    store.put("g/k", b"x")
    monkeypatch.setattr(Path, "read_bytes", eio)
    with pytest.raises(StorageError, match=r"^reading g/k failed in the file store at file://"):
        store.get("g/k")
