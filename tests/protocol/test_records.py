"""protocol/records.py and protocol/compression.py without any broker.

Round trips go through our builder and our reader, so a symmetric mistake would pass them; the
kafka-python cross-checks (an independent implementation of RecordBatch v2) and the real-broker tests in
test_records_real_peers.py close that gap.
"""

from __future__ import annotations

import gzip
import struct

import cramjam
import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from protocol.compression import Compression, compress, decompress
from protocol.errors import CorruptBatch, LocalProtocolError, RemoteProtocolError
from protocol.records import (
    ATTR_TIMESTAMP_LOG_APPEND,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    HEADER_SIZE,
    BatchSpec,
    NewRecord,
    RecordBatch,
    build_batch,
    build_control_batch,
    build_records,
    decode_records,
    decode_varint,
    encode_varint,
    iter_verified,
    set_base_offset_and_epoch,
    split_batches,
)

pytestmark = pytest.mark.timeout(120)

CODECS = list(Compression)
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)

header_entries = st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=24))
new_records = st.builds(
    NewRecord,
    value=st.none() | st.binary(max_size=300),
    key=st.none() | st.binary(max_size=32),
    headers=st.lists(header_entries, max_size=3),
    timestamp=st.integers(0, 2**42),
)
batch_specs = st.builds(
    BatchSpec,
    base_offset=st.integers(0, 2**62),
    partition_leader_epoch=st.integers(-1, 2**31 - 1),
    compression=st.sampled_from(CODECS),
    producer_id=st.integers(-1, 2**62),
    producer_epoch=st.integers(-1, 2**15 - 1),
    base_sequence=st.integers(-1, 2**31 - 1),
    transactional=st.booleans(),
    records=st.lists(new_records, min_size=1, max_size=12),
)


def _fix_crc(batch: bytearray) -> bytearray:
    """Recompute the CRC after a deliberate edit, with the crc32c package directly rather than our helper."""
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return batch


def _one(data: bytes) -> RecordBatch:
    split = split_batches(data)
    assert split.consumed == len(data) and len(split.batches) == 1
    return split.batches[0]


# -- build / split / verify / decode round trips -------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_specs)
def test_built_batch_round_trips_header_and_records(spec):
    data = build_batch(spec)
    batch = _one(data)
    batch.verify()
    assert batch.size == len(data)
    assert (batch.base_offset, batch.partition_leader_epoch, batch.compression) == (spec.base_offset, spec.partition_leader_epoch, spec.compression)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (spec.producer_id, spec.producer_epoch, spec.base_sequence)
    assert batch.is_transactional == spec.transactional and not batch.is_control
    assert batch.record_count == len(spec.records) and batch.last_offset_delta == len(spec.records) - 1
    assert batch.next_offset == spec.base_offset + len(spec.records)
    assert batch.max_timestamp == max(r.timestamp for r in spec.records)
    decoded = decode_records(batch)
    assert [r.offset for r in decoded] == list(range(spec.base_offset, spec.base_offset + len(spec.records)))
    assert [(r.key, r.value, r.timestamp) for r in decoded] == [(r.key, r.value, r.timestamp) for r in spec.records]
    assert [list(r.headers) for r in decoded] == [list(r.headers) for r in spec.records]


@settings(max_examples=60, deadline=None)
@given(batch_specs)
def test_kafka_python_reads_our_batches(spec):
    """An independent RecordBatch v2 reader agrees with our builder (CRC, header, records)."""
    if spec.compression == Compression.SNAPPY:
        spec.compression = Compression.NONE  # kafka-python has no snappy codec in this environment
    theirs = DefaultRecordBatch(bytearray(build_batch(spec)))
    assert theirs.validate_crc()
    assert (theirs.base_offset, theirs.producer_id, theirs.base_sequence) == (spec.base_offset, spec.producer_id, spec.base_sequence)
    assert theirs.is_transactional == spec.transactional
    got = [(r.offset, r.timestamp, r.key, r.value, [(k, v) for k, v in r.headers]) for r in theirs]
    want = [(spec.base_offset + i, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for i, r in enumerate(spec.records)]
    assert got == want


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.GZIP, Compression.LZ4, Compression.ZSTD])
def test_we_read_kafka_python_batches(codec):
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=int(codec), is_transactional=False, producer_id=77, producer_epoch=3, base_sequence=10, batch_size=1 << 20)
    for i in range(50):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None if i % 7 == 0 else b"k%d" % i, value=b"value-%d" % i * 20, headers=[("h", b"%d" % i)])
    data = bytes(builder.build())
    batch = _one(data)
    batch.verify()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence, batch.compression) == (77, 3, 10, codec)
    assert batch.last_sequence == 59
    records = decode_records(batch)
    assert [r.value for r in records] == [b"value-%d" % i * 20 for i in range(50)]
    assert [r.key for r in records] == [None if i % 7 == 0 else b"k%d" % i for i in range(50)]
    assert [r.timestamp for r in records] == [1_700_000_000_000 + i for i in range(50)]
    assert [r.headers for r in records] == [(("h", b"%d" % i),) for i in range(50)]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_every_codec_round_trips_a_batch_larger_than_one_compression_block(codec):
    # 300 KiB of records crosses LZ4's 64 KiB block size and snappy/xerial block boundaries.
    values = [(b"record %06d " % i) * 40 for i in range(600)]
    batch = _one(build_records(values, base_offset=1000, compression=codec))
    batch.verify()
    assert batch.compression == codec
    if codec != Compression.NONE:
        assert batch.size < sum(map(len, values)) // 4  # repetitive data really was compressed
    assert [r.value for r in decode_records(batch)] == values


