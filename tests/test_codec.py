"""Codecs: round trips, streaming, and clear failures on corrupt or truncated data."""

from __future__ import annotations

import os

import pytest

from bottomless_core.codec import Codec, CodecError, Decoder, Encoder, compress, decompress


@pytest.mark.parametrize("codec", list(Codec))
def test_round_trip(codec: Codec) -> None:
    data = os.urandom(1000) + b"a" * 200_000
    assert decompress(compress(data, codec), codec) == data
    assert decompress(compress(b"", codec), codec) == b""


@pytest.mark.parametrize("codec", list(Codec))
def test_streaming_both_ways(codec: Codec) -> None:
    chunks = [os.urandom(100) + bytes([i]) * 70_000 for i in range(20)]
    encoder = Encoder(codec)
    blob = b"".join(encoder.feed(c) for c in chunks) + encoder.finish()
    decoder = Decoder(codec)
    out = [decoder.feed(blob[i:i + 4096]) for i in range(0, len(blob), 4096)]
    decoder.finish()
    assert b"".join(out) == b"".join(chunks)


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.GZIP])
def test_truncated_data_is_an_error(codec: Codec) -> None:
    blob = compress(os.urandom(5000), codec)
    with pytest.raises(CodecError, match="truncated"):
        decompress(blob[:-7], codec)


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.GZIP])
def test_garbage_is_an_error(codec: Codec) -> None:
    with pytest.raises(CodecError, match="corrupt"):
        decompress(b"this is not compressed at all" * 3, codec)


def test_concatenated_frames_decode() -> None:
    blob = compress(b"one", Codec.ZSTD) + compress(b"two", Codec.ZSTD)
    assert decompress(blob, Codec.ZSTD) == b"onetwo"


def test_parse_names() -> None:
    assert Codec.parse("gzip") is Codec.GZIP
    assert Codec.parse("ZSTD") is Codec.ZSTD
    assert Codec.parse("raw") is Codec.RAW
    with pytest.raises(ValueError):
        Codec.parse("lz4")
