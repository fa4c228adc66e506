"""Record-batch compression codecs (attributes bits 0-2).

Used by the batch builder and by record decoding for tools and tests. The mirror data path never calls
this module: mirrored batches stay compressed exactly as the source wrote them.
"""

from __future__ import annotations

import enum
import gzip
import io

import cramjam
import lz4.frame
import zstandard

from .errors import CorruptBatch, LocalProtocolError


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


# Java clients write snappy in xerial's block framing; librdkafka writes raw snappy and reads both.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def compress(codec: Compression, data: bytes) -> bytes:
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if codec == Compression.SNAPPY:
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == Compression.LZ4:
        # Kafka's Java LZ4 reader rejects linked blocks ("Dependent block stream is unsupported") once a
        # payload spans more than one 64 KiB block; python-lz4 links blocks unless told otherwise.
        return lz4.frame.compress(data, block_linked=False)
    if codec == Compression.ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise LocalProtocolError(f"unknown compression codec {codec!r}")


def decompress(codec: int, data: bytes | memoryview) -> bytes:
    try:
        if codec == Compression.NONE:
            return bytes(data)
        if codec == Compression.GZIP:
            return gzip.decompress(bytes(data))
        if codec == Compression.SNAPPY:
            return _snappy_decompress(bytes(data))
        if codec == Compression.LZ4:
            return lz4.frame.decompress(bytes(data))
        if codec == Compression.ZSTD:
            # Frames written by streaming producers may not declare their content size.
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bytes(data)))
            return reader.read()
    except CorruptBatch:
        raise
    except Exception as exc:  # codec libraries raise their own types; report them as ours
        raise CorruptBatch(f"cannot decompress {Compression(codec).name} payload: {exc}", "BAD_COMPRESSION") from exc
    raise CorruptBatch(f"unknown compression codec {codec}", "UNSUPPORTED_COMPRESSION")


def _snappy_decompress(data: bytes) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))
    out = bytearray()
    pos = 16  # magic (8) + version (4) + compatible version (4)
    while pos < len(data):
        if pos + 4 > len(data):
            raise CorruptBatch("truncated xerial snappy block length", "BAD_COMPRESSION")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise CorruptBatch("truncated xerial snappy block", "BAD_COMPRESSION")
        out += cramjam.snappy.decompress_raw(data[pos : pos + size])
        pos += size
    return bytes(out)
