"""Cluster-level APIs: ApiVersions, Metadata, DescribeCluster, FindCoordinator.

linkd is a one-node cluster for the topics it hosts: every partition is led by this node, which is
also the controller and every group's coordinator.
"""

from __future__ import annotations

from protocol.errors import ErrorCode

from ..topics import TopicError, validate_topic_name
from .acl import CLUSTER_NAME
from .context import ZERO_UUID, Body, RequestContext, authorized_operations
from .versions import SUPPORTED_VERSIONS

NO_AUTHORIZED_OPERATIONS = -(2**31)
# Authorized-operations bitfields (bit = AclOperation code) without an authorizer: every operation the
# resource type supports, as Kafka answers. Topic: READ(3) WRITE(4) CREATE(5) DELETE(6) ALTER(7)
# DESCRIBE(8) DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11); cluster: CREATE ALTER DESCRIBE CLUSTER_ACTION(9)
# DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE(12).
TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))
CLUSTER_OPERATIONS = sum(1 << op for op in (5, 7, 8, 9, 10, 11, 12))
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1
TRANSACTIONS_UNSUPPORTED = "this linkd has no transaction coordinator"


async def api_versions(ctx: RequestContext, body: Body) -> Body:
    return {
        "error_code": ErrorCode.NONE,
        "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(SUPPORTED_VERSIONS.items())],
        "throttle_time_ms": 0,
        "supported_features": [],
        "finalized_features_epoch": -1,
        "finalized_features": [],
    }


def _broker_list(ctx: RequestContext) -> list[Body]:
    host, port = ctx.broker.address_for(ctx.session)
    return [{"node_id": ctx.broker.identity.node_id, "host": host, "port": port, "rack": None}]


def _topic_metadata(ctx: RequestContext, topic, include_ops: bool) -> Body:
    node = ctx.broker.identity.node_id
    return {
        "error_code": ErrorCode.NONE,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": False,
        "partitions": [
            {
                "error_code": ErrorCode.NONE,
                "partition_index": p,
                "leader_id": node,
                "leader_epoch": topic.advertised_epoch(p),
                "replica_nodes": [node],
                "isr_nodes": [node],
                "offline_replicas": [],
            }
            for p in range(len(topic.logs))
        ],
        "topic_authorized_operations": authorized_operations(ctx, "TOPIC", topic.name, TOPIC_OPERATIONS) if include_ops else NO_AUTHORIZED_OPERATIONS,
    }


def _missing_topic(name, topic_id, code: ErrorCode) -> Body:
    return {"error_code": code, "name": name, "topic_id": topic_id, "is_internal": False, "partitions": []}


