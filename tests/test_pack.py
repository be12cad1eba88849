"""Page packs (pure): what goes in comes out, one page found by its index alone, damage
detected."""

from __future__ import annotations

import io
import os
import random

import pytest

from bottomless_core import pack
from bottomless_core.pack import PackError, PackInfo


def _pages(rng: random.Random, count: int, page_size: int) -> list[tuple[int, bytes]]:
    pgnos = sorted(rng.sample(range(1, 10 * count + 2), count))
    # half random (incompressible), half repetitive
    return [(p, os.urandom(page_size) if i % 2 else bytes([p % 251]) * page_size)
            for i, p in enumerate(pgnos)]


def _pack(pages: list[tuple[int, bytes]], page_size: int, **kw: object) -> tuple[bytes, PackInfo]:
    info = PackInfo(1, page_size, 5, 900, 4000, (0x12345678, 0x9ABCDEF0), 1_700_000_000,
                    1_700_000_030)
    out = io.BytesIO()
    done = pack.write_pack(out, info, pages, [(10, 1_700_000_001), (900, 1_700_000_030)],
                           **kw)  # type: ignore[arg-type]
    return out.getvalue(), done


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_round_trip_and_ranged_reads(page_size: int) -> None:
    pages = _pages(random.Random(page_size), 100, page_size)
    data, info = _pack(pages, page_size)
    assert info.page_count == 100 and info.group_count >= 100 * page_size // pack.GROUP_BYTES
    index = pack.read_index(data)
    assert index.info == info
    assert index.commits == [(10, 1_700_000_001), (900, 1_700_000_030)]
    assert [(p, bytes(b)) for p, b in pack.iter_pages(data)] == pages
    # one page from the index and one group's bytes, as a ranged reader does
    tail = data[-pack.TAIL_GUESS:]
    index = pack.decode_index(data[:pack.HEADER.size], tail, len(data))
    for pgno, page in pages[::7]:
        group, slot = index.find(pgno)  # type: ignore[misc]
        offset, length = index.group_range(group)
        raw = pack.decode_group(data[offset:offset + length], page_size,
                                len(index.group_pages(group)))
        assert raw[slot * page_size:(slot + 1) * page_size] == page
    assert index.find(pages[0][0] + 1 if pages[1][0] != pages[0][0] + 1 else 0) is None


def test_a_short_tail_asks_for_more() -> None:
    pages = _pages(random.Random(1), 3000, 512)
    data, _ = _pack(pages, 512)
    with pytest.raises(pack.NeedMore) as more:
        pack.decode_index(data[:64], data[-pack.FOOTER_SIZE:], len(data))
    index = pack.decode_index(data[:64], data[-more.value.tail_bytes:], len(data))
    assert index.info.page_count == 3000


def test_damage_is_detected() -> None:
    pages = _pages(random.Random(2), 20, 4096)
    data, _ = _pack(pages, 4096)
    with pytest.raises(PackError, match="no footer"):
        pack.read_index(data[:-1])
    with pytest.raises(PackError, match="bad magic"):
        pack.read_index(b"x" + data[1:])
    bad = bytearray(data)
    bad[-pack.FOOTER_SIZE - 3] ^= 1  # inside the commits frame
    with pytest.raises(PackError, match="CRC"):
        pack.read_index(bytes(bad))
    index = pack.read_index(data)
    offset, length = index.group_range(0)
    bad = bytearray(data)
    bad[offset + length // 2] ^= 1
    with pytest.raises(PackError, match="damaged page group"):
        list(pack.iter_pages(bytes(bad)))


def test_pages_must_be_sorted_and_whole() -> None:
    with pytest.raises(ValueError, match="out of order"):
        _pack([(2, bytes(512)), (1, bytes(512))], 512)
    with pytest.raises(ValueError, match="bytes, not 512"):
        _pack([(1, bytes(100))], 512)
    data, info = _pack([], 512)
    assert info.page_count == 0 and list(pack.iter_pages(data)) == []
