"""Where a new mirror starts (``mirror.start.offset.spec``) against a real Kafka source: ``latest`` and a
timestamp, for multi-partition topics (one ListOffsets for all new partitions) and a single partition, and
``earliest`` (the default) from a source whose log no longer starts at 0."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from tests.link.mirroring import admin, assert_bytes_identical, create_link, produce_confluent, wait_mirrored
from tests.peers import rawclient
from tests.promotion.helpers import create_topic

pytestmark = pytest.mark.timeout(120)
OLD_MS = 1_700_000_000_000  # 2023-11-14
NEW_MS = OLD_MS + 86_400_000


def _produce(bootstrap: str, topic: str, partitions: int, count: int, timestamp_ms: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 3})
    delivered: list[tuple[int, int, int]] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset(), msg.timestamp()[1]))

    for p in range(partitions):
        for i in range(count):
            producer.produce(topic, value=b"v%d" % i, partition=p, timestamp=timestamp_ms + i, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert len(delivered) == partitions * count


def _wait_source_finds(bootstrap: str, topic: str, partitions: int, timestamp_ms: int, expected: int) -> None:
    """Until the source itself answers the timestamp lookup (its high watermark must cover the records; a
    loaded broker can lag a moment), linkd would rightly start at the latest offset instead."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    deadline = time.monotonic() + 20
    while True:
        request = {TopicPartition(topic, p): OffsetSpec.for_timestamp(timestamp_ms) for p in range(partitions)}
        found = [f.result(10).offset for f in admin.list_offsets(request).values()]
        if found == [expected] * partitions:
            return
        if time.monotonic() > deadline:
            ends = {p: rawclient.list_offsets(bootstrap, topic, p) for p in range(partitions)}
            raise AssertionError(f"the source finds offsets {found} for {timestamp_ms}; its (start, end) offsets: {ends}")
        time.sleep(0.1)


@pytest.mark.parametrize("partitions", [1, 3])
def test_mirrors_start_at_latest_or_at_a_timestamp(kafka_broker, linkd, unique_topic, partitions):
    create_topic(kafka_broker.bootstrap, unique_topic, partitions)
    _produce(kafka_broker.bootstrap, unique_topic, partitions, 10, OLD_MS)
    _produce(kafka_broker.bootstrap, unique_topic, partitions, 10, NEW_MS)
    client = admin(linkd)
    between_ms = (OLD_MS + NEW_MS) // 2
    between = datetime.fromtimestamp(between_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    _wait_source_finds(kafka_broker.bootstrap, unique_topic, partitions, between_ms, 10)
    create_link(client, "from-ts", kafka_broker.bootstrap, **{"mirror.start.offset.spec": between})
    create_link(client, "from-latest", kafka_broker.bootstrap, **{"mirror.start.offset.spec": "latest"})
    client.create_mirror("ts-copy", "from-ts", source_topic=unique_topic)
    client.create_mirror("latest-copy", "from-latest", source_topic=unique_topic)
    wait_mirrored(client, "ts-copy", {p: 20 for p in range(partitions)}, timeout=30)
    for p in range(partitions):
        assert rawclient.list_offsets(linkd.bootstrap, "ts-copy", p) == (10, 20)
    wait_mirrored(client, "latest-copy", {p: 20 for p in range(partitions)}, timeout=30)
    _produce(kafka_broker.bootstrap, unique_topic, partitions, 5, NEW_MS + 1000)
    wait_mirrored(client, "latest-copy", {p: 25 for p in range(partitions)}, timeout=30)
    for p in range(partitions):
        assert rawclient.list_offsets(linkd.bootstrap, "latest-copy", p) == (20, 25)
        assert rawclient.list_offsets(linkd.bootstrap, "ts-copy", p)[0] == 10
    assert client.describe_mirror("ts-copy")["gaps"] == []


@pytest.mark.parametrize("partitions", [1, 3])
def test_an_earliest_mirror_of_a_log_starting_past_zero_starts_there_with_no_gap(kafka_broker, linkd, unique_topic, partitions):
    # linkd fetches a new earliest mirror from 0 without asking where the source's log starts (a round trip
    # saved); Kafka answers OFFSET_OUT_OF_RANGE, and the mirror must start at the source's start exactly as
    # when it asked first: no gap recorded (nothing was lost), the same log start, the same bytes.
    create_topic(kafka_broker.bootstrap, unique_topic, partitions)
    for n in range(10):  # one batch per call, so DeleteRecords cuts between batches
        produce_confluent(kafka_broker.bootstrap, unique_topic, [(p, None, b"r%d" % n) for p in range(partitions)])
    for p in range(partitions):
        assert kafka_broker.delete_records(unique_topic, p, 4 + p) == 4 + p
    client = admin(linkd)
    create_link(client, "from-earliest", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "from-earliest")
    described = wait_mirrored(client, unique_topic, {p: 10 for p in range(partitions)}, timeout=30)
    assert described["gaps"] == [] and described["mirror_status"] == "ACTIVE"
    for p in range(partitions):
        assert rawclient.list_offsets(linkd.bootstrap, unique_topic, p) == (4 + p, 10)
        assert_bytes_identical(kafka_broker.bootstrap, unique_topic, linkd.bootstrap, unique_topic, p, 4 + p, 10)
