"""Generation ids, object keys and small metadata objects (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bottomless_core import layout
from bottomless_core.codec import Codec
from bottomless_core.layout import BatchKey, Meta


def test_generation_id_round_trips_its_time() -> None:
    when = datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    gen = layout.new_generation_id(int(when.timestamp() * 1e9))
    assert gen.version == 7
    assert gen.variant == uuid.RFC_4122
    assert abs((layout.generation_time(gen) - when).total_seconds()) < 0.002


def test_reversed_time_matches_the_rust_formula() -> None:
    # secs' = 253370761200 - secs, nanos' = 999999999 - nanos, millis = secs'*1000 + nanos'/1e6
    unix_ns = 1_700_000_000 * 10**9 + 250_000_000
    gen = layout.new_generation_id(unix_ns)
    assert layout.generation_millis(gen) == (253370761200 - 1_700_000_000) * 1000 + 749


def test_newer_generations_sort_first() -> None:
    ids = [layout.new_generation_id(t * 10**9) for t in (1_000, 2_000, 3_000)]
    assert sorted(str(i) for i in ids) == [str(i) for i in reversed(ids)]


def test_same_millisecond_still_sorts_first() -> None:
    t = 1_700_000_000 * 10**9
    old = layout.new_generation_id(t)
    new = layout.new_generation_id(t, newer_than=old)
    assert str(new) < str(old)


def test_generation_prefix_round_trip() -> None:
    gen = layout.new_generation_id()
    prefix = layout.generation_prefix("ns-default", gen)
    assert prefix == f"ns-default-{gen}/"
    assert layout.generation_from_prefix("ns-default", prefix) == gen
    assert layout.generation_from_prefix("ns", prefix) is None  # another database's prefix
    assert layout.generation_from_prefix("ns-default", "ns-default-notauuid/") is None


@pytest.mark.parametrize("codec", list(Codec))
def test_batch_key_round_trip(codec: Codec) -> None:
    key = BatchKey(1, 10000, 1_700_000_000, codec)
    assert key.name == f"000000000001-000000010000-1700000000.{codec.extension}"
    assert BatchKey.parse(key.name) == key


@pytest.mark.parametrize("name", ["db.zstd", ".meta", "000000000001-2-3.zstd",
                                  "000000000005-000000000004-1.zstd", "x.gz"])
def test_non_batches_are_not_batches(name: str) -> None:
    assert BatchKey.parse(name) is None


def test_batch_keys_sort_in_frame_order() -> None:
    names = [BatchKey(f, f + 9, 5, Codec.ZSTD).name for f in (1, 11, 101, 1001)]
    assert sorted(names) == names


def test_snapshot_names() -> None:
    assert layout.snapshot_name(Codec.ZSTD) == "db.zstd"
    assert layout.snapshot_name(Codec.GZIP) == "db.gz"
    assert layout.snapshot_codec("db.raw") is Codec.RAW
    assert layout.snapshot_codec("db.db") is Codec.RAW  # what libSQL's restore looks for
    assert layout.snapshot_codec("db.bz2") is None


def test_small_objects_round_trip() -> None:
    meta = Meta(4096, (0xDEADBEEF, 0x01020304))
    assert len(meta.encode()) == 12
    assert meta.encode()[:4] == b"\x00\x00\x10\x00"
    assert Meta.decode(meta.encode()) == meta
    gen = layout.new_generation_id()
    assert layout.decode_dependency(layout.encode_dependency(gen)) == gen
    assert layout.decode_tombstone(layout.encode_tombstone(1_700_000_000)) == 1_700_000_000
    with pytest.raises(ValueError):
        Meta.decode(b"\x00" * 11)
    with pytest.raises(ValueError):
        Meta.decode(b"\x00\x00\x10\x01" + b"\x00" * 8)  # page size not a power of two
