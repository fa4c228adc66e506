"""Record batches written by real producers and stored by real brokers, read with protocol/records.py.

Producers: confluent-kafka (librdkafka), kafka-python and the Java client. Brokers: Apache Kafka 4.1 and
Tansu. Batches are fetched raw with tests.peers.rawclient (kafka-python's codec, not ours), then split,
verified and decoded by our code; what comes out must be exactly what the producer sent.
"""

from __future__ import annotations

import struct
import time

import pytest

from protocol.compression import Compression
from protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchSpec,
    NewRecord,
    build_batch,
    decode_records,
    iter_verified,
    split_batches,
)
from tests.peers import rawclient

pytestmark = pytest.mark.timeout(120)

CODEC_NAMES = ["none", "gzip", "snappy", "lz4", "zstd"]
COUNT = 200
BASE_TIMESTAMP = 1_700_000_000_000


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka), pytest.param("tansu", marks=pytest.mark.tansu)])
def source(request):
    """Each test runs against Apache Kafka (session broker) and Tansu (module broker)."""
    return request.getfixturevalue("kafka_broker" if request.param == "kafka" else "tansu_broker")


def _is_tansu(broker) -> bool:
    return type(broker).__name__ == "TansuBroker"


def _expected(i: int, null_header_values: bool = True) -> tuple[bytes | None, bytes, list[tuple[str, bytes | None]], int]:
    """Record i: some null keys, compressible values, headers with a null (or empty) value, rising timestamps.
    kafka-python refuses null header values, so its records carry an empty one instead."""
    key = None if i % 10 == 0 else b"key-%d" % i
    value = b"value %05d " % i * 8
    headers = [("seq", b"%d" % i), ("empty", None if null_header_values else b"")] if i % 3 == 0 else []
    return key, value, headers, BASE_TIMESTAMP + i


def _fetch_and_check(broker, topic: str, end_offset: int) -> list:
    """Fetch [0, end_offset) raw; every byte must belong to a verified, offset-ordered batch."""
    raw = rawclient.fetch_raw(broker.bootstrap, topic, 0, 0, end_offset)
    split = split_batches(raw)
    assert split.consumed == len(raw), "fetch_raw returns whole batches only"
    batches = list(iter_verified(raw))
    assert batches and batches[0].base_offset == 0 and batches[-1].next_offset >= end_offset
    return batches


def _assert_records_match(batches, count: int, null_header_values: bool = True) -> None:
    records = [r for b in batches if not b.is_control for r in decode_records(b)]
    assert [r.offset for r in records] == list(range(count))
    for i, record in enumerate(records):
        key, value, headers, timestamp = _expected(i, null_header_values)
        assert (record.key, record.value, record.timestamp) == (key, value, timestamp), i
        assert list(record.headers) == headers, i


# -- confluent-kafka (librdkafka) ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_confluent_idempotent_batches_verify_and_decode(source, unique_topic, codec):
    from confluent_kafka import Producer

    source.create_topic(unique_topic)
    producer = Producer(
        {
            "bootstrap.servers": source.bootstrap,
            "enable.idempotence": True,
            "compression.type": codec,
            "linger.ms": 20,
            "batch.num.messages": 64,  # several batches per run
            "log_level": 3,
        }
    )
    for i in range(COUNT):
        key, value, headers, timestamp = _expected(i)
        producer.produce(unique_topic, key=key, value=value, headers=headers, timestamp=timestamp, partition=0)
    assert producer.flush(30) == 0

    batches = _fetch_and_check(source, unique_topic, COUNT)
    assert len(batches) >= 2
    producer_ids = {b.producer_id for b in batches}
    assert len(producer_ids) == 1 and producer_ids.pop() >= 0, "idempotent batches carry one producer id"
    sequences = [(b.base_sequence, b.last_sequence) for b in batches]
    assert sequences[0][0] == 0 and all(prev[1] + 1 == cur[0] for prev, cur in zip(sequences, sequences[1:], strict=False))
    assert {b.compression for b in batches} == {Compression[codec.upper()]}
    assert not any(b.is_transactional or b.is_control for b in batches)
    _assert_records_match(batches, COUNT)


