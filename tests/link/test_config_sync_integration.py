"""Mirror topic config sync against Apache Kafka as the source (Cluster Linking's three classes).

The data-loss case first: a source that keeps records forever (``retention.ms=-1``, or a compacted
``_schemas``-style topic) with month-old records must not be emptied by linkd's own retention. linkd runs
here with a 200 ms retention check (``--log-retention-check-interval-ms``), so a test sees many passes.
"""

from __future__ import annotations

import os
import time

import pytest

from linkd.topicconfig import ALWAYS_SYNCED, CONFIGURABLE
from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection, produce_request
from tests.link.mirroring import admin, assert_bytes_identical, create_link, mirror_ends, wait_for, wait_mirrored

DAY_MS = 24 * 3600 * 1000
RETENTION_CHECK_MS = "200"
SYNC_MS = "300"


@pytest.fixture
def dest(linkd_factory):
    return linkd_factory(extra_args=["--log-retention-check-interval-ms", RETENTION_CHECK_MS])


def describe(bootstrap: str, topic: str) -> dict[str, tuple[str, int, bool]]:
    """name -> (value, config_source, read_only), by DescribeConfigs v4 on the wire."""
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 2, "resource_name": topic, "configuration_keys": None}], "include_synonyms": False, "include_documentation": False})
    (result,) = body["results"]
    assert result["error_code"] == 0, result
    return {c["name"]: (c["value"], c["config_source"], c["read_only"]) for c in result["configs"]}


def alter(bootstrap: str, topic: str, *ops: tuple[str, int, str | None]) -> dict:
    """IncrementalAlterConfigs v1 with (name, operation, value) ops; the resource's answer."""
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": topic, "configs": [{"name": n, "config_operation": op, "value": v} for n, op, v in ops]}], "validate_only": False})
    (result,) = body["responses"]
    return result


def produce_old(bootstrap: str, topic: str, count: int, keyed: bool = False, age_ms: int = 30 * DAY_MS) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    stamp = int(time.time() * 1000) - age_ms
    for i in range(count):
        key = b"subject-%d" % (i % 5) if keyed else None
        producer.produce(topic, value=b'{"schema": "v%d"}' % i, key=key, timestamp=stamp + i)
    assert producer.flush(30) == 0


def synced_view(configs: dict[str, tuple[str, int, bool]]) -> dict[str, str]:
    return {k: v[0] for k, v in configs.items() if k in ALWAYS_SYNCED | CONFIGURABLE}


@pytest.mark.timeout(90)
def test_month_old_records_of_keep_forever_and_compacted_sources_survive_retention_on_the_mirror(kafka_broker, dest, unique_topic):
    source = kafka_broker.bootstrap
    forever = kafka_broker.create_topic(f"{unique_topic}-forever", config={"retention.ms": "-1"})
    schemas = kafka_broker.create_topic(f"{unique_topic}-_schemas", config={"cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": "2000000"})
    produce_old(source, forever, 20)
    produce_old(source, schemas, 20, keyed=True)

    client = admin(dest)
    create_link(client, "kafka", source, **{"topic.config.sync.ms": SYNC_MS})
    for topic in (forever, schemas):
        client.create_mirror(topic, "kafka")
        wait_mirrored(client, topic, {0: 20})
    time.sleep(10 * int(RETENTION_CHECK_MS) / 1000)  # many retention passes

    for topic in (forever, schemas):
        assert mirror_ends(client, topic) == {0: 20}
        assert dest.running
        raw = assert_bytes_identical(source, topic, dest.bootstrap, topic, 0, 0, 20)
        assert raw.count(b'{"schema": "v') == 20, f"{topic}: not every record served"
        ours, theirs = describe(dest.bootstrap, topic), describe(source, topic)
        assert synced_view(ours) == synced_view(theirs)
        assert ours["retention.ms"][0] == "-1"
    assert describe(dest.bootstrap, schemas)["cleanup.policy"][0] == "compact"
    assert describe(dest.bootstrap, schemas)["max.message.bytes"][0] == "2000000"
    assert "retention deletes" not in dest.logs(400)


@pytest.mark.timeout(90)
def test_source_config_changes_reach_the_mirror_and_local_overrides_follow_the_three_classes(kafka_broker, dest, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic, config={"retention.ms": "-1"})
    produce_old(source, unique_topic, 3, age_ms=0)
    client = admin(dest)
    create_link(client, "kafka", source, **{"topic.config.sync.ms": SYNC_MS})
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 3})

    # An always-synced name is read-only on the mirror, named in the refusal.
    refused = alter(dest.bootstrap, unique_topic, ("cleanup.policy", 0, "compact"))
    assert refused["error_code"] == ErrorCode.INVALID_CONFIG and "cleanup.policy" in refused["error_message"], refused
    assert describe(dest.bootstrap, unique_topic)["cleanup.policy"] == ("delete", 5, True)
    # A configurable override and an independent name hold.
    assert alter(dest.bootstrap, unique_topic, ("retention.bytes", 0, "123456789"), ("unclean.leader.election.enable", 0, "true"))["error_code"] == 0

    # Source changes: always-synced ones arrive; the overridden configurable one does not.
    changes = [("retention.ms", 0, "2592000000"), ("cleanup.policy", 0, "compact,delete"), ("max.message.bytes", 0, "3000000"), ("retention.bytes", 0, "999999999")]
    assert alter(source, unique_topic, *changes)["error_code"] == 0

    def arrived():
        ours = describe(dest.bootstrap, unique_topic)
        return ours if ours["max.message.bytes"][0] == "3000000" and ours["retention.ms"][0] == "2592000000" else None

    ours = wait_for(arrived, 15, "source config changes on the mirror")
    assert ours["cleanup.policy"] == ("compact,delete", 1, True)
    assert ours["retention.bytes"] == ("123456789", 1, False)
    assert ours["unclean.leader.election.enable"] == ("true", 1, False)

    # Overrides are durable: after a restart a new source value still does not replace the local one.
    dest.restart()
    assert alter(source, unique_topic, ("retention.bytes", 0, "888888888"), ("max.message.bytes", 0, "4000000"))["error_code"] == 0
    wait_for(lambda: describe(dest.bootstrap, unique_topic)["max.message.bytes"][0] == "4000000", 15, "a source change after the restart")
    assert describe(dest.bootstrap, unique_topic)["retention.bytes"] == ("123456789", 1, False)

    # Deleting the override syncs the name again, with the source's value at once.
    assert alter(dest.bootstrap, unique_topic, ("retention.bytes", 1, None))["error_code"] == 0
    assert describe(dest.bootstrap, unique_topic)["retention.bytes"][0] == "888888888"
    # The link reports the sync.
    sync = client.describe_link("kafka")["topic_config_sync"]
    assert sync["syncs"] >= 1 and sync["changes_applied"] >= 1 and sync["last_error"] is None


