"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs."""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode

from ..topics import TOPIC_CONFIG_DEFAULTS, TopicError, TopicRole
from .context import ZERO_UUID, Body, RequestContext

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 1
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
CONFIG_TYPE_STRING = 2


def _replication_error(factor: int) -> TopicError | None:
    if factor in (-1, 1):
        return None
    return TopicError(ErrorCode.INVALID_REPLICATION_FACTOR, f"Unable to replicate the partition {factor} time(s): The target replication factor of {factor} cannot be reached because only 1 broker(s) are registered.")


def _config_entries(configs: dict[str, str]) -> list[Body]:
    return [
        {
            "name": name,
            "value": configs.get(name, default),
            "read_only": False,
            "config_source": SOURCE_DYNAMIC_TOPIC if name in configs else SOURCE_DEFAULT,
            "is_sensitive": False,
        }
        for name, default in sorted(TOPIC_CONFIG_DEFAULTS.items())
    ]


async def create_topics(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    validate_only = body.get("validate_only", False)
    results = []
    seen: set[str] = set()
    for t in body.get("topics", []):
        name = t["name"]
        out = {"name": name, "topic_id": ZERO_UUID, "error_code": ErrorCode.NONE, "error_message": None, "num_partitions": -1, "replication_factor": -1, "configs": None}
        results.append(out)
        try:
            if name in seen:
                raise TopicError(ErrorCode.INVALID_REQUEST, f"Create topics request from client contains duplicate topic '{name}'")
            seen.add(name)
            assignments = t.get("assignments") or []
            if assignments:
                if t.get("num_partitions", -1) != -1 or t.get("replication_factor", -1) != -1:
                    raise TopicError(ErrorCode.INVALID_REQUEST, "Both numPartitions or replicationFactor and replicasAssignments were set.")
                partitions = len(assignments)
                factor = len(assignments[0].get("broker_ids", []))
            else:
                partitions = t.get("num_partitions", -1)
                partitions = DEFAULT_PARTITIONS if partitions == -1 else partitions
                factor = t.get("replication_factor", -1)
            error = _replication_error(factor)
            if error:
                raise error
            configs = {c["name"]: c.get("value") for c in t.get("configs", [])}
            topic = registry.create(name, partitions, configs, validate_only=validate_only)
            out.update(
                topic_id=topic.topic_id if not validate_only else ZERO_UUID,
                num_partitions=partitions,
                replication_factor=1,
                configs=_config_entries(topic.configs),
            )
        except TopicError as exc:
            out["error_code"], out["error_message"] = exc.error_code, exc.message
    return {"throttle_time_ms": 0, "topics": results}


async def delete_topics(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    if ctx.api_version >= 6:
        wanted = [(t.get("name"), t.get("topic_id")) for t in body.get("topics", [])]
    else:
        wanted = [(name, None) for name in body.get("topic_names", [])]
    responses = []
    for name, topic_id in wanted:
        topic = registry.get(name) if name else (registry.by_id(topic_id) if topic_id else None)
        out = {"name": name, "topic_id": topic_id or ZERO_UUID, "error_code": ErrorCode.NONE, "error_message": None}
        responses.append(out)
        if topic is None:
            out["error_code"] = ErrorCode.UNKNOWN_TOPIC_ID if (name is None and topic_id) else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            continue
        out["name"], out["topic_id"] = topic.name, topic.topic_id
        for hook in ctx.broker.hooks:
            hook.on_topic_deleted(topic.name)
        for plog in topic.logs:
            ctx.broker.flusher.forget(plog)
        registry.delete(topic.name)
        ctx.broker.groups.delete_topic_offsets(topic.name)
        log.info("deleted topic %s (%s) at the request of %s", topic.name, topic.topic_id, ctx.client_id)
    if any(r["error_code"] == ErrorCode.NONE for r in responses):
        ctx.broker.notifier.notify()  # fetches parked on a deleted topic answer now, not at max_wait
    return {"throttle_time_ms": 0, "responses": responses}


async def create_partitions(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    results = []
    for t in body.get("topics", []):
        out = {"name": t["name"], "error_code": ErrorCode.NONE, "error_message": None}
        results.append(out)
        topic = registry.get(t["name"])
        if topic is None:
            out["error_code"], out["error_message"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{t['name']}' does not exist."
            continue
        if topic.role is TopicRole.MIRROR:
            out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"Mirror topic '{topic.name}' follows its source's partition count."
            continue
        try:
            if t["count"] <= len(topic.logs):
                raise TopicError(ErrorCode.INVALID_PARTITIONS, f"Topic currently has {len(topic.logs)} partitions, which is higher than the requested {t['count']}.")
            if not body.get("validate_only"):
                registry.add_partitions(topic.name, t["count"])
        except TopicError as exc:
            out["error_code"], out["error_message"] = exc.error_code, exc.message
    return {"throttle_time_ms": 0, "results": results}


def _broker_configs(ctx: RequestContext) -> dict[str, str]:
    ident = ctx.broker.identity
    return {
        "broker.id": str(ident.node_id),
        "node.id": str(ident.node_id),
        "advertised.listeners": f"PLAINTEXT://{ident.host}:{ident.port}",
        "num.partitions": str(DEFAULT_PARTITIONS),
        "default.replication.factor": "1",
        "auto.create.topics.enable": "false",
        "message.max.bytes": "1048588",
        "socket.request.max.bytes": str(ctx.broker.max_request_bytes),
    }


async def describe_configs(ctx: RequestContext, body: Body) -> Body:
    results = []
    for r in body.get("resources", []):
        rtype, rname = r["resource_type"], r["resource_name"]
        keys = r.get("configuration_keys")
        out = {"error_code": ErrorCode.NONE, "error_message": None, "resource_type": rtype, "resource_name": rname, "configs": []}
        results.append(out)
        if rtype == RESOURCE_TOPIC:
            topic = ctx.broker.topics.get(rname)
            if topic is None:
                out["error_code"], out["error_message"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{rname}' does not exist."
                continue
            entries = [
                {**e, "synonyms": [], "config_type": CONFIG_TYPE_STRING, "documentation": None}
                for e in _config_entries(topic.configs)
            ]
        elif rtype == RESOURCE_BROKER:
            if rname not in ("", str(ctx.broker.identity.node_id)):
                out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {ctx.broker.identity.node_id} but received {rname}"
                continue
            entries = [
                {"name": k, "value": v, "read_only": True, "config_source": SOURCE_STATIC_BROKER, "is_sensitive": False, "synonyms": [], "config_type": CONFIG_TYPE_STRING, "documentation": None}
                for k, v in sorted(_broker_configs(ctx).items())
            ]
        else:
            out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"Unsupported resource type {rtype}"
            continue
        out["configs"] = [e for e in entries if keys is None or e["name"] in keys]
    return {"throttle_time_ms": 0, "results": results}
