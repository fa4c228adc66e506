"""Fetch: long poll, byte limits, isolation levels, topic ids, divergence.

Fetch sessions are not kept: the response always carries session id 0, which every client treats as
"no session" and answers with full fetch requests. A request naming a session we never issued gets
FETCH_SESSION_ID_NOT_FOUND so the client starts over.
"""

from __future__ import annotations

import trio

from protocol.errors import ErrorCode
from protocol.messages import RecordsRef

from ..storage import LogClosed, OffsetOutOfRange
from .context import Body, RequestContext

READ_COMMITTED = 1
# Below this a copy through Python is cheaper than the extra sendfile system calls.
SENDFILE_MIN_BYTES = 64 * 1024


class SegmentRecords(RecordsRef):
    """A Fetch partition's records as byte ranges of segment files, sent with os.sendfile (zero copy)."""

    __slots__ = ("ranges",)

    def __init__(self, ranges) -> None:
        super().__init__(sum(r.length for r in ranges))
        self.ranges = ranges


def _partition_error(index: int, code: ErrorCode, plog=None) -> Body:
    return {
        "partition_index": index,
        "error_code": code,
        "high_watermark": plog.high_watermark if plog else -1,
        "last_stable_offset": plog.last_stable_offset if plog else -1,
        "log_start_offset": plog.log_start_offset if plog else -1,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": None,
    }


class _Plan:
    """One partition of the request, resolved once and re-read after each wake-up."""

    __slots__ = ("topic_out", "topic", "index", "offset", "epoch", "last_fetched_epoch", "max_bytes", "error", "plog")

    def __init__(self, topic_out: Body, topic, p: Body) -> None:
        self.topic_out = topic_out
        self.topic = topic
        self.index = p["partition"]
        self.offset = p["fetch_offset"]
        self.epoch = p.get("current_leader_epoch", -1)
        self.last_fetched_epoch = p.get("last_fetched_epoch", -1)
        self.max_bytes = p["partition_max_bytes"]
        self.error = ErrorCode.NONE
        self.plog = None


def _read(ctx: RequestContext, plans: list[_Plan], isolation: int, max_bytes: int) -> tuple[list[tuple[_Plan, Body]], int, bool]:
    """Read every partition once. Returns (results, bytes, any_error)."""
    results = []
    total = 0
    any_error = False
    for plan in plans:
        code, plog = ctx.resolve(plan.topic, plan.index, plan.epoch)
        if code == ErrorCode.NONE and ctx.broker.topics.by_id(plan.topic.topic_id) is not plan.topic:
            code = _gone(ctx)  # deleted while this fetch was waiting: its logs are closed
        if code != ErrorCode.NONE:
            results.append((plan, _partition_error(plan.index, code)))
            any_error = True
            continue
        assert plog is not None  # resolve() returns the log with NONE
        out = _partition_error(plan.index, ErrorCode.NONE, plog)
        if plan.last_fetched_epoch >= 0:
            diverging = _divergence(plog, plan.last_fetched_epoch, plan.offset)
            if diverging is not None:
                out["diverging_epoch"] = diverging
                results.append((plan, out))
                any_error = True
                continue
        upper = plog.last_stable_offset if isolation == READ_COMMITTED else plog.high_watermark
        budget = min(plan.max_bytes, max(max_bytes - total, 0))
        try:
            # KIP-74: the first batch is returned whole even above the limits while the response is
            # still empty, so a large batch can never stall a consumer.
            read = plog.read(plan.offset, budget if total else max(budget, 1), upper_bound=upper)
        except OffsetOutOfRange:
            results.append((plan, _partition_error(plan.index, ErrorCode.OFFSET_OUT_OF_RANGE, plog)))
            any_error = True
            continue
        except LogClosed:
            results.append((plan, _partition_error(plan.index, _gone(ctx))))
            any_error = True
            continue
        size = read.size
        if size and total and size > budget:
            size = 0
        total += size
        if size >= SENDFILE_MIN_BYTES:
            out["records"] = SegmentRecords(read.ranges)
        else:
            out["records"] = read.to_bytes() if size else b""
        if isolation == READ_COMMITTED:
            last = read.next_offset if size else plan.offset + 1
            out["aborted_transactions"] = [
                {"producer_id": pid, "first_offset": first} for pid, first in plog.aborted_transactions(plan.offset, last)
            ]
        results.append((plan, out))
    return results, total, any_error


def _gone(ctx: RequestContext) -> ErrorCode:
    return ErrorCode.UNKNOWN_TOPIC_ID if ctx.api_version >= 13 else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def _divergence(plog, last_fetched_epoch: int, fetch_offset: int) -> Body | None:
    epoch, end_offset = plog.end_offset_for_epoch(last_fetched_epoch)
    if epoch == last_fetched_epoch and end_offset >= fetch_offset:
        return None
    if epoch < 0:
        return None  # nothing known about that epoch: let the offset check decide
    return {"epoch": epoch, "end_offset": end_offset}


async def fetch(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    if body.get("session_id", 0) != 0:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.FETCH_SESSION_ID_NOT_FOUND, "session_id": 0, "responses": []}
    use_ids = ctx.api_version >= 13
    topics_out: list[Body] = []
    plans: list[_Plan] = []
    for t in body.get("topics", []):
        if use_ids:
            topic = registry.by_id(t["topic_id"])
            topic_out = {"topic_id": t["topic_id"], "topic": topic.name if topic else "", "partitions": []}
        else:
            topic = registry.get(t["topic"])
            topic_out = {"topic": t["topic"], "topic_id": topic.topic_id if topic else None, "partitions": []}
        topics_out.append(topic_out)
        name = topic.name if use_ids and topic is not None else t.get("topic")
        denied = name is not None and not (use_ids and topic is None) and not ctx.authorized("READ", "TOPIC", name)
        for p in t.get("partitions", []):
            if use_ids and topic is None:
                topic_out["partitions"].append(_partition_error(p["partition"], ErrorCode.UNKNOWN_TOPIC_ID))
                continue
            if denied:
                topic_out["partitions"].append(_partition_error(p["partition"], ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            plans.append(_Plan(topic_out, topic, p))

    isolation = body.get("isolation_level", 0)
    max_bytes = body.get("max_bytes", 0x7FFFFFFF)
    min_bytes = max(body.get("min_bytes", 1), 1)
    deadline = trio.current_time() + max(body.get("max_wait_ms", 0), 0) / 1000
    while True:
        results, total, any_error = _read(ctx, plans, isolation, max_bytes)
        if total >= min_bytes or any_error or not plans or trio.current_time() >= deadline:
            break
        await ctx.broker.notifier.wait(deadline)

    for plan, out in results:
        plan.topic_out["partitions"].append(out)
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "session_id": 0, "responses": topics_out}
