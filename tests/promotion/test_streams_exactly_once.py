"""A Kafka Streams application with processing.guarantee=exactly_once_v2 fails over from Apache Kafka to
linkd and writes the same output as an uninterrupted run against Kafka.

The input is written to Kafka by a transactional producer (committed and aborted transactions, and one left
open that the failover aborts). The application (tests/peers/streamsapp) counts per key in a RocksDB
store with a changelog topic and commits every 100 ms: on linkd that is InitProducerId with a
transactional.id, AddPartitionsToTxn, sendOffsetsToTransaction (TxnOffsetCommit), EndTxn many times over,
and a read_committed restore of a promoted changelog. One JVM per run, three runs.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import peer_unavailable
from tests.peers import PeerUnavailable

from .helpers import cli_json, mirror, wait_for

pytestmark = [pytest.mark.java, pytest.mark.timeout(360)]

PARTITIONS = 2
KEYS = 6
TRANSACTIONS = 12
PER_TRANSACTION = 20


def _aborted(n: int) -> bool:
    return n % 4 == 3


def _write_input(producer: Producer, topic: str, transactions: range, leave_last_open: bool = False) -> None:
    """Committed and aborted transactions of keyed records (key k<j> always goes to partition j % 2); with
    ``leave_last_open`` the last one is left open: the source site is lost before it ends."""
    for n in transactions:
        producer.begin_transaction()
        for i in range(PER_TRANSACTION):
            j = (n * PER_TRANSACTION + i) % KEYS
            producer.produce(topic, key=f"k{j}".encode(), value=f"t{n}-{i}".encode(), partition=j % PARTITIONS)
        if leave_last_open and n == transactions[-1]:
            break
        if _aborted(n):
            assert producer.flush(30) == 0  # in the log first: abort_transaction drops what is still queued
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    assert producer.flush(30) == 0


def _input_producer(bootstrap: str, topic: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"input-{topic}", "linger.ms": 5})
    producer.init_transactions(30)
    return producer


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends", "isolation.level": "read_uncommitted"})  # the log end, not the LSO
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _expected_output(transactions: int = TRANSACTIONS) -> dict[str, list[str]]:
    """Per key, the values the application writes: "<running count>:<input value>"."""
    out: dict[str, list[str]] = {}
    for n in range(transactions):
        if _aborted(n):
            continue
        for i in range(PER_TRANSACTION):
            j = (n * PER_TRANSACTION + i) % KEYS
            key = f"k{j}"
            values = out.setdefault(key, [])
            values.append(f"{len(values) + 1}:t{n}-{i}")
    return out


def _wait_committed(bootstrap: str, group: str, topic: str, want: dict[int, int], timeout: float) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        def synced():
            got = {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in want], 10)}
            return got if got == want else None

        wait_for(synced, timeout, f"offsets of {group} on {topic} at {want}")
    finally:
        consumer.close()


def test_kafka_streams_application_that_ran_on_kafka_fails_over_to_linkd_and_continues_exactly_once(kafka_broker, linkd, tmp_path):
    """The application runs on Kafka over the first half of the input; its input, changelog and output
    topics are mirrored and its group's offsets synced; at failover (a transaction of the input still open)
    it moves to linkd with a fresh state directory, restores its counts from the promoted changelog, and
    finishes the input. Its whole output equals one uninterrupted run against Kafka over the same input."""
    from tests.peers import streams

    try:
        streams.ensure_compiled()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    suffix = uuid.uuid4().hex[:6]
    source, output, app_id = f"orders-{suffix}", f"counts-{suffix}", f"eos-move-{suffix}"
    changelog = f"{app_id}-counts-changelog"
    half = TRANSACTIONS // 2
    kafka_broker.create_topic(source, PARTITIONS)
    kafka_broker.create_topic(output, PARTITIONS)
    producer = _input_producer(kafka_broker.bootstrap, source)
    _write_input(producer, source, range(half))
    first = streams.run_streams_app(kafka_broker.bootstrap, app_id, source, output, tmp_path / "kafka-state", sum(map(len, _expected_output(half).values())))
    assert first.by_key() == _expected_output(half)

    filters = json.dumps({"groupFilters": [{"name": app_id, "patternType": "LITERAL", "filterType": "INCLUDE"}]})
    mirror(linkd, "l", kafka_broker.bootstrap, [source, changelog, output],
           extra_config=["consumer.offset.sync.enable=true", "consumer.offset.sync.ms=500", f"consumer.offset.group.filters={filters}"])
    _write_input(producer, source, range(half, TRANSACTIONS + 1), leave_last_open=True)
    ends = {topic: _end_offsets(kafka_broker.bootstrap, topic) for topic in (source, changelog, output)}
    for topic, want in ends.items():
        wait_for(lambda topic=topic, want=want: {i: p["mirror_log_end_offset"] for i, p in enumerate(cli_json(linkd, "mirror", "describe", topic)[0]["partitions"])} == want,
                 60, f"{topic} mirrored up to {want}")
    committed_on_kafka = _committed(kafka_broker.bootstrap, app_id, source)
    _wait_committed(linkd.bootstrap, app_id, source, committed_on_kafka, 30)
    for topic in (source, changelog, output):
        [result], _ = cli_json(linkd, "mirror", "failover", topic)
        assert result["error_code"] == 0, result
        if topic == source:  # the input's open transaction gets linkd's ABORT marker in both partitions
            assert sorted(t["partition"] for t in result["aborted_transactions"]) == list(range(PARTITIONS)), result
    producer.abort_transaction(30)  # ended on Kafka too, for the reference run

    total = sum(map(len, _expected_output().values()))
    kafka_broker.create_topic(f"{output}-ref", PARTITIONS)
    # The two runs are independent (different clusters, application ids and output topics): run them side by side.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        moved = pool.submit(streams.run_streams_app, linkd.bootstrap, app_id, source, output, tmp_path / "linkd-state", total)
        uninterrupted = pool.submit(streams.run_streams_app, kafka_broker.bootstrap, f"{app_id}-ref", source, f"{output}-ref", tmp_path / "ref-state", total)
        on_linkd, reference = moved.result(), uninterrupted.result()
    assert len(reference.records) == total and reference.by_key() == _expected_output(), reference.summary
    # Restored, not recounted (no key starts over at 1); no aborted input counted; nothing lost or doubled.
    assert len(on_linkd.records) == total, (on_linkd.summary, on_linkd.stderr[-3000:])
    assert on_linkd.by_key() == reference.by_key()
    # The application ran its transactions on linkd's coordinator.
    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    with WireConnection(linkd.bootstrap) as conn:
        listed = conn.request(ApiKey.LIST_TRANSACTIONS, 0, {})["transaction_states"]
    assert any(t["transactional_id"].startswith(app_id) and t["transaction_state"] == "CompleteCommit" for t in listed), listed


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 10)}
    finally:
        consumer.close()
