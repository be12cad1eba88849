"""Bucket layout of libsql bottomless: generation ids, object keys, small metadata objects.

See docs/format.md. Pure: names and bytes in, values out.
"""

from __future__ import annotations

import math
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from .codec import Codec
from .wal import Checksum

# Generation ids embed (REVERSE_EPOCH_SECS - now) so that newer generations sort first.
REVERSE_EPOCH_SECS = 253370761200
_NANOS_MAX = 999_999_999
WHOLE_SECOND_MILLIS = _NANOS_MAX // 1_000_000  # the millisecond field of a time S.000

META = ".meta"
CHANGE_COUNTER = ".changecounter"
DEPENDENCY = ".dep"
SNAPSHOT_STEM = "db"
TOMBSTONE_SUFFIX = ".tombstone"

_BATCH_RE = re.compile(r"^(\d{12})-(\d{12})-(\d+)\.(zstd|gz|raw)$")
_PACK_RE = re.compile(r"^L(\d)-(\d{12})-(\d{12})-(\d+)\.pack$")
SNAPSHOT_PACK = "db.pack"  # a snapshot's page-indexed form (pack.py): not read by libSQL


# --- generation ids -------------------------------------------------------------------------

def _reversed_millis(unix_ns: int) -> int:
    secs, nanos = divmod(unix_ns, 1_000_000_000)
    return (REVERSE_EPOCH_SECS - secs) * 1000 + (_NANOS_MAX - nanos) // 1_000_000


def generation_from_millis(millis: int, random_bytes: bytes | None = None) -> uuid.UUID:
    """A UUID v7 carrying ``millis`` in its first 48 bits, random elsewhere."""
    rb = random_bytes if random_bytes is not None else os.urandom(10)
    raw = (millis.to_bytes(6, "big")
           + bytes([0x70 | (rb[0] & 0x0F), rb[1], 0x80 | (rb[2] & 0x3F)]) + rb[3:10])
    return uuid.UUID(bytes=raw)


def new_generation_id(unix_ns: int | None = None, newer_than: uuid.UUID | None = None,
                      ) -> uuid.UUID:
    """A generation id for a generation created at ``unix_ns`` (default: now).

    ``newer_than``: the current newest generation; the new id is forced to sort before it even
    when both fall in the same millisecond, so "newest first" stays true.
    """
    millis = _reversed_millis(time.time_ns() if unix_ns is None else unix_ns)
    if newer_than is not None:
        millis = min(millis, generation_millis(newer_than) - 1)
    return generation_from_millis(millis)


def generation_for(at: float, newer_than: uuid.UUID | None = None) -> uuid.UUID:
    """The id of a generation we create at ``at`` (unix seconds).

    Its time is a whole second: the one at or after ``at``, and later than ``newer_than``'s
    second (the current newest, which it must sort before). libSQL's restore compares
    generation times in whole seconds (``latest_generation_before``), so a time with a
    fraction would let it pick, for a T in that second, a generation holding commits made
    after T; a whole second at or after every commit the generation starts from cannot.
    """
    secs = math.ceil(at)
    if newer_than is not None:
        secs = max(secs, math.floor(generation_time(newer_than).timestamp()) + 1)
    return generation_from_millis(_reversed_millis(secs * 1_000_000_000))


def generation_millis(gen: uuid.UUID) -> int:
    return int.from_bytes(gen.bytes[:6], "big")


def generation_time(gen: uuid.UUID) -> datetime:
    """The (UTC, millisecond precision) creation time encoded in a generation id.

    A whole second (what ``generation_for`` encodes) reads back as that second: the
    reversal turns nanos 0 into the millisecond field 999, which would read back as
    S.000999; the ids libSQL and older versions wrote keep their millisecond.
    """
    millis = generation_millis(gen)
    secs = REVERSE_EPOCH_SECS - millis // 1000
    if millis % 1000 == WHOLE_SECOND_MILLIS:
        return datetime.fromtimestamp(secs, tz=UTC)
    nanos = _NANOS_MAX - (millis % 1000) * 1_000_000
    return datetime.fromtimestamp(secs + nanos / 1e9, tz=UTC)


def parse_generation(text: str) -> uuid.UUID:
    """Parse a generation id as printed by ``ls``; ValueError when it is not one."""
    gen = uuid.UUID(text.strip())
    if str(gen) != text.strip().lower():
        raise ValueError(f"not a hyphenated UUID: {text!r}")
    return gen


# --- what libSQL's restore can read -----------------------------------------------------------

LIBSQL_PAGE_SIZE = 4096  # the only page size libSQL's restore handles (format.md, "libSQL")


def libsql_page_size_note(page_size: int) -> str | None:
    """One line for a user whose database libSQL's own restore cannot rebuild, else None."""
    if page_size == LIBSQL_PAGE_SIZE:
        return None
    return (f"the database has {page_size}-byte pages: bottomless-cli restores it, but "
            f"libSQL's restore handles only {LIBSQL_PAGE_SIZE}-byte pages (a bug in libSQL, "
            "docs/format.md)")


# --- keys -----------------------------------------------------------------------------------

