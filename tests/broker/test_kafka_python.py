"""kafka-python 3.x against linkd: it infers the broker release from ApiVersions, so these tests also
check that linkd's advertised ranges lead it to a modern protocol (RecordBatch v2, idempotence)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from tests.broker.clients import BASE_TIMESTAMP

COUNT = 3000


def _producer(bootstrap: str, **config) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=10_000, **config)


def _produce(producer: KafkaProducer, topic: str, count: int, tag: str = "kp") -> dict[tuple[int, int], int]:
    futures = [
        producer.send(topic, key=f"{tag}-k{i}".encode(), value=f"{tag}-v{i}".encode(), headers=[("seq", str(i).encode())], timestamp_ms=BASE_TIMESTAMP + i)
        for i in range(count)
    ]
    producer.flush(30)
    placed = {}
    for i, future in enumerate(futures):
        meta = future.get(timeout=30)
        placed[(meta.partition, meta.offset)] = i
    assert len(placed) == count
    return placed


def _consume(consumer: KafkaConsumer, count: int, timeout: float) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} records within {timeout}s"
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
    return out


@pytest.fixture
def admin(linkd):
    client = KafkaAdminClient(bootstrap_servers=linkd.bootstrap, request_timeout_ms=10_000)
    yield client
    client.close()


@pytest.mark.timeout(90)
def test_idempotent_producer_and_group_consumer_round_trip(linkd, admin, unique_topic):
    admin.create_topics([NewTopic(unique_topic, num_partitions=3, replication_factor=1)])
    producer = _producer(linkd.bootstrap, enable_idempotence=True, compression_type="zstd")
    assert producer.config["api_version"] >= (2, 5), f"kafka-python took linkd for Kafka {producer.config['api_version']}"
    placed = _produce(producer, unique_topic, COUNT)
    producer.close()

    group = f"g-{unique_topic}"
    consumer = KafkaConsumer(unique_topic, bootstrap_servers=linkd.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
    records = _consume(consumer, COUNT, timeout=45)
    assert {(r.partition, r.offset): int(r.key.decode().split("k")[-1]) for r in records} == placed
    for r in records:
        i = placed[(r.partition, r.offset)]
        assert r.value == f"kp-v{i}".encode()
        assert r.headers == [("seq", str(i).encode())]
        assert r.timestamp == BASE_TIMESTAMP + i
    consumer.commit()
    committed = {p: consumer.committed(TopicPartition(unique_topic, p)) for p in range(3)}
    consumer.close()
    assert sum(committed.values()) == COUNT

    # A new consumer in the same group starts at the commits: only later records arrive.
    producer = _producer(linkd.bootstrap)
    later = _produce(producer, unique_topic, 50, tag="later")
    producer.close()
    again = KafkaConsumer(unique_topic, bootstrap_servers=linkd.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
    resumed = _consume(again, 50, timeout=45)
    assert {(r.partition, r.offset) for r in resumed} == set(later)
    again.close()


@pytest.mark.timeout(60)
def test_assigned_consumer_seeks_to_offsets_beginning_and_end(linkd, admin, unique_topic):
    admin.create_topics([NewTopic(unique_topic, num_partitions=1, replication_factor=1)])
    producer = _producer(linkd.bootstrap, compression_type="gzip")
    _produce(producer, unique_topic, 500)
    producer.close()
    tp = TopicPartition(unique_topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=linkd.bootstrap, enable_auto_commit=False, group_id=None)
    consumer.assign([tp])
    consumer.seek(tp, 321)
    first = _consume(consumer, 1, timeout=20)[0]
    assert (first.offset, first.key) == (321, b"kp-k321")
    consumer.seek_to_beginning(tp)
    assert consumer.position(tp) == 0
    consumer.seek_to_end(tp)
    assert consumer.position(tp) == 500
    assert consumer.end_offsets([tp]) == {tp: 500}
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.offsets_for_times({tp: BASE_TIMESTAMP + 400})[tp].offset == 400
    consumer.close()


@pytest.mark.timeout(60)
def test_admin_client_topics_and_groups(linkd, admin, unique_topic):
    admin.create_topics([NewTopic(unique_topic, num_partitions=2, replication_factor=1, topic_configs={"cleanup.policy": "delete"})])
    with pytest.raises(TopicAlreadyExistsError):  # CreateTopics v7: the error entry carries a zero topic id
        admin.create_topics([NewTopic(unique_topic, num_partitions=2, replication_factor=1)])
    assert unique_topic in admin.list_topics()
    (described,) = admin.describe_topics([unique_topic])
    assert described["error_code"] == 0 and [p["partition_index"] for p in described["partitions"]] == [0, 1]
    admin.create_partitions({unique_topic: NewPartitions(total_count=4)})
    (described,) = admin.describe_topics([unique_topic])
    assert len(described["partitions"]) == 4

    producer = _producer(linkd.bootstrap)
    _produce(producer, unique_topic, 40)
    producer.close()
    group = f"g-{unique_topic}"
    consumer = KafkaConsumer(unique_topic, bootstrap_servers=linkd.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
    _consume(consumer, 40, timeout=30)
    consumer.commit()
    listed = {g["group_id"]: g for g in admin.list_groups()}
    assert listed[group]["protocol_type"] == "consumer" and listed[group]["group_state"] == "Stable"
    description = admin.describe_groups([group])[group]
    assert description["group_state"] == "Stable" and len(description["members"]) == 1
    (assigned,) = description["members"][0]["member_assignment"]["assigned_partitions"]
    assert assigned["topic"] == unique_topic and sorted(assigned["partitions"]) == [0, 1, 2, 3]
    offsets = admin.list_group_offsets({group: None})[group]
    assert sum(meta.offset for meta in offsets.values()) == 40
    consumer.close()
    assert admin.delete_groups([group]) == {group: "OK"}
    assert group not in {g["group_id"] for g in admin.list_groups()}

    admin.delete_topics([unique_topic])
    assert unique_topic not in admin.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.delete_topics([unique_topic])
