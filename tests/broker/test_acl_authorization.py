"""Authorization on linkd's Kafka listener (linkd/broker/acl.py, the handlers, groupauth.py), over real
sockets against ``linkd serve --authorizer standard``.

The principal available on a PLAINTEXT listener is User:ANONYMOUS from 127.0.0.1. The ACLs are made
while ANONYMOUS is a super user; the daemon then restarts without super users (the ACLs persist in the
control store) and every API is tried on resources the ACLs allow and deny: a denied call gets Kafka's
error and changes nothing, an allowed one works. confluent-kafka's clients see the same.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection

ZERO_UUID = uuid.UUID(int=0)
TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED = ErrorCode.TOPIC_AUTHORIZATION_FAILED, ErrorCode.GROUP_AUTHORIZATION_FAILED, ErrorCode.CLUSTER_AUTHORIZATION_FAILED
ANON = "User:ANONYMOUS"


def _binding(rtype, name, op, perm="ALLOW", principal=ANON, host="*", pattern=ResourcePatternType.LITERAL) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, perm if not isinstance(perm, str) else getattr(AclPermissionType, perm))


class World:
    """Topic and group names of one test run, and wire helpers."""

    def __init__(self, daemon) -> None:
        tag = uuid.uuid4().hex[:6]
        self.daemon = daemon
        self.ok = f"ok-{tag}"  # ALLOW ALL for ANONYMOUS from 127.0.0.1
        self.pre = f"pre-{tag}-"  # PREFIXED ALLOW READ for User:*
        self.readable = self.pre + "x"
        self.pre_denied = self.pre + "deny"  # plus a LITERAL DENY READ for User:*
        self.otherhost = f"otherhost-{tag}"  # ALLOW ALL, but only from 10.9.9.9
        self.secret = f"secret-{tag}"  # no ACL at all
        self.new = f"new-{tag}-"  # PREFIXED ALLOW CREATE
        self.group = f"g-ok-{tag}"  # PREFIXED ALLOW READ on groups
        self.group_denied = f"g-no-{tag}"
        self.conn = WireConnection(daemon.bootstrap)

    def call(self, api, version, body):
        return self.conn.request(api, version, body)

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = WireConnection(self.daemon.bootstrap)

    def create(self, name: str, partitions: int = 1) -> int:
        body = self.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000})
        return body["topics"][0]["error_code"]

    def produce(self, name: str, value: bytes = b"v") -> dict:
        body = self.call(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": name, "partition_data": [{"index": 0, "records": build_records([value])}]}]})
        return body["responses"][0]["partition_responses"][0]

    def metadata(self, names: list[str] | None, include_ops: bool = False) -> dict:
        topics = None if names is None else [{"name": n, "topic_id": ZERO_UUID} for n in names]
        body = self.call(ApiKey.METADATA, 12, {"topics": topics, "allow_auto_topic_creation": False, "include_topic_authorized_operations": include_ops})
        return {t["name"]: t for t in body["topics"]}

    def end_offset(self, name: str) -> tuple[int, int]:
        body = self.call(ApiKey.LIST_OFFSETS, 9, {"replica_id": -1, "isolation_level": 0, "topics": [{"name": name, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
        part = body["topics"][0]["partitions"][0]
        return part["error_code"], part["offset"]

    def fetch(self, name: str) -> dict:
        body = self.call(ApiKey.FETCH, 12, {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": name, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""})
        return body["responses"][0]["partitions"][0]

    def commit(self, group: str, topic: str) -> int:
        body = self.call(ApiKey.OFFSET_COMMIT, 8, {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "", "topics": [{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1, "committed_metadata": ""}]}]})
        return body["topics"][0]["partitions"][0]["error_code"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.peers.linkd import LinkdProcess

    daemon = LinkdProcess(extra_args=["--authorizer", "standard", "--super-users", ANON]).start()
    try:
        w = World(daemon)
        for name in (w.ok, w.readable, w.pre_denied, w.otherhost, w.secret):
            assert w.create(name) == 0
            assert w.produce(name, b"seed")["error_code"] == 0
        admin = AdminClient({"bootstrap.servers": daemon.bootstrap})
        T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
        bindings = [
            _binding(T, w.ok, AclOperation.ALL, host="127.0.0.1"),
            _binding(T, w.pre, AclOperation.READ, principal="User:*", pattern=ResourcePatternType.PREFIXED),
            _binding(T, w.pre_denied, AclOperation.READ, "DENY", principal="User:*"),
            _binding(T, w.otherhost, AclOperation.ALL, host="10.9.9.9"),
            _binding(T, w.new, AclOperation.CREATE, pattern=ResourcePatternType.PREFIXED),
            _binding(G, w.group, AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
            _binding(C, "kafka-cluster", AclOperation.ALTER, host="10.9.9.9"),  # the cluster has ACLs, none for us
        ]
        for future in admin.create_acls(bindings, request_timeout=10).values():
            future.result(10)
        # ANONYMOUS is no longer a super user; the ACLs come back from the control store.
        w.conn.close()
        daemon.extra_args = ["--authorizer", "standard"]
        daemon.restart()
        w.reconnect()
        yield w
        w.conn.close()
    finally:
        daemon.close()


@pytest.mark.timeout(120)
def test_metadata_lists_only_describable_topics_and_hides_existence(world):
    listed = world.metadata(None)
    assert {world.ok, world.readable, world.pre_denied} <= set(listed)  # DENY READ does not deny DESCRIBE
    assert world.secret not in listed and world.otherhost not in listed
    named = world.metadata([world.secret, f"absent-{uuid.uuid4().hex[:4]}", world.readable])
    assert [t["error_code"] for t in named.values()] == [TOPIC_DENIED, TOPIC_DENIED, 0]
    assert named[world.secret]["partitions"] == []
    ops = world.metadata([world.ok, world.readable], include_ops=True)
    assert ops[world.ok]["topic_authorized_operations"] == sum(1 << o for o in (3, 4, 5, 6, 7, 8, 10, 11))
    assert ops[world.readable]["topic_authorized_operations"] == (1 << 3) | (1 << 8)  # READ, and DESCRIBE implied


@pytest.mark.timeout(120)
def test_produce_needs_write_and_a_denied_produce_appends_nothing(world):
    assert world.produce(world.ok)["error_code"] == 0
    before = world.end_offset(world.readable)
    assert world.produce(world.readable)["error_code"] == TOPIC_DENIED
    assert world.produce(world.secret)["error_code"] == TOPIC_DENIED
    assert world.produce(world.otherhost)["error_code"] == TOPIC_DENIED  # its ACL is for another host
    assert world.end_offset(world.readable) == before


@pytest.mark.timeout(120)
def test_fetch_and_offsets_need_read_or_describe_and_deny_wins(world):
    assert world.fetch(world.readable)["error_code"] == 0 and b"seed" in bytes(world.fetch(world.readable)["records"])
    assert world.fetch(world.pre_denied)["error_code"] == TOPIC_DENIED  # PREFIXED ALLOW READ, LITERAL DENY READ
    assert world.fetch(world.secret)["error_code"] == TOPIC_DENIED and world.fetch(world.secret)["records"] is None
    assert world.end_offset(world.secret) == (TOPIC_DENIED, -1)
    epoch = world.call(ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": -1, "topics": [{"topic": t, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]} for t in (world.secret, world.readable)]})
    assert [t["partitions"][0]["error_code"] for t in epoch["topics"]] == [TOPIC_DENIED, 0]


@pytest.mark.timeout(120)
def test_topic_administration_needs_create_delete_alter(world):
    created = f"{world.new}a"
    assert world.create(created) == 0
    refused = f"other-{uuid.uuid4().hex[:6]}"
    assert world.create(refused) == TOPIC_DENIED
    assert not (world.daemon.data_dir / "logs" / f"{refused}-0").exists()
    deleted = world.call(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": world.readable, "topic_id": ZERO_UUID}, {"name": world.secret, "topic_id": ZERO_UUID}], "timeout_ms": 5000})
    assert [r["error_code"] for r in deleted["responses"]] == [TOPIC_DENIED, TOPIC_DENIED]
    assert world.metadata([world.readable])[world.readable]["error_code"] == 0
    grown = world.call(ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": world.readable, "count": 3, "assignments": None}, {"name": world.ok, "count": 2, "assignments": None}], "timeout_ms": 5000, "validate_only": False})
    assert [r["error_code"] for r in grown["results"]] == [TOPIC_DENIED, 0]
    assert len(world.metadata([world.readable])[world.readable]["partitions"]) == 1
    before = world.end_offset(world.ok)
    records = world.call(ApiKey.DELETE_RECORDS, 2, {"topics": [{"name": world.readable, "partitions": [{"partition_index": 0, "offset": -1}]}, {"name": world.ok, "partitions": [{"partition_index": 0, "offset": before[1]}]}], "timeout_ms": 5000})
    assert [t["partitions"][0]["error_code"] for t in records["topics"]] == [TOPIC_DENIED, 0]


@pytest.mark.timeout(120)
def test_configs_need_describe_configs_and_alter_configs(world):
    resources = [{"resource_type": 2, "resource_name": n, "configuration_keys": ["retention.ms"]} for n in (world.ok, world.readable)]
    resources.append({"resource_type": 4, "resource_name": "1", "configuration_keys": None})
    described = world.call(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": resources, "include_synonyms": False, "include_documentation": False})
    assert [r["error_code"] for r in described["results"]] == [0, TOPIC_DENIED, CLUSTER_DENIED]
    change = [{"name": "retention.ms", "config_operation": 0, "value": "1234"}]
    altered = world.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": n, "configs": change} for n in (world.ok, world.readable)], "validate_only": False})
    assert [r["error_code"] for r in altered["responses"]] == [0, TOPIC_DENIED]
    again = world.call(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": resources[:1], "include_synonyms": False, "include_documentation": False})
    assert again["results"][0]["configs"][0]["value"] == "1234"


@pytest.mark.timeout(120)
def test_groups_need_read_or_describe_on_the_group_and_read_on_the_topic(world):
    g = f"{world.group}-1"
    coordinator = world.call(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": [g, world.group_denied]})
    assert [c["error_code"] for c in coordinator["coordinators"]] == [0, GROUP_DENIED]
    join = {"group_id": world.group_denied, "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000, "member_id": "", "group_instance_id": None, "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}], "reason": None}
    assert world.call(ApiKey.JOIN_GROUP, 9, join)["error_code"] == GROUP_DENIED
    assert world.call(ApiKey.HEARTBEAT, 4, {"group_id": world.group_denied, "generation_id": 1, "member_id": "m", "group_instance_id": None})["error_code"] == GROUP_DENIED
    assert world.commit(g, world.ok) == 0
    assert world.commit(g, world.secret) == TOPIC_DENIED
    assert world.commit(world.group_denied, world.ok) == GROUP_DENIED
    fetched = world.call(ApiKey.OFFSET_FETCH, 7, {"group_id": g, "topics": None, "require_stable": False})
    assert [t["name"] for t in fetched["topics"]] == [world.ok]
    assert world.call(ApiKey.OFFSET_FETCH, 7, {"group_id": world.group_denied, "topics": None, "require_stable": False})["error_code"] == GROUP_DENIED
    listed = world.call(ApiKey.LIST_GROUPS, 5, {"states_filter": [], "types_filter": []})
    assert g in [x["group_id"] for x in listed["groups"]]
    described = world.call(ApiKey.DESCRIBE_GROUPS, 5, {"groups": [g, world.group_denied], "include_authorized_operations": True})
    assert [d["error_code"] for d in described["groups"]] == [0, GROUP_DENIED]
    assert described["groups"][0]["authorized_operations"] == (1 << 3) | (1 << 8)  # READ, DESCRIBE
    deleted = world.call(ApiKey.DELETE_GROUPS, 2, {"groups_names": [g]})
    assert deleted["results"][0]["error_code"] == GROUP_DENIED  # READ on a group does not give DELETE
    assert world.call(ApiKey.OFFSET_FETCH, 7, {"group_id": g, "topics": None, "require_stable": False})["topics"]


@pytest.mark.timeout(120)
def test_cluster_apis_need_cluster_permissions(world):
    assert world.call(ApiKey.CREATE_ACLS, 3, {"creations": [{"resource_type": 2, "resource_name": "x", "resource_pattern_type": 3, "principal": ANON, "host": "*", "operation": 2, "permission_type": 3}]})["results"][0]["error_code"] == CLUSTER_DENIED
    assert world.call(ApiKey.DESCRIBE_ACLS, 3, {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1})["error_code"] == CLUSTER_DENIED
    deleted = world.call(ApiKey.DELETE_ACLS, 3, {"filters": [{"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}]})
    assert deleted["filter_results"][0]["error_code"] == CLUSTER_DENIED
    cluster = world.call(ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True, "endpoint_type": 1})
    assert cluster["error_code"] == 0 and cluster["cluster_authorized_operations"] == 0
    # An idempotent producer: WRITE on some topic (ALL on world.ok) is enough; a transactional id needs its own ACL.
    assert world.call(ApiKey.INIT_PRODUCER_ID, 5, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})["error_code"] == 0
    assert world.call(ApiKey.INIT_PRODUCER_ID, 5, {"transactional_id": "tx", "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})["error_code"] == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


@pytest.mark.timeout(120)
def test_confluent_kafka_clients_see_kafkas_authorization_errors(world):
    producer = Producer({"bootstrap.servers": world.daemon.bootstrap, "message.timeout.ms": 10_000})
    errors = []
    producer.produce(world.readable, b"nope", on_delivery=lambda err, msg: errors.append(err))
    producer.produce(world.ok, b"yes", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(20)
    assert sorted(e.code() if e else 0 for e in errors) == sorted([0, KafkaError.TOPIC_AUTHORIZATION_FAILED])
    consumer = Consumer({"bootstrap.servers": world.daemon.bootstrap, "group.id": f"{world.group}-c", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([world.ok])
        got = None
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got = msg.value()
                break
        assert got is not None  # the group may read what it may READ (earlier records may be deleted by now)
    finally:
        consumer.close()
    admin = AdminClient({"bootstrap.servers": world.daemon.bootstrap})
    with pytest.raises(KafkaException) as raised:
        admin.delete_topics([world.readable], request_timeout=10)[world.readable].result(15)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # (librdkafka drops DescribeAcls' error code, so CreateAcls is the ACL API checked through it.)
    refused = _binding(ResourceType.TOPIC, world.ok, AclOperation.READ, principal="User:mallory")
    with pytest.raises(KafkaException) as raised:
        admin.create_acls([refused], request_timeout=10)[refused].result(15)
    assert raised.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def _operations(bootstrap: str, topic: str) -> tuple[int, int, int]:
    with WireConnection(bootstrap) as conn:
        meta = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": topic, "topic_id": ZERO_UUID}], "allow_auto_topic_creation": False,
                                                   "include_topic_authorized_operations": True})
        cluster = conn.request(ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True, "endpoint_type": 1})
        old_meta = conn.request(ApiKey.METADATA, 10, {"topics": None, "allow_auto_topic_creation": False, "include_cluster_authorized_operations": True,
                                                       "include_topic_authorized_operations": False})
    return meta["topics"][0]["topic_authorized_operations"], cluster["cluster_authorized_operations"], old_meta["cluster_authorized_operations"]


@pytest.mark.timeout(180)
def test_authorized_operations_match_apache_kafka_without_an_authorizer_and_for_a_super_user(kafka_broker, linkd_factory):
    from confluent_kafka.admin import NewTopic

    topic = f"ops-{uuid.uuid4().hex[:6]}"
    kafka_admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in kafka_admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    kafka = _operations(kafka_broker.bootstrap, topic)
    for extra in ([], ["--authorizer", "standard", "--super-users", ANON]):
        daemon = linkd_factory(extra_args=extra)
        with WireConnection(daemon.bootstrap) as conn:
            conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 5000})
        assert _operations(daemon.bootstrap, topic) == kafka, extra


@pytest.mark.timeout(60)
def test_an_acks_0_produce_refused_closes_the_connection_as_kafka_does(world):
    from protocol.messages import RequestHeader, encode_request
    from tests.broker.wire import ConnectionClosed

    def fire_and_forget(conn: WireConnection, topic: str) -> None:
        body = {"acks": 0, "timeout_ms": 5000, "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": build_records([b"f"])}]}]}
        conn.send_bytes(encode_request(RequestHeader(ApiKey.PRODUCE, 9, 99, "acks0"), body))

    with WireConnection(world.daemon.bootstrap) as conn:
        fire_and_forget(conn, world.ok)
        assert conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})["error_code"] == 0
        before = world.end_offset(world.readable)
        fire_and_forget(conn, world.readable)  # no WRITE: nothing to answer with, so the connection goes
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    assert world.end_offset(world.readable) == before