# A database found below a directory (replicate --dir --recursive) is named by its path
# under it with each '/' written so: libSQL's restore takes a key's generation to end at its
# first '/', so a name holding one cannot be restored by it (its slicing panics).
PATH_SEPARATOR = "%2F"


def name_for_path(relative: str) -> str:
    """The database name of a path under a directory (``eu/acme.db`` -> ``eu%2Facme.db``)."""
    return relative.replace("/", PATH_SEPARATOR)


def bad_db_name(name: str) -> str | None:
    """Why ``name`` cannot name a database in the bucket, or None."""
    if not name:
        return "empty"
    if "/" in name:
        return (f"{name!r} holds '/', which libSQL's restore cannot read (its keys' generation "
                f"ends at the first '/'): write it {name_for_path(name)!r} (a database "
                "replicated with --dir --recursive is named so)")
    return None


def generations_prefix(db_name: str) -> str:
    return f"{db_name}-"


def generation_prefix(db_name: str, gen: uuid.UUID) -> str:
    return f"{db_name}-{gen}/"


def generation_from_prefix(db_name: str, prefix: str) -> uuid.UUID | None:
    """The generation named by a listed common prefix ``DB-GEN/``, or None for other names."""
    head = generations_prefix(db_name)
    if not prefix.startswith(head) or not prefix.endswith("/"):
        return None
    text = prefix[len(head):-1]
    try:
        return parse_generation(text)
    except ValueError:
        return None


def database_from_prefix(prefix: str) -> str | None:
    """The database name of a listed common prefix ``DB-GEN/``, or None for other names."""
    name = prefix[:-len("-00000000-0000-0000-0000-000000000000/")]
    return name if name and generation_from_prefix(name, prefix) is not None else None


def object_key(db_name: str, gen: uuid.UUID, name: str) -> str:
    return generation_prefix(db_name, gen) + name


def snapshot_name(codec: Codec) -> str:
    return f"{SNAPSHOT_STEM}.{codec.extension}"


def tombstone_key(db_name: str) -> str:
    return db_name + TOMBSTONE_SUFFIX


@dataclass(frozen=True, order=True)
class BatchKey:
    """A WAL batch object: frames first..last (1-based, inclusive) cut at ``timestamp``."""

    first: int
    last: int
    timestamp: int
    codec: Codec

    @property
    def name(self) -> str:
        return f"{self.first:012d}-{self.last:012d}-{self.timestamp}.{self.codec.extension}"

    @classmethod
    def parse(cls, name: str) -> BatchKey | None:
        """Parse the part of a key after ``DB-GEN/``; None when it is not a batch."""
        m = _BATCH_RE.match(name)
        if not m:
            return None
        first, last, ts = int(m[1]), int(m[2]), int(m[3])
        if first < 1 or last < first:
            return None
        return cls(first, last, ts, Codec.from_extension(m[4]))


@dataclass(frozen=True, order=True)
class PackKey:
    """A page pack made by compaction at ``level`` (1, 2, ...): the last version of every
    page changed by frames first..last of the generation, whose batches were stamped up to
    ``timestamp``. libSQL's restore cannot parse the name and skips it."""

    first: int
    last: int
    level: int
    timestamp: int

    @property
    def name(self) -> str:
        return f"L{self.level}-{self.first:012d}-{self.last:012d}-{self.timestamp}.pack"

    @classmethod
    def parse(cls, name: str) -> PackKey | None:
        m = _PACK_RE.match(name)
        if not m:
            return None
        level, first, last, ts = int(m[1]), int(m[2]), int(m[3]), int(m[4])
        if level < 1 or first < 1 or last < first:
            return None
        return cls(first, last, level, ts)


def snapshot_codec(name: str) -> Codec | None:
    """The codec of a snapshot object name (``db.zstd``...), or None.

    ``db.db`` is read as uncompressed too: libSQL writes ``db.raw`` but its restore looks for
    ``db.db``, so either may exist in a bucket.
    """
    stem, _, ext = name.partition(".")
    if stem != SNAPSHOT_STEM:
        return None
    if ext == "db":
        return Codec.RAW
    try:
        return Codec.from_extension(ext)
    except ValueError:
        return None


# --- small objects --------------------------------------------------------------------------

@dataclass(frozen=True)
class Meta:
    """``.meta``: page size and the checksum that starts the generation's frame chain."""

    page_size: int
    checksum: Checksum

    def encode(self) -> bytes:
        return struct.pack(">III", self.page_size, *self.checksum)

    @classmethod
    def decode(cls, data: bytes) -> Meta:
        if len(data) != 12:
            raise ValueError(f".meta has {len(data)} bytes, expected 12")
        page_size, c1, c2 = struct.unpack(">III", data)
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            raise ValueError(f".meta names page size {page_size}")
        return cls(page_size, (c1, c2))


def encode_dependency(parent: uuid.UUID) -> bytes:
    return parent.bytes


def decode_dependency(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise ValueError(f".dep has {len(data)} bytes, expected 16")
    return uuid.UUID(bytes=data)


def encode_tombstone(unix_secs: int) -> bytes:
    return struct.pack(">q", unix_secs)


def decode_tombstone(data: bytes) -> int:
    if len(data) != 8:
        raise ValueError(f"tombstone has {len(data)} bytes, expected 8")
    return struct.unpack(">q", data)[0]
