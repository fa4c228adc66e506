"""Auto-created mirrors and prefixed mirror names, against Apache Kafka as the source: filters in Cluster
Linking's JSON shape (PREFIXED/LITERAL, INCLUDE/EXCLUDE, exclude wins), topics created on the source
later picked up at the metadata.max.age.ms cadence, internal topics never auto-mirrored, and
``cluster.link.prefix`` naming with the source topic required."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.link.mirroring import admin, assert_bytes_identical, create_link, produce_confluent, wait_for, wait_mirrored


def _filters(*filters: tuple[str, str, str]) -> str:
    return json.dumps({"topicFilters": [{"name": n, "patternType": p, "filterType": f} for n, p, f in filters]})


@pytest.mark.timeout(120)
def test_auto_create_mirrors_included_topics_with_the_prefix_and_never_excluded_or_internal_ones(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    u = unique_topic
    for name in (f"{u}-orders", f"{u}-excluded"):
        kafka_broker.create_topic(name)
        produce_confluent(source, name, [(0, None, b"%s-%d" % (name.encode(), i)) for i in range(5)])
    # Make sure the source has an internal topic the filters' prefix "__" matches.
    consumer = Consumer({"bootstrap.servers": source, "group.id": f"{u}-g", "log_level": 3})
    consumer.commit(offsets=[TopicPartition(f"{u}-orders", 0, 1)], asynchronous=False)
    consumer.close()

    client = admin(linkd)
    filters = _filters((f"{u}-", "PREFIXED", "INCLUDE"), ("__", "PREFIXED", "INCLUDE"), (f"{u}-excluded", "LITERAL", "EXCLUDE"))
    create_link(client, "auto", source, **{"auto.create.mirror.topics.enable": "true", "auto.create.mirror.topics.filters": filters, "cluster.link.prefix": "dr.", "metadata.max.age.ms": "1000"})
    wait_for(lambda: any(m["mirror_topic_name"] == f"dr.{u}-orders" for m in client.list_mirrors("auto")), 20, "the included topic auto-mirrored")
    described = wait_mirrored(client, f"dr.{u}-orders", {0: 5})
    assert described["source_topic_name"] == f"{u}-orders"
    assert_bytes_identical(source, f"{u}-orders", linkd.bootstrap, f"dr.{u}-orders", 0, 0, 5)

    kafka_broker.create_topic(f"{u}-later")
    produce_confluent(source, f"{u}-later", [(0, None, b"late")])
    wait_for(lambda: any(m["mirror_topic_name"] == f"dr.{u}-later" for m in client.list_mirrors("auto")), 20, "a topic created on the source later auto-mirrored")
    wait_mirrored(client, f"dr.{u}-later", {0: 1})

    time.sleep(2)  # two more rounds
    names = {m["mirror_topic_name"] for m in client.list_mirrors("auto")}
    assert names == {f"dr.{u}-orders", f"dr.{u}-later"}, names
    status = client.describe_link("auto")["auto_create"]
    assert status["enabled"] and status["last_error"] is None and sorted(status["created"]) == sorted(names)


@pytest.mark.timeout(90)
def test_a_prefixed_link_names_mirrors_by_prefix_and_needs_the_source_topic(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic)
    produce_confluent(source, unique_topic, [(0, None, b"x")])
    client = admin(linkd)
    create_link(client, "pfx", source, **{"cluster.link.prefix": "east."})

    without = linkd.cli("mirror", "create", unique_topic, "--link", "pfx")
    assert without.returncode != 0 and "cluster.link.prefix=east." in without.stderr and "--source-topic" in without.stderr
    wrong = linkd.cli("mirror", "create", f"west.{unique_topic}", "--link", "pfx", "--source-topic", unique_topic)
    assert wrong.returncode != 0 and f"east.{unique_topic}" in wrong.stderr
    created = linkd.cli("mirror", "create", f"east.{unique_topic}", "--link", "pfx", "--source-topic", unique_topic, "--json")
    assert created.returncode == 0, created.stderr
    wait_mirrored(client, f"east.{unique_topic}", {0: 1})
    changed = linkd.cli("link", "update", "pfx", "--config", "cluster.link.prefix=west.")
    assert changed.returncode != 0 and "cannot be changed" in changed.stderr
