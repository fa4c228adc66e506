"""Cluster-level APIs: ApiVersions, Metadata, DescribeCluster, FindCoordinator.

linkd is a one-node cluster for the topics it hosts: every partition is led by this node, which is
also the controller and every group's coordinator.
"""

from __future__ import annotations

from protocol.errors import ErrorCode

from ..topics import TopicError, validate_topic_name
from .context import ZERO_UUID, Body, RequestContext
from .versions import SUPPORTED_VERSIONS

NO_AUTHORIZED_OPERATIONS = -(2**31)
# Authorized-operations bitfield (bit = AclOperation code) granting everything a client may ask about:
# READ(3) WRITE(4) CREATE(5) DELETE(6) ALTER(7) DESCRIBE(8) DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11).
TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))
CLUSTER_OPERATIONS = sum(1 << op for op in (4, 5, 7, 8, 9, 10, 11, 12))
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
    ident = ctx.broker.identity
    return [{"node_id": ident.node_id, "host": ident.host, "port": ident.port, "rack": None}]


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
        "topic_authorized_operations": TOPIC_OPERATIONS if include_ops else NO_AUTHORIZED_OPERATIONS,
    }


def _missing_topic(name, topic_id, code: ErrorCode) -> Body:
    return {"error_code": code, "name": name, "topic_id": topic_id, "is_internal": False, "partitions": []}


async def metadata(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    include_ops = bool(body.get("include_topic_authorized_operations"))
    requested = body.get("topics")
    if requested is None or (ctx.api_version == 0 and not requested):
        topics = [_topic_metadata(ctx, t, include_ops) for t in registry.all()]
    else:
        topics = []
        for item in requested:
            name, topic_id = item.get("name"), item.get("topic_id")
            if name is None and topic_id is not None and topic_id.int != 0:
                topic = registry.by_id(topic_id)
                # The answer's topic name is nullable only from v12; older versions get an empty one.
                unnamed = None if ctx.api_version >= 12 else ""
                topics.append(_topic_metadata(ctx, topic, include_ops) if topic else _missing_topic(unnamed, topic_id, ErrorCode.UNKNOWN_TOPIC_ID))
                continue
            try:
                validate_topic_name(name or "")
            except TopicError:
                topics.append(_missing_topic(name if name is not None or ctx.api_version >= 12 else "", None, ErrorCode.INVALID_TOPIC_EXCEPTION))
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
        "cluster_authorized_operations": CLUSTER_OPERATIONS if body.get("include_cluster_authorized_operations") else NO_AUTHORIZED_OPERATIONS,
        "error_code": ErrorCode.NONE,
    }


async def describe_cluster(ctx: RequestContext, body: Body) -> Body:
    ident = ctx.broker.identity
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "endpoint_type": body.get("endpoint_type", 1),
        "cluster_id": ident.cluster_id,
        "controller_id": ident.node_id,
        "brokers": [{"broker_id": ident.node_id, "host": ident.host, "port": ident.port, "rack": None, "is_fenced": False}],
        "cluster_authorized_operations": CLUSTER_OPERATIONS if body.get("include_cluster_authorized_operations") else NO_AUTHORIZED_OPERATIONS,
    }


def _coordinator_answer(ctx: RequestContext, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type == KEY_TYPE_GROUP:
        return ErrorCode.NONE, None
    if key_type == KEY_TYPE_TRANSACTION:
        if ctx.broker.transactions is not None:
            return ErrorCode.NONE, None  # one node: it coordinates every transactional id (linkd.txn)
        # Non-retriable on purpose: a transactional producer must fail fast, not retry forever.
        return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_UNSUPPORTED
    return ErrorCode.INVALID_REQUEST, f"unsupported coordinator key type {key_type}"


async def find_coordinator(ctx: RequestContext, body: Body) -> Body:
    ident = ctx.broker.identity
    key_type = body.get("key_type", KEY_TYPE_GROUP)
    code, message = _coordinator_answer(ctx, key_type)
    ok = code == ErrorCode.NONE
    if ctx.api_version < 4:
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "error_message": message,
            "node_id": ident.node_id if ok else -1,
            "host": ident.host if ok else "",
            "port": ident.port if ok else -1,
        }
    return {
        "throttle_time_ms": 0,
        "coordinators": [
            {
                "key": key,
                "node_id": ident.node_id if ok else -1,
                "host": ident.host if ok else "",
                "port": ident.port if ok else -1,
                "error_code": code,
                "error_message": message,
            }
            for key in body.get("coordinator_keys", [])
        ],
    }

