"""The reference reader (tests/libsql_restore.py) on buckets built by hand in the Rust layout:
each rule of libSQL's restore shown on its own, including the ones where libSQL restores less
than the bucket holds, silently."""

from __future__ import annotations

import gzip
import itertools
import shutil
import sqlite3
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import zstandard

from bottomless_core import layout
from tests import libsql_restore as lr
from tests.helpers import dump, dump_conn, insert_rows, integrity, open_wal_db
from tests.libsql_check import CrossCheck, check_restored, file_store
from tests.wal_reference import encode_frame, make_wal_header

DB = "app.db"
T0 = 1_700_000_000  # a whole second


class MemStore:
    """A bucket in memory: listings in key (byte) order, KeyError for a missing key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def list_objects(self, prefix: str) -> Iterator[SimpleNamespace]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield SimpleNamespace(key=key)

    def get(self, key: str) -> bytes:
        return self.objects[key]


@dataclass
class Cycle:
    """One WAL cycle of a real database: the main file it starts from, its WAL frames."""

    image: bytes
    page_size: int
    seed: tuple[int, int]  # the WAL header's checksum: what .meta holds
    frames: list[bytes] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)  # frame number of each commit frame
    states: list[dict] = field(default_factory=list)  # rows after each commit

    def raw(self, first: int, last: int) -> bytes:
        return b"".join(self.frames[first - 1:last])


class Source:
    """A database in WAL mode written by sqlite3; ``cycle`` checkpoints it (the main file is
    then a generation's snapshot) and records the frames the writes make."""

    def __init__(self, tmp: Path, page_size: int = 4096) -> None:
        self.db = tmp / "src.db"
        self.page_size = page_size
        self.conn = open_wal_db(self.db, page_size)
        insert_rows(self.conn, 3, table="t1")
        insert_rows(self.conn, 3, table="t2")

    def cycle(self, *writes: Callable[[sqlite3.Connection], None]) -> Cycle:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        image = self.db.read_bytes()
        frame_size = lr.FRAME_HEADER_SIZE + self.page_size
        wal = self.db.with_name(self.db.name + "-wal")
        commits, states = [], []
        for write in writes:
            write(self.conn)
            commits.append((wal.stat().st_size - 32) // frame_size)
            states.append(dump_conn(self.conn))
        data = wal.read_bytes() if writes else b""
        seed = struct.unpack_from(">II", data, 24) if data else (0, 0)
        frames = [data[o:o + frame_size] for o in range(32, len(data), frame_size)]
        return Cycle(image, self.page_size, seed, frames, commits, states)

    def close(self) -> None:
        self.conn.close()


def sql(statement: str) -> Callable[[sqlite3.Connection], None]:
    return lambda conn: conn.execute(statement)


def rows(n: int, start: int, table: str = "t1", size: int = 100,
         ) -> Callable[[sqlite3.Connection], None]:
    return lambda conn: insert_rows(conn, n, start=start, table=table, size=size)


def gen_at(unix_ns: int) -> uuid.UUID:
    return layout.new_generation_id(unix_ns)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def put_generation(store: MemStore, gen: uuid.UUID, cycle: Cycle, *,
                   batches: list[tuple[int, int, int]] = (), snapshot: str | None = "zstd",
                   meta: bool = True, dep: uuid.UUID | None = None) -> None:
    prefix = f"{DB}-{gen}/"
    if snapshot == "zstd":
        store.objects[prefix + "db.zstd"] = zstd(cycle.image)
    elif snapshot == "gz":
        store.objects[prefix + "db.gz"] = gzip.compress(cycle.image)
    elif snapshot == "raw":
        store.objects[prefix + "db.raw"] = cycle.image
    store.objects[prefix + ".changecounter"] = cycle.image[24:28]
    if dep is not None:
        store.objects[prefix + ".dep"] = dep.bytes
    if meta:
        store.objects[prefix + ".meta"] = struct.pack(">III", cycle.page_size, *cycle.seed)
    for first, last, ts in batches:
        store.objects[prefix + f"{first:012d}-{last:012d}-{ts}.zstd"] = zstd(
            cycle.raw(first, last))


def restore(store: MemStore, tmp: Path, **kw: object) -> tuple[lr.LibsqlResult, dict]:
    out = tmp / f"restored-{len(list(tmp.glob('restored-*')))}.db"
    result = lr.restore(store, DB, out, **kw)  # type: ignore[arg-type]
    assert result.restored, result.why
    assert integrity(out) == "ok"
    return result, dump(out)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    s = Source(tmp_path)
    yield s
    s.close()


def three_commits(source: Source) -> Cycle:
    c = source.cycle(rows(40, 100, size=300), rows(40, 200, size=300), rows(40, 300, size=300))
    assert len(c.commits) == 3 and c.commits[0] + 2 < c.commits[1] + 2 < c.commits[2]
    return c


# --- the plain case ------------------------------------------------------------------------

def test_snapshot_and_batches_give_the_last_commit(source: Source, tmp_path: Path) -> None:
    c = three_commits(source)
    store = MemStore()
    g = gen_at(T0 * 10**9)
    put_generation(store, g, c, batches=[(1, c.commits[0], T0),
                                         (c.commits[0] + 1, c.commits[2], T0 + 1)])
    result, got = restore(store, tmp_path)
    assert got == c.states[2]
    assert result.generation == g and result.stack == [g] and result.snapshot.endswith("zstd")
    assert result.frames_applied == c.commits[2] == result.last_consistent_frame
    assert result.stopped() == f"{g}: end of listing"


def test_only_committed_transactions_take_effect(source: Source, tmp_path: Path) -> None:
    """A batch may end inside a transaction: the injector keeps its frames in an open write
    transaction, which the end of the restore rolls back."""
    c = three_commits(source)
    store = MemStore()
    put_generation(store, gen_at(T0 * 10**9), c, batches=[(1, c.commits[1] + 1, T0)])
    result, got = restore(store, tmp_path)
    assert got == c.states[1]
    assert result.frames_injected == c.commits[1] + 1
    assert result.frames_applied == c.commits[1]


def test_unparsable_keys_are_skipped(source: Source, tmp_path: Path) -> None:
    c = three_commits(source)
    store = MemStore()
    g = gen_at(T0 * 10**9)
    put_generation(store, g, c, batches=[(1, c.commits[2], T0)])
    for name in ("notes.txt", "000000000001-x-5.zstd", "000000000001-000000000002-5.bz2"):
        store.objects[f"{DB}-{g}/{name}"] = b"junk"
    _, got = restore(store, tmp_path)
    assert got == c.states[2]


# --- one frame only ------------------------------------------------------------------------

def test_only_the_first_zstd_frame_of_a_batch_is_read(source: Source, tmp_path: Path) -> None:
    """Frames 1..c1 in the object's first zstd frame, the rest in a second one: the second
    is silently ignored, and the next batch then starts after a gap (a silent stop too)."""
    c = three_commits(source)
    store = MemStore()
    g = gen_at(T0 * 10**9)
    c1, c3 = c.commits[0], c.commits[2]
    store.objects[f"{DB}-{g}/db.zstd"] = zstd(c.image)
    store.objects[f"{DB}-{g}/.meta"] = struct.pack(">III", 4096, *c.seed)
    store.objects[f"{DB}-{g}/{1:012d}-{c.commits[1]:012d}-{T0}.zstd"] = (
        zstd(c.raw(1, c1)) + zstd(c.raw(c1 + 1, c.commits[1])))
    store.objects[f"{DB}-{g}/{c.commits[1] + 1:012d}-{c3:012d}-{T0}.zstd"] = zstd(
        c.raw(c.commits[1] + 1, c3))
    result, got = restore(store, tmp_path)
    assert got == c.states[0]
    assert result.replays[0].last_injected_frame == c1
    assert result.replays[0].stopped.startswith(f"gap: frames up to {c1} applied")


def test_only_the_first_zstd_frame_of_a_snapshot_is_read(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    conn = open_wal_db(db)
    insert_rows(conn, 500, size=500)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    image = db.read_bytes()
    half = len(image) // 2 // 4096 * 4096
    store = MemStore()
    g = gen_at(T0 * 10**9)
    store.objects[f"{DB}-{g}/db.zstd"] = zstd(image[:half]) + zstd(image[half:])
    store.objects[f"{DB}-{g}/.changecounter"] = image[24:28]
    out = tmp_path / "out.db"
    assert lr.restore(store, DB, out).restored
    assert out.stat().st_size == half  # the second frame never arrived
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        integrity(out)
    store.objects[f"{DB}-{g}/db.zstd"] = zstd(image)
    assert lr.restore(store, DB, out).restored and out.read_bytes() == image


def test_a_truncated_zstd_batch_ends_silently(source: Source, tmp_path: Path) -> None:
    """async-compression 0.4.11 (libSQL's Cargo.lock) ends a truncated zstd frame without an
    error: the frames decoded so far are injected; a truncated gzip member is an error."""
    c = three_commits(source)
    c1, c3 = c.commits[0], c.commits[2]
    z = zstandard.ZstdCompressor().compressobj()
    body, cut = b"", 0
    for n, frame in enumerate(c.frames[:c3], start=1):
        body += z.compress(frame) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        if n == c1:
            cut = len(body)  # whole zstd blocks up to here hold frames 1..c1
    body += z.flush()
    store = MemStore()
    g = gen_at(T0 * 10**9)
    put_generation(store, g, c)
    key = f"{DB}-{g}/{1:012d}-{c3:012d}-{T0}"
    store.objects[key + ".zstd"] = body[:cut]
    result, got = restore(store, tmp_path)
    assert got == c.states[0] and result.replays[0].last_injected_frame == c1
    del store.objects[key + ".zstd"]
    store.objects[key + ".gz"] = gzip.compress(c.raw(1, c3))[:-5]
    with pytest.raises(lr.LibsqlRestoreError, match="gzip"):
        lr.restore(store, DB, tmp_path / "g.db")


def test_snapshot_codecs_are_tried_in_the_configured_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for path, n in ((a, 3), (b, 7)):
        conn = open_wal_db(path)
        insert_rows(conn, n)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    store = MemStore()
    g = gen_at(T0 * 10**9)
    store.objects[f"{DB}-{g}/db.gz"] = gzip.compress(a.read_bytes())
    store.objects[f"{DB}-{g}/db.raw"] = b.read_bytes()
    store.objects[f"{DB}-{g}/.changecounter"] = b"\0\0\0\1"
    assert len(restore(store, tmp_path)[1]["t"]) == 3  # default zstd: zstd, gz, raw
    assert len(restore(store, tmp_path, compression="none")[1]["t"]) == 7  # raw, zstd, gz
    store.objects[f"{DB}-{g}/db.zstd"] = zstd(b.read_bytes())
    assert len(restore(store, tmp_path)[1]["t"]) == 7
    assert len(restore(store, tmp_path, compression="gzip")[1]["t"]) == 3


# --- listing order: silent stops -------------------------------------------------------------

def test_a_gap_stops_silently(source: Source, tmp_path: Path) -> None:
    c = three_commits(source)
    store = MemStore()
    c1, c2, c3 = c.commits
    put_generation(store, gen_at(T0 * 10**9), c, batches=[(1, c1, T0), (c2 + 1, c3, T0)])
    result, got = restore(store, tmp_path)
    assert got == c.states[0]
    assert result.replays[0].stopped.startswith(f"gap: frames up to {c1} applied, next batch "
                                                f"starts at {c2 + 1}")


def test_an_overlap_stops_silently(source: Source, tmp_path: Path) -> None:
    """The same frames shipped twice (a refill that re-ships more than the hole): the
    overlapping batch ends the restore there, although every frame is in the bucket."""
    c = three_commits(source)
    store = MemStore()
    c1, c2, c3 = c.commits
    put_generation(store, gen_at(T0 * 10**9), c,
                   batches=[(1, c2, T0), (c1 + 1, c3, T0 + 1)])
    result, got = restore(store, tmp_path)
    assert got == c.states[1]
    assert result.replays[0].stopped.startswith(f"overlap: frames up to {c2} applied")


def test_the_last_consistent_frame_is_the_last_key_listed(source: Source,
                                                          tmp_path: Path) -> None:
    """``get_last_consistent_frame`` takes LAST of the last key in listing order: a short
    batch sorting last (here one frame re-shipped on its own) bounds the restore, so the
    batch before it that reaches further is not applied."""
    c = three_commits(source)
    store = MemStore()
    c1, c2, c3 = c.commits
    g = gen_at(T0 * 10**9)
    put_generation(store, g, c, batches=[(1, c1, T0), (c1 + 1, c3, T0), (c2, c2, T0)])
    assert lr.get_last_consistent_frame(store, DB, g) == c2
    result, got = restore(store, tmp_path)
    assert got == c.states[0]
    assert result.replays[0].stopped == f"batch above the last consistent frame {c2}"


def test_a_checksum_in_big_endian_order_fails(tmp_path: Path) -> None:
    """``checksum_step`` reads words in host (little-endian) order whatever the WAL magic."""
    src = tmp_path / "src.db"
    conn = open_wal_db(src)
    insert_rows(conn, 3)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    image = src.read_bytes()
    store = MemStore()
    g = gen_at(T0 * 10**9)
    store.objects[f"{DB}-{g}/db.zstd"] = zstd(image)
    page1 = bytearray(image[:4096])
    for big_endian in (True, False):
        header = make_wal_header(4096, 7, 8, big_endian=big_endian)
        frame, _ = encode_frame(1, len(image) // 4096, bytes(page1), header, header.checksum)
        store.objects[f"{DB}-{g}/.meta"] = struct.pack(">III", 4096, *header.checksum)
        store.objects[f"{DB}-{g}/{1:012d}-{1:012d}-{T0}.zstd"] = zstd(frame)
        out = tmp_path / f"out-{big_endian}.db"
        if big_endian:
            with pytest.raises(lr.LibsqlRestoreError, match="checksum verification failed"):
                lr.restore(store, DB, out)
            assert not out.exists()
            assert lr.restore(store, DB, out, verify_crc=False).restored
        else:
            assert lr.restore(store, DB, out).frames_applied == 1


def test_checksum_step_is_sqlites_little_endian_checksum() -> None:
    from tests.wal_reference import frame_checksum

    header = make_wal_header(4096, 1, 2)
    page = bytes(range(256)) * 16
    frame, ck = encode_frame(5, 9, page, header, header.checksum)
    assert frame_checksum(frame, header.checksum, False, 4096) == ck
    assert lr.verify_frame(frame[:24], header.checksum, page) == ck


# --- generation choice ---------------------------------------------------------------------

def test_generation_choice_is_in_whole_seconds(source: Source, tmp_path: Path) -> None:
    """A generation created at s.7 counts as "at or before" T = s.2: libSQL compares
    whole seconds (latest_generation_before)."""
    old, new = source.cycle(rows(5, 100)), source.cycle(rows(5, 200))
    store = MemStore()
    g_old = gen_at((T0 - 10) * 10**9)
    g_new = gen_at(T0 * 10**9 + 700_000_000)
    put_generation(store, g_old, old, batches=[(1, old.commits[0], T0 - 9)])
    put_generation(store, g_new, new, batches=[(1, new.commits[0], T0 + 1)])
    at = datetime.fromtimestamp(T0 + 0.2, tz=UTC)
    assert layout.generation_time(g_new) > at
    assert lr.latest_generation_before(store, DB, at) == g_new
    assert lr.latest_generation_before(store, DB, datetime.fromtimestamp(T0 - 0.001, tz=UTC)
                                       ) == g_old
    assert lr.latest_generation_before(store, DB, None) == g_new
    assert lr.latest_generation_before(store, DB, datetime.fromtimestamp(T0 - 11, tz=UTC)
                                       ) is None
    # ...and its batch stamped T0 + 1 is after T: the generation's snapshot alone.
    result, got = restore(store, tmp_path, utc_time=at)
    assert result.generation == g_new and got == dump_bytes(tmp_path, new.image)
    assert result.replays[0].stopped.startswith(f"batch stamped {T0 + 1} is after utc_time")


def dump_bytes(tmp: Path, image: bytes) -> dict:
    path = tmp / "image.db"
    path.write_bytes(image)
    return dump(path)


def test_no_completeness_check_in_the_choice(source: Source, tmp_path: Path) -> None:
    """The newest generation is taken even with no .meta and no snapshot: with no .dep
    either, the restore is an empty database."""
    c = source.cycle(rows(5, 100))
    store = MemStore()
    put_generation(store, gen_at((T0 - 10) * 10**9), c, batches=[(1, c.commits[0], T0 - 9)])
    newest = gen_at(T0 * 10**9)
    store.objects[f"{DB}-{newest}/.changecounter"] = b"\0\0\0\7"
    result, got = restore(store, tmp_path)
    assert result.generation == newest and result.snapshot is None and got == {}


def test_a_tombstoned_generation_is_an_error(source: Source, tmp_path: Path) -> None:
    c = source.cycle(rows(5, 100))
    store = MemStore()
    g1 = gen_at((T0 - 10) * 10**9 + 500_000_000)
    g2 = gen_at(T0 * 10**9 + 500_000_000)
    put_generation(store, g1, c, batches=[(1, c.commits[0], T0 - 9)])
    put_generation(store, g2, c, batches=[(1, c.commits[0], T0 + 1)])
    store.objects[f"{DB}.tombstone"] = struct.pack(">q", T0 - 10)  # g1's second: covers it
    assert lr.is_tombstoned(store, DB, g1) is not None
    assert lr.is_tombstoned(store, DB, g2) is None
    assert restore(store, tmp_path)[0].generation == g2
    with pytest.raises(lr.LibsqlRestoreError, match="has been tombstoned"):
        lr.restore(store, DB, tmp_path / "x.db", generation=g1)
    # The choice itself does not look at the tombstone: at T before g2, g1 is chosen, and
    # refused.
    with pytest.raises(lr.LibsqlRestoreError, match="has been tombstoned"):
        lr.restore(store, DB, tmp_path / "x.db",
                   utc_time=datetime.fromtimestamp(T0 - 5, tz=UTC))


def test_a_given_generation_is_used_as_given(source: Source, tmp_path: Path) -> None:
    a, b = source.cycle(rows(5, 100)), source.cycle(rows(5, 200))
    store = MemStore()
    g1, g2 = gen_at((T0 - 10) * 10**9), gen_at(T0 * 10**9)
    put_generation(store, g1, a, batches=[(1, a.commits[0], T0 - 9)])
    put_generation(store, g2, b, batches=[(1, b.commits[0], T0 + 1)])
    result, got = restore(store, tmp_path, generation=g1)
    assert result.generation == g1 and got == a.states[0]
    missing = lr.restore(store, DB, tmp_path / "x.db", generation=uuid.uuid4())
    assert not missing.restored and "ReuseGeneration" in missing.why
    assert not (tmp_path / "x.db").exists()


# --- chains --------------------------------------------------------------------------------

def test_a_chain_through_dep_with_a_missing_meta(source: Source, tmp_path: Path) -> None:
    """G1 (snapshot) <- G2 (no snapshot, no .meta) <- G3 (no snapshot): the stack is G3, G2,
    G1; G1's WAL is replayed, G2's skipped (its .meta is missing), G3's applied on top. G2
    only changed a row in place, so the result is a consistent database without it."""
    c1 = source.cycle(sql("UPDATE t1 SET v = 'g1' WHERE id = 0"))
    c2 = source.cycle(sql("UPDATE t1 SET v = 'g2' WHERE id = 0"))
    c3 = source.cycle(sql("UPDATE t2 SET v = 'g3' WHERE id = 1"))
    store = MemStore()
    g1, g2, g3 = (gen_at((T0 + k) * 10**9) for k in (0, 10, 20))
    put_generation(store, g1, c1, batches=[(1, c1.commits[0], T0 + 1)])
    put_generation(store, g2, c2, snapshot=None, meta=False, dep=g1,
                   batches=[(1, c2.commits[0], T0 + 11)])
    put_generation(store, g3, c3, snapshot=None, dep=g2, batches=[(1, c3.commits[0], T0 + 21)])
    result, got = restore(store, tmp_path)
    assert result.stack == [g3, g2, g1]
    assert [r.generation for r in result.replays] == [g1, g2, g3]
    assert result.replays[1].stopped == ".meta not found: WAL skipped"
    assert result.replays[1].frames_injected == 0
    assert dict(got["t1"])[0].startswith("g1") and dict(got["t2"])[1].startswith("g3")
    # With .meta back, G2's update is there too.
    store.objects[f"{DB}-{g2}/.meta"] = struct.pack(">III", 4096, *c2.seed)
    _, got = restore(store, tmp_path)
    assert got == c3.states[0]


def test_a_cut_parent_does_not_stop_the_child(source: Source, tmp_path: Path) -> None:
    """utc_time: a batch stamped after T ends that generation's WAL and the walk goes on with
    the next generation of the stack (restore_wal's `break 'restore_wal`)."""
    c1 = source.cycle(rows(5, 100), rows(5, 200))
    c2 = source.cycle(sql("UPDATE t2 SET v = 'child' WHERE id = 2"))
    store = MemStore()
    g1, g2 = gen_at(T0 * 10**9), gen_at((T0 + 10) * 10**9)
    put_generation(store, g1, c1, batches=[(1, c1.commits[0], T0 + 1),
                                           (c1.commits[0] + 1, c1.commits[1], T0 + 30)])
    put_generation(store, g2, c2, snapshot=None, dep=g1, batches=[(1, c2.commits[0], T0 + 11)])
    result, got = restore(store, tmp_path, utc_time=datetime.fromtimestamp(T0 + 20, tz=UTC))
    assert result.generation == g2
    assert result.replays[0].stopped.startswith(f"batch stamped {T0 + 30} is after utc_time")
    assert result.replays[1].stopped == "end of listing"
    assert len(got["t1"]) == 3 + 5  # the parent's second commit is missing...
    assert dict(got["t2"])[2] == "child"  # ...the child's is there


def test_at_most_101_generations_on_the_stack(source: Source, tmp_path: Path) -> None:
    c = source.cycle(rows(5, 100))
    store = MemStore()
    gens = [gen_at((T0 + k) * 10**9) for k in range(102)]
    put_generation(store, gens[0], c)
    for parent, child in itertools.pairwise(gens):
        put_generation(store, child, c, snapshot=None, meta=False, dep=parent)
    result = lr.restore(store, DB, tmp_path / "a.db", generation=gens[100])
    assert len(result.stack) == 101 and result.snapshot is not None
    with pytest.raises(lr.LibsqlRestoreError, match="maximum number of generations"):
        lr.restore(store, DB, tmp_path / "b.db", generation=gens[101])


# --- page size -----------------------------------------------------------------------------

def test_page_size_65536_fails(tmp_path: Path) -> None:
    """``restore_from_snapshot`` sets the page size from the fresh destination (4096), so a
    .meta naming 65536 fails in ``set_page_size``: libSQL restores only 4096-byte pages."""
    src = Source(tmp_path, page_size=65536)
    try:
        c = src.cycle(rows(5, 100))
    finally:
        src.close()
    store = MemStore()
    put_generation(store, gen_at(T0 * 10**9), c, batches=[(1, c.commits[0], T0)])
    with pytest.raises(lr.PageSizeBug, match="Cannot set page size to 65536, it was already "
                                             "set to 4096"):
        lr.restore(store, DB, tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()
    result, got = restore(store, tmp_path, page_size_bug=False)
    assert got == c.states[0] and result.page_size == 65536


def test_the_store_is_read_only_through_list_and_get(source: Source, tmp_path: Path) -> None:
    """A FileStore copy of a hand-built bucket reads the same (the reader needs nothing but
    list_objects and get, and a NotFoundError is "no such key")."""
    c = three_commits(source)
    mem = MemStore()
    put_generation(mem, gen_at(T0 * 10**9), c, batches=[(1, c.commits[2], T0)])
    fs = file_store(tmp_path / "root", "b")
    fs.create_bucket()
    for key, data in mem.objects.items():
        fs.put(key, data)
    out = tmp_path / "fs.db"
    assert lr.restore(fs, DB, out).restored and dump(out) == c.states[2]
    shutil.rmtree(tmp_path / "root")


# --- the cross-check itself (tests/libsql_check.py) --------------------------------------------

def test_the_cross_check_reports_a_restore_libsql_would_not_make(source: Source,
                                                                 tmp_path: Path) -> None:
    """A restore of ours that holds every commit of a bucket whose batches overlap: libSQL's
    rules stop at the overlap, and the CrossCheck wrapper says so (rows, both readers)."""
    c = three_commits(source)
    source.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    final = tmp_path / "final.db"
    shutil.copy(source.db, final)
    store = MemStore()
    g = gen_at(T0 * 10**9)
    c1, c2, c3 = c.commits
    put_generation(store, g, c, batches=[(1, c2, T0), (c1 + 1, c3, T0 + 1)])

    def ours(storage: object, db_name: str, target: Path, *, generation: object = None,
             utc_time: object = None, force: bool = False, verify_only: bool = False,
             base_only: bool = False, progress: object = None) -> SimpleNamespace:
        shutil.copy(final, target)
        return SimpleNamespace(generation=g, chain=[g], frames_applied=c3, path=target)

    check = CrossCheck("unit", None, ours)
    check(store, DB, tmp_path / "ours.db")
    [problem] = check.problems()
    assert problem.problem.startswith("different rows: table t1: 123 rows vs 83")
    assert f"overlap: frames up to {c2} applied" in problem.libsql
    del store.objects[f"{DB}-{g}/{c1 + 1:012d}-{c3:012d}-{T0 + 1}.zstd"]
    store.objects[f"{DB}-{g}/{c2 + 1:012d}-{c3:012d}-{T0 + 1}.zstd"] = zstd(c.raw(c2 + 1, c3))
    check(store, DB, tmp_path / "ours.db")
    assert len(check.problems()) == 1  # the second restore agrees
    assert check_restored(store, DB, c.states[2]).problem is None
    assert check_restored(store, DB, c.states[1]).problem.startswith("different rows")
