"""Editable links: configs changed through the CLI and the REST v3 routes reach the running link without a
restart, are validated as at create, and ``link delete --force`` fails the link's mirrors over first so no
mirror names a link that does not exist. Apache Kafka is the source."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from protocol.records import build_records
from tests.broker.wire import WireConnection, produce_request
from tests.link.mirroring import admin, cli_json, create_link, produce_confluent, wait_for, wait_mirrored

GROUP_FILTERS = '{"groupFilters": [{"name": "upd-", "patternType": "PREFIXED", "filterType": "INCLUDE"}]}'


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_link_update_turns_on_offset_sync_without_a_restart_and_is_validated_like_create(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic)
    produce_confluent(source, unique_topic, [(0, None, b"r%d" % i) for i in range(10)])
    _commit(source, "upd-group", unique_topic, 7)
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 10})
    pid_before = linkd.process.pid

    # Refused as at create: nothing changes.
    for bad in (["--config", "consumer.offset.sync.ms=0"], ["--config", "no.such.key=1"], ["--config", "acl.sync.enable=true"], ["--delete-config", "bootstrap.servers"]):
        result = linkd.cli("link", "update", "kafka", *bad)
        assert result.returncode != 0 and result.stderr.strip(), (bad, result)
    assert "ACL migration is enabled but acl.filters is not set" in linkd.cli("link", "update", "kafka", "--config", "acl.sync.enable=true").stderr

    updated = cli_json(linkd, "link", "update", "kafka", "--config", "consumer.offset.sync.enable=true", "--config", "consumer.offset.sync.ms=300", "--config", f"consumer.offset.group.filters={GROUP_FILTERS}")
    assert updated["consumer_offset_sync"]["enabled"] is True
    wait_for(lambda: _committed(linkd.bootstrap, "upd-group", unique_topic) == 7, 20, "offsets synced after the update")
    assert linkd.process.pid == pid_before

    # The REST v3 routes read and change single configs.
    base = f"{linkd.admin_url}/kafka/v3/clusters/{client.cluster.rsplit('/', 1)[1]}/links/kafka/configs"
    listed = {c["name"]: c for c in httpx.get(base).json()["data"]}
    assert listed["consumer.offset.sync.ms"]["value"] == "300" and listed["consumer.offset.sync.ms"]["is_default"] is False
    assert listed["topic.config.sync.ms"]["is_default"] is True
    assert httpx.put(f"{base}/topic.config.sync.ms", json={"value": "1000"}).status_code == 204
    assert httpx.get(f"{base}/topic.config.sync.ms").json()["value"] == "1000"
    assert httpx.delete(f"{base}/topic.config.sync.ms").status_code == 204
    assert httpx.get(f"{base}/topic.config.sync.ms").json()["is_default"] is True
    refused = httpx.put(f"{base}:alter", json={"data": [{"name": "replica.fetch.wait.max.ms", "value": "-1"}]})
    assert refused.status_code == 400 and "replica.fetch.wait.max.ms" in refused.json()["message"]
    assert httpx.put(f"{base}:alter", json={"data": [{"name": "consumer.offset.sync.enable", "operation": "DELETE"}]}).status_code == 204
    assert client.describe_link("kafka")["consumer_offset_sync"]["enabled"] is False

    # Mirroring went on through all of it; pausing and resuming the link by update works on the running link.
    produce_confluent(source, unique_topic, [(0, None, b"more")])
    wait_mirrored(client, unique_topic, {0: 11})
    assert cli_json(linkd, "link", "update", "kafka", "--config", "cluster.link.paused=true")["link_state"] == "PAUSED"
    produce_confluent(source, unique_topic, [(0, None, b"while paused")])
    time.sleep(2)
    assert client.describe_mirror(unique_topic)["partitions"][0]["mirror_log_end_offset"] == 11
    assert cli_json(linkd, "link", "update", "kafka", "--delete-config", "cluster.link.paused")["link_state"] == "ACTIVE"
    wait_mirrored(client, unique_topic, {0: 12})
    assert linkd.process.pid == pid_before


@pytest.mark.timeout(120)
def test_link_delete_force_fails_over_its_mirrors_and_leaves_no_orphans(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic)
    produce_confluent(source, unique_topic, [(0, None, b"r%d" % i) for i in range(5)])
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 5})

    refused = linkd.cli("link", "delete", "kafka")
    assert refused.returncode != 0 and unique_topic in refused.stderr
    deleted = cli_json(linkd, "link", "delete", "kafka", "--force")
    assert [r["mirror_topic_name"] for r in deleted["failed_over"]] == [unique_topic]
    assert deleted["failed_over"][0]["mirror_status"] == "STOPPED"
    assert client.list_links() == [] and client.list_mirrors() == []

    linkd.restart()
    assert json.loads(linkd.cli("mirror", "list", "--json").stdout) == []
    with WireConnection(linkd.bootstrap) as conn:
        written = produce_request(conn, unique_topic, 0, build_records([b"after"]))
    assert written["error_code"] == 0 and written["base_offset"] == 5, written