def test_null_key_null_value_and_null_header_value_survive():
    spec = BatchSpec(records=[NewRecord(value=None, key=None, headers=[("a", None), ("", b"")], timestamp=5), NewRecord(value=b"", key=b"", timestamp=4)])
    (first, second) = decode_records(_one(build_batch(spec)))
    assert (first.key, first.value, first.headers) == (None, None, (("a", None), ("", b"")))
    assert (second.key, second.value, second.timestamp) == (b"", b"", 4)  # timestamps may go backwards inside a batch


def test_log_append_time_batch_reports_max_timestamp_for_every_record():
    # The broker stamps only maxTimestamp and the attribute; clients report that for each record.
    data = bytearray(build_batch(BatchSpec(records=[NewRecord(b"a", timestamp=1000), NewRecord(b"b", timestamp=2000)])))
    attributes = struct.unpack_from(">h", data, 21)[0] | ATTR_TIMESTAMP_LOG_APPEND
    struct.pack_into(">h", data, 21, attributes)
    struct.pack_into(">q", data, 35, 99_999)
    batch = _one(bytes(_fix_crc(data)))
    batch.verify()
    assert [r.timestamp for r in decode_records(batch)] == [99_999, 99_999]


def test_build_batch_refuses_an_empty_batch():
    with pytest.raises(LocalProtocolError):
        build_batch(BatchSpec(records=[]))


def test_last_sequence_wraps_like_kafka():
    data = build_batch(BatchSpec(producer_id=1, producer_epoch=0, base_sequence=2**31 - 2, records=[NewRecord(b"x")] * 4))
    assert _one(data).last_sequence == 1  # MAX-2, MAX-1, MAX, then 0, 1
    assert _one(build_records([b"x"])).last_sequence == -1


# -- splitting --------------------------------------------------------------------------------------------


def _three_batches() -> tuple[bytes, list[int]]:
    parts = [
        build_records([b"a"], base_offset=0),
        build_records([b"b" * 100, b"c"], base_offset=1, compression=Compression.GZIP),
        build_control_batch(CONTROL_COMMIT, producer_id=9, producer_epoch=1, base_offset=3),
    ]
    ends, total = [], 0
    for part in parts:
        total += len(part)
        ends.append(total)
    return b"".join(parts), ends


def test_split_keeps_only_whole_batches_at_every_cut_point():
    data, ends = _three_batches()
    for cut in range(len(data) + 1):
        split = split_batches(data[:cut])
        whole = [end for end in ends if end <= cut]
        assert split.consumed == (whole[-1] if whole else 0), cut
        assert len(split.batches) == len(whole), cut
        for batch in split.batches:
            batch.verify()
    assert [b.base_offset for b in split_batches(data).batches] == [0, 1, 3]


def test_split_accepts_memoryview_and_does_not_copy():
    data, _ = _three_batches()
    buffer = bytearray(data)
    batch = split_batches(memoryview(buffer)).batches[0]
    buffer[HEADER_SIZE + 5] ^= 0xFF  # the view sees our edit: it aliases the buffer
    with pytest.raises(CorruptBatch):
        batch.verify()


def test_split_rejects_a_length_shorter_than_a_header():
    data = bytearray(build_records([b"x"]))
    struct.pack_into(">i", data, 8, 10)
    with pytest.raises(CorruptBatch) as info:
        split_batches(bytes(data))
    assert info.value.reason == "BAD_LENGTH"


def test_split_of_nothing_is_nothing():
    assert split_batches(b"") == ([], 0)
    assert split_batches(b"\x00" * 11) == ([], 0)


