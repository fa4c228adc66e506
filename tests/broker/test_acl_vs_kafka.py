"""linkd's authorization answers the way Apache Kafka 4.1's does: the same ACLs on both, the same requests
from an unprivileged principal connecting from 127.0.0.1, the same error codes.

On Kafka (StandardAuthorizer, ANONYMOUS its super user for the setup) the principal is the SASL PLAIN
user ``NOACL_USER``; on linkd (``--authorizer standard``, set up while ANONYMOUS is a super user, then
restarted without) it is User:ANONYMOUS on PLAINTEXT. The ACLs name each side's principal.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection
from tests.peers import PeerUnavailable
from tests.peers.securekafka import NOACL_USER, SecuredKafkaBroker

pytestmark = pytest.mark.kafka
ANON = "User:ANONYMOUS"
ZERO_UUID = uuid.UUID(int=0)
TAG = uuid.uuid4().hex[:6]
OK, READABLE, DENIED_READ, SECRET, GROUP, NOGROUP = (f"ok-{TAG}", f"pre-{TAG}-x", f"pre-{TAG}-deny", f"secret-{TAG}", f"g-{TAG}", f"nog-{TAG}")
TXW, TXNO = f"txw-{TAG}", f"tx-{TAG}"  # WRITE allowed (and so DESCRIBE) / no ACL; neither was ever initialised


def _acls(me: str) -> list[AclBinding]:
    allow, deny = AclPermissionType.ALLOW, AclPermissionType.DENY
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    return [
        AclBinding(ResourceType.TOPIC, OK, lit, me, "127.0.0.1", AclOperation.ALL, allow),
        AclBinding(ResourceType.TOPIC, f"pre-{TAG}-", pre, "User:*", "*", AclOperation.READ, allow),
        AclBinding(ResourceType.TOPIC, DENIED_READ, lit, "User:*", "*", AclOperation.READ, deny),
        AclBinding(ResourceType.TOPIC, f"new-{TAG}-", pre, me, "*", AclOperation.CREATE, allow),
        AclBinding(ResourceType.GROUP, GROUP, pre, me, "*", AclOperation.READ, allow),
        AclBinding(ResourceType.BROKER, "kafka-cluster", lit, me, "10.9.9.9", AclOperation.ALTER, allow),
        AclBinding(ResourceType.TRANSACTIONAL_ID, TXW, lit, me, "*", AclOperation.WRITE, allow),
    ]


def _setup(admin: AdminClient, me: str, bootstrap: str) -> dict[str, uuid.UUID]:
    """Topics and ACLs, made by a super user; returns the topics' ids."""
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (OK, READABLE, DENIED_READ, SECRET)]).values():
        future.result(30)
    for future in admin.create_acls(_acls(me), request_timeout=15).values():
        future.result(20)
    with WireConnection(bootstrap) as conn:
        meta = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": t, "topic_id": ZERO_UUID} for t in (OK, READABLE, SECRET)], "allow_auto_topic_creation": False})
    return {t["name"]: t["topic_id"] for t in meta["topics"]}


@pytest.fixture(scope="module")
def peers():
    from tests.conftest import peer_unavailable
    from tests.peers.kafka import ensure_kafka_libs
    from tests.peers.linkd import LinkdProcess

    try:
        ensure_kafka_libs()
        kafka = SecuredKafkaBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    linkd = LinkdProcess(extra_args=["--authorizer", "standard", "--super-users", ANON])
    try:
        kafka.start()
        kafka_admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        kafka_ids = _setup(kafka_admin, f"User:{NOACL_USER}", kafka.bootstrap)
        linkd.start()
        linkd_admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
        linkd_ids = _setup(linkd_admin, ANON, linkd.bootstrap)
        linkd.extra_args = ["--authorizer", "standard"]
        linkd.restart()
        yield {"kafka": (kafka.address("SASL_PLAINTEXT"), kafka.password, kafka_ids), "linkd": (linkd.bootstrap, None, linkd_ids)}
    finally:
        linkd.close()
        kafka.close()


