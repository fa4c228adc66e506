"""A Kafka Streams application with processing.guarantee=exactly_once_v2 runs against a topic promoted
on linkd after failover, and writes the same output as the same application run against Apache Kafka.

The input is written to Kafka by a transactional producer (committed and aborted transactions, and one left
open that the failover aborts), mirrored to linkd and failed over. The application (tests/peers/streamsapp) counts per key in a RocksDB store
with a changelog topic and commits every 100 ms: on linkd that is InitProducerId with a
transactional.id, AddPartitionsToTxn, sendOffsetsToTransaction, EndTxn many times over, plus the
internal topics Streams creates. One JVM per run.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.peers import PeerUnavailable

from .helpers import cli_json, create_topic, mirror, wait_for

pytestmark = pytest.mark.timeout(360)

PARTITIONS = 2
KEYS = 6
TRANSACTIONS = 12
PER_TRANSACTION = 20


def _aborted(n: int) -> bool:
    return n % 4 == 3


def _write_input(bootstrap: str, topic: str) -> Producer:
    """Committed and aborted transactions of keyed records (key k<j> always goes to partition j % 2), and
    a last one left open: the source site is lost before it ends. Returns the producer holding it."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"input-{topic}", "linger.ms": 5})
    producer.init_transactions(30)
    for n in range(TRANSACTIONS + 1):
        producer.begin_transaction()
        for i in range(PER_TRANSACTION):
            j = (n * PER_TRANSACTION + i) % KEYS
            producer.produce(topic, key=f"k{j}".encode(), value=f"t{n}-{i}".encode(), partition=j % PARTITIONS)
        if n == TRANSACTIONS:
            break
        if _aborted(n):
            assert producer.flush(30) == 0  # in the log first: abort_transaction drops what is still queued
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    assert producer.flush(30) == 0
    return producer


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends", "isolation.level": "read_uncommitted"})  # the log end, not the LSO
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _expected_output() -> dict[str, list[str]]:
    """Per key, the values the application writes: "<running count>:<input value>"."""
    out: dict[str, list[str]] = {}
    for n in range(TRANSACTIONS):
        if _aborted(n):
            continue
        for i in range(PER_TRANSACTION):
            j = (n * PER_TRANSACTION + i) % KEYS
            key = f"k{j}"
            values = out.setdefault(key, [])
            values.append(f"{len(values) + 1}:t{n}-{i}")
    return out


def test_kafka_streams_exactly_once_v2_on_a_promoted_topic_matches_a_run_against_kafka(kafka_broker, linkd, tmp_path):
    from tests.peers import streams

    try:
        streams.ensure_compiled()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    suffix = uuid.uuid4().hex[:6]
    source, output, app_id = f"orders-{suffix}", f"counts-{suffix}", f"eos-count-{suffix}"
    kafka_broker.create_topic(source, PARTITIONS)
    source_producer = _write_input(kafka_broker.bootstrap, source)
    ends = _end_offsets(kafka_broker.bootstrap, source)

    mirror(linkd, "l", kafka_broker.bootstrap, [source])
    wait_for(lambda: [p["mirror_log_end_offset"] for p in cli_json(linkd, "mirror", "describe", source)[0]["partitions"]] == [ends[p] for p in range(PARTITIONS)], 60, f"input mirrored up to {ends}")
    [result], _ = cli_json(linkd, "mirror", "failover", source)
    # The open transaction gets linkd's ABORT marker in both partitions. The reference run needs it ended
    # on Kafka too (else its LSO stays put): the source producer aborts it there, so both runs read the same.
    assert result["error_code"] == 0 and sorted(t["partition"] for t in result["aborted_transactions"]) == list(range(PARTITIONS)), result
    source_producer.abort_transaction(30)

    kafka_broker.create_topic(output, PARTITIONS)
    create_topic(linkd.bootstrap, output, PARTITIONS)
    expected = _expected_output()
    total = sum(len(v) for v in expected.values())
    reference = streams.run_streams_app(kafka_broker.bootstrap, app_id, source, output, tmp_path / "kafka-state", total)
    on_linkd = streams.run_streams_app(linkd.bootstrap, app_id, source, output, tmp_path / "linkd-state", total)

    assert len(reference.records) == total and reference.by_key() == expected, reference.summary
    # Exactly once on linkd too: no aborted input counted, no output duplicated or lost.
    assert len(on_linkd.records) == total, (on_linkd.summary, on_linkd.stderr[-3000:])
    assert on_linkd.by_key() == reference.by_key()
    # The application really ran transactions on linkd: its transactional id has committed ones.
    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    with WireConnection(linkd.bootstrap) as conn:
        listed = conn.request(ApiKey.LIST_TRANSACTIONS, 0, {})["transaction_states"]
    assert any(t["transactional_id"].startswith(app_id) for t in listed), listed
