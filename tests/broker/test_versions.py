"""The API versions linkd advertises (linkd/broker/versions.py): all within what Apache Kafka 4.1
advertises, and every advertised (api, version) pair answers a minimal valid request correctly, on a
connection that stays open."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

import pytest

from linkd.broker.versions import SUPPORTED_VERSIONS
from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection, api_versions
from tests.peers.linkd import LinkdProcess

ZERO_UUID = uuid.UUID(int=0)
GROUP_SESSION_MS = 10_000


@pytest.mark.timeout(180)
def test_advertised_ranges_are_within_apache_kafka_4_1(kafka_broker):
    kafka = api_versions(kafka_broker.bootstrap)
    outside = {
        ApiKey(api).name: {"linkd": ours, "kafka": kafka.get(api)}
        for api, ours in SUPPORTED_VERSIONS.items()
        if api not in kafka or not (kafka[api][0] <= ours[0] <= ours[1] <= kafka[api][1])
    }
    assert not outside, f"linkd advertises versions Apache Kafka 4.1 does not: {outside}"


@pytest.fixture(scope="module")
def daemon():
    # With the authorizer on (ANONYMOUS a super user), so the ACL APIs answer for real at every version.
    with LinkdProcess(extra_args=["--authorizer", "standard", "--super-users", "User:ANONYMOUS"]) as process:
        yield process


class Env:
    """One connection to a module-wide linkd, a topic with one record, and fresh names on demand."""

    def __init__(self, daemon: LinkdProcess, api: str) -> None:
        self.conn = WireConnection(daemon.bootstrap)
        self.prefix = f"v-{api.lower().replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.topic = self.create_topic(self.prefix)
        produced = self.call(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": self.topic, "partition_data": [{"index": 0, "records": build_records([b"seed"])}]}]})
        assert produced["responses"][0]["partition_responses"][0]["error_code"] == 0
        meta = self.call(ApiKey.METADATA, 12, {"topics": [{"name": self.topic, "topic_id": ZERO_UUID}], "allow_auto_topic_creation": False})
        self.topic_id = meta["topics"][0]["topic_id"]

    def call(self, api: int, version: int, body: dict) -> dict:
        return self.conn.request(api, version, body)

    def create_topic(self, name: str, partitions: int = 1) -> str:
        body = self.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000})
        assert body["topics"][0]["error_code"] == 0, body
        return name

    def commit(self, group: str, offset: int = 1) -> None:
        body = self.call(ApiKey.OFFSET_COMMIT, 8, {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "", "topics": [{"name": self.topic, "partitions": [{"partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1, "committed_metadata": ""}]}]})
        assert body["topics"][0]["partitions"][0]["error_code"] == 0, body

    def subscription(self) -> bytes:
        name = self.topic.encode()
        return struct.pack(">hih", 0, 1, len(name)) + name + struct.pack(">i", -1)

    def close(self) -> None:
        self.conn.close()


def _only(items: list) -> dict:
    assert len(items) == 1, items
    return items[0]


def _produce(env: Env, v: int) -> None:
    body = env.call(ApiKey.PRODUCE, v, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": env.topic, "partition_data": [{"index": 0, "records": build_records([f"v{v}".encode()])}]}]})
    part = _only(_only(body["responses"])["partition_responses"])
    assert part["error_code"] == 0 and part["base_offset"] >= 1


def _fetch(env: Env, v: int) -> None:
    partition = {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}
    body = env.call(
        ApiKey.FETCH,
        v,
        {
            "replica_id": -1,
            "replica_state": {"replica_id": -1, "replica_epoch": -1},
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": env.topic, "topic_id": env.topic_id, "partitions": [partition]}],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    assert body.get("error_code", 0) == 0, body
    part = _only(_only(body["responses"])["partitions"])
    assert part["error_code"] == 0 and part["high_watermark"] >= 1 and b"seed" in bytes(part["records"])


def _list_offsets(env: Env, v: int) -> None:
    body = env.call(ApiKey.LIST_OFFSETS, v, {"replica_id": -1, "isolation_level": 0, "timeout_ms": 5000, "topics": [{"name": env.topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    part = _only(_only(body["topics"])["partitions"])
    assert part["error_code"] == 0 and part["offset"] >= 1


def _metadata(env: Env, v: int) -> None:
    body = env.call(ApiKey.METADATA, v, {"topics": [{"name": env.topic, "topic_id": ZERO_UUID}], "allow_auto_topic_creation": False})
    topic = _only(body["topics"])
    assert topic["error_code"] == 0 and topic["name"] == env.topic and len(topic["partitions"]) == 1
    assert [b["node_id"] for b in body["brokers"]] == [1]


def _offset_commit(env: Env, v: int) -> None:
    body = env.call(
        ApiKey.OFFSET_COMMIT,
        v,
        {"group_id": f"{env.prefix}-g", "generation_id_or_member_epoch": -1, "member_id": "", "retention_time_ms": -1, "topics": [{"name": env.topic, "partitions": [{"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1, "commit_timestamp": -1, "committed_metadata": f"v{v}"}]}]},
    )
    assert _only(_only(body["topics"])["partitions"])["error_code"] == 0


def _offset_fetch(env: Env, v: int) -> None:
    group = f"{env.prefix}-g"
    env.commit(group)
    topics = [{"name": env.topic, "partition_indexes": [0]}]
    body = env.call(ApiKey.OFFSET_FETCH, v, {"group_id": group, "topics": topics, "groups": [{"group_id": group, "member_id": None, "member_epoch": -1, "topics": topics}], "require_stable": False})
    if v >= 8:
        group_out = _only(body["groups"])
        assert group_out["error_code"] == 0
        part = _only(_only(group_out["topics"])["partitions"])
    else:
        assert body.get("error_code", 0) == 0
        part = _only(_only(body["topics"])["partitions"])
    assert part["error_code"] == 0 and part["committed_offset"] == 1


def _find_coordinator(env: Env, v: int) -> None:
    body = env.call(ApiKey.FIND_COORDINATOR, v, {"key": f"{env.prefix}-g", "key_type": 0, "coordinator_keys": [f"{env.prefix}-g"]})
    answer = _only(body["coordinators"]) if v >= 4 else body
    assert answer["error_code"] == 0 and answer["node_id"] == 1
    if v >= 1:  # key types (and so transaction coordinators) exist from v1
        body = env.call(ApiKey.FIND_COORDINATOR, v, {"key": f"{env.prefix}-tx", "key_type": 1, "coordinator_keys": [f"{env.prefix}-tx"]})
        answer = _only(body["coordinators"]) if v >= 4 else body
        assert answer["error_code"] == 0 and answer["node_id"] == 1, answer


def _group_lifecycle(env: Env, join_v: int, sync_v: int, heartbeat_v: int, leave_v: int) -> None:
    group = f"{env.prefix}-j{join_v}"
    join = {"group_id": group, "session_timeout_ms": GROUP_SESSION_MS, "rebalance_timeout_ms": GROUP_SESSION_MS, "member_id": "", "group_instance_id": None, "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": env.subscription()}], "reason": None}
    joined = env.call(ApiKey.JOIN_GROUP, join_v, join)
    if join_v >= 4:
        assert joined["error_code"] == ErrorCode.MEMBER_ID_REQUIRED and joined["member_id"], joined
        joined = env.call(ApiKey.JOIN_GROUP, join_v, {**join, "member_id": joined["member_id"]})
    assert joined["error_code"] == 0 and joined["leader"] == joined["member_id"], joined
    member, generation = joined["member_id"], joined["generation_id"]
    synced = env.call(ApiKey.SYNC_GROUP, sync_v, {"group_id": group, "generation_id": generation, "member_id": member, "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "range", "assignments": [{"member_id": member, "assignment": b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"}]})
    assert synced["error_code"] == 0, synced
    beat = env.call(ApiKey.HEARTBEAT, heartbeat_v, {"group_id": group, "generation_id": generation, "member_id": member, "group_instance_id": None})
    assert beat["error_code"] == 0, beat
    left = env.call(ApiKey.LEAVE_GROUP, leave_v, {"group_id": group, "member_id": member, "members": [{"member_id": member, "group_instance_id": None, "reason": None}]})
    assert left["error_code"] == 0, left
    if leave_v >= 3:
        assert _only(left["members"])["error_code"] == 0


def _cycle(version_range: tuple[int, int], i: int) -> int:
    lo, hi = version_range
    return lo + i % (hi - lo + 1)


def _join_group(env: Env, v: int) -> None:
    _group_lifecycle(env, v, _cycle(SUPPORTED_VERSIONS[ApiKey.SYNC_GROUP], v), _cycle(SUPPORTED_VERSIONS[ApiKey.HEARTBEAT], v), _cycle(SUPPORTED_VERSIONS[ApiKey.LEAVE_GROUP], v))


def _sync_group(env: Env, v: int) -> None:
    _group_lifecycle(env, 9, v, 4, 5)


def _heartbeat(env: Env, v: int) -> None:
    _group_lifecycle(env, 9, 5, v, 5)


def _leave_group(env: Env, v: int) -> None:
    _group_lifecycle(env, 9, 5, 4, v)


def _describe_groups(env: Env, v: int) -> None:
    group = f"{env.prefix}-g"
    env.commit(group)
    body = env.call(ApiKey.DESCRIBE_GROUPS, v, {"groups": [group], "include_authorized_operations": False})
    described = _only(body["groups"])
    assert described["error_code"] == 0 and described["group_id"] == group and described["group_state"] == "Empty"


def _list_groups(env: Env, v: int) -> None:
    group = f"{env.prefix}-g"
    env.commit(group)
    body = env.call(ApiKey.LIST_GROUPS, v, {"states_filter": [], "types_filter": []})
    assert body["error_code"] == 0 and group in {g["group_id"] for g in body["groups"]}


def _api_versions(env: Env, v: int) -> None:
    body = env.call(ApiKey.API_VERSIONS, v, {"client_software_name": "linkd-tests", "client_software_version": "1.0"})
    assert body["error_code"] == 0
    assert {a["api_key"]: (a["min_version"], a["max_version"]) for a in body["api_keys"]} == SUPPORTED_VERSIONS
    if v >= 3:
        # No finalized transaction.version: Kafka 4.x clients use transaction version 1 (the classic
        # protocol linkd's coordinator implements), never KIP-890's version 2 (docs/operator-guide.md).
        assert body["finalized_features"] == [] and body["supported_features"] == [], body


def _create_topics(env: Env, v: int) -> None:
    name = f"{env.prefix}-c{v}"
    body = env.call(ApiKey.CREATE_TOPICS, v, {"topics": [{"name": name, "num_partitions": 2, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000, "validate_only": False})
    assert _only(body["topics"])["error_code"] == 0


def _delete_topics(env: Env, v: int) -> None:
    name = env.create_topic(f"{env.prefix}-d{v}")
    body = env.call(ApiKey.DELETE_TOPICS, v, {"topic_names": [name], "topics": [{"name": name, "topic_id": ZERO_UUID}], "timeout_ms": 10_000})
    assert _only(body["responses"])["error_code"] == 0


def _delete_records(env: Env, v: int) -> None:
    body = env.call(ApiKey.DELETE_RECORDS, v, {"topics": [{"name": env.topic, "partitions": [{"partition_index": 0, "offset": 0}]}], "timeout_ms": 5000})
    part = _only(_only(body["topics"])["partitions"])
    assert part["error_code"] == 0 and part["low_watermark"] == 0


def _init_producer_id(env: Env, v: int) -> None:
    body = env.call(ApiKey.INIT_PRODUCER_ID, v, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
    assert body["error_code"] == 0 and body["producer_id"] >= 0 and body["producer_epoch"] == 0


def _offset_for_leader_epoch(env: Env, v: int) -> None:
    body = env.call(ApiKey.OFFSET_FOR_LEADER_EPOCH, v, {"replica_id": -1, "topics": [{"topic": env.topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]})
    part = _only(_only(body["topics"])["partitions"])
    assert part["error_code"] == 0 and part["leader_epoch"] == 0 and part["end_offset"] >= 1


def _describe_configs(env: Env, v: int) -> None:
    body = env.call(ApiKey.DESCRIBE_CONFIGS, v, {"resources": [{"resource_type": 2, "resource_name": env.topic, "configuration_keys": None}], "include_synonyms": False, "include_documentation": False})
    result = _only(body["results"])
    assert result["error_code"] == 0 and "retention.ms" in {c["name"] for c in result["configs"]}


def _retention_ms(env: Env) -> str:
    body = env.call(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 2, "resource_name": env.topic, "configuration_keys": ["retention.ms"]}], "include_synonyms": False, "include_documentation": False})
    return _only(_only(body["results"])["configs"])["value"]


def _alter_configs(env: Env, v: int) -> None:
    body = env.call(ApiKey.ALTER_CONFIGS, v, {"resources": [{"resource_type": 2, "resource_name": env.topic, "configs": [{"name": "retention.ms", "value": str(1000 + v)}]}], "validate_only": False})
    assert _only(body["responses"])["error_code"] == 0, body
    assert _retention_ms(env) == str(1000 + v)


def _incremental_alter_configs(env: Env, v: int) -> None:
    body = env.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, v, {"resources": [{"resource_type": 2, "resource_name": env.topic, "configs": [{"name": "retention.ms", "config_operation": 0, "value": str(2000 + v)}]}], "validate_only": False})
    assert _only(body["responses"])["error_code"] == 0, body
    assert _retention_ms(env) == str(2000 + v)


def _create_partitions(env: Env, v: int) -> None:
    name = env.create_topic(f"{env.prefix}-p{v}")
    body = env.call(ApiKey.CREATE_PARTITIONS, v, {"topics": [{"name": name, "count": 3, "assignments": None}], "timeout_ms": 10_000, "validate_only": False})
    assert _only(body["results"])["error_code"] == 0


def _delete_groups(env: Env, v: int) -> None:
    group = f"{env.prefix}-del{v}"
    env.commit(group)
    body = env.call(ApiKey.DELETE_GROUPS, v, {"groups_names": [group]})
    assert _only(body["results"])["error_code"] == 0


def _describe_cluster(env: Env, v: int) -> None:
    body = env.call(ApiKey.DESCRIBE_CLUSTER, v, {"include_cluster_authorized_operations": False, "endpoint_type": 1, "include_fenced_brokers": False})
    assert body["error_code"] == 0 and [b["broker_id"] for b in body["brokers"]] == [1]


def _acl(env: Env, v: int) -> tuple[dict, dict]:
    principal = f"User:{env.prefix}-{v}"
    creation = {"resource_type": 2, "resource_name": env.topic, "resource_pattern_type": 4, "principal": principal, "host": "*", "operation": 3, "permission_type": 3}
    acl_filter = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": principal, "host_filter": None, "operation": 1, "permission_type": 1}
    return creation, acl_filter


def _create_acls(env: Env, v: int) -> None:
    creation, acl_filter = _acl(env, v)
    assert _only(env.call(ApiKey.CREATE_ACLS, v, {"creations": [creation]})["results"])["error_code"] == 0
    described = env.call(ApiKey.DESCRIBE_ACLS, 1, acl_filter)
    assert [(r["resource_name"], r["pattern_type"]) for r in described["resources"]] == [(env.topic, 4)], described


def _describe_acls(env: Env, v: int) -> None:
    creation, acl_filter = _acl(env, v)
    assert _only(env.call(ApiKey.CREATE_ACLS, 1, {"creations": [creation]})["results"])["error_code"] == 0
    described = env.call(ApiKey.DESCRIBE_ACLS, v, acl_filter)
    assert described["error_code"] == 0
    acl = _only(_only(described["resources"])["acls"])
    assert acl["principal"] == creation["principal"] and acl["operation"] == 3 and acl["permission_type"] == 3


def _delete_acls(env: Env, v: int) -> None:
    creation, acl_filter = _acl(env, v)
    assert _only(env.call(ApiKey.CREATE_ACLS, 1, {"creations": [creation]})["results"])["error_code"] == 0
    result = _only(env.call(ApiKey.DELETE_ACLS, v, {"filters": [acl_filter]})["filter_results"])
    assert result["error_code"] == 0 and _only(result["matching_acls"])["resource_name"] == env.topic
    assert env.call(ApiKey.DESCRIBE_ACLS, 1, acl_filter)["resources"] == []


def _describe_log_dirs(env: Env, v: int) -> None:
    body = env.call(ApiKey.DESCRIBE_LOG_DIRS, v, {"topics": [{"topic": env.topic, "partitions": [0]}]})
    assert body.get("error_code", 0) == 0
    result = _only(body["results"])
    part = _only(_only(result["topics"])["partitions"])
    assert result["error_code"] == 0 and part["partition_size"] > 0 and part["offset_lag"] == 0
    if v >= 4:
        assert result["total_bytes"] > 0 and result["usable_bytes"] >= 0


def _elect_leaders(env: Env, v: int) -> None:
    body = env.call(ApiKey.ELECT_LEADERS, v, {"election_type": 0, "topic_partitions": [{"topic": env.topic, "partitions": [0]}], "timeout_ms": 5000})
    assert body.get("error_code", 0) == 0
    assert _only(_only(body["replica_election_results"])["partition_result"])["error_code"] == ErrorCode.ELECTION_NOT_NEEDED


def _list_partition_reassignments(env: Env, v: int) -> None:
    body = env.call(ApiKey.LIST_PARTITION_REASSIGNMENTS, v, {"timeout_ms": 5000, "topics": None})
    assert body["error_code"] == 0 and body["topics"] == []


def _offset_delete(env: Env, v: int) -> None:
    group = f"{env.prefix}-od"
    env.commit(group)
    body = env.call(ApiKey.OFFSET_DELETE, v, {"group_id": group, "topics": [{"name": env.topic, "partitions": [{"partition_index": 0}]}]})
    assert body["error_code"] == 0 and _only(_only(body["topics"])["partitions"])["error_code"] == 0
    gone = env.call(ApiKey.OFFSET_DELETE, v, {"group_id": group, "topics": [{"name": env.topic, "partitions": [{"partition_index": 0}]}]})
    assert gone["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND  # its only offset went: the group is gone


def _update_features(env: Env, v: int) -> None:
    body = env.call(ApiKey.UPDATE_FEATURES, v, {"timeout_ms": 5000, "feature_updates": [{"feature": "foo.bar", "max_version_level": 1, "allow_downgrade": False, "upgrade_type": 1}], "validate_only": False})
    assert body["error_code"] == ErrorCode.INVALID_UPDATE_VERSION and "does not support this feature" in body["error_message"]


def _describe_producers(env: Env, v: int) -> None:
    pid = _only([env.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})])["producer_id"]
    records = build_records([b"a", b"b"], producer_id=pid, producer_epoch=0, base_sequence=0)
    produced = env.call(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": env.topic, "partition_data": [{"index": 0, "records": records}]}]})
    assert produced["responses"][0]["partition_responses"][0]["error_code"] == 0
    body = env.call(ApiKey.DESCRIBE_PRODUCERS, v, {"topics": [{"name": env.topic, "partition_indexes": [0]}]})
    part = _only(_only(body["topics"])["partitions"])
    assert part["error_code"] == 0
    assert [(p["producer_id"], p["producer_epoch"], p["last_sequence"], p["current_txn_start_offset"]) for p in part["active_producers"]] == [(pid, 0, 1, -1)]


def _describe_topic_partitions(env: Env, v: int) -> None:
    body = env.call(ApiKey.DESCRIBE_TOPIC_PARTITIONS, v, {"topics": [{"name": env.topic}], "response_partition_limit": 10, "cursor": None})
    topic = _only(body["topics"])
    assert topic["error_code"] == 0 and topic["topic_id"] == env.topic_id and body["next_cursor"] is None
    assert _only(topic["partitions"])["leader_id"] == 1


def _sasl_handshake(env: Env, v: int) -> None:
    # This daemon's listener is PLAINTEXT: Kafka answers ILLEGAL_SASL_STATE there and keeps the connection.
    body = env.call(ApiKey.SASL_HANDSHAKE, v, {"mechanism": "PLAIN"})
    assert body["error_code"] == ErrorCode.ILLEGAL_SASL_STATE


def _sasl_authenticate(env: Env, v: int) -> None:
    body = env.call(ApiKey.SASL_AUTHENTICATE, v, {"auth_bytes": b"\0u\0p"})
    assert body["error_code"] == ErrorCode.ILLEGAL_SASL_STATE and "not enabled" in body["error_message"]


def _scram_upsertion(env: Env, v: int) -> tuple[str, dict]:
    user = f"{env.prefix}-u{v}"
    return user, {"name": user, "mechanism": 1, "iterations": 4096, "salt": b"s" * 16, "salted_password": b"p" * 32}


def _alter_user_scram_credentials(env: Env, v: int) -> None:
    user, upsertion = _scram_upsertion(env, v)
    body = env.call(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, v, {"deletions": [], "upsertions": [upsertion]})
    assert body["results"] == [{"user": user, "error_code": 0, "error_message": None}], body


def _describe_user_scram_credentials(env: Env, v: int) -> None:
    user, upsertion = _scram_upsertion(env, v)
    env.call(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0, {"deletions": [], "upsertions": [upsertion]})
    body = env.call(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, v, {"users": [{"name": user}]})
    assert body["error_code"] == 0 and _only(body["results"])["credential_infos"] == [{"mechanism": 1, "iterations": 4096}], body


def _describe_client_quotas(env: Env, v: int) -> None:
    body = env.call(ApiKey.DESCRIBE_CLIENT_QUOTAS, v, {"components": [{"entity_type": "user", "match_type": 0, "match": "alice"}], "strict": False})
    assert body["error_code"] == 0 and body["entries"] == [], body


def _txn_begin(env: Env, tid: str) -> tuple[int, int]:
    """A transactional id with the Env's topic added to an open transaction: (producer id, epoch)."""
    init = env.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
    assert init["error_code"] == 0, init
    pid, epoch = init["producer_id"], init["producer_epoch"]
    added = env.call(ApiKey.ADD_PARTITIONS_TO_TXN, 3, {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch,
                                                      "v3_and_below_topics": [{"name": env.topic, "partitions": [0]}]})
    assert _only(_only(added["results_by_topic_v3_and_below"])["results_by_partition"])["partition_error_code"] == 0, added
    return pid, epoch


