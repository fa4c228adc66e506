"""RecordBatch v2 (magic 2): a zero-copy header view, verification, splitting, control records, a builder.

Layout of one batch (all integers big-endian)::

    offset  size  field
    0       8     baseOffset
    8       4     batchLength            bytes after this field (total size = batchLength + 12)
    12      4     partitionLeaderEpoch   outside the CRC: a broker may rewrite it
    16      1     magic                  must be 2
    17      4     crc                    CRC-32C of bytes 21..end
    21      2     attributes             bits 0-2 compression, 3 timestamp type, 4 transactional,
                                         5 control, 6 delete horizon
    23      4     lastOffsetDelta
    27      8     baseTimestamp
    35      8     maxTimestamp
    43      8     producerId
    51      2     producerEpoch
    53      4     baseSequence
    57      4     recordCount
    61      ...   records (one compressed block when compression != 0)

A batch is kept "deflated": the header is parsed, the payload stays opaque. ``decode_records`` exists for
tools, tests and the demo; the data path never decompresses a mirrored batch.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import crc32c as _crc32c

from .compression import Compression, compress, decompress
from .errors import CorruptBatch, LocalProtocolError

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted in batchLength
MAGIC = 2
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_START = 21

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_LOG_APPEND = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40

CONTROL_ABORT = 0
CONTROL_COMMIT = 1

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1


def crc32c(data: bytes | memoryview) -> int:
    return _crc32c.crc32c(data)


class RecordBatch:
    """A view of one whole batch inside a larger buffer. Header fields are unpacked once; the payload
    is never copied (``buffer`` is a memoryview slice)."""

    __slots__ = (
        "buffer",
        "base_offset",
        "batch_length",
        "partition_leader_epoch",
        "magic",
        "crc",
        "attributes",
        "last_offset_delta",
        "base_timestamp",
        "max_timestamp",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "record_count",
    )

    def __init__(self, buffer: memoryview) -> None:
        if len(buffer) < HEADER_SIZE:
            raise CorruptBatch(f"batch of {len(buffer)} bytes is shorter than the {HEADER_SIZE}-byte header", "BAD_LENGTH")
        self.buffer = buffer
        (
            self.base_offset,
            self.batch_length,
            self.partition_leader_epoch,
            self.magic,
            self.crc,
            self.attributes,
            self.last_offset_delta,
            self.base_timestamp,
            self.max_timestamp,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.record_count,
        ) = _HEADER.unpack_from(buffer, 0)

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF

    def compute_crc(self) -> int:
        return crc32c(self.buffer[_CRC_START : self.size])

    def verify(self) -> None:
        """Raise ``CorruptBatch`` unless magic, length and CRC-32C are right."""
        if self.magic != MAGIC:
            raise CorruptBatch(
                f"batch at offset {self.base_offset} has magic {self.magic}, only magic 2 is supported",
                "UNSUPPORTED_MESSAGE_FORMAT",
                self.base_offset,
            )
        if self.batch_length < HEADER_SIZE - LOG_OVERHEAD or len(self.buffer) < self.size:
            raise CorruptBatch(f"batch at offset {self.base_offset} has bad length {self.batch_length}", "BAD_LENGTH", self.base_offset)
        if self.last_offset_delta < 0 or (self.record_count > 0 and self.last_offset_delta < self.record_count - 1):
            raise CorruptBatch(
                f"batch at offset {self.base_offset} has lastOffsetDelta {self.last_offset_delta} for {self.record_count} records",
                "BAD_OFFSETS",
                self.base_offset,
            )
        actual = self.compute_crc()
        if actual != self.crc:
            raise CorruptBatch(
                f"batch at offset {self.base_offset} fails CRC-32C (stored {self.crc:#010x}, computed {actual:#010x})",
                "BAD_CRC",
                self.base_offset,
            )

    def control_type(self) -> int | None:
        """For a control batch, the record key's type (``CONTROL_ABORT`` / ``CONTROL_COMMIT``)."""
        if not self.is_control:
            return None
        records = decode_records(self)
        if not records or records[0].key is None or len(records[0].key) < 4:
            raise CorruptBatch(f"control batch at offset {self.base_offset} has no control key", "BAD_CONTROL_RECORD", self.base_offset)
        _version, kind = struct.unpack_from(">hh", records[0].key, 0)
        return kind

    def __bytes__(self) -> bytes:
        return bytes(self.buffer[: self.size])

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset}, last_offset_delta={self.last_offset_delta}, "
            f"records={self.record_count}, size={self.size}, epoch={self.partition_leader_epoch}, "
            f"pid={self.producer_id}, attributes={self.attributes:#x})"
        )


