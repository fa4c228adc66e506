"""CreateTopics / CreatePartitions / DescribeConfigs edge cases on raw requests, answered as Kafka does."""

from __future__ import annotations

import pytest

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from tests.broker.wire import WireConnection

CREATE_TOPICS_VERSION = 5


def _create(conn: WireConnection, *topics: dict, validate_only: bool = False) -> dict[str, dict]:
    body = conn.request(ApiKey.CREATE_TOPICS, CREATE_TOPICS_VERSION, {"topics": list(topics), "timeout_ms": 10_000, "validate_only": validate_only})
    return {t["name"]: t for t in body["topics"]}


def _topic(name: str, partitions: int = 1, replication: int = 1, configs: dict[str, str] | None = None) -> dict:
    return {
        "name": name,
        "num_partitions": partitions,
        "replication_factor": replication,
        "assignments": [],
        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
    }


def _exists(conn: WireConnection, name: str) -> bool:
    body = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": name}], "allow_auto_topic_creation": False})
    return body["topics"][0]["error_code"] == ErrorCode.NONE


@pytest.fixture
def conn(linkd):
    with WireConnection(linkd.bootstrap) as c:
        yield c


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a" * 250, "has space", "slash/name", "colon:name", "ünicode", "tab\tname"],
    ids=["empty", "dot", "dotdot", "250-chars", "space", "slash", "colon", "unicode", "tab"],
)
def test_illegal_topic_names_are_rejected_like_kafka(conn, name):
    result = _create(conn, _topic(name))[name]
    assert result["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION, result
    assert result["error_message"]
    meta = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": name}], "allow_auto_topic_creation": True})
    assert meta["topics"][0]["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION


@pytest.mark.timeout(30)
def test_longest_legal_name_is_accepted(conn, unique_topic):
    name = (unique_topic + "x" * 249)[:249]
    assert _create(conn, _topic(name))[name]["error_code"] == ErrorCode.NONE
    assert _exists(conn, name)


@pytest.mark.timeout(30)
def test_names_differing_only_by_dot_and_underscore_collide(conn, unique_topic):
    dotted, underscored = f"{unique_topic}.a", f"{unique_topic}_a"
    assert _create(conn, _topic(dotted))[dotted]["error_code"] == ErrorCode.NONE
    result = _create(conn, _topic(underscored))[underscored]
    assert result["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert dotted in result["error_message"]
    assert not _exists(conn, underscored)


@pytest.mark.timeout(30)
def test_bad_partition_counts_replication_factors_and_configs(conn, unique_topic):
    cases = {
        f"{unique_topic}-p0": (_topic(f"{unique_topic}-p0", partitions=0), ErrorCode.INVALID_PARTITIONS),
        f"{unique_topic}-rf3": (_topic(f"{unique_topic}-rf3", replication=3), ErrorCode.INVALID_REPLICATION_FACTOR),
        f"{unique_topic}-cfg": (_topic(f"{unique_topic}-cfg", configs={"no.such.config": "1"}), ErrorCode.INVALID_CONFIG),
        f"{unique_topic}-val": (_topic(f"{unique_topic}-val", configs={"retention.ms": "soon"}), ErrorCode.INVALID_CONFIG),
    }
    results = _create(conn, *(spec for spec, _ in cases.values()))
    for name, (_, expected) in cases.items():
        assert results[name]["error_code"] == expected, results[name]
        assert not _exists(conn, name)


@pytest.mark.timeout(30)
def test_validate_only_creates_nothing(conn, unique_topic):
    assert _create(conn, _topic(unique_topic, partitions=4), validate_only=True)[unique_topic]["error_code"] == ErrorCode.NONE
    assert not _exists(conn, unique_topic)
    assert _create(conn, _topic(unique_topic, partitions=4))[unique_topic]["error_code"] == ErrorCode.NONE


@pytest.mark.timeout(30)
def test_create_partitions_never_shrinks_and_unknown_topics_are_reported(conn, unique_topic):
    _create(conn, _topic(unique_topic, partitions=3))

    def create_partitions(name: str, count: int) -> dict:
        body = conn.request(ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": name, "count": count, "assignments": None}], "timeout_ms": 10_000, "validate_only": False})
        return body["results"][0]

    assert create_partitions(unique_topic, 2)["error_code"] == ErrorCode.INVALID_PARTITIONS
    assert create_partitions(unique_topic, 3)["error_code"] == ErrorCode.INVALID_PARTITIONS
    assert create_partitions(f"{unique_topic}-missing", 5)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert create_partitions(unique_topic, 4)["error_code"] == ErrorCode.NONE


@pytest.mark.timeout(30)
def test_describe_configs_for_topic_broker_and_missing_topic(conn, linkd, unique_topic):
    _create(conn, _topic(unique_topic, configs={"retention.ms": "1000"}))
    body = conn.request(
        ApiKey.DESCRIBE_CONFIGS,
        4,
        {
            "resources": [
                {"resource_type": 2, "resource_name": unique_topic, "configuration_keys": ["retention.ms", "cleanup.policy"]},
                {"resource_type": 4, "resource_name": "1", "configuration_keys": None},
                {"resource_type": 2, "resource_name": f"{unique_topic}-missing", "configuration_keys": None},
            ],
            "include_synonyms": False,
            "include_documentation": False,
        },
    )
    topic, broker, missing = body["results"]
    assert topic["error_code"] == 0
    assert {c["name"]: c["value"] for c in topic["configs"]} == {"retention.ms": "1000", "cleanup.policy": "delete"}
    assert broker["error_code"] == 0
    assert {c["name"]: c["value"] for c in broker["configs"]}["auto.create.topics.enable"] == "false"
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
