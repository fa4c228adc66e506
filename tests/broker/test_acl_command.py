"""Kafka's own ``kafka-acls`` (org.apache.kafka.tools.AclCommand, Kafka 4.1 from Maven Central) adds, lists
and removes ACLs on ``linkd serve --authorizer standard``, and the ACLs it adds are enforced."""

from __future__ import annotations

import uuid

import pytest

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.wire import WireConnection
from tests.peers import PeerUnavailable
from tests.peers.kafka import ensure_tools_libs
from tests.peers.kafkatools import Tool, ToolResult, run_tools


def _kafka_acls(bootstrap: str, *commands: tuple[str, ...]) -> list[ToolResult]:
    """Run ``kafka-acls --bootstrap-server <bootstrap> <command>`` for each command, in order, in one JVM
    (tests/peers/kafkatools.py): one JVM start instead of one per command."""
    if not any(ensure_tools_libs().glob("kafka-tools-[0-9]*.jar")):
        raise PeerUnavailable(f"no kafka-tools jar in {ensure_tools_libs()}")
    return run_tools([Tool("kafka-acls", "--bootstrap-server", bootstrap, *command) for command in commands], timeout=180)


def _produce(bootstrap: str, topic: str) -> int:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 5000, "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": build_records([b"x"])}]}]})
    return body["responses"][0]["partition_responses"][0]["error_code"]


@pytest.mark.timeout(300)
def test_kafka_acls_adds_lists_and_removes_acls_on_linkd(linkd_factory):
    daemon = linkd_factory(extra_args=["--authorizer", "standard", "--super-users", "User:admin"])
    b = daemon.bootstrap
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    with WireConnection(b) as conn:
        created = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 5000})
    # ANONYMOUS is no super user here and the cluster has no ACL: even kafka-acls is refused.
    assert created["topics"][0]["error_code"] == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    [refused] = _kafka_acls(b, ("--list",))
    assert refused.exit_code != 0 and "ClusterAuthorizationException" in refused.stdout + refused.stderr

    daemon.extra_args = ["--authorizer", "standard", "--super-users", "User:ANONYMOUS"]
    daemon.restart()
    b = daemon.bootstrap
    with WireConnection(b) as conn:
        created = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 5000})
    assert created["topics"][0]["error_code"] == 0
    assert _produce(b, topic) == 0
    for added in _kafka_acls(
        b,
        ("--add", "--allow-principal", "User:alice", "--operation", "Read", "--operation", "Describe", "--topic", topic),
        ("--add", "--deny-principal", "User:ANONYMOUS", "--deny-host", "127.0.0.1", "--operation", "Write", "--topic", "orders-", "--resource-pattern-type", "prefixed"),
        ("--add", "--allow-principal", "User:*", "--operation", "All", "--group", "*"),
    ):
        assert added.exit_code == 0, added.stdout + added.stderr

    assert _produce(b, topic) == 0  # a super user is allowed whatever the DENY says

    listed, by_principal, removed, after = _kafka_acls(
        b,
        ("--list",),
        ("--list", "--principal", "User:alice"),
        ("--remove", "--allow-principal", "User:alice", "--operation", "Read", "--topic", topic, "--force"),
        ("--list", "--topic", topic),
    )
    assert listed.exit_code == 0, listed.stderr
    out = listed.stdout
    assert f"ResourcePattern(resourceType=TOPIC, name={topic}, patternType=LITERAL)" in out
    assert "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)" in out
    assert "(principal=User:alice, host=*, operation=DESCRIBE, permissionType=ALLOW)" in out
    assert "ResourcePattern(resourceType=TOPIC, name=orders-, patternType=PREFIXED)" in out
    assert "(principal=User:ANONYMOUS, host=127.0.0.1, operation=WRITE, permissionType=DENY)" in out
    assert "ResourcePattern(resourceType=GROUP, name=*, patternType=LITERAL)" in out
    assert "User:alice" in by_principal.stdout and "User:ANONYMOUS" not in by_principal.stdout

    assert removed.exit_code == 0, removed.stdout + removed.stderr
    assert "operation=READ" not in after.stdout and "operation=DESCRIBE" in after.stdout

    # The ACLs are enforced once ANONYMOUS is an ordinary principal again: its DENY WRITE on orders-* holds.
    daemon.extra_args = ["--authorizer", "standard"]
    daemon.restart()
    assert _produce(daemon.bootstrap, topic) == ErrorCode.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.timeout(120)
def test_kafka_python_admin_creates_describes_and_deletes_acls(linkd_factory):
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import ClusterAuthorizationFailedError, NoError

    daemon = linkd_factory(extra_args=["--authorizer", "standard", "--super-users", "User:ANONYMOUS"])
    client = KafkaAdminClient(bootstrap_servers=daemon.bootstrap)
    try:
        acl = ACL("User:alice", "*", ACLOperation.READ, ACLPermissionType.ALLOW, ResourcePattern(ResourceType.TOPIC, "orders", ACLResourcePatternType.PREFIXED))
        assert client.create_acls([acl])["failed"] == []
        everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
        found, error = client.describe_acls(everything)
        assert error is NoError and [(a.principal, a.resource_pattern.resource_name, a.operation) for a in found] == [("User:alice", "orders", ACLOperation.READ)]
        [(_, deleted, error)] = client.delete_acls([everything])
        assert error is NoError and len(deleted) == 1
        assert client.describe_acls(everything)[0] == []
    finally:
        client.close()
    # Without super users, ANONYMOUS may not even list them: kafka-python raises Kafka's error.
    daemon.extra_args = ["--authorizer", "standard"]
    daemon.restart()
    client = KafkaAdminClient(bootstrap_servers=daemon.bootstrap)
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            client.describe_acls(everything)
    finally:
        client.close()
