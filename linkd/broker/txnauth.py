"""Authorization of the transaction APIs, in front of the transaction coordinator (which knows nothing of ACLs).

Kafka's rules (KafkaApis):
- AddPartitionsToTxn v0-3 (from producers): WRITE on the transactional id, else every partition answers
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED; then WRITE on each topic (internal topics never qualify). If a
  topic is denied or a partition unknown, nothing is added: those answer TOPIC_AUTHORIZATION_FAILED or
  UNKNOWN_TOPIC_OR_PARTITION and every other partition OPERATION_NOT_ATTEMPTED.
- AddPartitionsToTxn v4+ (the broker-to-broker batch): CLUSTER_ACTION on the cluster, else the top-level
  CLUSTER_AUTHORIZATION_FAILED. Kafka checks neither the transactional ids nor the topics of this form.
- AddOffsetsToTxn: WRITE on the transactional id, then READ on the group.
- TxnOffsetCommit: WRITE on the transactional id, READ on the group (every partition gets the error), then
  READ on each topic (TOPIC_AUTHORIZATION_FAILED for the others; the coordinator sees only the rest).
- EndTxn: WRITE on the transactional id (v5 then answers producer id and epoch -1).
- ListTransactions lists only the ids the principal may DESCRIBE; DescribeTransactions answers
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED for the others and shows only the topics it may DESCRIBE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME
from .context import Body, RequestContext

Call = Callable[[Body], Awaitable[Body]]
TXN_DENIED = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
# Kafka's Topic.isInternal: no ACL lets a producer add these to a transaction.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})


def _partition_results(codes: list[tuple[str, int, int]]) -> list[Body]:
    by_topic: dict[str, list[Body]] = {}
    for name, index, code in codes:
        by_topic.setdefault(name, []).append({"partition_index": index, "partition_error_code": code})
    return [{"name": name, "results_by_partition": parts} for name, parts in by_topic.items()]


def _exists(ctx: RequestContext, name: str, index: int) -> bool:
    topic = ctx.broker.topics.get(name)
    return topic is not None and topic.partition(index) is not None


async def _add_partitions(ctx: RequestContext, body: Body, call: Call) -> Body:
    if ctx.api_version >= 4:
        if not ctx.authorized("CLUSTER_ACTION", "CLUSTER", CLUSTER_NAME):
            return {"throttle_time_ms": 0, "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), "results_by_transaction": []}
        return await call(body)
    topics = body.get("v3_and_below_topics") or []
    wanted = [(t["name"], p) for t in topics for p in t.get("partitions") or []]
    if not ctx.authorized("WRITE", "TRANSACTIONAL_ID", body.get("v3_and_below_transactional_id") or ""):
        return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": _partition_results([(n, i, TXN_DENIED) for n, i in wanted])}
    writable = {n: n not in INTERNAL_TOPICS and ctx.authorized("WRITE", "TOPIC", n) for n in {t["name"] for t in topics}}
    if all(writable.values()):
        return await call(body)
    codes = [(n, i, TOPIC_DENIED if not writable[n] else
              int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) if not _exists(ctx, n, i) else int(ErrorCode.OPERATION_NOT_ATTEMPTED))
             for n, i in wanted]
    return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": _partition_results(codes)}


async def _add_offsets(ctx: RequestContext, body: Body, call: Call) -> Body:
    if not ctx.authorized("WRITE", "TRANSACTIONAL_ID", body.get("transactional_id") or ""):
        return {"throttle_time_ms": 0, "error_code": TXN_DENIED}
    if not ctx.authorized("READ", "GROUP", body.get("group_id") or ""):
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED}
    return await call(body)


def _every_partition(topics: list[Body], code: int) -> list[Body]:
    return [{"name": t.get("name") or "", "partitions": [{"partition_index": p["partition_index"], "error_code": code} for p in t.get("partitions") or []]}
            for t in topics]


async def _txn_offset_commit(ctx: RequestContext, body: Body, call: Call) -> Body:
    topics = body.get("topics") or []
    if not ctx.authorized("WRITE", "TRANSACTIONAL_ID", body.get("transactional_id") or ""):
        return {"throttle_time_ms": 0, "topics": _every_partition(topics, TXN_DENIED)}
    if not ctx.authorized("READ", "GROUP", body.get("group_id") or ""):
        return {"throttle_time_ms": 0, "topics": _every_partition(topics, GROUP_DENIED)}
    allowed = [ctx.authorized("READ", "TOPIC", t.get("name") or "") for t in topics]
    if all(allowed):
        return await call(body)
    asked = [t for t, ok in zip(topics, allowed, strict=True) if ok]
    answer = await call({**body, "topics": asked}) if asked else {"throttle_time_ms": 0, "topics": []}
    answered = iter(cast(list, answer.get("topics") or []))
    merged = [next(answered) if ok else _every_partition([t], TOPIC_DENIED)[0] for t, ok in zip(topics, allowed, strict=True)]
    return {**answer, "topics": merged}


async def _end_txn(ctx: RequestContext, body: Body, call: Call) -> Body:
    if not ctx.authorized("WRITE", "TRANSACTIONAL_ID", body.get("transactional_id") or ""):
        answer: Body = {"throttle_time_ms": 0, "error_code": TXN_DENIED}
        if ctx.api_version >= 5:
            answer.update(producer_id=-1, producer_epoch=-1)
        return answer
    return await call(body)


async def _list_transactions(ctx: RequestContext, body: Body, call: Call) -> Body:
    answer = await call(body)
    return {**answer, "transaction_states": [s for s in answer.get("transaction_states") or []
                                             if ctx.authorized("DESCRIBE", "TRANSACTIONAL_ID", s["transactional_id"])]}


async def _describe_transactions(ctx: RequestContext, body: Body, call: Call) -> Body:
    ids = body.get("transactional_ids") or []
    allowed = [ctx.authorized("DESCRIBE", "TRANSACTIONAL_ID", tid) for tid in ids]
    asked = [tid for tid, ok in zip(ids, allowed, strict=True) if ok]
    answer = await call({**body, "transactional_ids": asked}) if asked else {"throttle_time_ms": 0, "transaction_states": []}
    answered = iter(cast(list, answer.get("transaction_states") or []))
    out = []
    for tid, ok in zip(ids, allowed, strict=True):
        if not ok:
            # Kafka's denied entry carries the message's defaults: zeroes and empty strings.
            out.append({"error_code": TXN_DENIED, "transactional_id": tid, "transaction_state": "", "transaction_timeout_ms": 0,
                        "transaction_start_time_ms": 0, "producer_id": 0, "producer_epoch": 0, "topics": []})
            continue
        state = next(answered)
        out.append({**state, "topics": [t for t in state.get("topics") or [] if ctx.authorized("DESCRIBE", "TOPIC", t["topic"])]})
    return {**answer, "transaction_states": out}


_GUARDS = {
    "add_partitions": _add_partitions,
    "add_offsets": _add_offsets,
    "txn_offset_commit": _txn_offset_commit,
    "end_txn": _end_txn,
    "list_transactions": _list_transactions,
    "describe_transactions": _describe_transactions,
}


async def authorized_txn_call(ctx: RequestContext, method: str, body: Body, call: Call) -> Body:
    """Run ``call`` (the coordinator's handler) for what the session may do; answer the rest with Kafka's errors."""
    if ctx.broker.authorizer is None:
        return await call(body)
    return await _GUARDS[method](ctx, body, call)
