"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions, and topic configuration
(DescribeConfigs, AlterConfigs, IncrementalAlterConfigs).

A mirror that still follows its source (not promoted or failed over) keeps its source's configs: an
always-synced name (``topicconfig.ALWAYS_SYNCED``) cannot be changed there, and setting a configurable
name makes it a local override the link no longer syncs; deleting that override syncs it again.
"""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode

from .. import topicconfig
from ..topicconfig import TOPIC_CONFIGS, InvalidTopicConfig
from ..topics import Topic, TopicError, TopicRole
from .acl import CLUSTER_NAME
from .context import ZERO_UUID, Body, RequestContext

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 1
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
CONFIG_TYPE_STRING = 2
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


def _replication_error(factor: int) -> TopicError | None:
    if factor in (-1, 1):
        return None
    return TopicError(ErrorCode.INVALID_REPLICATION_FACTOR, f"Unable to replicate the partition {factor} time(s): The target replication factor of {factor} cannot be reached because only 1 broker(s) are registered.")


def _config_entries(configs: dict[str, str], read_only: frozenset[str] = frozenset(), synonyms: bool = False, documentation: bool = False) -> list[Body]:
    """Every topic config with its value and where it comes from (this topic, or the default)."""
    entries = []
    for name, definition in sorted(TOPIC_CONFIGS.items()):
        dynamic = name in configs
        entry: Body = {
            "name": name,
            "value": configs[name] if dynamic else definition.default,
            "read_only": name in read_only,
            "config_source": SOURCE_DYNAMIC_TOPIC if dynamic else SOURCE_DEFAULT,
            "is_sensitive": False,
            "synonyms": [],
            "config_type": definition.type,
            "documentation": definition.doc if documentation else None,
        }
        if synonyms:
            own = [{"name": name, "value": configs[name], "source": SOURCE_DYNAMIC_TOPIC}] if dynamic else []
            entry["synonyms"] = own + [{"name": n, "value": v, "source": SOURCE_DEFAULT} for n, v in definition.broker_synonyms]
        entries.append(entry)
    return entries


def _following_source(ctx: RequestContext, topic: Topic) -> dict[str, str] | None:
    """For a mirror that still follows its source: the configs its link syncs (last seen at the source).
    None for a topic of our own (local, or a promoted mirror)."""
    for hook in ctx.broker.hooks:
        synced = hook.mirror_synced_configs(topic.name)
        if synced is not None:
            return synced
    return None


def _requested_partitions(t: Body) -> int:
    assignments = t.get("assignments") or []
    if assignments:
        return len(assignments)
    partitions = t.get("num_partitions", -1)
    return DEFAULT_PARTITIONS if partitions == -1 else partitions


def _excessive(requested: int, limit: int) -> TopicError:
    # Kafka's controller words it so (POLICY_VIOLATION for any request over 10,000 partitions).
    return TopicError(ErrorCode.POLICY_VIOLATION, f"Excessively large number of partitions per request. ({requested} requested; this linkd creates at most {limit} per request: max.partitions.per.request)")


async def create_topics(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    validate_only = body.get("validate_only", False)
    requests = body.get("topics", [])
    # The request's whole partition count is judged before any topic is made, as Kafka's controller does,
    # so an oversized request leaves nothing behind and answers in milliseconds.
    per_request = ctx.broker.limits.max_partitions_per_request
    requested = sum(max(_requested_partitions(t), 0) for t in requests)
    too_many = _excessive(requested, per_request) if requested > per_request else None
    results = []
    seen: set[str] = set()
    cluster_create = ctx.authorized("CREATE", "CLUSTER", CLUSTER_NAME)
    for t in requests:
        name = t["name"]
        out = {"name": name, "topic_id": ZERO_UUID, "error_code": ErrorCode.NONE, "error_message": None, "num_partitions": -1, "replication_factor": -1, "configs": None}
        results.append(out)
        try:
            if name in seen:
                raise TopicError(ErrorCode.INVALID_REQUEST, f"Create topics request from client contains duplicate topic '{name}'")
            seen.add(name)
            if not (cluster_create or ctx.authorized("CREATE", "TOPIC", name)):
                raise TopicError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"Not authorized to create topic '{name}'")
            if too_many is not None:
                raise too_many
            assignments = t.get("assignments") or []
            if assignments:
                if t.get("num_partitions", -1) != -1 or t.get("replication_factor", -1) != -1:
                    raise TopicError(ErrorCode.INVALID_REQUEST, "Both numPartitions or replicationFactor and replicasAssignments were set.")
                factor = len(assignments[0].get("broker_ids", []))
            else:
                factor = t.get("replication_factor", -1)
            partitions = _requested_partitions(t)
            error = _replication_error(factor)
            if error:
                raise error
            configs = {c["name"]: c.get("value") for c in t.get("configs", [])}
            topic = await registry.create_async(name, partitions, configs, validate_only=validate_only)
            out.update(
                topic_id=topic.topic_id if not validate_only else ZERO_UUID,
                num_partitions=partitions,
                replication_factor=1,
                configs=[{k: e[k] for k in ("name", "value", "read_only", "config_source", "is_sensitive")} for e in _config_entries(topic.configs)],
            )
            if not ctx.authorized("DESCRIBE_CONFIGS", "TOPIC", name):
                out.update(configs=None, topic_config_error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED)
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
        by_id = name is None and bool(topic_id)
        if not (by_id and topic is None) and not ctx.authorized("DELETE", "TOPIC", topic.name if by_id and topic is not None else name):
            out["error_code"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED  # whether or not it exists, as Kafka answers
            if by_id and topic is not None and ctx.authorized("DESCRIBE", "TOPIC", topic.name):
                out["name"] = topic.name  # Kafka names an id's topic to whoever may describe it
            continue
        if topic is None:
            out["error_code"] = ErrorCode.UNKNOWN_TOPIC_ID if by_id else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            continue
        out["name"], out["topic_id"] = topic.name, topic.topic_id
        for hook in ctx.broker.hooks:
            hook.on_topic_deleted(topic.name)
        for plog in topic.logs:
            ctx.broker.flusher.forget(plog)
        await registry.delete(topic.name)
        ctx.broker.groups.delete_topic_offsets(topic.name)
        log.info("deleted topic %s (%s) at the request of %s", topic.name, topic.topic_id, ctx.client_id)
    if any(r["error_code"] == ErrorCode.NONE for r in responses):
        ctx.broker.notifier.notify()  # fetches parked on a deleted topic answer now, not at max_wait
    return {"throttle_time_ms": 0, "responses": responses}


async def create_partitions(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    requests = body.get("topics", [])
    per_request = ctx.broker.limits.max_partitions_per_request
    requested = 0
    for t in requests:
        existing = registry.get(t["name"])
        requested += max(t["count"] - (len(existing.logs) if existing else 0), 0)
    too_many = _excessive(requested, per_request) if requested > per_request else None
    results = []
    for t in requests:
        out = {"name": t["name"], "error_code": ErrorCode.NONE, "error_message": None}
        results.append(out)
        if not ctx.authorized("ALTER", "TOPIC", t["name"]):
            out["error_code"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            continue
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
            if too_many is not None:
                raise too_many
            if body.get("validate_only"):
                registry.check_partition_budget(topic.name, t["count"] - len(topic.logs), t["count"])
            else:
                await registry.add_partitions_async(topic.name, t["count"])
        except TopicError as exc:
            out["error_code"], out["error_message"] = exc.error_code, exc.message
    return {"throttle_time_ms": 0, "results": results}


def _broker_configs(ctx: RequestContext) -> dict[str, str]:
    ident = ctx.broker.identity
    return {
        "broker.id": str(ident.node_id),
        "node.id": str(ident.node_id),
        "advertised.listeners": ",".join(f"{name}://{host}:{port}" for name, (host, port) in ctx.broker.advertised.items())
        or f"PLAINTEXT://{ident.host}:{ident.port}",
        "num.partitions": str(DEFAULT_PARTITIONS),
        "default.replication.factor": "1",
        "auto.create.topics.enable": "false",
        "message.max.bytes": "1048588",
        "socket.request.max.bytes": str(ctx.broker.max_request_bytes),
    }


async def describe_configs(ctx: RequestContext, body: Body) -> Body:
    results = []
    synonyms, documentation = bool(body.get("include_synonyms")), bool(body.get("include_documentation"))
    for r in body.get("resources", []):
        rtype, rname = r["resource_type"], r["resource_name"]
        keys = r.get("configuration_keys")
        out = {"error_code": ErrorCode.NONE, "error_message": None, "resource_type": rtype, "resource_name": rname, "configs": []}
        results.append(out)
        if rtype == RESOURCE_TOPIC and not ctx.authorized("DESCRIBE_CONFIGS", "TOPIC", rname):
            out["error_code"], out["error_message"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED, None
            continue
        if rtype == RESOURCE_BROKER and not ctx.authorized("DESCRIBE_CONFIGS", "CLUSTER", CLUSTER_NAME):
            out["error_code"], out["error_message"] = ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None
            continue
        if rtype == RESOURCE_TOPIC:
            topic = ctx.broker.topics.get(rname)
            if topic is None:
                out["error_code"], out["error_message"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{rname}' does not exist."
                continue
            read_only = topicconfig.ALWAYS_SYNCED if _following_source(ctx, topic) is not None else frozenset()
            entries = _config_entries(topic.configs, read_only, synonyms, documentation)
        elif rtype == RESOURCE_BROKER:
            if rname not in ("", str(ctx.broker.identity.node_id)):
                out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {ctx.broker.identity.node_id} but received {rname}"
                continue
            entries = [
                {"name": k, "value": v, "read_only": True, "config_source": SOURCE_STATIC_BROKER, "is_sensitive": False, "synonyms": [{"name": k, "value": v, "source": SOURCE_STATIC_BROKER}] if synonyms else [], "config_type": CONFIG_TYPE_STRING, "documentation": None}
                for k, v in sorted(_broker_configs(ctx).items())
            ]
        else:
            out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"Unsupported resource type {rtype}"
            continue
        out["configs"] = [e for e in entries if keys is None or e["name"] in keys]
    return {"throttle_time_ms": 0, "results": results}


class _Refused(Exception):
    def __init__(self, error_code: ErrorCode, message: str | None) -> None:
        super().__init__(message)
        self.error_code, self.message = error_code, message


async def _apply_topic_configs(ctx: RequestContext, topic: Topic, wanted: dict[str, str], validate_only: bool) -> None:
    """Make ``wanted`` the topic's dynamic configs, observing the mirror rules; durable and applied to the
    live logs before it returns."""
    current = topic.configs
    changed = {k for k in wanted if current.get(k) != wanted[k]} | {k for k in current if k not in wanted}
    synced = _following_source(ctx, topic)
    overridden: set[str] = set()
    resynced: set[str] = set()
    if synced is not None:
        locked = sorted(changed & topicconfig.ALWAYS_SYNCED)
        if locked:
            raise _Refused(
                ErrorCode.INVALID_CONFIG,
                f"Topic config {', '.join(locked)} of mirror topic '{topic.name}' is synced from its source topic and read-only "
                "until the mirror is promoted or failed over",
            )
        wanted = dict(wanted)
        for key in changed & topicconfig.CONFIGURABLE:
            if key in wanted:
                overridden.add(key)
            else:
                # The local override goes; the source's value comes back at once, never a default in between.
                resynced.add(key)
                if key in synced and synced[key] != topicconfig.TOPIC_CONFIG_DEFAULTS[key]:
                    wanted[key] = synced[key]
    try:
        await ctx.broker.topics.set_configs(topic.name, wanted, overridden=overridden, not_overridden=resynced, validate_only=validate_only)
    except TopicError as exc:
        raise _Refused(exc.error_code, exc.message) from exc
    if not validate_only and changed:
        log.info("topic %s: configs %s changed at the request of %s", topic.name, ", ".join(sorted(changed)), ctx.client_id)


def _alter_target(ctx: RequestContext, rtype: int, rname: str) -> Topic:
    if rtype == RESOURCE_BROKER and not ctx.authorized("ALTER_CONFIGS", "CLUSTER", CLUSTER_NAME):
        raise _Refused(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)
    if rtype == RESOURCE_TOPIC and not ctx.authorized("ALTER_CONFIGS", "TOPIC", rname):
        raise _Refused(ErrorCode.TOPIC_AUTHORIZATION_FAILED, None)
    if rtype == RESOURCE_BROKER:
        raise _Refused(ErrorCode.INVALID_REQUEST, "Altering broker configs is not supported yet: linkd's broker settings come from its command line")
    if rtype != RESOURCE_TOPIC:
        raise _Refused(ErrorCode.INVALID_REQUEST, f"Unsupported resource type {rtype}")
    topic = ctx.broker.topics.get(rname)
    if topic is None:
        raise _Refused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{rname}' does not exist.")
    return topic


def _list_value(name: str, value: str) -> list[str]:
    return TOPIC_CONFIGS[name].parse(value)  # type: ignore[return-value]


def _incremental(topic: Topic, ops: list[Body]) -> dict[str, str]:
    names = [op["name"] for op in ops]
    if len(set(names)) != len(names):
        raise _Refused(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
    wanted = dict(topic.configs)
    for op in ops:
        name, operation, value = op["name"], op["config_operation"], op.get("value")
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise _Refused(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
        if operation == OP_SET:
            if value is None:
                raise _Refused(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {name}")
            wanted[name] = value
        elif operation == OP_DELETE:
            wanted.pop(name, None)
        elif operation in (OP_APPEND, OP_SUBTRACT):
            if definition.type != topicconfig.TYPE_LIST:
                raise _Refused(ErrorCode.INVALID_CONFIG, f"Can't {'APPEND' if operation == OP_APPEND else 'SUBTRACT'} to key {name} because its type is not LIST.")
            if value is None:
                raise _Refused(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {name}")
            items = [i.strip() for i in value.split(",") if i.strip()]
            try:
                present = _list_value(name, topicconfig.effective(wanted, name))
            except InvalidTopicConfig:
                present = []
            if operation == OP_APPEND:
                result = present + [i for i in items if i not in present]
            else:
                result = [i for i in present if i not in items]
            wanted[name] = ",".join(result)
        else:
            raise _Refused(ErrorCode.INVALID_REQUEST, f"Unknown config operation {operation} for {name}")
    return wanted


async def alter_configs(ctx: RequestContext, body: Body) -> Body:
    """AlterConfigs: the given configs replace all of the resource's dynamic configs."""
    responses = []
    for r in body.get("resources", []):
        out = {"error_code": ErrorCode.NONE, "error_message": None, "resource_type": r["resource_type"], "resource_name": r["resource_name"]}
        responses.append(out)
        try:
            topic = _alter_target(ctx, r["resource_type"], r["resource_name"])
            given = r.get("configs") or []
            names = [c["name"] for c in given]
            if len(set(names)) != len(names):
                raise _Refused(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
            for c in given:
                if c.get("value") is None:
                    raise _Refused(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {c['name']}")
                if c["name"] not in TOPIC_CONFIGS:
                    raise _Refused(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {c['name']}")
            wanted = {c["name"]: c["value"] for c in given}
            synced = _following_source(ctx, topic)
            if synced is not None:
                # A whole-set replacement cannot drop what the mirror follows: keep the synced names not given.
                overrides = ctx.broker.topics.local_overrides(topic.name)
                kept = {k: v for k, v in topic.configs.items() if k not in wanted and (k in topicconfig.ALWAYS_SYNCED or (k in topicconfig.CONFIGURABLE and k not in overrides))}
                wanted = {**kept, **wanted}
            await _apply_topic_configs(ctx, topic, wanted, bool(body.get("validate_only")))
        except _Refused as exc:
            out["error_code"], out["error_message"] = exc.error_code, exc.message
    return {"throttle_time_ms": 0, "responses": responses}


async def incremental_alter_configs(ctx: RequestContext, body: Body) -> Body:
    """IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT (the last two for LIST configs only)."""
    responses = []
    for r in body.get("resources", []):
        out = {"error_code": ErrorCode.NONE, "error_message": None, "resource_type": r["resource_type"], "resource_name": r["resource_name"]}
        responses.append(out)
        try:
            topic = _alter_target(ctx, r["resource_type"], r["resource_name"])
            await _apply_topic_configs(ctx, topic, _incremental(topic, r.get("configs") or []), bool(body.get("validate_only")))
        except _Refused as exc:
            out["error_code"], out["error_message"] = exc.error_code, exc.message
    return {"throttle_time_ms": 0, "responses": responses}
