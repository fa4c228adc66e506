"""Planned migration with Apache Kafka as the source: offsets sync, promote, the same group resumes on
linkd exactly where it committed, producers continue the offsets, mirrored bytes stay identical."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.peers.rawclient import fetch_raw, list_offsets

from .helpers import cli_json, consume, mirror, produce, wait_for

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 3
RECORDS = 3000
READ_BEFORE = 1200


def _linkd_committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}
    finally:
        consumer.close()


def test_planned_migration_group_resumes_exactly_and_producer_continues(kafka_broker, linkd, unique_topic):
    topic, group = unique_topic, f"g-{unique_topic}"
    kafka_broker.create_topic(topic, PARTITIONS)
    produce(kafka_broker.bootstrap, topic, RECORDS, PARTITIONS, prefix="src")
    read_on_source = consume(kafka_broker.bootstrap, topic, group, READ_BEFORE)
    assert len(read_on_source) == READ_BEFORE
    source_committed = {}
    for p, o, _k, _v in read_on_source:
        source_committed[p] = max(source_committed.get(p, 0), o + 1)

    mirror(
        linkd, "primary", kafka_broker.bootstrap, [topic],
        extra_config=[
            "consumer.offset.sync.enable=true",
            "consumer.offset.sync.ms=300",
            f'consumer.offset.group.filters={{"groupFilters": [{{"name": "{group}", "patternType": "LITERAL", "filterType": "INCLUDE"}}]}}',
        ],
    )
    wait_for(lambda: _linkd_committed(linkd.bootstrap, group, topic) == source_committed, 30, "consumer offsets synced to linkd")
    link, _ = cli_json(linkd, "link", "describe", "primary")
    assert link["consumer_offset_sync"]["offsets_synced"] >= len(source_committed)

    results, _ = cli_json(linkd, "mirror", "promote", topic, "--timeout", "30")
    [result] = results
    assert result["error_code"] == 0, result
    assert result["mirror_status"] == "STOPPED"
    assert all(p["lag"] == 0 for p in result["mirror_lags"])
    assert result["possible_data_loss_records"] == 0

    # The same group on linkd resumes at exactly the committed offsets: nothing skipped, nothing re-read.
    rest = consume(linkd.bootstrap, topic, group, RECORDS - READ_BEFORE)
    assert len(rest) == RECORDS - READ_BEFORE
    ends = {p: list_offsets(kafka_broker.bootstrap, topic, p)[1] for p in range(PARTITIONS)}
    first_per_partition = {}
    for p, o, _k, _v in rest:
        first_per_partition.setdefault(p, o)
    # Partitions the group committed resume there; partitions it never committed start at the beginning.
    expected = {p: source_committed.get(p, 0) for p in range(PARTITIONS) if source_committed.get(p, 0) < ends[p]}
    assert first_per_partition == expected
    seen = {(p, o) for p, o, _k, _v in read_on_source} | {(p, o) for p, o, _k, _v in rest}
    assert len(seen) == RECORDS

    # Producers continue the offsets from the mirror end.
    delivered = produce(linkd.bootstrap, topic, 30, PARTITIONS, prefix="after")
    for p in range(PARTITIONS):
        offsets = sorted(o for dp, o in delivered if dp == p)
        assert offsets == list(range(ends[p], ends[p] + 10))

    # Byte identity of the mirrored part still holds.
    for p in range(PARTITIONS):
        assert fetch_raw(linkd.bootstrap, topic, p, 0, ends[p]) == fetch_raw(kafka_broker.bootstrap, topic, p, 0, ends[p])

    # Repeating the command is harmless and reports the same outcome.
    again, _ = cli_json(linkd, "mirror", "promote", topic)
    assert again[0]["error_code"] == 0 and again[0]["mirror_status"] == "STOPPED"


def test_promoted_topic_advertises_a_higher_leader_epoch(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce(kafka_broker.bootstrap, unique_topic, 100, 1)
    mirror(linkd, "l", kafka_broker.bootstrap, [unique_topic])
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    before = admin.list_topics(unique_topic, timeout=10).topics[unique_topic].partitions[0]
    cli_json(linkd, "mirror", "promote", unique_topic)
    from tests.peers.rawclient import metadata

    after = metadata(linkd.bootstrap)
    epochs = [p.leader_epoch for t in after.topics if t.name == unique_topic for p in t.partitions]
    assert epochs and epochs[0] >= 1, epochs
    assert before is not None
