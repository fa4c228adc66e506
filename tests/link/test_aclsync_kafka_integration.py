"""ACL sync (linkd/link/aclsync.py) from an Apache Kafka 4.1 source with the StandardAuthorizer.

The link authenticates with SCRAM as the source's least-privilege link user (read side plus DESCRIBE on
the cluster, which DescribeAcls needs). ACLs the filters select appear on linkd within acl.sync.ms,
ACLs deleted at the source disappear, linkd's own ACLs in scope that the source lacks are removed and
those outside the scope stay; the AclSync task reports its rounds. Once the daemon runs without super
users, the synced ACLs decide who reads the mirrors, and a mirror stays read-only whatever they allow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
from confluent_kafka.admin import AdminClient as KafkaAdmin

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection
from tests.link.mirroring import FAST_LINK, admin, produce_confluent, wait_for, wait_mirrored
from tests.peers import PeerUnavailable
from tests.peers.securekafka import LINK_USER, SecuredKafkaBroker

pytestmark = pytest.mark.kafka

SYNC_MS = 500
ANON = "User:ANONYMOUS"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
ANY_ACL = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)


@pytest.fixture(scope="module")
def source():
    from tests.conftest import peer_unavailable
    from tests.peers.kafka import ensure_kafka_libs

    try:
        ensure_kafka_libs()
        broker = SecuredKafkaBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    try:
        broker.start()
        broker.grant_link_read(f"User:{LINK_USER}", "acl-", "acl-")
    except Exception:
        broker.close()
        raise
    yield broker
    broker.close()


def _acl(rtype, name, op, perm=AclPermissionType.ALLOW, principal=ANON, pattern=ResourcePatternType.LITERAL, host="*") -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


def _create(client: KafkaAdmin, bindings: list[AclBinding]) -> None:
    for future in client.create_acls(bindings, request_timeout=15).values():
        future.result(20)


def _delete(client: KafkaAdmin, bindings: list[AclBinding]) -> None:
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type) for b in bindings]
    for future in client.delete_acls(filters, request_timeout=15).values():
        future.result(20)


def _key(b: AclBinding) -> tuple:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def _acls(client: KafkaAdmin) -> set[tuple]:
    return {_key(b) for b in client.describe_acls(ANY_ACL, request_timeout=15).result(20)}


def _fetch_error(bootstrap: str, topic: str) -> int:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.FETCH, 12, {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""})
    return body["responses"][0]["partitions"][0]["error_code"]


def _produce(bootstrap: str, topic: str) -> dict:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": build_records([b"x"])}]}]})
    return body["responses"][0]["partition_responses"][0]


@pytest.mark.timeout(300)
def test_acls_created_and_deleted_on_the_source_follow_on_linkd(source, linkd_factory, tmp_path):
    key = tmp_path / "secrets.key"
    subprocess.run([sys.executable, "-m", "linkd", "secrets", "generate-key", str(key)], check=True, capture_output=True, timeout=30)
    daemon = linkd_factory(extra_args=["--secrets-key-file", str(key), "--authorizer", "standard", "--super-users", ANON])
    tag = uuid.uuid4().hex[:6]
    readable, denied, outside = f"acl-r-{tag}", f"acl-d-{tag}", f"other-{tag}"
    for topic in (readable, denied):
        source.create_topic(topic)
    produce_confluent(source.bootstrap, readable, [(0, None, b"r%d" % i) for i in range(5)])
    produce_confluent(source.bootstrap, denied, [(0, None, b"d%d" % i) for i in range(5)])
    alice, bob, carol = f"User:alice-{tag}", f"User:bob-{tag}", f"User:carol-{tag}"
    T, G = ResourceType.TOPIC, ResourceType.GROUP
    on_source = [
        _acl(T, "acl-", AclOperation.ALL, pattern=ResourcePatternType.PREFIXED),
        _acl(T, denied, AclOperation.READ, AclPermissionType.DENY),
        _acl(G, "acl-", AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
        _acl(G, f"acl-g-{tag}", AclOperation.READ, principal=alice),
        _acl(T, outside, AclOperation.WRITE, principal=bob),  # no filter selects bob: never synced
    ]
    source_admin = KafkaAdmin({"bootstrap.servers": source.bootstrap})
    _create(source_admin, on_source)

    linkd_admin = KafkaAdmin({"bootstrap.servers": daemon.bootstrap})
    stale = _acl(T, readable, AclOperation.WRITE, principal=alice, host="127.0.0.1")  # in scope, not at the source
    untouched = _acl(T, readable, AclOperation.READ, principal=carol)  # outside every filter
    _create(linkd_admin, [stale, untouched])

    filters = {"aclFilters": [{"accessFilter": {"principal": ANON}}, {"resourceFilter": {"resourceType": "any"}, "accessFilter": {"principal": alice}}]}
    client = admin(daemon)
    refused = daemon.cli("link", "create", "src", "--bootstrap-server", source.address("SASL_PLAINTEXT"), "--config", "acl.sync.enable=true")
    assert refused.returncode != 0 and "ACL migration is enabled but acl.filters is not set" in refused.stderr
    client.create_link("src", {
        "bootstrap.servers": source.address("SASL_PLAINTEXT"), **FAST_LINK, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": f'{SCRAM} required username="{LINK_USER}" password="{source.password}";',
        "acl.sync.enable": "true", "acl.filters": json.dumps(filters), "acl.sync.ms": str(SYNC_MS),
    })
    for topic in (readable, denied):
        client.create_mirror(topic, "src")
        wait_mirrored(client, topic, {0: 5})

    expected = {_key(b) for b in on_source[:4]} | {_key(untouched)}
    wait_for(lambda: _acls(linkd_admin) == expected, 20 * SYNC_MS / 1000, "linkd's ACLs equal to the source's in scope")
    described = client.describe_link("src")
    task = next(t for t in described["tasks"] if t["task_name"] == "AclSync")
    assert task["state"] == "ACTIVE" and task["last_success_ms"] and task["runs"] >= 1, task
    counters = described["acl_sync"]
    assert counters["enabled"] and counters["acls_in_scope"] == 4 and counters["created"] == 4 and counters["deleted"] == 1, counters

    # Deleted at the source: gone here within a few rounds; a new one appears.
    _delete(source_admin, [on_source[3]])
    added = _acl(G, f"acl-h-{tag}", AclOperation.DESCRIBE, principal=alice, pattern=ResourcePatternType.PREFIXED)
    _create(source_admin, [added])
    expected = (expected - {_key(on_source[3])}) | {_key(added)}
    wait_for(lambda: _acls(linkd_admin) == expected, 20 * SYNC_MS / 1000, "a source deletion and creation synced")

    answer = _produce(daemon.bootstrap, readable)  # a super user cannot write to a mirror either
    assert answer["error_code"] == ErrorCode.INVALID_REQUEST and "read-only mirror topic" in answer["error_message"]

    # ANONYMOUS an ordinary principal: the synced ACLs decide, and a mirror stays read-only.
    daemon.extra_args = ["--secrets-key-file", str(key), "--authorizer", "standard"]
    daemon.restart()
    assert _fetch_error(daemon.bootstrap, readable) == 0
    assert _fetch_error(daemon.bootstrap, denied) == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    answer = _produce(daemon.bootstrap, readable)  # ALLOW ALL on acl-* for ANONYMOUS
    assert answer["error_code"] == ErrorCode.INVALID_REQUEST and "read-only mirror topic" in answer["error_message"]


@pytest.mark.timeout(120)
def test_acl_sync_without_the_authorizer_reports_in_error_and_changes_nothing(source, linkd_factory):
    daemon = linkd_factory()
    client = admin(daemon)
    client.create_link("plain", {
        "bootstrap.servers": source.bootstrap, **FAST_LINK, "acl.sync.enable": "true", "acl.sync.ms": str(SYNC_MS),
        "acl.filters": json.dumps({"aclFilters": [{}]}),
    })

    def in_error():
        task = next(t for t in client.describe_link("plain")["tasks"] if t["task_name"] == "AclSync")
        return task if task["state"] == "IN_ERROR" else None

    task = wait_for(in_error, 20, "AclSync IN_ERROR")
    assert "--authorizer standard" in task["state_reason"] and task["last_error_code"] == ErrorCode.SECURITY_DISABLED
