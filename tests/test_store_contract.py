"""The ObjectStore contract, one suite for every store: S3 (SeaweedFS), a directory, and the
age wrapper over a directory. What the catalog, the writer, restore and the lease rely on: key
order, common prefixes, user metadata and ETags, conditional writes, streams and ranges,
deletes, one-line errors for a missing bucket."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrage import x25519

from bottomless_core.agekeys import AgeKeys
from bottomless_core.errors import BucketNotFoundError, NotFoundError, PreconditionFailedError
from bottomless_core.store.age import AgeStore
from bottomless_core.store.base import ObjectStore
from bottomless_core.store.files import FileStore
from bottomless_dev.seaweed import SeaweedServer
from tests.conftest import storage_for

KINDS = ["files", "s3", "age-files"]
# (AWS S3 lists "a-b" < "a.c" < "a/x" in byte order, and so does the file store, test_filestore;
# SeaweedFS lists a "directory" a/ before a-b: the layout never has a key beside a prefix that
# only such a character tells apart, so these keys leave it out)
KEYS = ["a/.x", "a/b/c", "a/b0", "app.db-0/.meta",
        "app.db-0/000000000001-000000000002-5.zstd", "app.db-1/db.zstd", "app.db.lease", "b",
        "Z", "é/1", "ns/app.db-2/.dep"]
DATA_KEY = "app.db-1/db.zstd"  # a snapshot: what the age wrapper encrypts


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str,
          create: bool = True) -> ObjectStore:
    if kind == "s3":
        s3: SeaweedServer = request.getfixturevalue("s3")
        store: ObjectStore = storage_for(s3, name)
    else:
        store = FileStore(tmp_path / "backups", name)
    if create:
        store.create_bucket()
    if kind == "age-files":
        ident = x25519.Identity.generate()
        store = AgeStore(store, AgeKeys((ident.to_public(),), (ident,)))
    return store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "s3":
        request.getfixturevalue("_drop_new_buckets")
    yield _open(request.param, request, tmp_path, f"c-{secrets.token_hex(6)}")


def _keys(store: ObjectStore, prefix: str = "", start_after: str | None = None) -> list[str]:
    return [o.key for o in store.list_objects(prefix, start_after)]


def test_keys_list_in_byte_order(store: ObjectStore) -> None:
    for k in reversed(KEYS):
        store.put(k, k.encode())
    ordered = sorted(KEYS, key=lambda k: k.encode())
    assert _keys(store) == ordered
    for prefix in ("a", "a/", "a/b", "app.db-", "app.db-0/", "ns/app.db-", "zz", "a/b/c"):
        assert _keys(store, prefix) == [k for k in ordered if k.startswith(prefix)], prefix
    for i, k in enumerate(ordered):
        assert _keys(store, "", start_after=k) == ordered[i + 1:], k
    assert _keys(store, "a/", start_after="a/b/c") == ["a/b0"]
    info = next(store.list_objects("app.db-0/.meta"))
    assert (info.key, info.size, info.metadata) == ("app.db-0/.meta", 14, {})
    assert info.last_modified is not None and info.last_modified.tzinfo is not None


def test_common_prefixes_one_level_down(store: ObjectStore) -> None:
    for k in KEYS:
        store.put(k, b"x")
    assert list(store.list_prefixes("")) == ["a/", "app.db-0/", "app.db-1/", "ns/", "é/"]
    assert list(store.list_prefixes("app.db-")) == ["app.db-0/", "app.db-1/"]
    assert list(store.list_prefixes("a/")) == ["a/b/"]
    assert list(store.list_prefixes("ns/app.db-")) == ["ns/app.db-2/"]
    assert list(store.list_prefixes("nothing/")) == []


def _level(store: ObjectStore, prefix: str) -> list[str]:
    return [e if isinstance(e, str) else f"{e.key}={e.size}" for e in store.list_level(prefix)]


def test_one_level_objects_and_prefixes_together(store: ObjectStore) -> None:
    for k in KEYS:
        store.put(k, k.encode())
    assert _level(store, "") == ["Z=1", "a/", "app.db-0/", "app.db-1/", "app.db.lease=12",
                                 "b=1", "ns/", "é/"]
    assert _level(store, "a/") == ["a/.x=4", "a/b/", "a/b0=4"]
    assert _level(store, "ns/") == ["ns/app.db-2/"]
    assert _level(store, "app.db") == ["app.db-0/", "app.db-1/", "app.db.lease=12"]
    assert _level(store, "nothing/") == []


def test_reads_metadata_and_etags(store: ObjectStore) -> None:
    etag = store.put("g/.dep", b"0123456789abcdef", {"Parent-Frames": "12", "base": "x"})
    info = store.head("g/.dep")
    assert info is not None and info.size == 16
    assert info.metadata == {"parent-frames": "12", "base": "x"}  # keys come back lower-case
    assert store.get_with_metadata("g/.dep") == (b"0123456789abcdef", info.metadata, etag)
    other = store.put("g/.dep", b"other")
    assert other != etag
    assert store.get_with_metadata("g/.dep") == (b"other", {}, other)
    assert store.get("g/.dep") == b"other" and store.get_optional("g/.dep") == b"other"
    assert store.exists("g/.dep") and not store.exists("g/none")
    assert store.head("g/none") is None and store.get_with_metadata("g/none") is None
    assert store.get_optional("g/none") is None
    with pytest.raises(NotFoundError, match="g/none"):
        store.get("g/none")
    with pytest.raises(NotFoundError), store.open_object("g/none"):
        pass
    with pytest.raises(NotFoundError):
        store.get_range("g/none", 0, 1)
    assert _keys(store) == ["g/.dep"]  # nothing of the store's own shows as an object


def test_conditional_puts(store: ObjectStore) -> None:
    first = store.put("app.db.lease", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailedError):
        store.put("app.db.lease", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailedError):
        store.put("app.db.lease", b"two", if_match='"00000000000000000000000000000000"')
    assert store.get("app.db.lease") == b"one"
    second = store.put("app.db.lease", b"two", if_match=first)
    assert store.get_with_metadata("app.db.lease") == (b"two", {}, second)
    with pytest.raises(PreconditionFailedError):  # If-Match on a missing object
        store.put("other.lease", b"x", if_match=first)
    assert store.get_optional("other.lease") is None


def test_uploads_streams_and_ranges(store: ObjectStore) -> None:
    data = os.urandom(3 << 20) + b"tail"
    seen: list[int] = []
    store.upload(DATA_KEY, io.BytesIO(data), {"sha256": "abc"}, on_progress=seen.append)
    assert seen and sum(seen) >= len(data)
    head = store.head(DATA_KEY)
    assert head is not None and head.metadata == {"sha256": "abc"}
    assert store.get(DATA_KEY) == data
    with store.open_object(DATA_KEY) as body:
        assert body.read(10) == data[:10]
        assert body.read() == data[10:]
    for start, length in ((0, 1), (5, 100), (1 << 20, 70_000), (len(data) - 4, 4),
                          (len(data) - 2, 10), (len(data), 5), (len(data) + 10, 5), (7, 0)):
        assert store.get_range(DATA_KEY, start, length) == data[start:start + length], (
            start, length)
    store.put("small", b"0123456789")
    assert store.get_range("small", 3, 4) == b"3456"
    assert list(store.stale_uploads("")) == []


def test_deletes(store: ObjectStore) -> None:
    store.put("app.db-0/.meta", b"m")
    store.put("app.db-0/db.zstd", b"s")
    store.put("deep/er/key", b"k")
    assert store.delete_many(iter(["app.db-0/.meta", "app.db-0/db.zstd", "missing",
                                   "app.db-0/"])) == 4
    # a filer-backed S3 (SeaweedFS) keeps emptied "directories" until they are deleted too
    assert store.delete_many(["deep/er/key", "deep/er/", "deep/"]) == 3
    assert list(store.list_prefixes("")) == [] and _keys(store) == []
    assert store.delete_many([]) == 0


def test_what_the_store_is(store: ObjectStore) -> None:
    store.put("app.db-0/.meta", b"plain")
    store.put(DATA_KEY, b"\x28\xb5\x2f\xfd snapshot bytes")
    sealed = isinstance(store, AgeStore)
    assert store.encrypts is sealed
    assert store.object_encryption("app.db-0/.meta") == "none"
    assert store.object_encryption(DATA_KEY) == ("age" if sealed else "none")
    assert not store.decrypted_any
    assert store.get(DATA_KEY) == b"\x28\xb5\x2f\xfd snapshot bytes"
    assert store.decrypted_any is sealed
    assert (store.stored is store) is not sealed
    if sealed:  # as stored: the age file itself
        assert store.stored.get(DATA_KEY).startswith(b"age-encryption.org/v1\n")


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_bucket_is_one_clear_error(kind: str, request: pytest.FixtureRequest,
                                             tmp_path: Path) -> None:
    if kind == "s3":
        request.getfixturevalue("_drop_new_buckets")
    name = f"nope-{secrets.token_hex(4)}"
    store = _open(kind, request, tmp_path, name, create=False)
    # Not head: S3 answers a HEAD in a missing bucket with a bare 404, like a missing key.
    # Not put on SeaweedFS: it creates the bucket (AWS refuses), which is why every writer
    # checks the bucket before its first write.
    calls = [store.check_bucket, lambda: _keys(store), lambda: store.get("k")]
    if kind != "s3":
        calls.append(lambda: store.put("g/k", b"x"))
    for call in calls:
        with pytest.raises(BucketNotFoundError) as err:
            call()
        assert str(err.value).startswith(f"bucket {name!r} does not exist at {store.where}")
        assert "\n" not in str(err.value)
    store.ensure_bucket()
    store.check_bucket()
    store.ensure_bucket()  # twice: nothing happens
    assert _keys(store) == []
