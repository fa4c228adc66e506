"""Authorization of the group APIs, in front of the group coordinator (which knows nothing of ACLs).

Kafka's rules (KafkaApis): joining, syncing, heartbeating and leaving need READ on the group;
OffsetCommit needs READ on the group and READ on each topic; OffsetFetch DESCRIBE on the group and on
each topic (a fetch of all topics only shows the describable ones); DescribeGroups DESCRIBE, DeleteGroups
DELETE on each group; OffsetDelete DELETE on the group and READ on each topic; ListGroups lists every group to a principal with DESCRIBE on the cluster, else
only the groups it may describe. Denied parts answer GROUP_AUTHORIZATION_FAILED or
TOPIC_AUTHORIZATION_FAILED; the coordinator sees only what was authorized.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME
from .context import Body, RequestContext, authorized_operations

Call = Callable[[Body], Awaitable[Body]]
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
GROUP_OPERATIONS = sum(1 << op for op in (3, 6, 8))  # READ, DELETE, DESCRIBE


def _denied_member_call(method: str) -> Body:
    if method == "join_group":
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED, "generation_id": -1, "protocol_type": None, "protocol_name": None,
                "leader": "", "skip_assignment": False, "member_id": "", "members": []}
    if method == "sync_group":
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED, "protocol_type": None, "protocol_name": None, "assignment": b""}
    if method == "leave_group":
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED, "members": []}
    return {"throttle_time_ms": 0, "error_code": GROUP_DENIED}


async def _offset_commit(ctx: RequestContext, body: Body, call: Call) -> Body:
    topics = body.get("topics") or []
    if not ctx.authorized("READ", "GROUP", body.get("group_id") or ""):
        return {"throttle_time_ms": 0, "topics": [
            {"name": t.get("name") or "", "topic_id": t.get("topic_id"), "partitions": [{"partition_index": p["partition_index"], "error_code": GROUP_DENIED} for p in t.get("partitions") or []]}
            for t in topics]}
    allowed = [ctx.authorized("READ", "TOPIC", t.get("name") or "") for t in topics]
    answer = await call({**body, "topics": [t for t, ok in zip(topics, allowed, strict=True) if ok]})
    answered = iter(answer.get("topics") or [])
    merged = []
    for t, ok in zip(topics, allowed, strict=True):
        if ok:
            merged.append(next(answered))
        else:
            merged.append({"name": t.get("name") or "", "topic_id": t.get("topic_id"),
                           "partitions": [{"partition_index": p["partition_index"], "error_code": TOPIC_DENIED} for p in t.get("partitions") or []]})
    return {**answer, "topics": merged}


def _denied_topic(t: Body) -> Body:
    return {"name": t.get("name") or "", "topic_id": t.get("topic_id"), "partitions": [
        {"partition_index": i, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "", "error_code": TOPIC_DENIED}
        for i in t.get("partition_indexes") or []]}


def _fetch_plan(ctx: RequestContext, topics: list[Body] | None) -> tuple[list[Body] | None, list[bool] | None]:
    if topics is None:
        return None, None
    allowed = [ctx.authorized("DESCRIBE", "TOPIC", t.get("name") or "") for t in topics]
    return [t for t, ok in zip(topics, allowed, strict=True) if ok], allowed


def _fetch_merge(ctx: RequestContext, requested: list[Body] | None, allowed: list[bool] | None, answered: list[Body]) -> list[Body]:
    if requested is None or allowed is None:
        return [t for t in answered if ctx.authorized("DESCRIBE", "TOPIC", t.get("name") or "")]
    it = iter(answered)
    return [next(it) if ok else _denied_topic(t) for t, ok in zip(requested, allowed, strict=True)]


async def _offset_fetch(ctx: RequestContext, body: Body, call: Call) -> Body:
    if ctx.api_version <= 7:
        if not ctx.authorized("DESCRIBE", "GROUP", body.get("group_id") or ""):
            return {"throttle_time_ms": 0, "topics": [], "error_code": GROUP_DENIED}
        topics, allowed = _fetch_plan(ctx, body.get("topics"))
        answer = await call({**body, "topics": topics})
        return {**answer, "topics": _fetch_merge(ctx, body.get("topics"), allowed, answer.get("topics") or [])}
    groups = body.get("groups") or []
    plans: list[tuple[Body, Body, list[bool] | None] | None] = []  # None: the group is denied
    for g in groups:
        if not ctx.authorized("DESCRIBE", "GROUP", g.get("group_id") or ""):
            plans.append(None)
            continue
        topics, allowed = _fetch_plan(ctx, g.get("topics"))
        plans.append((g, {**g, "topics": topics}, allowed))
    asked = [p[1] for p in plans if p is not None]
    answer = await call({**body, "groups": asked}) if asked else {"throttle_time_ms": 0, "groups": []}
    answered = iter(answer.get("groups") or [])
    out = []
    for g, plan in zip(groups, plans, strict=True):
        if plan is None:
            out.append({"group_id": g.get("group_id"), "topics": [], "error_code": GROUP_DENIED})
            continue
        got = next(answered)
        out.append({**got, "topics": _fetch_merge(ctx, plan[0].get("topics"), plan[2], got.get("topics") or [])})
    return {**answer, "groups": out}


async def _list_groups(ctx: RequestContext, body: Body, call: Call) -> Body:
    answer = await call(body)
    if ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_NAME):
        return answer
    return {**answer, "groups": [g for g in answer.get("groups") or [] if ctx.authorized("DESCRIBE", "GROUP", g["group_id"])]}


async def _describe_groups(ctx: RequestContext, body: Body, call: Call) -> Body:
    groups = body.get("groups") or []
    allowed = [ctx.authorized("DESCRIBE", "GROUP", g) for g in groups]
    asked = [g for g, ok in zip(groups, allowed, strict=True) if ok]
    answer: Body = await call({**body, "groups": asked}) if asked else {"throttle_time_ms": 0, "groups": []}
    answered = iter(answer.get("groups") or [])
    out = []
    for g, ok in zip(groups, allowed, strict=True):
        if not ok:
            out.append({"error_code": GROUP_DENIED, "error_message": None, "group_id": g, "group_state": "", "protocol_type": "",
                        "protocol_data": "", "members": [], "authorized_operations": -(2**31)})
            continue
        got = next(answered)
        if body.get("include_authorized_operations"):
            got = {**got, "authorized_operations": authorized_operations(ctx, "GROUP", g, GROUP_OPERATIONS)}
        out.append(got)
    return {**answer, "groups": out}


async def _delete_groups(ctx: RequestContext, body: Body, call: Call) -> Body:
    names = body.get("groups_names") or []
    allowed = [ctx.authorized("DELETE", "GROUP", g) for g in names]
    asked = [g for g, ok in zip(names, allowed, strict=True) if ok]
    answer: Body = await call({**body, "groups_names": asked}) if asked else {"throttle_time_ms": 0, "results": []}
    answered = iter(answer.get("results") or [])
    return {**answer, "results": [next(answered) if ok else {"group_id": g, "error_code": GROUP_DENIED} for g, ok in zip(names, allowed, strict=True)]}


async def _offset_delete(ctx: RequestContext, body: Body, call: Call) -> Body:
    """DELETE on the group, then READ on each topic (TOPIC_AUTHORIZATION_FAILED for the others)."""
    if not ctx.authorized("DELETE", "GROUP", body.get("group_id") or ""):
        return {"error_code": GROUP_DENIED, "throttle_time_ms": 0, "topics": []}
    topics = body.get("topics") or []
    allowed = [ctx.authorized("READ", "TOPIC", t["name"]) for t in topics]
    answer = await call({**body, "topics": [t for t, ok in zip(topics, allowed, strict=True) if ok]})
    if answer.get("error_code"):
        return answer
    answered = iter(answer.get("topics") or [])
    return {**answer, "topics": [next(answered) if ok else {"name": t["name"], "partitions": [{"partition_index": p["partition_index"], "error_code": TOPIC_DENIED} for p in t.get("partitions") or []]}
                                 for t, ok in zip(topics, allowed, strict=True)]}


_GUARDS = {
    "offset_delete": _offset_delete,
    "offset_commit": _offset_commit,
    "offset_fetch": _offset_fetch,
    "list_groups": _list_groups,
    "describe_groups": _describe_groups,
    "delete_groups": _delete_groups,
}


async def authorized_group_call(ctx: RequestContext, method: str, body: Body, call: Call) -> Body:
    """Run ``call`` (the coordinator's handler) for what the session may do; answer the rest with Kafka's errors."""
    if ctx.broker.authorizer is None:
        return await call(body)
    guard = _GUARDS.get(method)
    if guard is not None:
        return await guard(ctx, body, call)
    # JoinGroup, SyncGroup, Heartbeat, LeaveGroup: READ on the group.
    if not ctx.authorized("READ", "GROUP", body.get("group_id") or ""):
        return _denied_member_call(method)
    return await call(body)