def test_iter_verified_rejects_overlapping_offsets():
    data = build_records([b"a", b"b"], base_offset=10) + build_records([b"c"], base_offset=11)
    with pytest.raises(CorruptBatch) as info:
        list(iter_verified(data))
    assert info.value.reason == "NON_MONOTONIC_OFFSETS"
    gap = build_records([b"a"], base_offset=10) + build_records([b"c"], base_offset=50)  # compaction leaves gaps
    assert [b.base_offset for b in iter_verified(gap)] == [10, 50]


# -- CRC and the fields outside it -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(spec=batch_specs, data=st.data())
def test_flipping_any_byte_covered_by_the_crc_fails_verify(spec, data):
    built = bytearray(build_batch(spec))
    index = data.draw(st.integers(21, len(built) - 1), label="index")
    built[index] ^= data.draw(st.integers(1, 255), label="mask")
    batch = RecordBatch(memoryview(bytes(built)))
    with pytest.raises(CorruptBatch) as info:
        batch.verify()
    # lastOffsetDelta (bytes 23-26) and recordCount (57-60) are sanity-checked before the CRC; any other
    # byte must be caught by the CRC itself.
    offsets_fields = 23 <= index < 27 or 57 <= index < 61
    assert info.value.reason == "BAD_CRC" or (offsets_fields and info.value.reason == "BAD_OFFSETS")


@settings(max_examples=100, deadline=None)
@given(spec=batch_specs, base_offset=st.integers(0, 2**63 - 1), epoch=INT32)
def test_set_base_offset_and_epoch_keeps_the_crc_valid(spec, base_offset, epoch):
    original = build_batch(spec)
    edited = bytearray(original)
    set_base_offset_and_epoch(edited, base_offset, epoch)
    batch = _one(bytes(edited))
    batch.verify()
    assert (batch.base_offset, batch.partition_leader_epoch) == (base_offset, epoch)
    assert edited[8:12] == original[8:12] and edited[16:] == original[16:]
    assert [r.offset - base_offset for r in decode_records(batch)] == list(range(len(spec.records)))


def test_verify_rejects_other_magic_values():
    data = bytearray(build_records([b"x"]))
    data[16] = 1
    with pytest.raises(CorruptBatch) as info:
        _one(bytes(data)).verify()
    assert info.value.reason == "UNSUPPORTED_MESSAGE_FORMAT"


def test_verify_rejects_a_truncated_buffer():
    data = build_records([b"x", b"y"])
    with pytest.raises(CorruptBatch) as info:
        RecordBatch(memoryview(data[:-1])).verify()
    assert info.value.reason == "BAD_LENGTH"


def test_verify_rejects_fewer_offsets_than_records():
    data = bytearray(build_records([b"x", b"y", b"z"]))
    struct.pack_into(">i", data, 23, 1)  # lastOffsetDelta 1 for 3 records
    with pytest.raises(CorruptBatch) as info:
        _one(bytes(_fix_crc(data))).verify()
    assert info.value.reason == "BAD_OFFSETS"


def test_corrupt_batch_is_a_remote_error_with_kafka_code():
    data = bytearray(build_records([b"x"]))
    data[-1] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        _one(bytes(data)).verify()
    assert info.value.error_code == 2  # CORRUPT_MESSAGE


# -- control batches -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [CONTROL_ABORT, CONTROL_COMMIT])
def test_control_batches_are_recognised(kind):
    batch = _one(build_control_batch(kind, producer_id=4242, producer_epoch=7, base_offset=99, coordinator_epoch=3, timestamp=123))
    batch.verify()
    assert batch.is_control and batch.is_transactional
    assert batch.control_type() == kind
    assert (batch.producer_id, batch.producer_epoch, batch.base_offset, batch.record_count) == (4242, 7, 99, 1)
    (record,) = decode_records(batch)
    assert record.key == struct.pack(">hh", 0, kind)
    assert struct.unpack(">hi", record.value) == (0, 3)
    # kafka-python sees the same marker.
    (theirs,) = list(DefaultRecordBatch(bytearray(bytes(batch))))
    assert theirs.type == kind


def test_data_batches_have_no_control_type():
    assert _one(build_records([b"x"], transactional=True, producer_id=1, producer_epoch=0, base_sequence=0)).control_type() is None


def test_control_batch_without_a_control_key_is_corrupt():
    data = build_batch(BatchSpec(control=True, transactional=True, producer_id=1, producer_epoch=0, records=[NewRecord(value=b"v", key=b"\x00")]))
    with pytest.raises(CorruptBatch) as info:
        _one(data).control_type()
    assert info.value.reason == "BAD_CONTROL_RECORD"


# -- varints --------------------------------------------------------------------------------------------------


@given(INT64)
def test_varint_round_trips_the_int64_range(value):
    encoded = encode_varint(value)
    assert len(encoded) <= 10
    assert decode_varint(encoded + b"\xff", 0) == (value, len(encoded))