async def metadata(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    include_ops = bool(body.get("include_topic_authorized_operations"))
    requested = body.get("topics")
    if requested is None or (ctx.api_version == 0 and not requested):
        # Only the topics the principal may describe are listed (Kafka's rule for "all topics").
        topics = [_topic_metadata(ctx, t, include_ops) for t in registry.all() if ctx.authorized("DESCRIBE", "TOPIC", t.name)]
    else:
        topics = []
        for item in requested:
            name, topic_id = item.get("name"), item.get("topic_id")
            if name is None and topic_id is not None and topic_id.int != 0:
                topic = registry.by_id(topic_id)
                # The answer's topic name is nullable only from v12; older versions get an empty one.
                unnamed = None if ctx.api_version >= 12 else ""
                if topic is not None and not ctx.authorized("DESCRIBE", "TOPIC", topic.name):
                    topics.append(_missing_topic(unnamed, topic_id, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                    continue
                topics.append(_topic_metadata(ctx, topic, include_ops) if topic else _missing_topic(unnamed, topic_id, ErrorCode.UNKNOWN_TOPIC_ID))
                continue
            try:
                validate_topic_name(name or "")
            except TopicError:
                topics.append(_missing_topic(name if name is not None or ctx.api_version >= 12 else "", None, ErrorCode.INVALID_TOPIC_EXCEPTION))
                continue
            if not ctx.authorized("DESCRIBE", "TOPIC", name):
                # Whether or not it exists: an unauthorized client learns nothing about the name.
                topics.append(_missing_topic(name, None, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            topic = registry.get(name)
            topics.append(_topic_metadata(ctx, topic, include_ops) if topic else _missing_topic(name, None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
    for t in topics:
        if t.get("topic_id") is None:
            t["topic_id"] = ZERO_UUID
    return {
        "throttle_time_ms": 0,
        "brokers": _broker_list(ctx),
        "cluster_id": ctx.broker.identity.cluster_id,
        "controller_id": ctx.broker.identity.node_id,
        "topics": topics,
        "cluster_authorized_operations": _cluster_operations(ctx) if body.get("include_cluster_authorized_operations") else NO_AUTHORIZED_OPERATIONS,
        "error_code": ErrorCode.NONE,
    }


def _cluster_operations(ctx: RequestContext) -> int:
    """Kafka answers 0 to a principal that may not even DESCRIBE the cluster."""
    if not ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_NAME):
        return 0
    return authorized_operations(ctx, "CLUSTER", CLUSTER_NAME, CLUSTER_OPERATIONS)


async def describe_cluster(ctx: RequestContext, body: Body) -> Body:
    ident = ctx.broker.identity
    host, port = ctx.broker.address_for(ctx.session)
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "endpoint_type": body.get("endpoint_type", 1),
        "cluster_id": ident.cluster_id,
        "controller_id": ident.node_id,
        "brokers": [{"broker_id": ident.node_id, "host": host, "port": port, "rack": None, "is_fenced": False}],
        "cluster_authorized_operations": _cluster_operations(ctx) if body.get("include_cluster_authorized_operations") else NO_AUTHORIZED_OPERATIONS,
    }


def _coordinator_answer(ctx: RequestContext, key_type: int, key: str) -> tuple[ErrorCode, str | None]:
    if key_type == KEY_TYPE_GROUP:
        if not ctx.authorized("DESCRIBE", "GROUP", key):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, None
        return ErrorCode.NONE, None
    if key_type == KEY_TYPE_TRANSACTION:
        if not ctx.authorized("DESCRIBE", "TRANSACTIONAL_ID", key):
            return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
        if ctx.broker.transactions is not None:
            return ErrorCode.NONE, None  # one node: it coordinates every transactional id (linkd.txn)
        # Non-retriable on purpose: a transactional producer must fail fast, not retry forever.
        return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_UNSUPPORTED
    return ErrorCode.INVALID_REQUEST, f"unsupported coordinator key type {key_type}"


def _coordinator(ctx: RequestContext, key_type: int, key: str) -> Body:
    ident = ctx.broker.identity
    host, port = ctx.broker.address_for(ctx.session)
    code, message = _coordinator_answer(ctx, key_type, key)
    ok = code == ErrorCode.NONE
    return {
        "key": key,
        "node_id": ident.node_id if ok else -1,
        "host": host if ok else "",
        "port": port if ok else -1,
        "error_code": code,
        "error_message": message,
    }


async def find_coordinator(ctx: RequestContext, body: Body) -> Body:
    key_type = body.get("key_type", KEY_TYPE_GROUP)
    if ctx.api_version < 4:
        answer = _coordinator(ctx, key_type, body.get("key") or "")
        del answer["key"]
        return {"throttle_time_ms": 0, **answer}
    return {"throttle_time_ms": 0, "coordinators": [_coordinator(ctx, key_type, key) for key in body.get("coordinator_keys", [])]}


async def sasl_handshake_without_sasl(ctx: RequestContext, body: Body) -> Body:
    return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": []}


async def sasl_authenticate_without_sasl(ctx: RequestContext, body: Body) -> Body:
    message = f"SASL authentication is not enabled on listener {ctx.session.listener} ({ctx.session.security_protocol})"
    return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "error_message": message, "auth_bytes": b"", "session_lifetime_ms": 0}
