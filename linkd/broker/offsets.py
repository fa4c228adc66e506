"""ListOffsets, OffsetForLeaderEpoch and DeleteRecords."""

from __future__ import annotations

from collections.abc import Callable

from protocol.errors import ErrorCode
from protocol.records import decode_records, split_batches

from .. import storage_calls
from ..storage import StorageError
from .context import Body, RequestContext

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
EARLIEST_PENDING_UPLOAD = -5
LATEST_TIERED = -6
READ_COMMITTED = 1


def _denied(index: int) -> Body:
    return {"partition_index": index, "error_code": ErrorCode.TOPIC_AUTHORIZATION_FAILED, "old_style_offsets": [], "timestamp": -1, "offset": -1, "leader_epoch": -1}


def _list_one(ctx: RequestContext, topic, p: Body, isolation: int) -> Body:
    index = p["partition_index"]
    out = {"partition_index": index, "error_code": ErrorCode.NONE, "old_style_offsets": [], "timestamp": -1, "offset": -1, "leader_epoch": -1}
    code, plog = ctx.resolve(topic, index, p.get("current_leader_epoch", -1))
    if code != ErrorCode.NONE:
        out["error_code"] = code
        return out
    assert plog is not None  # resolve() returns the log with NONE
    ts = p["timestamp"]
    epoch = topic.advertised_epoch(index)
    if ts == LATEST:
        out["offset"] = plog.last_stable_offset if isolation == READ_COMMITTED else plog.high_watermark
        out["leader_epoch"] = epoch
    elif ts in (EARLIEST, EARLIEST_LOCAL):
        out["offset"] = plog.log_start_offset
        out["leader_epoch"] = epoch
    elif ts in (EARLIEST_PENDING_UPLOAD, LATEST_TIERED):
        pass  # no tiered storage: Kafka answers -1 here too
    elif ts < 0 and ts != MAX_TIMESTAMP:
        out["error_code"] = ErrorCode.INVALID_REQUEST
    else:
        fetchable = plog.last_stable_offset if isolation == READ_COMMITTED else plog.high_watermark
        if ts == MAX_TIMESTAMP:
            found = plog.max_timestamp_offset()
            batch_offset, wanted = (found[0], found[1]) if found else (-1, -1)
            record = _first_record(plog, batch_offset, fetchable, lambda t: t == wanted) if batch_offset >= 0 else None
        else:
            at_ts = plog.offset_for_timestamp(ts)
            record = _first_record(plog, at_ts[0], fetchable, lambda t: t >= ts) if at_ts else None
        if record is not None:
            out["offset"], out["timestamp"], out["leader_epoch"] = record
    return out


def _first_record(plog, batch_offset: int, fetchable: int, matches: Callable[[int], bool]) -> tuple[int, int, int] | None:
    """The log narrows a time lookup to a batch; Kafka answers with the record itself (its offset and
    timestamp, and its batch's leader epoch), and never with one at or above the last fetchable offset."""
    if batch_offset >= fetchable:
        return None
    data = plog.read(batch_offset, 1, upper_bound=fetchable).to_bytes()
    for batch in split_batches(data).batches:
        for rec in decode_records(batch):
            if rec.offset >= fetchable:
                return None
            if rec.offset >= batch_offset and matches(rec.timestamp):
                return rec.offset, rec.timestamp, batch.partition_leader_epoch
    return None


async def list_offsets(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    isolation = body.get("isolation_level", 0)
    topics = []
    for t in body.get("topics", []):
        if not ctx.authorized("DESCRIBE", "TOPIC", t["name"]):
            topics.append({"name": t["name"], "partitions": [_denied(p["partition_index"]) for p in t.get("partitions", [])]})
            continue
        topic = registry.get(t["name"])
        topics.append({"name": t["name"], "partitions": [_list_one(ctx, topic, p, isolation) for p in t.get("partitions", [])]})
    return {"throttle_time_ms": 0, "topics": topics}


async def offset_for_leader_epoch(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    topics = []
    for t in body.get("topics", []):
        topic = registry.get(t["topic"])
        denied = not ctx.authorized("DESCRIBE", "TOPIC", t["topic"])
        parts = []
        for p in t.get("partitions", []):
            index = p["partition"]
            code, plog = (ErrorCode.TOPIC_AUTHORIZATION_FAILED, None) if denied else ctx.resolve(topic, index, p.get("current_leader_epoch", -1))
            out = {"error_code": code, "partition": index, "leader_epoch": -1, "end_offset": -1}
            if code == ErrorCode.NONE:
                assert topic is not None and plog is not None  # resolve() returns the log with NONE
                requested = p["leader_epoch"]
                advertised = topic.advertised_epoch(index)
                if requested == advertised:
                    # The current epoch may be newer than any batch (just promoted): it ends at the log end.
                    out["leader_epoch"], out["end_offset"] = advertised, plog.log_end_offset
                else:
                    out["leader_epoch"], out["end_offset"] = plog.end_offset_for_epoch(requested)
            parts.append(out)
        topics.append({"topic": t["topic"], "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}


async def delete_records(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    topics = []
    for t in body.get("topics", []):
        topic = registry.get(t["name"])
        denied = not ctx.authorized("DELETE", "TOPIC", t["name"])
        parts = []
        for p in t.get("partitions", []):
            index = p["partition_index"]
            code, plog = (ErrorCode.TOPIC_AUTHORIZATION_FAILED, None) if denied else ctx.resolve(topic, index)
            out = {"partition_index": index, "low_watermark": -1, "error_code": code}
            if code == ErrorCode.NONE and topic is not None and not topic.writable:
                out["error_code"] = ErrorCode.INVALID_REQUEST  # a mirror's start offset follows its source
            elif code == ErrorCode.NONE:
                assert plog is not None  # resolve() returns the log with NONE
                target = plog.high_watermark if p["offset"] == -1 else p["offset"]
                if target < 0 or target > plog.high_watermark:
                    out["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
                else:
                    try:
                        await storage_calls.call(plog, plog.advance_log_start, target)
                    except StorageError as exc:
                        out["error_code"] = exc.error_code
                    out["low_watermark"] = plog.log_start_offset
            parts.append(out)
        topics.append({"name": t["name"], "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