def _transactional_producer(broker, topic: str):
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "transactional.id": f"tx-{topic}", "transaction.timeout.ms": 30_000, "linger.ms": 5, "log_level": 3}
    )
    producer.init_transactions(30)
    return producer


def _run_commit_then_abort(broker, topic: str, per_txn: int) -> None:
    producer = _transactional_producer(broker, topic)
    for outcome in ("commit", "abort"):
        producer.begin_transaction()
        for i in range(per_txn):
            producer.produce(topic, value=b"%s-%d" % (outcome.encode(), i), partition=0, timestamp=BASE_TIMESTAMP + i)
        producer.flush(30)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def test_confluent_transactions_leave_commit_and_abort_markers(source, unique_topic):
    per_txn = 5
    source.create_topic(unique_topic)
    _run_commit_then_abort(source, unique_topic, per_txn)
    # data 0-4, COMMIT marker 5, data 6-10, ABORT marker 11
    batches = _fetch_and_check(source, unique_topic, 2 * per_txn + 2)
    controls = [b for b in batches if b.is_control]
    data = [b for b in batches if not b.is_control]
    assert [b.control_type() for b in controls] == [CONTROL_COMMIT, CONTROL_ABORT]
    assert [b.base_offset for b in controls] == [per_txn, 2 * per_txn + 1]
    assert all(b.is_transactional for b in batches), "data and markers of a transaction are all flagged"
    assert len({(b.producer_id, b.producer_epoch) for b in batches}) == 1
    values = [r.value for b in data for r in decode_records(b)]
    assert values == [b"commit-%d" % i for i in range(per_txn)] + [b"abort-%d" % i for i in range(per_txn)]
    (marker_record,) = decode_records(controls[1])
    assert struct.unpack(">hh", marker_record.key) == (0, CONTROL_ABORT)


def test_kafka_read_committed_fetch_lists_the_aborted_transaction(kafka_broker, unique_topic):
    """What linkd must reproduce when it serves a mirror (Tansu does not do this; see peers.md)."""
    kafka_broker.create_topic(unique_topic)
    _run_commit_then_abort(kafka_broker, unique_topic, 3)  # data 0-2, COMMIT 3, data 4-6, ABORT 7
    # abort_transaction() returns once the coordinator has decided; markers reach the partition
    # asynchronously. A Fetch also stops at a segment end (the old record timestamps make Kafka roll a
    # segment), so walk the log like a consumer and collect the aborted lists of every response.
    aborted: set[tuple[int, int]] = set()
    producer_ids: set[int] = set()
    offset, deadline = 0, time.monotonic() + 30
    with rawclient.RawConnection(*rawclient.parse_bootstrap(kafka_broker.bootstrap)) as conn:
        while offset < 8 and time.monotonic() < deadline:
            fetched = rawclient.fetch_once(conn, unique_topic, 0, offset, isolation_level=1)
            aborted.update(fetched.aborted_transactions or [])
            before = offset
            for batch in iter_verified(fetched.records):
                producer_ids.add(batch.producer_id)
                offset = batch.next_offset
            if offset == before:
                time.sleep(0.05)  # the last stable offset has not passed the open transaction yet
    assert offset == 8 and fetched.last_stable_offset == fetched.high_watermark == 8
    (pid,) = producer_ids
    assert aborted == {(pid, 4)}


# -- kafka-python ---------------------------------------------------------------------------------------------