class Split(NamedTuple):
    batches: list[RecordBatch]
    consumed: int  # bytes covered by whole batches; anything after it is a partial trailing batch

    def tail(self, data: bytes | bytearray | memoryview, first: int) -> BatchSlice:
        """The whole batches from index ``first`` on, with the bytes of ``data`` (the blob this split cut)
        that hold exactly them: one value, so no reader has to check that the two agree."""
        start = sum(b.size for b in self.batches[:first])
        return BatchSlice(memoryview(data)[start : self.consumed], self.batches[first:])


class BatchSlice(NamedTuple):
    """Whole record batches and the contiguous bytes holding exactly them, in order (``Split.tail``)."""

    data: memoryview
    batches: list[RecordBatch]

    @property
    def next_offset(self) -> int:
        return self.batches[-1].next_offset if self.batches else -1


def split_batches(data: bytes | bytearray | memoryview) -> Split:
    """Cut a records blob (a Fetch ``records`` field, a segment file) into whole batches.

    A trailing batch whose length runs past the end of ``data`` is left out (Fetch responses may end
    with one). Nothing is verified beyond the length fields; call ``RecordBatch.verify`` for that.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    total = len(view)
    batches: list[RecordBatch] = []
    pos = 0
    while total - pos >= LOG_OVERHEAD:
        batch_length = int.from_bytes(view[pos + 8 : pos + 12], "big", signed=True)
        size = batch_length + LOG_OVERHEAD
        if batch_length < HEADER_SIZE - LOG_OVERHEAD:
            # Message formats v0/v1 (magic at the same position) have shorter entries: name them, since a
            # link from an old cluster must say "unsupported format", not "corrupt".
            if total - pos > 16 and view[pos + 16] in (0, 1):
                raise CorruptBatch(f"data at byte {pos} uses message format v{view[pos + 16]}; only RecordBatch v2 is supported", "UNSUPPORTED_MESSAGE_FORMAT")
            raise CorruptBatch(f"batch at byte {pos} has impossible length {batch_length}", "BAD_LENGTH")
        if pos + size > total:
            break
        batches.append(RecordBatch(view[pos : pos + size]))
        pos += size
    return Split(batches, pos)


def iter_verified(data: bytes | bytearray | memoryview) -> Iterator[RecordBatch]:
    """Whole batches of ``data``, each verified, offsets strictly increasing. Raises on the first bad one."""
    previous_next = None
    for batch in split_batches(data).batches:
        batch.verify()
        if previous_next is not None and batch.base_offset < previous_next:
            raise CorruptBatch(
                f"batch at offset {batch.base_offset} overlaps the previous batch ending at {previous_next - 1}",
                "NON_MONOTONIC_OFFSETS",
                batch.base_offset,
            )
        previous_next = batch.next_offset
        yield batch


def set_base_offset_and_epoch(batch: bytearray | memoryview, base_offset: int, leader_epoch: int) -> None:
    """Rewrite the two header fields that lie outside the CRC (the produce path's offset assignment)."""
    struct.pack_into(">q", batch, 0, base_offset)
    struct.pack_into(">i", batch, 12, leader_epoch)


# ---------------------------------------------------------------------------------------------------
# Varints (zigzag) for the records inside a batch.


def encode_varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    zigzag &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a zigzag varint at ``pos``; return (value, new position). At most ``max_bytes`` bytes."""
    result = 0
    shift = 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            raise CorruptBatch("truncated varint", "BAD_RECORD")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos + i + 1
        shift += 7
    raise CorruptBatch(f"varint longer than {max_bytes} bytes", "BAD_RECORD")


# ---------------------------------------------------------------------------------------------------
# Records: decoding (tools/tests) and building (tests/demo/produce helpers).


@dataclass(frozen=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def decode_records(batch: RecordBatch) -> list[Record]:
    """Decompress (if needed) and decode every record of ``batch``."""
    payload = batch.buffer[HEADER_SIZE : batch.size]
    if batch.compression:
        payload = memoryview(decompress(batch.compression, payload))
    records: list[Record] = []
    # With LogAppendTime the broker stamps only the batch header (maxTimestamp); record deltas still hold
    # the producer's create times, and every client reports maxTimestamp for each record.
    append_time = batch.max_timestamp if batch.attributes & ATTR_TIMESTAMP_LOG_APPEND else None
    pos = 0
    for _ in range(batch.record_count):
        length, pos = decode_varint(payload, pos, 5)
        end = pos + length
        if length < 0 or end > len(payload):
            raise CorruptBatch(f"record length {length} runs past its batch", "BAD_RECORD", batch.base_offset)
        pos += 1  # record attributes, unused
        ts_delta, pos = decode_varint(payload, pos)
        offset_delta, pos = decode_varint(payload, pos, 5)
        key, pos = _read_varbytes(payload, pos)
        value, pos = _read_varbytes(payload, pos)
        header_count, pos = decode_varint(payload, pos, 5)
        headers = []
        for _h in range(max(header_count, 0)):
            hkey, pos = _read_varbytes(payload, pos)
            hval, pos = _read_varbytes(payload, pos)
            headers.append(((hkey or b"").decode("utf-8", "replace"), hval))
        if pos != end:
            raise CorruptBatch(f"record at offset delta {offset_delta} has trailing bytes", "BAD_RECORD", batch.base_offset)
        timestamp = batch.base_timestamp + ts_delta if append_time is None else append_time
        records.append(Record(batch.base_offset + offset_delta, timestamp, key, value, tuple(headers)))
    return records


def _read_varbytes(data: memoryview, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(data, pos, 5)
    if length < 0:
        return None, pos
    if pos + length > len(data):
        raise CorruptBatch("record field runs past its batch", "BAD_RECORD")
    return bytes(data[pos : pos + length]), pos + length


@dataclass
class NewRecord:
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()
    timestamp: int | None = None  # milliseconds; None = now


@dataclass
class BatchSpec:
    """Everything a batch header carries besides its records."""

    base_offset: int = 0
    partition_leader_epoch: int = 0
    compression: Compression = Compression.NONE
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = -1
    base_sequence: int = NO_SEQUENCE
    transactional: bool = False
    control: bool = False
    log_append_time: bool = False
    records: list[NewRecord] = field(default_factory=list)


def _encode_varbytes(value: bytes | None) -> bytes:
    if value is None:
        return encode_varint(-1)
    return encode_varint(len(value)) + value


def _encode_record(offset_delta: int, timestamp_delta: int, rec: NewRecord) -> bytes:
    body = bytearray(b"\x00")
    body += encode_varint(timestamp_delta)
    body += encode_varint(offset_delta)
    body += _encode_varbytes(rec.key)
    body += _encode_varbytes(rec.value)
    body += encode_varint(len(rec.headers))
    for hkey, hval in rec.headers:
        body += _encode_varbytes(hkey.encode("utf-8"))
        body += _encode_varbytes(hval)
    return encode_varint(len(body)) + bytes(body)


def build_batch(spec: BatchSpec) -> bytes:
    """Encode a complete, CRC-correct batch. For tests, the demo and the control markers linkd writes."""
    if not spec.records:
        raise LocalProtocolError("a record batch needs at least one record")
    now = int(time.time() * 1000)
    stamps = [now if r.timestamp is None else r.timestamp for r in spec.records]
    base_ts = stamps[0]
    body = b"".join(_encode_record(i, ts - base_ts, r) for i, (r, ts) in enumerate(zip(spec.records, stamps, strict=False)))
    if spec.compression != Compression.NONE:
        body = compress(spec.compression, body)
    attributes = int(spec.compression)
    if spec.log_append_time:
        attributes |= ATTR_TIMESTAMP_LOG_APPEND
    if spec.transactional:
        attributes |= ATTR_TRANSACTIONAL
    if spec.control:
        attributes |= ATTR_CONTROL
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        len(spec.records) - 1,
        base_ts,
        max(stamps),
        spec.producer_id,
        spec.producer_epoch,
        spec.base_sequence,
        len(spec.records),
    ) + body
    crc = crc32c(after_crc)
    batch_length = len(after_crc) + 9  # partitionLeaderEpoch + magic + crc
    return struct.pack(">qiibI", spec.base_offset, batch_length, spec.partition_leader_epoch, MAGIC, crc) + after_crc


def build_control_batch(
    kind: int,
    producer_id: int,
    producer_epoch: int,
    base_offset: int = 0,
    partition_leader_epoch: int = 0,
    coordinator_epoch: int = 0,
    timestamp: int | None = None,
) -> bytes:
    """A transaction marker batch (ABORT = 0, COMMIT = 1) as a transaction coordinator writes it."""
    key = struct.pack(">hh", 0, kind)
    value = struct.pack(">hi", 0, coordinator_epoch)
    return build_batch(
        BatchSpec(
            base_offset=base_offset,
            partition_leader_epoch=partition_leader_epoch,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transactional=True,
            control=True,
            records=[NewRecord(value=value, key=key, timestamp=timestamp)],
        )
    )


def build_records(
    values: Iterable[bytes | None], base_offset: int = 0, compression: Compression = Compression.NONE, **kwargs
) -> bytes:
    """Shorthand: one batch holding ``values`` with no keys."""
    return build_batch(BatchSpec(base_offset=base_offset, compression=compression, records=[NewRecord(v) for v in values], **kwargs))
