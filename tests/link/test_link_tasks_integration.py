"""Link task health for every task a link has (ConsumerOffsetSync, AutoCreateMirror, TopicConfigsSync,
AclSync), against Apache Kafka as the source, read three ways: REST (`tasks` of the link), `link describe`
(table and --json) and the `linkd_link_task_state` metric. A task that fails shows IN_ERROR with the
source's refusal, one that is switched off shows NOT_CONFIGURED with why, a paused link shows
LINK_PAUSED, and a healthy one ACTIVE with the time of its last good round."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from protocol.errors import ErrorCode
from tests.link.mirroring import admin, cli_json, create_link, wait_for

pytestmark = pytest.mark.timeout(90)

SYNC_MS = "300"


def _tasks(client, link: str) -> dict[str, dict]:
    return {t["task_name"]: t for t in client.describe_link(link)["tasks"]}


def _metric(daemon, link: str, task: str, state: str) -> str:
    text = httpx.get(f"{daemon.admin_url}/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith(f'linkd_link_task_state{{link="{link}",state="{state}",task="{task}"}}')), None)
    return line.rsplit(" ", 1)[1] if line else "absent"


def test_config_sync_of_a_source_topic_deleted_on_the_source_is_in_error_and_disabled_tasks_say_why(kafka_broker, linkd, unique_topic):
    started_ms = int(time.time() * 1000)
    kept, gone = (kafka_broker.create_topic(f"{unique_topic}-{n}") for n in ("kept", "gone"))
    client = admin(linkd)
    create_link(client, "cfg", kafka_broker.bootstrap, **{"topic.config.sync.ms": SYNC_MS, "cluster.link.retry.timeout.ms": "600000"})
    for topic in (kept, gone):
        client.create_mirror(topic, "cfg")

    active = wait_for(lambda: (t := _tasks(client, "cfg")["TopicConfigsSync"])["last_success_ms"] and t, 15, "a first config sync round")
    assert active["state"] == "ACTIVE" and active["last_success_ms"] >= started_ms and active["last_error_message"] is None
    assert _metric(linkd, "cfg", "TopicConfigsSync", "ACTIVE") == "1.0"

    kafka_broker.delete_topic(gone)
    failing = wait_for(lambda: (t := _tasks(client, "cfg")["TopicConfigsSync"])["state"] == "IN_ERROR" and t, 20, "the refusal reported")
    assert gone in failing["last_error_message"] and "UNKNOWN_TOPIC_OR_PARTITION" in failing["last_error_message"], failing
    assert failing["last_error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and failing["errors"] >= 1
    assert failing["state_reason"] == failing["last_error_message"]
    assert failing["last_success_ms"] >= active["last_success_ms"]  # the round ran: the other mirror is still synced
    assert _metric(linkd, "cfg", "TopicConfigsSync", "IN_ERROR") == "1.0"
    assert _metric(linkd, "cfg", "TopicConfigsSync", "ACTIVE") == "0.0"

    tasks = _tasks(client, "cfg")
    assert set(tasks) == {"ConsumerOffsetSync", "AutoCreateMirror", "TopicConfigsSync", "AclSync"}
    assert (tasks["AutoCreateMirror"]["state"], tasks["AutoCreateMirror"]["state_reason"]) == ("NOT_CONFIGURED", "auto.create.mirror.topics.enable is false")
    assert (tasks["AclSync"]["state"], tasks["AclSync"]["state_reason"]) == ("NOT_CONFIGURED", "acl.sync.enable is false")
    for task in ("AutoCreateMirror", "AclSync", "ConsumerOffsetSync"):
        assert _metric(linkd, "cfg", task, "NOT_CONFIGURED") == "1.0", task

    table = linkd.cli("link", "describe", "cfg").stdout
    assert f"task TopicConfigsSync: IN_ERROR (DescribeConfigs of source topic {gone} failed with UNKNOWN_TOPIC_OR_PARTITION" in table, table
    assert f"last error code {int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)}" in table
    assert "task AutoCreateMirror: NOT_CONFIGURED (auto.create.mirror.topics.enable is false)" in table
    as_json = {t["task_name"]: t for t in cli_json(linkd, "link", "describe", "cfg")["tasks"]}
    assert as_json["TopicConfigsSync"]["state"] == "IN_ERROR" and as_json["TopicConfigsSync"]["last_error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def _filters(prefix: str) -> str:
    return json.dumps({"topicFilters": [{"name": prefix, "patternType": "PREFIXED", "filterType": "INCLUDE"}]})


def test_auto_create_of_a_topic_whose_mirror_name_is_too_long_is_in_error_then_active_and_paused(kafka_broker, linkd, unique_topic):
    u = unique_topic
    ok = kafka_broker.create_topic(f"{u}-ok")
    # Legal on the source (249 characters), but "dr." + it is not a legal topic name here.
    long_name = kafka_broker.create_topic(f"{u}-" + "x" * (249 - len(u) - 1))
    client = admin(linkd)
    create_link(client, "auto", kafka_broker.bootstrap, **{
        "auto.create.mirror.topics.enable": "true", "auto.create.mirror.topics.filters": _filters(f"{u}-"), "cluster.link.prefix": "dr.",
        "metadata.max.age.ms": "500", "topic.config.sync.ms": SYNC_MS,
    })
    failing = wait_for(lambda: (t := _tasks(client, "auto")["AutoCreateMirror"])["state"] == "IN_ERROR" and t, 20, "the refusal reported")
    assert long_name in failing["last_error_message"] and "longer than 249 characters" in failing["last_error_message"], failing
    assert failing["last_error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION and failing["last_error_ms"] >= failing["last_success_ms"] > 0
    assert any(m["mirror_topic_name"] == f"dr.{ok}" for m in client.list_mirrors("auto"))  # the other one is created all the same
    assert _metric(linkd, "auto", "AutoCreateMirror", "IN_ERROR") == "1.0"

    kafka_broker.delete_topic(long_name)
    healthy = wait_for(lambda: (t := _tasks(client, "auto")["AutoCreateMirror"])["state"] == "ACTIVE" and t, 20, "the next round without the refusal")
    assert healthy["last_error_message"] is None and healthy["last_error_code"] is None and healthy["last_success_ms"] > failing["last_success_ms"]
    assert _metric(linkd, "auto", "AutoCreateMirror", "ACTIVE") == "1.0"
    assert "task AutoCreateMirror: ACTIVE, last success " in linkd.cli("link", "describe", "auto").stdout

    client.alter_link_configs("auto", {"cluster.link.paused": "true"}, [])
    paused = wait_for(lambda: (t := _tasks(client, "auto"))["AutoCreateMirror"]["state"] == "LINK_PAUSED" and t, 10, "the pause shown")
    assert paused["TopicConfigsSync"]["state"] == "LINK_PAUSED"
    runs = paused["AutoCreateMirror"]["runs"], paused["TopicConfigsSync"]["runs"]
    time.sleep(1.5)  # about three rounds of each, were they running
    again = _tasks(client, "auto")
    assert (again["AutoCreateMirror"]["runs"], again["TopicConfigsSync"]["runs"]) == runs  # paused means not running
    assert _metric(linkd, "auto", "AutoCreateMirror", "LINK_PAUSED") == "1.0"


def test_rest_link_describe_lists_tasks_only_with_include_tasks(kafka_broker, linkd):
    client = admin(linkd)
    create_link(client, "tasks", kafka_broker.bootstrap)
    url = f"{client.base}{client.cluster}/links/tasks"
    plain = httpx.get(url, timeout=10).json()
    assert "tasks" not in plain and plain["link_name"] == "tasks"
    assert "tasks" not in httpx.get(url, params={"include_tasks": "false"}, timeout=10).json()
    with_tasks = httpx.get(url, params={"include_tasks": "true"}, timeout=10).json()
    assert [t["task_name"] for t in with_tasks["tasks"]] == ["ConsumerOffsetSync", "AutoCreateMirror", "TopicConfigsSync", "AclSync"]
    assert {k: v for k, v in with_tasks.items() if k != "tasks"}.keys() == plain.keys()
    # The CLI's describe still shows them (it asks for them).
    assert [t["task_name"] for t in cli_json(linkd, "link", "describe", "tasks")["tasks"]] == [t["task_name"] for t in with_tasks["tasks"]]
    assert httpx.get(url, params={"include_tasks": "maybe"}, timeout=10).status_code == 400