def _kafka_python_codecs() -> list:
    import kafka.codec

    available = {"gzip": kafka.codec.has_gzip(), "snappy": kafka.codec.has_snappy(), "lz4": kafka.codec.has_lz4(), "zstd": kafka.codec.has_zstd()}
    params = [pytest.param(None, id="none")]
    for name, present in available.items():
        marks = () if present else pytest.mark.skip(reason=f"kafka-python has no {name} codec installed here")
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("codec", _kafka_python_codecs())
def test_kafka_python_batches_verify_and_decode(source, unique_topic, codec):
    from kafka import KafkaProducer

    source.create_topic(unique_topic)
    producer = KafkaProducer(bootstrap_servers=source.bootstrap, compression_type=codec, linger_ms=20, batch_size=4096, request_timeout_ms=30_000)
    try:
        for i in range(COUNT):
            key, value, headers, timestamp = _expected(i, null_header_values=False)
            producer.send(unique_topic, key=key, value=value, headers=headers, timestamp_ms=timestamp, partition=0)
        producer.flush(30)
    finally:
        producer.close(10)
    batches = _fetch_and_check(source, unique_topic, COUNT)
    assert len(batches) >= 2
    expected_codec = Compression.NONE if codec is None else Compression[codec.upper()]
    assert {b.compression for b in batches} == {expected_codec}
    _assert_records_match(batches, COUNT, null_header_values=False)


# -- the Java client ------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_java_producer_batches_verify_and_decode(kafka_broker, java_client, unique_topic, codec):
    """The reference client writes snappy in xerial framing and LZ4 frames of its own; both must decode."""
    from tests.peers.java import java_produce

    kafka_broker.create_topic(unique_topic)
    java_produce(kafka_broker.bootstrap, unique_topic, COUNT, compression=codec)
    batches = _fetch_and_check(kafka_broker, unique_topic, COUNT)
    assert {b.compression for b in batches} == {Compression[codec.upper()]}
    assert all(b.producer_id >= 0 and b.base_sequence >= 0 for b in batches), "the Java producer is idempotent by default"
    values = [r.value for b in batches for r in decode_records(b)]
    assert values == [b"v%d" % i for i in range(COUNT)]


# -- our builder's batches, accepted by real brokers ------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Compression), ids=lambda c: c.name)
def test_brokers_accept_and_return_our_batches_unchanged(source, unique_topic, codec):
    """300 KiB per batch crosses compression block boundaries (LZ4 linked blocks were once refused by Kafka)."""
    source.create_topic(unique_topic)
    records = [NewRecord(value=b"payload %06d " % i * 40, key=b"k%d" % i, headers=[("i", b"%d" % i)], timestamp=BASE_TIMESTAMP + i) for i in range(600)]
    sent = [build_batch(BatchSpec(compression=codec, records=records[:300])), build_batch(BatchSpec(compression=codec, records=records[300:]))]
    for batch in sent:
        rawclient.produce_raw(source.bootstrap, unique_topic, 0, batch)
    stored = _fetch_and_check(source, unique_topic, 600)
    assert [b.base_offset for b in stored] == [0, 300]
    for ours, theirs in zip(sent, stored, strict=True):
        # The broker assigns baseOffset and partitionLeaderEpoch (both outside the CRC); the rest is ours.
        assert bytes(theirs)[16:] == ours[16:] and bytes(theirs)[8:12] == ours[8:12]
    assert [r.value for b in stored for r in decode_records(b)] == [r.value for r in records]


def test_kafka_log_append_time_batches_decode_with_the_broker_timestamp(kafka_broker, unique_topic):
    from confluent_kafka import Consumer, Producer, TopicPartition

    kafka_broker.create_topic(unique_topic, config={"message.timestamp.type": "LogAppendTime"})
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "log_level": 3})
    for i in range(3):
        producer.produce(unique_topic, value=b"%d" % i, timestamp=BASE_TIMESTAMP + i, partition=0)
    assert producer.flush(30) == 0
    (batch,) = _fetch_and_check(kafka_broker, unique_topic, 3)
    decoded = [r.timestamp for r in decode_records(batch)]
    assert decoded == [batch.max_timestamp] * 3 and batch.max_timestamp > BASE_TIMESTAMP + 1_000_000
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": unique_topic, "enable.auto.commit": False, "log_level": 3})
    try:
        consumer.assign([TopicPartition(unique_topic, 0, 0)])
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and not message.error():
                seen.append(message.timestamp()[1])
    finally:
        consumer.close()
    assert seen == decoded
