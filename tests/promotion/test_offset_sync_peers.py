"""Consumer offset sync from the real sources, Apache Kafka and Tansu (which answers OffsetFetch with a
null array where Kafka's schema says non-nullable), and the sync task's health as link describe and
/metrics report it: ACTIVE after a good round, IN_ERROR with code and message when the source is gone,
NOT_CONFIGURED when no group filter includes anything."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.link.mirroring import wait_for

from .helpers import cli_json, mirror, produce

pytestmark = pytest.mark.timeout(120)

ALL_GROUPS = '{"groupFilters": [{"name": "*", "patternType": "LITERAL", "filterType": "INCLUDE"}]}'
FAST = ["metadata.max.age.ms=1000", "retry.backoff.max.ms=500", "request.timeout.ms=3000", "consumer.offset.sync.enable=true", "consumer.offset.sync.ms=300"]


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    # A commit without joining the group (Tansu's group joins with librdkafka are slow, see peers.md).
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


def _task(daemon) -> dict:
    [task] = [t for t in cli_json(daemon, "link", "describe", "l")[0]["tasks"] if t["task_name"] == "ConsumerOffsetSync"]
    return task


@pytest.fixture(params=["kafka", "tansu"])
def source(request):
    return request.getfixturevalue("kafka_broker" if request.param == "kafka" else "tansu_broker")


def test_offsets_committed_on_the_source_land_on_linkd_and_the_task_is_active(source, linkd, unique_topic):
    source.create_topic(unique_topic, 1)
    produce(source.bootstrap, unique_topic, 100, 1)
    mirror(linkd, "l", source.bootstrap, [unique_topic], extra_config=[*FAST, f"consumer.offset.group.filters={ALL_GROUPS}"])
    group = f"g-{unique_topic}"
    _commit(source.bootstrap, group, unique_topic, 37)

    wait_for(lambda: _committed(linkd.bootstrap, group, unique_topic) == 37, 30, "the source's offset synced")
    task = _task(linkd)
    assert task["state"] == "ACTIVE" and task["last_error_message"] is None and task["last_success_ms"] > 0
    metrics = httpx.get(f"{linkd.admin_url}/metrics", timeout=10).text
    assert 'linkd_link_task_state{link="l",state="ACTIVE",task="ConsumerOffsetSync"} 1.0' in metrics


def test_a_failing_sync_shows_in_error_with_its_message(kafka_broker_factory, linkd, unique_topic):
    broker = kafka_broker_factory()
    broker.create_topic(unique_topic, 1)
    produce(broker.bootstrap, unique_topic, 10, 1)
    mirror(linkd, "l", broker.bootstrap, [unique_topic], extra_config=[*FAST, f"consumer.offset.group.filters={ALL_GROUPS}"])
    wait_for(lambda: _task(linkd)["state"] == "ACTIVE" and _task(linkd)["last_success_ms"], 20, "a first good round")
    broker.kill()

    task = wait_for(lambda: (t := _task(linkd))["state"] == "IN_ERROR" and t, 30, "the task to report the failure")
    assert task["last_error_message"] and task["last_error_code"] is not None and task["errors"] >= 1
    described = linkd.cli("link", "describe", "l")
    assert "task ConsumerOffsetSync: IN_ERROR (" in described.stdout
    metrics = httpx.get(f"{linkd.admin_url}/metrics", timeout=10).text
    assert 'linkd_link_task_state{link="l",state="IN_ERROR",task="ConsumerOffsetSync"} 1.0' in metrics
    assert 'linkd_offset_sync_errors_total{link="l"}' in metrics


def test_offset_sync_without_group_filters_says_not_configured(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce(kafka_broker.bootstrap, unique_topic, 10, 1)
    mirror(linkd, "l", kafka_broker.bootstrap, [unique_topic], extra_config=FAST)
    task = _task(linkd)
    assert (task["state"], task["state_reason"]) == ("NOT_CONFIGURED", "no consumer.offset.group.filters")
    assert "task ConsumerOffsetSync: NOT_CONFIGURED (no consumer.offset.group.filters)" in linkd.cli("link", "describe", "l").stdout
