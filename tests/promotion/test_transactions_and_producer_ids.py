"""At promotion/failover no transaction is left hanging, and new producer ids never collide with the
producer ids that arrived in mirrored batches."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from .helpers import cli_json, create_topic, mirror, produce, wait_for

pytestmark = pytest.mark.timeout(240)


def _read_all(bootstrap: str, topic: str, isolation: str, expect_at_least: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}", "isolation.level": isolation, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    idle_since = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None:
                if len(values) >= expect_at_least:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 1.5:
                        break
                continue
            if msg.error():
                continue
            idle_since = None
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_open_transaction_at_failover_is_aborted_and_read_committed_does_not_hang(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": f"tx-{unique_topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(20):
        producer.produce(unique_topic, f"committed-{i}".encode(), partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(15):
        producer.produce(unique_topic, f"open-{i}".encode(), partition=0)
    producer.flush(30)  # in the log, never committed: the source's LSO stays at its first offset

    mirror(linkd, "l", kafka_broker.bootstrap, [unique_topic])
    wait_for(lambda: cli_json(linkd, "mirror", "describe", unique_topic)[0]["partitions"][0]["mirror_log_end_offset"] >= 36, 30, "open transaction mirrored")

    results, _ = cli_json(linkd, "mirror", "failover", unique_topic)
    [r] = results
    assert r["error_code"] == 0
    assert len(r["aborted_transactions"]) == 1
    aborted = r["aborted_transactions"][0]
    assert aborted["partition"] == 0 and aborted["first_offset"] == 21  # 20 records + commit marker
    committed = _read_all(linkd.bootstrap, unique_topic, "read_committed", 20)
    assert committed == [f"committed-{i}".encode() for i in range(20)]
    everything = _read_all(linkd.bootstrap, unique_topic, "read_uncommitted", 35)
    assert len(everything) == 35
    producer.abort_transaction(30)


def test_new_idempotent_producer_after_promotion_never_collides_with_mirrored_producer_ids(linkd_factory):
    # A fresh linkd source hands out producer ids from 0, so the mirrored batches carry low ids: exactly
    # the ids a careless promoted topic would hand out again and then drop records as "duplicates".
    source = linkd_factory()
    dest = linkd_factory()
    create_topic(source.bootstrap, "t", 1)
    for _ in range(3):
        produce(source.bootstrap, "t", 200, 1)  # three producers: ids 0, 1, 2
    mirror(dest, "l", source.bootstrap, ["t"])
    cli_json(dest, "mirror", "promote", "t")
    delivered = produce(dest.bootstrap, "t", 300, 1, prefix="new")
    assert sorted(o for _p, o in delivered) == list(range(600, 900))
    values = _read_all(dest.bootstrap, "t", "read_uncommitted", 900)
    assert len(values) == 900
    assert values[600:] == [f"value-new-{i}".encode() for i in range(300)]