def _end(env: Env, tid: str, pid: int, epoch: int, v: int = 3) -> dict:
    return env.call(ApiKey.END_TXN, v, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": False})


def _add_partitions_to_txn(env: Env, v: int) -> None:
    tid = f"{env.prefix}-ap{v}"
    init = env.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
    pid, epoch = init["producer_id"], init["producer_epoch"]
    topics = [{"name": env.topic, "partitions": [0]}]
    if v <= 3:
        body = env.call(ApiKey.ADD_PARTITIONS_TO_TXN, v, {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": topics})
        results = body["results_by_topic_v3_and_below"]
    else:
        body = env.call(ApiKey.ADD_PARTITIONS_TO_TXN, v, {"transactions": [{"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "verify_only": False, "topics": topics}]})
        assert body["error_code"] == 0
        results = _only(body["results_by_transaction"])["topic_results"]
    assert _only(_only(results)["results_by_partition"])["partition_error_code"] == 0, body
    assert _end(env, tid, pid, epoch)["error_code"] == 0


def _add_offsets_to_txn(env: Env, v: int) -> None:
    tid = f"{env.prefix}-ao{v}"
    pid, epoch = _txn_begin(env, tid)
    body = env.call(ApiKey.ADD_OFFSETS_TO_TXN, v, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": f"{env.prefix}-g"})
    assert body["error_code"] == 0, body
    assert _end(env, tid, pid, epoch)["error_code"] == 0


def _end_txn(env: Env, v: int) -> None:
    tid = f"{env.prefix}-e{v}"
    pid, epoch = _txn_begin(env, tid)
    body = _end(env, tid, pid, epoch, v)
    assert body["error_code"] == 0, body
    if v >= 5:
        assert (body["producer_id"], body["producer_epoch"]) == (pid, epoch)


def _txn_offset_commit(env: Env, v: int) -> None:
    tid, group = f"{env.prefix}-to{v}", f"{env.prefix}-tg{v}"
    pid, epoch = _txn_begin(env, tid)
    assert env.call(ApiKey.ADD_OFFSETS_TO_TXN, 3, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": group})["error_code"] == 0
    body = env.call(ApiKey.TXN_OFFSET_COMMIT, v, {"transactional_id": tid, "group_id": group, "producer_id": pid, "producer_epoch": epoch, "generation_id": -1, "member_id": "", "group_instance_id": None,
                                                  "topics": [{"name": env.topic, "partitions": [{"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1, "committed_metadata": ""}]}]})
    assert _only(_only(body["topics"])["partitions"])["error_code"] == 0, body
    assert env.call(ApiKey.END_TXN, 3, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": True})["error_code"] == 0
    fetched = env.call(ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": group, "topics": [{"name": env.topic, "partition_indexes": [0]}]}], "require_stable": True})
    assert _only(_only(_only(fetched["groups"])["topics"])["partitions"])["committed_offset"] == 1


def _list_transactions(env: Env, v: int) -> None:
    tid = f"{env.prefix}-l{v}"
    pid, _epoch = _txn_begin(env, tid)
    body = env.call(ApiKey.LIST_TRANSACTIONS, v, {"state_filters": ["Ongoing"], "producer_id_filters": [pid], "duration_filter": -1, "transactional_id_pattern": None})
    assert body["error_code"] == 0 and [t["transactional_id"] for t in body["transaction_states"]] == [tid], body


def _describe_transactions(env: Env, v: int) -> None:
    tid = f"{env.prefix}-d{v}"
    pid, epoch = _txn_begin(env, tid)
    body = env.call(ApiKey.DESCRIBE_TRANSACTIONS, v, {"transactional_ids": [tid]})
    state = _only(body["transaction_states"])
    assert state["error_code"] == 0 and state["transaction_state"] == "Ongoing" and state["producer_id"] == pid, body
    assert state["topics"] == [{"topic": env.topic, "partitions": [0]}]


def _write_txn_markers(env: Env, v: int) -> None:
    # kafka-transactions abort: an ABORT marker for a transaction linkd coordinates aborts it whole.
    tid = f"{env.prefix}-w{v}"
    pid, epoch = _txn_begin(env, tid)
    records = build_records([b"t"], producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True)
    produced = env.call(ApiKey.PRODUCE, 9, {"transactional_id": tid, "acks": -1, "timeout_ms": 5000, "topic_data": [{"name": env.topic, "partition_data": [{"index": 0, "records": records}]}]})
    assert produced["responses"][0]["partition_responses"][0]["error_code"] == 0, produced
    body = env.call(ApiKey.WRITE_TXN_MARKERS, v, {"markers": [{"producer_id": pid, "producer_epoch": epoch, "transaction_result": False, "coordinator_epoch": 0,
                                                               "topics": [{"name": env.topic, "partition_indexes": [0]}]}]})
    assert _only(_only(_only(body["markers"])["topics"])["partitions"])["error_code"] == 0, body
    state = _only(env.call(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [tid]})["transaction_states"])
    assert (state["transaction_state"], state["producer_epoch"]) == ("CompleteAbort", epoch + 1), state
    # No other coordinator may complete a transaction on linkd: a COMMIT marker is refused.
    commit = env.call(ApiKey.WRITE_TXN_MARKERS, v, {"markers": [{"producer_id": pid, "producer_epoch": epoch + 1, "transaction_result": True, "coordinator_epoch": 0,
                                                                 "topics": [{"name": env.topic, "partition_indexes": [0]}]}]})
    assert _only(_only(_only(commit["markers"])["topics"])["partitions"])["error_code"] == ErrorCode.INVALID_REQUEST, commit


EXERCISES: dict[int, Callable[[Env, int], None]] = {
    ApiKey.PRODUCE: _produce,
    ApiKey.FETCH: _fetch,
    ApiKey.LIST_OFFSETS: _list_offsets,
    ApiKey.METADATA: _metadata,
    ApiKey.OFFSET_COMMIT: _offset_commit,
    ApiKey.OFFSET_FETCH: _offset_fetch,
    ApiKey.FIND_COORDINATOR: _find_coordinator,
    ApiKey.JOIN_GROUP: _join_group,
    ApiKey.HEARTBEAT: _heartbeat,
    ApiKey.LEAVE_GROUP: _leave_group,
    ApiKey.SYNC_GROUP: _sync_group,
    ApiKey.DESCRIBE_GROUPS: _describe_groups,
    ApiKey.LIST_GROUPS: _list_groups,
    ApiKey.API_VERSIONS: _api_versions,
    ApiKey.CREATE_TOPICS: _create_topics,
    ApiKey.DELETE_TOPICS: _delete_topics,
    ApiKey.DELETE_RECORDS: _delete_records,
    ApiKey.INIT_PRODUCER_ID: _init_producer_id,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: _offset_for_leader_epoch,
    ApiKey.DESCRIBE_CONFIGS: _describe_configs,
    ApiKey.ALTER_CONFIGS: _alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _incremental_alter_configs,
    ApiKey.CREATE_PARTITIONS: _create_partitions,
    ApiKey.DELETE_GROUPS: _delete_groups,
    ApiKey.DESCRIBE_CLUSTER: _describe_cluster,
    ApiKey.CREATE_ACLS: _create_acls,
    ApiKey.DESCRIBE_ACLS: _describe_acls,
    ApiKey.DELETE_ACLS: _delete_acls,
    ApiKey.DESCRIBE_LOG_DIRS: _describe_log_dirs,
    ApiKey.ELECT_LEADERS: _elect_leaders,
    ApiKey.LIST_PARTITION_REASSIGNMENTS: _list_partition_reassignments,
    ApiKey.OFFSET_DELETE: _offset_delete,
    ApiKey.UPDATE_FEATURES: _update_features,
    ApiKey.DESCRIBE_PRODUCERS: _describe_producers,
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: _describe_topic_partitions,
    ApiKey.SASL_HANDSHAKE: _sasl_handshake,
    ApiKey.SASL_AUTHENTICATE: _sasl_authenticate,
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: _alter_user_scram_credentials,
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: _describe_user_scram_credentials,
    ApiKey.DESCRIBE_CLIENT_QUOTAS: _describe_client_quotas,
    ApiKey.ADD_PARTITIONS_TO_TXN: _add_partitions_to_txn,
    ApiKey.ADD_OFFSETS_TO_TXN: _add_offsets_to_txn,
    ApiKey.END_TXN: _end_txn,
    ApiKey.TXN_OFFSET_COMMIT: _txn_offset_commit,
    ApiKey.LIST_TRANSACTIONS: _list_transactions,
    ApiKey.DESCRIBE_TRANSACTIONS: _describe_transactions,
    ApiKey.WRITE_TXN_MARKERS: _write_txn_markers,
}


def test_every_advertised_api_has_an_exercise():
    assert set(EXERCISES) == set(SUPPORTED_VERSIONS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", sorted(SUPPORTED_VERSIONS), ids=lambda k: ApiKey(k).name.lower())
def test_every_advertised_version_answers_a_minimal_request(daemon, api):
    env = Env(daemon, ApiKey(api).name)
    failures = {}
    try:
        lo, hi = SUPPORTED_VERSIONS[api]
        for version in range(lo, hi + 1):
            try:
                EXERCISES[api](env, version)
            except Exception as exc:  # collect every failing version, then report them together
                failures[version] = repr(exc)[:300]
                env.close()
                env.conn = WireConnection(daemon.bootstrap)
    finally:
        env.close()
    assert not failures, f"{ApiKey(api).name}: {failures}\n{daemon.logs(40)}"
