"""Replica-level APIs answered as a one-node, one-replica Kafka cluster answers them:
DescribeTopicPartitions (KIP-966), ElectLeaders and ListPartitionReassignments.

Every partition has one replica, this node, which is its leader: a preferred or unclean election is never
needed (``ELECTION_NOT_NEEDED``), there is no eligible-leader-replica set beyond it and no reassignment is
ever in progress. Answers, messages included, are those a single-node Apache Kafka 4.1 gives
(tests/broker/test_kafka_tools.py compares them).
"""

from __future__ import annotations

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME
from .cluster import TOPIC_OPERATIONS
from .context import ZERO_UUID, Body, RequestContext, authorized_operations

ELECTION_NOT_NEEDED_MESSAGE = "Leader election not needed for topic partition."


def _partition(ctx: RequestContext, topic, index: int) -> Body:
    node = ctx.broker.identity.node_id
    return {"error_code": ErrorCode.NONE, "partition_index": index, "leader_id": node,
            "leader_epoch": topic.advertised_epoch(index), "replica_nodes": [node], "isr_nodes": [node],
            "eligible_leader_replicas": [], "last_known_elr": [], "offline_replicas": []}


async def describe_topic_partitions(ctx: RequestContext, body: Body) -> Body:
    """Topics in name order, at most ``response_partition_limit`` partitions, then a cursor to go on from."""
    registry = ctx.broker.topics
    requested = body.get("topics") or []
    # Listing every topic shows only the describable ones (as Metadata does); a named one is refused.
    names = sorted({t["name"] for t in requested}) if requested else sorted(t.name for t in registry.all() if ctx.authorized("DESCRIBE", "TOPIC", t.name))
    cursor = body.get("cursor")
    if cursor is not None and cursor["partition_index"] < 0:
        # Kafka refuses the whole request (InvalidRequestException): every named topic answers INVALID_REQUEST.
        return {"throttle_time_ms": 0, "next_cursor": None, "topics": [
            {"error_code": ErrorCode.INVALID_REQUEST, "name": t["name"], "topic_id": ZERO_UUID, "is_internal": False,
             "partitions": [], "topic_authorized_operations": -(2**31)} for t in requested]}
    limit = max(1, body.get("response_partition_limit", 2000))
    if cursor is not None:
        names = [n for n in names if n >= cursor["topic_name"]]
    topics: list[Body] = []
    budget = limit
    next_cursor = None
    for name in names:
        if not ctx.authorized("DESCRIBE", "TOPIC", name):
            topics.append({"error_code": ErrorCode.TOPIC_AUTHORIZATION_FAILED, "name": name, "topic_id": ZERO_UUID,
                           "is_internal": False, "partitions": [], "topic_authorized_operations": -(2**31)})
            continue
        topic = registry.get(name)
        if topic is None:
            topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name, "topic_id": ZERO_UUID,
                           "is_internal": False, "partitions": [], "topic_authorized_operations": TOPIC_OPERATIONS})
            continue
        first = cursor["partition_index"] if cursor is not None and name == cursor["topic_name"] else 0
        if budget == 0:
            next_cursor = {"topic_name": name, "partition_index": first}
            break
        end = min(len(topic.logs), first + budget)
        budget -= end - first
        topics.append({"error_code": ErrorCode.NONE, "name": name, "topic_id": topic.topic_id, "is_internal": False,
                       "partitions": [_partition(ctx, topic, i) for i in range(first, end)],
                       "topic_authorized_operations": authorized_operations(ctx, "TOPIC", name, TOPIC_OPERATIONS)})
        if end < len(topic.logs):
            next_cursor = {"topic_name": name, "partition_index": end}
            break
    return {"throttle_time_ms": 0, "topics": topics, "next_cursor": next_cursor}


def _election_result(ctx: RequestContext, name: str, index: int) -> Body:
    topic = ctx.broker.topics.get(name)
    if topic is None:
        return {"partition_id": index, "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "error_message": f"No such topic as {name}"}
    if topic.partition(index) is None:
        return {"partition_id": index, "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "error_message": f"No such partition as {name}-{index}"}
    return {"partition_id": index, "error_code": ErrorCode.ELECTION_NOT_NEEDED, "error_message": ELECTION_NOT_NEEDED_MESSAGE}


async def elect_leaders(ctx: RequestContext, body: Body) -> Body:
    requested = body.get("topic_partitions")
    if not ctx.authorized("ALTER", "CLUSTER", CLUSTER_NAME):
        denied = [{"topic": item["topic"], "partition_result": [{"partition_id": p, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None}
                                                               for p in item.get("partitions") or []]} for item in requested or []]
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "replica_election_results": denied}
    results: list[Body]
    if requested is None:
        # "Every partition": Kafka lists each topic and leaves out the partitions that needed no election.
        results = [{"topic": t.name, "partition_result": []} for t in sorted(ctx.broker.topics.all(), key=lambda t: t.name)]
    else:
        results = [{"topic": item["topic"], "partition_result": [_election_result(ctx, item["topic"], p) for p in item.get("partitions") or []]}
                   for item in requested]
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "replica_election_results": results}


async def list_partition_reassignments(ctx: RequestContext, body: Body) -> Body:
    if not ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "topics": []}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None, "topics": []}
