"""The replica-level and tooling APIs linkd answers as a one-node Kafka (linkd/broker/replicas.py,
features.py, logdirs.py, producers.py), compared on the wire with a live single-node Apache Kafka 4.1:
same error codes, messages, ordering and cursors; only ids, sizes and paths differ."""

from __future__ import annotations

import uuid

import pytest

from protocol.messages import ApiKey
from tests.broker.wire import WireConnection

pytestmark = pytest.mark.timeout(120)


def _create(conn: WireConnection, name: str, partitions: int) -> None:
    body = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000})
    assert body["topics"][0]["error_code"] == 0, body


def _answers(bootstrap: str) -> dict:
    suffix = uuid.uuid4().hex[:6]
    name, missing = f"a-{suffix}", f"b-missing-{suffix}"  # the missing one sorts after
    out: dict = {}
    with WireConnection(bootstrap) as conn:
        _create(conn, name, 2)
        for v in (0, 1, 2):
            out[f"elect v{v}"] = conn.request(ApiKey.ELECT_LEADERS, v, {"election_type": 0, "timeout_ms": 10_000, "topic_partitions": [
                {"topic": name, "partitions": [0, 5]}, {"topic": missing, "partitions": [0]}]})
        out["elect unclean"] = conn.request(ApiKey.ELECT_LEADERS, 2, {"election_type": 1, "timeout_ms": 10_000, "topic_partitions": [{"topic": name, "partitions": [1]}]})
        for v in (0, 1, 2):
            out[f"features v{v}"] = conn.request(ApiKey.UPDATE_FEATURES, v, {"timeout_ms": 10_000, "validate_only": False, "feature_updates": [
                {"feature": "linkd.nope", "max_version_level": 1, "allow_downgrade": False, "upgrade_type": 1}]})
        out["dtp limit"] = conn.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": missing}, {"name": name}], "response_partition_limit": 1, "cursor": None})
        out["dtp cursor"] = conn.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": name}], "response_partition_limit": 10, "cursor": {"topic_name": name, "partition_index": 1}})
        # Found by the wire fuzzer (seed 3064290720): a cursor with a negative partition index.
        out["dtp negative cursor"] = conn.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": name}], "response_partition_limit": 10, "cursor": {"topic_name": name, "partition_index": -3}})
        out["dtp cursor past the end"] = conn.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": name}], "response_partition_limit": 10, "cursor": {"topic_name": name, "partition_index": 7}})
        out["log dirs"] = conn.request(ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": [{"topic": name, "partitions": [0, 7]}, {"topic": missing, "partitions": [0]}]})
        out["producers"] = conn.request(ApiKey.DESCRIBE_PRODUCERS, 0, {"topics": [{"name": name, "partition_indexes": [0, 9]}, {"name": missing, "partition_indexes": [0]}]})
        out["reassignments"] = conn.request(ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, {"timeout_ms": 10_000, "topics": None})
    return _normalise(out, {name: "NAME", missing: "MISSING"})


def _normalise(value, names: dict[str, str]):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("topic_id", "log_dir", "total_bytes", "usable_bytes", "partition_size"):
                v = type(v).__name__
            out[k] = _normalise(v, names)
        return out
    if isinstance(value, list):
        return [_normalise(v, names) for v in value]
    if isinstance(value, str):
        for real, alias in names.items():
            value = value.replace(real, alias)
        return value.replace("controller 1 ", "controller N ")
    return value


def test_replica_and_tooling_apis_answer_as_a_single_node_kafka(kafka_broker, linkd):
    ours, theirs = _answers(linkd.bootstrap), _answers(kafka_broker.bootstrap)
    for key in theirs:
        assert ours[key] == theirs[key], key