def _fetch_body(topic: str) -> dict:
    return {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""}


ANY_FILTER = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}
# (what, api, version, body, how to read the error codes out of the answer)
CASES = [
    ("metadata", ApiKey.METADATA, 12, {"topics": [{"name": n, "topic_id": ZERO_UUID} for n in (OK, READABLE, SECRET, f"absent-{TAG}")], "allow_auto_topic_creation": False},
     lambda b: [t["error_code"] for t in b["topics"]]),
    ("metadata all", ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False},
     lambda b: sorted(t["name"] for t in b["topics"] if TAG in t["name"])),
    *[(f"produce {t}", ApiKey.PRODUCE, 9, {"acks": 1, "timeout_ms": 5000, "topic_data": [{"name": t, "partition_data": [{"index": 0, "records": build_records([b"x"])}]}]},
       lambda b: b["responses"][0]["partition_responses"][0]["error_code"]) for t in (OK, READABLE, SECRET)],
    *[(f"fetch {t}", ApiKey.FETCH, 12, _fetch_body(t), lambda b: b["responses"][0]["partitions"][0]["error_code"]) for t in (READABLE, DENIED_READ, SECRET)],
    ("list offsets", ApiKey.LIST_OFFSETS, 9, {"replica_id": -1, "isolation_level": 0, "topics": [{"name": t, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]} for t in (DENIED_READ, SECRET)]},
     lambda b: {t["name"]: t["partitions"][0]["error_code"] for t in b["topics"]}),
    ("offset for leader epoch", ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": -1, "topics": [{"topic": t, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]} for t in (SECRET, READABLE)]},
     lambda b: {t["topic"]: t["partitions"][0]["error_code"] for t in b["topics"]}),
    ("create topics", ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": n, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []} for n in (f"new-{TAG}-a", f"other-{TAG}")], "timeout_ms": 10_000, "validate_only": True},
     lambda b: [t["error_code"] for t in b["topics"]]),
    ("delete topics", ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": n, "topic_id": ZERO_UUID} for n in (READABLE, SECRET, f"absent-{TAG}")], "timeout_ms": 5000},
     lambda b: [r["error_code"] for r in b["responses"]]),
    ("create partitions", ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": READABLE, "count": 2, "assignments": None}], "timeout_ms": 5000, "validate_only": True},
     lambda b: [r["error_code"] for r in b["results"]]),
    ("delete records", ApiKey.DELETE_RECORDS, 2, {"topics": [{"name": READABLE, "partitions": [{"partition_index": 0, "offset": 0}]}], "timeout_ms": 5000},
     lambda b: b["topics"][0]["partitions"][0]["error_code"]),
    ("describe configs", ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 2, "resource_name": n, "configuration_keys": ["retention.ms"]} for n in (OK, READABLE)] + [{"resource_type": 4, "resource_name": "1", "configuration_keys": ["broker.id"]}],
                                                      "include_synonyms": False, "include_documentation": False},
     lambda b: [r["error_code"] for r in b["results"]]),
    ("incremental alter configs", ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": n, "configs": [{"name": "retention.ms", "config_operation": 0, "value": "86400000"}]} for n in (OK, READABLE)], "validate_only": True},
     lambda b: [r["error_code"] for r in b["responses"]]),
    ("init producer id", ApiKey.INIT_PRODUCER_ID, 5, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1}, lambda b: b["error_code"]),
    ("init producer id tx", ApiKey.INIT_PRODUCER_ID, 5, {"transactional_id": f"tx-{TAG}", "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1}, lambda b: b["error_code"]),
    ("find coordinator", ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": [f"{GROUP}-1", NOGROUP]}, lambda b: [c["error_code"] for c in b["coordinators"]]),
    ("join group", ApiKey.JOIN_GROUP, 9, {"group_id": NOGROUP, "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000, "member_id": "", "group_instance_id": None, "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}], "reason": None},
     lambda b: b["error_code"]),
    ("heartbeat", ApiKey.HEARTBEAT, 4, {"group_id": NOGROUP, "generation_id": 1, "member_id": "m", "group_instance_id": None}, lambda b: b["error_code"]),
    *[(f"offset commit {g} {t}", ApiKey.OFFSET_COMMIT, 8, {"group_id": g, "generation_id_or_member_epoch": -1, "member_id": "", "topics": [{"name": t, "partitions": [{"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1, "committed_metadata": ""}]}]},
       lambda b: b["topics"][0]["partitions"][0]["error_code"]) for g, t in ((f"{GROUP}-1", OK), (f"{GROUP}-1", SECRET), (NOGROUP, OK))],
    ("sync group", ApiKey.SYNC_GROUP, 5, {"group_id": NOGROUP, "generation_id": 1, "member_id": "m", "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "range", "assignments": []},
     lambda b: b["error_code"]),
    ("leave group", ApiKey.LEAVE_GROUP, 5, {"group_id": NOGROUP, "members": [{"member_id": "m", "group_instance_id": None, "reason": None}]}, lambda b: b["error_code"]),
    ("list groups", ApiKey.LIST_GROUPS, 4, {"states_filter": []}, lambda b: sorted(g["group_id"] for g in b["groups"] if TAG in g["group_id"])),
    ("alter broker configs", ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 4, "resource_name": "1", "configs": [{"name": "log.cleaner.threads", "config_operation": 0, "value": "1"}]}], "validate_only": True},
     lambda b: [r["error_code"] for r in b["responses"]]),
    ("offset fetch", ApiKey.OFFSET_FETCH, 7, {"group_id": NOGROUP, "topics": None, "require_stable": False}, lambda b: b["error_code"]),
    ("offset fetch topics", ApiKey.OFFSET_FETCH, 7, {"group_id": f"{GROUP}-1", "topics": [{"name": t, "partition_indexes": [0]} for t in (OK, SECRET)], "require_stable": False},
     lambda b: [t["partitions"][0]["error_code"] for t in b["topics"]]),
    ("describe groups", ApiKey.DESCRIBE_GROUPS, 5, {"groups": [f"{GROUP}-1", NOGROUP], "include_authorized_operations": True},
     lambda b: {g["group_id"]: (g["error_code"], g["authorized_operations"]) for g in b["groups"]}),  # Kafka answers the denied ones first
    ("delete groups", ApiKey.DELETE_GROUPS, 2, {"groups_names": [f"{GROUP}-1", NOGROUP]}, lambda b: [r["error_code"] for r in b["results"]]),
    ("offset delete", ApiKey.OFFSET_DELETE, 0, {"group_id": f"{GROUP}-1", "topics": [{"name": OK, "partitions": [{"partition_index": 0}]}]}, lambda b: b["error_code"]),
    ("describe log dirs", ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": None}, lambda b: (b["error_code"], len(b["results"]))),
    ("elect leaders", ApiKey.ELECT_LEADERS, 2, {"election_type": 0, "topic_partitions": [{"topic": READABLE, "partitions": [0]}], "timeout_ms": 5000},
     lambda b: (b["error_code"], [[p["error_code"] for p in r["partition_result"]] for r in b["replica_election_results"]])),
    ("list partition reassignments", ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, {"timeout_ms": 5000, "topics": None}, lambda b: b["error_code"]),
    ("update features", ApiKey.UPDATE_FEATURES, 1, {"timeout_ms": 5000, "feature_updates": [{"feature": "foo.bar", "max_version_level": 1, "allow_downgrade": False}], "validate_only": True},
     lambda b: b["error_code"]),
    ("describe producers", ApiKey.DESCRIBE_PRODUCERS, 0, {"topics": [{"name": t, "partition_indexes": [0]} for t in (OK, SECRET, READABLE)]},
     lambda b: {t["name"]: t["partitions"][0]["error_code"] for t in b["topics"]}),
    ("describe topic partitions", ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": n} for n in (OK, SECRET, f"absent-{TAG}")], "response_partition_limit": 10, "cursor": None},
     lambda b: sorted((t["name"], t["error_code"]) for t in b["topics"])),
    ("describe topic partitions all", ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [], "response_partition_limit": 100, "cursor": None},
     lambda b: sorted(t["name"] for t in b["topics"] if TAG in t["name"])),
    ("create acls", ApiKey.CREATE_ACLS, 3, {"creations": [{"resource_type": 2, "resource_name": "x", "resource_pattern_type": 3, "principal": ANON, "host": "*", "operation": 2, "permission_type": 3}]},
     lambda b: [r["error_code"] for r in b["results"]]),
    ("describe acls", ApiKey.DESCRIBE_ACLS, 3, ANY_FILTER, lambda b: b["error_code"]),
    ("delete acls", ApiKey.DELETE_ACLS, 3, {"filters": [ANY_FILTER]}, lambda b: [r["error_code"] for r in b["filter_results"]]),
    ("describe cluster", ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True, "endpoint_type": 1}, lambda b: (b["error_code"], b["cluster_authorized_operations"])),
    *[(f"add partitions to txn {tid}", ApiKey.ADD_PARTITIONS_TO_TXN, 3,
       {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": 1, "v3_and_below_producer_epoch": 0, "v3_and_below_topics": [{"name": t, "partitions": [0]} for t in (OK, SECRET, READABLE)]},
       lambda b: {t["name"]: t["results_by_partition"][0]["partition_error_code"] for t in b["results_by_topic_v3_and_below"]}) for tid in (TXW, TXNO)],
    ("add partitions to txn v4", ApiKey.ADD_PARTITIONS_TO_TXN, 4,
     {"transactions": [{"transactional_id": TXW, "producer_id": 1, "producer_epoch": 0, "verify_only": False, "topics": [{"name": OK, "partitions": [0]}]}]},
     lambda b: (b["error_code"], len(b["results_by_transaction"]))),
    *[(f"add offsets to txn {tid} {g}", ApiKey.ADD_OFFSETS_TO_TXN, 3, {"transactional_id": tid, "producer_id": 1, "producer_epoch": 0, "group_id": g}, lambda b: b["error_code"])
      for tid, g in ((TXW, NOGROUP), (TXNO, f"{GROUP}-1"))],
    *[(f"txn offset commit {tid} {g}", ApiKey.TXN_OFFSET_COMMIT, 3,
       {"transactional_id": tid, "group_id": g, "producer_id": 1, "producer_epoch": 0, "generation_id": -1, "member_id": "", "group_instance_id": None,
        "topics": [{"name": t, "partitions": [{"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1, "committed_metadata": ""}]} for t in (SECRET, READABLE)]},
       lambda b: [(t["name"], t["partitions"][0]["error_code"]) for t in b["topics"]]) for tid, g in ((TXNO, f"{GROUP}-1"), (TXW, NOGROUP))],
    ("txn offset commit denied topic", ApiKey.TXN_OFFSET_COMMIT, 3,
     {"transactional_id": TXW, "group_id": f"{GROUP}-1", "producer_id": 1, "producer_epoch": 0, "generation_id": -1, "member_id": "", "group_instance_id": None,
      "topics": [{"name": SECRET, "partitions": [{"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1, "committed_metadata": ""}]}]},
     lambda b: [(t["name"], t["partitions"][0]["error_code"]) for t in b["topics"]]),
    ("end txn", ApiKey.END_TXN, 5, {"transactional_id": TXNO, "producer_id": 1, "producer_epoch": 0, "committed": True}, lambda b: (b["error_code"], b["producer_id"], b["producer_epoch"])),
    ("list transactions", ApiKey.LIST_TRANSACTIONS, 1, {"state_filters": [], "producer_id_filters": [], "duration_filter": -1},
     lambda b: (b["error_code"], sorted(s["transactional_id"] for s in b["transaction_states"] if TAG in s["transactional_id"]))),
    # (Only the denied id: Kafka answers an allowed one NOT_COORDINATOR until its transaction log topic exists.)
    ("describe transactions", ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [TXNO]},
     lambda b: tuple(sorted((k, str(v)) for k, v in b["transaction_states"][0].items()))),
    ("metadata operations", ApiKey.METADATA, 12, {"topics": [{"name": n, "topic_id": ZERO_UUID} for n in (OK, READABLE, DENIED_READ)], "allow_auto_topic_creation": False, "include_topic_authorized_operations": True},
     lambda b: [t["topic_authorized_operations"] for t in b["topics"]]),
]


def _by_id_cases(ids: dict[str, uuid.UUID]) -> list:
    """Requests that name topics by id (each side's own ids): the answers must not tell a denied id's name."""
    unknown = uuid.uuid4()
    names = {i: n for n, i in ids.items()}
    fetch = _fetch_body("")
    fetch["topics"] = [{"topic_id": ids[t], "partitions": fetch["topics"][0]["partitions"]} for t in (READABLE, SECRET)] + [{"topic_id": unknown, "partitions": fetch["topics"][0]["partitions"]}]
    return [
        ("metadata by id", ApiKey.METADATA, 12, {"topics": [{"name": None, "topic_id": i} for i in (ids[READABLE], ids[SECRET], unknown)], "allow_auto_topic_creation": False},
         lambda b: sorted((t["error_code"], t["name"] or "") for t in b["topics"])),  # Kafka answers unknown ids first, then the rest
        ("fetch by id", ApiKey.FETCH, 13, fetch, lambda b: {names.get(t["topic_id"], "unknown"): t["partitions"][0]["error_code"] for t in b["responses"]}),
        ("delete topics by id", ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": None, "topic_id": i} for i in (ids[READABLE], ids[SECRET], unknown)], "timeout_ms": 5000},
         lambda b: sorted((r["error_code"], r["name"] or "") for r in b["responses"])),
    ]


# Kafka's coordinators load in the background after start: these mean "ask again", not an answer.
RETRIABLE = {14, 15, 16}  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR


def _codes(value) -> set:
    if isinstance(value, dict):
        return set(value.values())
    if isinstance(value, list | tuple):
        return {c for v in value for c in _codes(v)}
    return {value}


def _settled(conn: WireConnection, api, version, body, read):
    deadline = time.monotonic() + 60
    while True:
        answer = read(conn.request(api, version, body))
        if not (_codes(answer) & RETRIABLE) or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def _sasl_plain(conn: WireConnection, user: str, password: str) -> None:
    assert conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
    answer = conn.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\0" + user.encode() + b"\0" + password.encode()})
    assert answer["error_code"] == 0, answer


@pytest.mark.timeout(300)
def test_the_same_acls_give_the_same_answers_as_apache_kafka(peers):
    answers: dict[str, dict[str, object]] = {"kafka": {}, "linkd": {}}
    for who, (bootstrap, password, ids) in peers.items():
        with WireConnection(bootstrap) as conn:
            if password is not None:
                _sasl_plain(conn, NOACL_USER, password)
            for what, api, version, body, read in CASES + _by_id_cases(ids):
                answers[who][what] = _settled(conn, api, version, body, read)
    differences = {what: {"kafka": answers["kafka"][what], "linkd": answers["linkd"][what]} for what in answers["kafka"] if answers["kafka"][what] != answers["linkd"][what]}
    assert not differences, "\n".join(f"{k}: {v}" for k, v in differences.items())