@pytest.mark.timeout(120)
def test_after_promotion_the_mirror_keeps_the_source_contract_and_accepts_8_mb_batches(kafka_broker, dest, unique_topic):
    source = kafka_broker.bootstrap
    eight_mb = str(8 * 1024 * 1024 + 1024)
    kafka_broker.create_topic(unique_topic, config={"max.message.bytes": eight_mb, "retention.ms": "-1"})
    produce_old(source, unique_topic, 2, age_ms=0)
    client = admin(dest)
    create_link(client, "kafka", source, **{"topic.config.sync.ms": SYNC_MS})
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 2})
    (promoted,) = client.mirror_action("promote", [unique_topic])
    assert promoted["error_code"] == 0, promoted

    with WireConnection(dest.bootstrap, timeout=30) as conn:
        accepted = produce_request(conn, unique_topic, 0, build_records([os.urandom(8 * 1024 * 1024 - 200)]))
        assert accepted["error_code"] == 0, accepted
        too_big = produce_request(conn, unique_topic, 0, build_records([os.urandom(8 * 1024 * 1024 + 2048)]))
        assert too_big["error_code"] == ErrorCode.MESSAGE_TOO_LARGE, too_big

    # Every config is editable now, and the source no longer decides.
    assert alter(dest.bootstrap, unique_topic, ("cleanup.policy", 0, "compact"))["error_code"] == 0
    assert alter(source, unique_topic, ("max.message.bytes", 0, "1000"))["error_code"] == 0
    time.sleep(4 * int(SYNC_MS) / 1000)
    ours = describe(dest.bootstrap, unique_topic)
    assert ours["max.message.bytes"] == (eight_mb, 1, False)
    assert ours["cleanup.policy"] == ("compact", 1, False)


@pytest.mark.timeout(90)
def test_a_source_topic_that_disappears_does_not_stop_the_sync_of_the_others(kafka_broker, dest, unique_topic):
    source = kafka_broker.bootstrap
    kept, gone = (kafka_broker.create_topic(f"{unique_topic}-{n}", config={"retention.ms": "-1"}) for n in ("kept", "gone"))
    client = admin(dest)
    create_link(client, "kafka", source, **{"topic.config.sync.ms": SYNC_MS, "cluster.link.retry.timeout.ms": "600000"})
    for topic in (kept, gone):
        client.create_mirror(topic, "kafka")
    kafka_broker.delete_topic(gone)
    assert alter(source, kept, ("retention.ms", 0, "5000000000"))["error_code"] == 0
    wait_for(lambda: describe(dest.bootstrap, kept)["retention.ms"][0] == "5000000000", 15, "the change on the remaining source topic")
    status = wait_for(lambda: (s := client.describe_link("kafka")["topic_config_sync"])["last_error"] and s, 10, "the refusal reported")
    assert gone in status["last_error"]
    assert describe(dest.bootstrap, gone)["retention.ms"][0] == "-1"  # kept as last synced


@pytest.mark.timeout(90)
def test_a_linkd_source_topics_configs_reach_a_linkd_mirror(linkd_factory, dest, unique_topic):
    origin = linkd_factory()
    with WireConnection(origin.bootstrap) as conn:
        created = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": unique_topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": [{"name": "retention.ms", "value": "-1"}, {"name": "max.message.bytes", "value": "5000000"}, {"name": "message.timestamp.type", "value": "LogAppendTime"}]}], "timeout_ms": 10_000})
        assert created["topics"][0]["error_code"] == 0, created
        assert produce_request(conn, unique_topic, 0, build_records([b"a", b"b"]))["error_code"] == 0
    client = admin(dest)
    create_link(client, "linkd", origin.bootstrap, **{"topic.config.sync.ms": SYNC_MS})
    client.create_mirror(unique_topic, "linkd")
    wait_mirrored(client, unique_topic, {0: 2})
    assert synced_view(describe(dest.bootstrap, unique_topic)) == synced_view(describe(origin.bootstrap, unique_topic))
    assert alter(origin.bootstrap, unique_topic, ("segment.ms", 0, "3600000"))["error_code"] == 0
    wait_for(lambda: describe(dest.bootstrap, unique_topic)["segment.ms"][0] == "3600000", 15, "the change on the linkd source")
    assert_bytes_identical(origin.bootstrap, unique_topic, dest.bootstrap, unique_topic, 0, 0, 2)
