"""Compression of snapshots and WAL batches: zstd (default), gzip, raw; streaming both ways."""

from __future__ import annotations

import enum
import io
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

import zstandard

ZSTD_LEVEL = 3  # zstd's own default: ~same ratio as gzip -6 at many times the speed
GZIP_LEVEL = 6
CHUNK = 1 << 20  # 1 MiB: large enough to keep the compressors busy, small enough for memory


class CodecError(ValueError):
    """Compressed bytes that do not decode (corrupt or truncated)."""


class Codec(enum.Enum):
    ZSTD = "zstd"
    GZIP = "gz"
    RAW = "raw"

    @property
    def extension(self) -> str:
        return self.value

    @classmethod
    def from_extension(cls, ext: str) -> Codec:
        for codec in cls:
            if codec.value == ext:
                return codec
        raise ValueError(f"unknown compression extension {ext!r}")

    @classmethod
    def parse(cls, text: str) -> Codec:
        """Parse a user's choice, accepting the names LIBSQL_BOTTOMLESS_COMPRESSION accepts."""
        names = {"zstd": cls.ZSTD, "gz": cls.GZIP, "gzip": cls.GZIP, "raw": cls.RAW, "": cls.RAW,
                 "none": cls.RAW}
        try:
            return names[text.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown compression {text!r} (zstd, gzip or raw)") from None


class Encoder:
    """Incremental compressor: ``feed`` chunks, then ``finish`` once."""

    def __init__(self, codec: Codec, threads: int = 0) -> None:
        """``threads`` > 0: zstd compresses with that many worker threads (same format)."""
        self.codec = codec
        self._obj: Any = None  # zstd or zlib compressobj: both have compress() and flush()
        if codec is Codec.ZSTD:
            # The frame checksum lets a reader tell a damaged object from a valid one.
            self._obj = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                                 threads=threads).compressobj()
        elif codec is Codec.GZIP:
            self._obj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        return data if self.codec is Codec.RAW else self._obj.compress(data)

    def finish(self) -> bytes:
        return b"" if self.codec is Codec.RAW else self._obj.flush()


class Decoder:
    """Incremental decompressor that also accepts concatenated frames/members.

    ``finish`` raises CodecError if the input stopped in the middle of a frame.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._obj = self._new()
        self._started = False

    def _new(self) -> Any:  # zstd or zlib decompressobj (or None for raw)
        if self.codec is Codec.ZSTD:
            return zstandard.ZstdDecompressor().decompressobj()
        if self.codec is Codec.GZIP:
            return zlib.decompressobj(31)
        return None

    def feed(self, data: bytes) -> bytes:
        if self.codec is Codec.RAW:
            return data
        out = []
        try:
            while data:
                self._started = True
                out.append(self._obj.decompress(data))
                if not self._obj.eof:
                    break
                data = self._obj.unused_data
                self._obj = self._new()
                self._started = False
        except (zstandard.ZstdError, zlib.error) as exc:
            raise CodecError(f"corrupt {self.codec.value} data: {exc}") from None
        return b"".join(out)

    def finish(self) -> None:
        if self.codec is not Codec.RAW and self._started and not self._obj.eof:
            raise CodecError(f"truncated {self.codec.value} data")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def iter_decompressed(data: bytes | memoryview, codec: Codec, block: int = CHUNK,
                      ) -> Iterator[bytes]:
    """iter_decompressed_stream over bytes held in memory."""
    return iter_decompressed_stream(io.BytesIO(data), codec, block)


def iter_decompressed_stream(source: Readable, codec: Codec, block: int = CHUNK,
                             ) -> Iterator[bytes]:
    """Decompress a stream (whole frames/members, possibly concatenated) in pieces of at most
    ``block`` bytes, so that a highly compressed object (runs of zero pages) never expands
    all at once. A truncated zstd object yields fewer bytes (callers check the length or the
    digest they expect); a damaged one fails its zstd checksum when it has one."""
    try:
        if codec is Codec.RAW:
            while out := source.read(block):
                yield out
        elif codec is Codec.ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=CHUNK, read_across_frames=True)
            while out := reader.read(block):
                yield out
        else:
            yield from _gunzip(source, block)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise CodecError(f"corrupt {codec.value} data: {exc}") from None


def _gunzip(source: Readable, block: int) -> Iterator[bytes]:
    obj = zlib.decompressobj(31)
    started = False
    while data := source.read(CHUNK):
        while data:
            started = True
            out = obj.decompress(data, block)
            while True:
                if out:
                    yield out
                if obj.eof or not obj.unconsumed_tail:
                    break
                out = obj.decompress(obj.unconsumed_tail, block)
            data = obj.unused_data if obj.eof else b""
            if obj.eof:  # another member may follow
                obj, started = zlib.decompressobj(31), bool(data)
    if started and not obj.eof:
        raise CodecError("truncated gz data")


def compress(data: bytes, codec: Codec) -> bytes:
    enc = Encoder(codec)
    return enc.feed(data) + enc.finish()


def decompress(data: bytes, codec: Codec) -> bytes:
    dec = Decoder(codec)
    out = dec.feed(data)
    dec.finish()
    return out