@given(INT32)
def test_int32_varints_fit_in_five_bytes(value):
    encoded = encode_varint(value)
    assert len(encoded) <= 5
    assert decode_varint(encoded, 0, 5) == (value, len(encoded))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01"), (-65, b"\x81\x01"), (2**31 - 1, b"\xfe\xff\xff\xff\x0f"), (-(2**31), b"\xff\xff\xff\xff\x0f")],
)
def test_varint_zigzag_encoding_matches_the_protocol_guide(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(encoded, 0) == (value, len(encoded))


def test_varint_longer_than_its_bound_is_rejected():
    with pytest.raises(CorruptBatch):
        decode_varint(b"\x80\x80\x80\x80\x80\x01", 0, 5)
    with pytest.raises(CorruptBatch):
        decode_varint(b"\x80" * 10 + b"\x01", 0)
    assert decode_varint(b"\x80\x80\x80\x80\x01", 0, 5) == (2**27, 5)


def test_truncated_varint_is_rejected():
    with pytest.raises(CorruptBatch):
        decode_varint(b"\x80\x80", 0)
    with pytest.raises(CorruptBatch):
        decode_varint(b"", 0)


# -- compression ------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(codec=st.sampled_from(CODECS), payload=st.binary(max_size=5000))
def test_compress_then_decompress_is_identity(codec, payload):
    assert decompress(codec, compress(codec, payload)) == payload


def test_lz4_frames_declare_independent_blocks():
    # Kafka's Java reader refuses linked blocks ("Dependent block stream is unsupported").
    frame = compress(Compression.LZ4, bytes(range(256)) * 1024)
    assert frame[:4] == b"\x04\x22\x4d\x18"
    assert frame[4] & 0x20, "FLG.B.Indep must be set"


def _xerial(payload: bytes, block: int) -> bytes:
    """Snappy in the xerial block framing the Java client writes: magic, two version ints, length-prefixed blocks."""
    out = bytearray(b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1))
    for start in range(0, len(payload), block):
        chunk = bytes(cramjam.snappy.compress_raw(payload[start : start + block]))
        out += struct.pack(">i", len(chunk)) + chunk
    return bytes(out)


def test_snappy_reads_java_xerial_framing_and_raw_blocks():
    payload = b"".join(b"line %d of a snappy test\n" % i for i in range(5000))
    assert decompress(Compression.SNAPPY, _xerial(payload, 32 * 1024)) == payload
    assert decompress(Compression.SNAPPY, bytes(cramjam.snappy.compress_raw(payload))) == payload


def test_truncated_xerial_snappy_is_corrupt():
    framed = _xerial(b"abc" * 1000, 1024)
    with pytest.raises(CorruptBatch) as info:
        decompress(Compression.SNAPPY, framed[:-3])
    assert info.value.reason == "BAD_COMPRESSION"


def test_gzip_reads_streams_from_other_writers():
    payload = b"gzip from someone else " * 100
    assert decompress(Compression.GZIP, gzip.compress(payload, compresslevel=1, mtime=123456)) == payload


@settings(max_examples=150, deadline=None)
@given(codec=st.sampled_from([Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]), garbage=st.binary(max_size=200))
def test_decompressing_garbage_raises_only_corrupt_batch(codec, garbage):
    try:
        decompress(codec, garbage)
    except CorruptBatch as exc:
        assert exc.reason == "BAD_COMPRESSION"


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codec_bits_are_reported(codec):
    data = bytearray(build_records([b"x"]))
    struct.pack_into(">h", data, 21, codec)
    batch = _one(bytes(_fix_crc(data)))
    batch.verify()  # the header is sound; only decoding needs the codec
    with pytest.raises(CorruptBatch) as info:
        decode_records(batch)
    assert info.value.reason == "UNSUPPORTED_COMPRESSION"


# -- decoders never raise anything but our protocol error ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(spec=batch_specs, data=st.data())
def test_decoding_a_mutated_payload_with_a_valid_crc_returns_or_raises_corrupt_batch(spec, data):
    built = bytearray(build_batch(spec))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        index = data.draw(st.integers(HEADER_SIZE - 4, len(built) - 1), label="index")  # recordCount and payload
        built[index] = data.draw(st.integers(0, 255), label="byte")
    batch = _one(bytes(_fix_crc(built)))
    try:
        batch.verify()  # a mutated recordCount may already fail the header checks
        decode_records(batch)
    except CorruptBatch:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_split_verify_and_decode_raise_only_corrupt_batch(blob):
    try:
        for batch in split_batches(blob).batches:
            batch.verify()
            decode_records(batch)
            batch.control_type()
    except CorruptBatch:
        pass
