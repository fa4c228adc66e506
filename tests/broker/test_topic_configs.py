"""Topic configuration on linkd as on a Kafka broker: the same names, types, defaults and refusals as
Apache Kafka 4.1 (asked side by side), durable, applied to live logs without a restart, and usable with
Kafka's own ConfigCommand, confluent-kafka's and kafka-python's admin clients."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from linkd.topicconfig import TOPIC_CONFIGS, check_value
from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import BatchSpec, Compression, NewRecord, build_batch, build_records, split_batches
from tests.broker.wire import WireConnection, fetch_request, produce_request
from tests.peers.kafka import ensure_kafka_libs, java_binary

SOURCE_DEFAULT = 5
SOURCE_DYNAMIC_TOPIC = 1


def _create(bootstrap: str, name: str, configs: dict[str, str | None] | None = None, validate_only: bool = False) -> dict:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}], "timeout_ms": 10_000, "validate_only": validate_only})
    return body["topics"][0]


def _describe(bootstrap: str, topic: str, synonyms: bool = False) -> dict[str, dict]:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 2, "resource_name": topic, "configuration_keys": None}], "include_synonyms": synonyms, "include_documentation": False})
    (result,) = body["results"]
    assert result["error_code"] == 0, result
    return {c["name"]: c for c in result["configs"]}


def _incremental(bootstrap: str, topic: str, *ops: tuple[str, int, str | None]) -> tuple[int, str | None]:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": topic, "configs": [{"name": n, "config_operation": op, "value": v} for n, op, v in ops]}], "validate_only": False})
    (result,) = body["responses"]
    return result["error_code"], result["error_message"]


def _alter(bootstrap: str, topic: str, configs: dict[str, str | None]) -> tuple[int, str | None]:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.ALTER_CONFIGS, 2, {"resources": [{"resource_type": 2, "resource_name": topic, "configs": [{"name": k, "value": v} for k, v in configs.items()]}], "validate_only": False})
    (result,) = body["responses"]
    return result["error_code"], result["error_message"]


def _new_topic(bootstrap: str, configs: dict[str, str] | None = None) -> str:
    name = f"tc-{uuid.uuid4().hex[:10]}"
    created = _create(bootstrap, name, configs)
    assert created["error_code"] == 0, created
    return name


@pytest.mark.timeout(120)
def test_topic_config_names_types_and_defaults_are_apache_kafka_4_1s(kafka_broker, linkd):
    theirs = _describe(kafka_broker.bootstrap, _new_topic(kafka_broker.bootstrap), synonyms=True)
    ours = _describe(linkd.bootstrap, _new_topic(linkd.bootstrap), synonyms=True)
    assert set(ours) == set(theirs)
    for name, entry in theirs.items():
        assert ours[name]["config_type"] == entry["config_type"], name
        assert ours[name]["config_source"] == SOURCE_DEFAULT and not ours[name]["read_only"]
        if entry["config_source"] == SOURCE_DEFAULT:  # the test broker sets log.retention.ms statically
            assert ours[name]["value"] == entry["value"], name


# (name, operation, value): what Kafka answers, linkd must answer with the same error code.
INCREMENTAL_CASES = [
    [("nope.x", 0, "1")],
    [("retention.ms", 0, "abc")],
    [("retention.ms", 0, "-5")],
    [("cleanup.policy", 0, "bogus")],
    [("min.cleanable.dirty.ratio", 0, "1.5")],
    [("unclean.leader.election.enable", 0, "maybe")],
    [("retention.ms", 2, "5")],
    [("cleanup.policy", 2, "compact")],
    [("cleanup.policy", 3, "delete")],
    [("retention.ms", 0, "5"), ("retention.ms", 1, None)],
    [("retention.ms", 1, None)],
    [("retention.ms", 0, None)],
    [("compression.type", 0, "zstd"), ("message.timestamp.type", 0, "LogAppendTime")],
]
ALTER_CASES = [{"retention.ms": "1234"}, {"bogus": "1"}, {"retention.ms": None}, {"max.message.bytes": "x"}]
CREATE_CASES = [{"bogus": "1"}, {"retention.ms": "x"}, {"min.cleanable.dirty.ratio": "2"}, {"retention.ms": None}, {"cleanup.policy": "compact,delete", "retention.ms": "-1"}]


@pytest.mark.timeout(120)
def test_create_alter_and_incremental_alter_answer_as_apache_kafka_does(kafka_broker, linkd):
    peers = {"kafka": kafka_broker.bootstrap, "linkd": linkd.bootstrap}
    topics = {who: _new_topic(b) for who, b in peers.items()}
    for ops in INCREMENTAL_CASES:
        answers = {who: _incremental(b, topics[who], *ops) for who, b in peers.items()}
        assert answers["linkd"][0] == answers["kafka"][0], (ops, answers)
    for configs in ALTER_CASES:
        answers = {who: _alter(b, topics[who], configs) for who, b in peers.items()}
        assert answers["linkd"][0] == answers["kafka"][0], (configs, answers)
    for configs in CREATE_CASES:
        answers = {who: _create(b, f"c-{uuid.uuid4().hex[:8]}", configs, validate_only=True) for who, b in peers.items()}
        assert answers["linkd"]["error_code"] == answers["kafka"]["error_code"], (configs, answers)
        assert answers["linkd"]["error_message"] == answers["kafka"]["error_message"], (configs, answers)
    # Both end in the same state after the same sequence.
    views = {who: {k: (c["value"], c["config_source"]) for k, c in _describe(b, topics[who]).items() if c["config_source"] == SOURCE_DYNAMIC_TOPIC} for who, b in peers.items()}
    assert views["linkd"] == views["kafka"]


def _config_command(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    argv = [java_binary(), "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{ensure_kafka_libs()}/*", "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_kafkas_config_command_describes_and_alters_topic_configs_on_linkd(linkd):
    topic = _new_topic(linkd.bootstrap)
    entity = ["--entity-type", "topics", "--entity-name", topic]
    altered = _config_command(linkd.bootstrap, *entity, "--alter", "--add-config", "retention.ms=1234,cleanup.policy=[compact,delete]")
    assert altered.returncode == 0, altered.stderr
    described = _config_command(linkd.bootstrap, *entity, "--describe")
    assert described.returncode == 0, described.stderr
    assert f"Dynamic configs for topic {topic} are:" in described.stdout
    assert "retention.ms=1234 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=1234, DEFAULT_CONFIG:log.retention.hours=168}" in described.stdout
    assert "cleanup.policy=compact,delete" in described.stdout
    assert _config_command(linkd.bootstrap, *entity, "--alter", "--delete-config", "retention.ms").returncode == 0
    assert _describe(linkd.bootstrap, topic)["retention.ms"]["config_source"] == SOURCE_DEFAULT  # one JVM less than --describe --all
    refused = _config_command(linkd.bootstrap, *entity, "--alter", "--add-config", "nope.x=1")
    assert refused.returncode != 0 and "InvalidConfigurationException: Unknown topic config name: nope.x" in refused.stderr


@pytest.mark.timeout(90)
def test_configs_are_durable_and_reach_live_logs_without_a_restart(linkd):
    topic = _new_topic(linkd.bootstrap)
    assert _incremental(linkd.bootstrap, topic, ("segment.bytes", 0, "1024"), ("retention.ms", 0, "-1")) == (0, None)
    with WireConnection(linkd.bootstrap) as conn:
        for i in range(6):
            assert produce_request(conn, topic, 0, build_records([b"%d" % i + b"x" * 700]))["error_code"] == 0
    segments = sorted((linkd.data_dir / "logs" / f"{topic}-0").glob("*.log"))
    assert len(segments) >= 5, f"segment.bytes=1024 did not roll the live log: {segments}"
    linkd.restart()
    after = _describe(linkd.bootstrap, topic)
    assert after["segment.bytes"]["value"] == "1024" and after["segment.bytes"]["config_source"] == SOURCE_DYNAMIC_TOPIC
    assert after["retention.ms"]["value"] == "-1"


@pytest.mark.timeout(90)
def test_confluent_and_kafka_python_admin_clients_alter_and_describe(linkd):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
    from kafka.admin import ConfigResource as KafkaPythonResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    topic = _new_topic(linkd.bootstrap)
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap, "log_level": 3})
    resource = ConfigResource("topic", topic, incremental_configs=[ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET), ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    admin.incremental_alter_configs([resource])[resource].result(15)
    described = admin.describe_configs([ConfigResource("topic", topic)])
    (configs,) = [f.result(15) for f in described.values()]
    assert configs["retention.ms"].value == "86400000" and configs["cleanup.policy"].value == "delete,compact"
    bad = ConfigResource("topic", topic, incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET), ConfigEntry("remote.storage.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception, match="not supported yet"):
        admin.incremental_alter_configs([bad])[bad].result(15)

    kp = KafkaAdminClient(bootstrap_servers=linkd.bootstrap, request_timeout_ms=15_000)
    try:
        kp.alter_configs([KafkaPythonResource(ConfigResourceType.TOPIC, topic, configs={"retention.bytes": "1048576"})], incremental=False)
        answer = kp.describe_configs([KafkaPythonResource(ConfigResourceType.TOPIC, topic, configs=["retention.bytes", "retention.ms"])])
        text = repr(answer)
        assert "1048576" in text
    finally:
        kp.close()
    # kafka-python's AlterConfigs carries the other dynamic configs along (the request replaces the whole set).
    after = _describe(linkd.bootstrap, topic)
    assert after["retention.bytes"]["value"] == "1048576" and after["retention.ms"]["value"] == "86400000"


@pytest.mark.timeout(60)
def test_produce_obeys_the_topic_configs(linkd):
    small = _new_topic(linkd.bootstrap, {"max.message.bytes": "2000"})
    with WireConnection(linkd.bootstrap) as conn:
        assert produce_request(conn, small, 0, build_records([b"x" * 1000]))["error_code"] == 0
        assert produce_request(conn, small, 0, build_records([b"x" * 3000]))["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
        assert _incremental(linkd.bootstrap, small, ("max.message.bytes", 0, "100000")) == (0, None)
        assert produce_request(conn, small, 0, build_records([b"x" * 3000]))["error_code"] == 0

        replicas = _new_topic(linkd.bootstrap, {"min.insync.replicas": "2"})
        assert produce_request(conn, replicas, 0, build_records([b"a"]))["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS
        assert produce_request(conn, replicas, 0, build_records([b"a"]), acks=1)["error_code"] == 0

        future = _new_topic(linkd.bootstrap, {"message.timestamp.after.max.ms": "60000"})
        ahead = int(time.time() * 1000) + 3_600_000
        assert produce_request(conn, future, 0, build_batch(BatchSpec(records=[NewRecord(b"late", timestamp=ahead)])))["error_code"] == ErrorCode.INVALID_TIMESTAMP
        assert produce_request(conn, future, 0, build_records([b"now"]))["error_code"] == 0

        zstd = _new_topic(linkd.bootstrap, {"compression.type": "zstd"})
        assert produce_request(conn, zstd, 0, build_records([b"v%d" % i * 50 for i in range(20)]))["error_code"] == 0
        fetched = fetch_request(conn, zstd, 0, 0)
        (batch,) = split_batches(bytes(fetched["records"])).batches
        assert batch.compression == Compression.ZSTD and batch.record_count == 20
        batch.verify()


def test_unsupported_values_are_refused_not_ignored():
    for name, value in (("remote.storage.enable", "true"), ("preallocate", "true"), ("segment.jitter.ms", "5"), ("compression.gzip.level", "9")):
        with pytest.raises(ValueError, match="not supported yet"):
            check_value(name, value)
    for name, definition in TOPIC_CONFIGS.items():
        assert check_value(name, definition.default) == definition.default
