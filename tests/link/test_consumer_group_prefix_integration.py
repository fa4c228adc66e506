"""``consumer.group.prefix.enable`` against Apache Kafka as the source: consumer offset sync stores each
synced group on linkd as ``cluster.link.prefix`` + its source name (Cluster Linking's naming), with the
same offsets and nothing under the bare name; the group filters match the source name, and the
"live members here" guard looks at the local, prefixed group."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient as KafkaAdmin

from tests.link.mirroring import admin, create_link, produce_confluent, wait_for, wait_mirrored

pytestmark = pytest.mark.timeout(90)

PREFIX = "east."


def _filters(name: str) -> str:
    return json.dumps({"groupFilters": [{"name": name, "patternType": "PREFIXED", "filterType": "INCLUDE"}]})


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def _group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets as AdminClient.list_consumer_group_offsets reads them (-1001: none)."""
    client = KafkaAdmin({"bootstrap.servers": bootstrap, "log_level": 3})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    [future] = client.list_consumer_group_offsets([request], request_timeout=10).values()
    return {tp.partition: tp.offset for tp in future.result(15).topic_partitions}


def _mirror_prefixed(kafka_broker, linkd, topic: str, partitions: int, group_filter: str) -> str:
    kafka_broker.create_topic(topic, partitions)
    produce_confluent(kafka_broker.bootstrap, topic, [(i % partitions, None, b"v%d" % i) for i in range(60)])
    client = admin(linkd)
    create_link(client, "pfx", kafka_broker.bootstrap, **{
        "cluster.link.prefix": PREFIX, "consumer.group.prefix.enable": "true", "consumer.offset.sync.enable": "true",
        "consumer.offset.sync.ms": "300", "consumer.offset.group.filters": _filters(group_filter),
    })
    client.create_mirror(PREFIX + topic, "pfx", source_topic=topic)
    wait_mirrored(client, PREFIX + topic, {p: 60 // partitions for p in range(partitions)})
    return PREFIX + topic


def test_synced_groups_are_stored_under_the_link_prefix_with_the_source_offsets(kafka_broker, linkd, unique_topic):
    # The filter names the SOURCE group ("pg-..."), not the local, prefixed name.
    mirror_topic = _mirror_prefixed(kafka_broker, linkd, unique_topic, 2, "pg-")
    group, other = f"pg-{unique_topic}", f"other-{unique_topic}"
    _commit(kafka_broker.bootstrap, group, unique_topic, {0: 17, 1: 23})
    _commit(kafka_broker.bootstrap, other, unique_topic, {0: 5})

    wait_for(lambda: _group_offsets(linkd.bootstrap, PREFIX + group, mirror_topic, 2) == {0: 17, 1: 23}, 20,
             f"{PREFIX}{group} synced to linkd")
    time.sleep(1.0)  # a few more sync rounds
    assert all(o < 0 for o in _group_offsets(linkd.bootstrap, group, mirror_topic, 2).values()), "the bare source name was stored too"
    assert all(o < 0 for o in _group_offsets(linkd.bootstrap, PREFIX + other, mirror_topic, 2).values()), "a group the filter excludes was synced"
    status = admin(linkd).describe_link("pfx")["consumer_offset_sync"]
    assert status["groups_synced"] == 1 and status["offsets_synced"] >= 2


def test_a_prefixed_group_with_live_members_on_linkd_is_not_overwritten(kafka_broker, linkd, unique_topic):
    mirror_topic = _mirror_prefixed(kafka_broker, linkd, unique_topic, 1, "live-")
    group = f"live-{unique_topic}"
    live = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": PREFIX + group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "log_level": 3})
    live.subscribe([mirror_topic])
    try:
        deadline = time.monotonic() + 20
        while not live.assignment() and time.monotonic() < deadline:
            live.poll(0.2)
        assert live.assignment(), "the consumer never joined its group on linkd"
        live.commit(offsets=[TopicPartition(mirror_topic, 0, 7)], asynchronous=False)
        _commit(kafka_broker.bootstrap, group, unique_topic, {0: 50})
        wait_for(lambda: admin(linkd).describe_link("pfx")["consumer_offset_sync"]["groups_skipped_live"] >= 1, 20,
                 "the live, prefixed group skipped")
        live.poll(0.2)
        assert live.committed([TopicPartition(mirror_topic, 0)], timeout=10)[0].offset == 7
    finally:
        live.close()
    # Once its members left, the source's offset is synced under the prefixed name.
    wait_for(lambda: _group_offsets(linkd.bootstrap, PREFIX + group, mirror_topic, 1) == {0: 50}, 20,
             "the source's offset synced after the members left")


def test_turning_the_group_prefix_on_with_link_update_applies_without_a_restart(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"v%d" % i) for i in range(20)])
    client = admin(linkd)
    create_link(client, "pfx", kafka_broker.bootstrap, **{
        "cluster.link.prefix": PREFIX, "consumer.offset.sync.enable": "true", "consumer.offset.sync.ms": "300",
        "consumer.offset.group.filters": _filters("up-"),
    })
    mirror_topic = PREFIX + unique_topic
    client.create_mirror(mirror_topic, "pfx", source_topic=unique_topic)
    wait_mirrored(client, mirror_topic, {0: 20})
    group = f"up-{unique_topic}"
    _commit(kafka_broker.bootstrap, group, unique_topic, {0: 9})
    # Off (the default): the group keeps its source name.
    wait_for(lambda: _group_offsets(linkd.bootstrap, group, mirror_topic, 1) == {0: 9}, 20, "the bare group synced")

    updated = linkd.cli("link", "update", "pfx", "--config", "consumer.group.prefix.enable=true")
    assert updated.returncode == 0, updated.stderr
    _commit(kafka_broker.bootstrap, group, unique_topic, {0: 12})
    wait_for(lambda: _group_offsets(linkd.bootstrap, PREFIX + group, mirror_topic, 1) == {0: 12}, 20, "the prefixed group synced after the update")
