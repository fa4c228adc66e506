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


def test_source_transactional_producer_continues_on_linkd_after_failover(kafka_broker, linkd, unique_topic):
    """The application's transactional.id was in use on the source; after failover the same id is
    initialised on linkd (a fresh producer id above every mirrored one) and its new transactions commit."""
    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    tid = f"tx-{unique_topic}"
    kafka_broker.create_topic(unique_topic, 1)
    source_producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": tid})
    source_producer.init_transactions(30)
    source_producer.begin_transaction()
    for i in range(10):
        source_producer.produce(unique_topic, f"source-{i}".encode(), partition=0)
    source_producer.commit_transaction(30)
    source_producer.begin_transaction()
    for i in range(5):
        source_producer.produce(unique_topic, f"in-flight-{i}".encode(), partition=0)
    source_producer.flush(30)  # the source site is lost before this transaction ends

    mirror(linkd, "l", kafka_broker.bootstrap, [unique_topic])
    wait_for(lambda: cli_json(linkd, "mirror", "describe", unique_topic)[0]["partitions"][0]["mirror_log_end_offset"] >= 16, 30, "mirrored")
    [result], _ = cli_json(linkd, "mirror", "failover", unique_topic)
    assert result["error_code"] == 0 and len(result["aborted_transactions"]) == 1
    source_pid = result["aborted_transactions"][0]["producer_id"]

    producer = Producer({"bootstrap.servers": linkd.bootstrap, "transactional.id": tid})
    producer.init_transactions(30)
    for cycle in range(2):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(unique_topic, f"linkd-{cycle}-{i}".encode(), partition=0)
        producer.commit_transaction(30)
    with WireConnection(linkd.bootstrap) as conn:
        [state] = conn.request(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [tid]})["transaction_states"]
    assert state["transaction_state"] == "CompleteCommit" and state["producer_id"] > source_pid, state
    committed = _read_all(linkd.bootstrap, unique_topic, "read_committed", 20)
    assert committed == [f"source-{i}".encode() for i in range(10)] + [f"linkd-{c}-{i}".encode() for c in range(2) for i in range(5)]
    source_producer.abort_transaction(30)


def test_java_transactional_producer_of_the_source_reconnects_to_linkd_after_failover(kafka_broker, linkd, java_client, unique_topic):
    """The Java 4.1 producer uses transaction version 2 against Kafka 4.1 (an epoch bump per transaction);
    after failover the same application, same transactional.id, points at linkd, which offers version 1
    only: it initialises, commits and aborts with offsets in its transactions, and nothing hangs."""
    import json

    from tests.peers.java import run_java_client

    tid, group = f"tx-{unique_topic}", f"g-{unique_topic}"
    kafka_broker.create_topic(unique_topic, 1)

    def transact(bootstrap: str) -> dict:
        result = run_java_client("transact", bootstrap, unique_topic, tid, group, "3", "5", "3", timeout=120)
        assert result.returncode == 0, result.stderr[-4000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert transact(kafka_broker.bootstrap) == {"committed": 2, "aborted": 1}
    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    with WireConnection(kafka_broker.bootstrap) as conn:
        described = conn.request(ApiKey.DESCRIBE_PRODUCERS, 0, {"topics": [{"name": unique_topic, "partition_indexes": [0]}]})
    [source_producer] = described["topics"][0]["partitions"][0]["active_producers"]
    # Transaction version 2: one epoch per transaction (version 1 keeps epoch 0 throughout). The third
    # transaction's records carry epoch 2; its marker (epoch 3) is written after EndTxn returns, so it may
    # not be there yet.
    assert source_producer["producer_epoch"] >= 2, source_producer
    mirror(linkd, "l", kafka_broker.bootstrap, [unique_topic])
    source_end = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "ends", "isolation.level": "read_uncommitted"})
    _low, end = source_end.get_watermark_offsets(TopicPartition(unique_topic, 0), timeout=15)
    source_end.close()
    wait_for(lambda: cli_json(linkd, "mirror", "describe", unique_topic)[0]["partitions"][0]["mirror_log_end_offset"] == end, 30, "mirrored")
    [result], _ = cli_json(linkd, "mirror", "failover", unique_topic)
    assert result["error_code"] == 0 and result["aborted_transactions"] == [], result

    assert transact(linkd.bootstrap) == {"committed": 2, "aborted": 1}
    committed = _read_all(linkd.bootstrap, unique_topic, "read_committed", 20)
    once = [f"t{n}-{i}".encode() for n in range(2) for i in range(5)]
    assert committed == once + once  # the source's two committed transactions, then linkd's two
    check = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "isolation.level": "read_committed"})
    [offset] = check.committed([TopicPartition(unique_topic, 0)], 10)
    check.close()
    assert offset.offset == 2  # sent in linkd's last committed transaction (n = 1); n = 2 aborted
