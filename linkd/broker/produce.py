"""Produce and InitProducerId.

Only writable topics accept records: local topics, and mirrors after promotion. Each partition's data
must be exactly one verified RecordBatch v2 (Kafka's rule since Produce v3); the log assigns offsets
and applies the idempotent-producer sequence checks. A transactional Produce (a request with a
transactional id) is checked against the transaction coordinator (``linkd.txn``): the producer id and
epoch must own the id and the partition must have been added to its ongoing transaction.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

import outcome

from protocol.compression import Compression, compress, decompress
from protocol.errors import CorruptBatch, ErrorCode
from protocol.records import ATTR_COMPRESSION_MASK, ATTR_TIMESTAMP_LOG_APPEND, HEADER_SIZE, crc32c, split_batches

from .. import storage_calls
from ..storage import PartitionLog, StorageError
from ..topicconfig import int_value
from .acl import CLUSTER_NAME
from .cluster import TRANSACTIONS_UNSUPPORTED
from .context import Body, RequestContext, authorized_for_any

log = logging.getLogger(__name__)

ACKS_NONE = 0
ACKS_LEADER = 1
ACKS_ALL = -1
MAX_PRODUCER_EPOCH = 32767
# A Produce's appends run in at most APPEND_JOBS worker-thread jobs of at least PARTITIONS_PER_APPEND_JOB
# partitions each (one job for a small request: one thread hand-off, as before); acks=all flushes the
# partitions of a request in at most FLUSH_JOBS jobs.
APPEND_JOBS = 4
PARTITIONS_PER_APPEND_JOB = 64
FLUSH_JOBS = 16

# RecordBatch v2 header positions (see protocol.records): the CRC covers attributes..end of batch.
_LENGTH_AT = 8
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_MAX_TIMESTAMP_AT = 35
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
# compression.type values that make the broker store batches in that codec (Kafka recompresses too).
_CODECS = {"uncompressed": Compression.NONE, "gzip": Compression.GZIP, "snappy": Compression.SNAPPY, "lz4": Compression.LZ4, "zstd": Compression.ZSTD}


def _stamp_log_append_time(batch: bytes, now_ms: int) -> bytes:
    """What a Kafka broker does to a batch for a LogAppendTime topic: mark the timestamp type and set
    maxTimestamp to the append time (clients then report it for every record), then re-seal the CRC."""
    out = bytearray(batch)
    (attributes,) = _I16.unpack_from(out, _ATTRIBUTES_AT)
    _I16.pack_into(out, _ATTRIBUTES_AT, attributes | ATTR_TIMESTAMP_LOG_APPEND)
    _I64.pack_into(out, _MAX_TIMESTAMP_AT, now_ms)
    _U32.pack_into(out, _CRC_AT, crc32c(memoryview(out)[_ATTRIBUTES_AT:]))
    return bytes(out)


def _recompress(batch: bytes, codec: Compression) -> bytes:
    """The batch with its records block in ``codec`` (compression.type other than producer), re-sealed.
    Offsets, timestamps, producer id and sequences stay; only attributes bits 0-2, length and CRC change."""
    (attributes,) = _I16.unpack_from(batch, _ATTRIBUTES_AT)
    current = attributes & ATTR_COMPRESSION_MASK
    if current == codec:
        return batch
    payload = memoryview(batch)[HEADER_SIZE:]
    raw = decompress(current, payload) if current else bytes(payload)
    out = bytearray(batch[:HEADER_SIZE]) + compress(codec, raw)
    _I16.pack_into(out, _ATTRIBUTES_AT, (attributes & ~ATTR_COMPRESSION_MASK) | codec)
    _I32.pack_into(out, _LENGTH_AT, len(out) - 12)
    _U32.pack_into(out, _CRC_AT, crc32c(memoryview(out)[_ATTRIBUTES_AT:]))
    return bytes(out)


def _timestamp_error(configs: dict[str, str], batch, now_ms: int) -> str | None:
    """Kafka's message.timestamp.before/after.max.ms check for CreateTime topics, on the batch header: the
    first and the largest timestamp bound what the records carry."""
    before = int_value(configs, "message.timestamp.before.max.ms")
    after = int_value(configs, "message.timestamp.after.max.ms")
    if batch.max_timestamp > now_ms + after:
        return f"Timestamp {batch.max_timestamp} of a record is more than message.timestamp.after.max.ms={after} ahead of the broker's time {now_ms}"
    if batch.base_timestamp >= 0 and batch.base_timestamp < now_ms - before:
        return f"Timestamp {batch.base_timestamp} of a record is more than message.timestamp.before.max.ms={before} behind the broker's time {now_ms}"
    return None


class AcksZeroRefused(Exception):
    """An acks=0 Produce failed somewhere: with no answer to carry the error, Kafka closes the connection
    so the producer notices and refreshes its metadata; so does linkd (see dispatch)."""


def read_only_message(topic: str) -> str:
    return f"Cannot append records to read-only mirror topic '{topic}'"


def _result(index: int, code: ErrorCode, message: str | None = None, base_offset: int = -1, log_start: int = -1, append_time: int = -1) -> Body:
    return {
        "index": index,
        "error_code": code,
        "base_offset": base_offset,
        "log_append_time_ms": append_time,
        "log_start_offset": log_start,
        "record_errors": [],
        "error_message": message,
    }


@dataclass(slots=True)
class _Append:
    """A partition's batch that passed every check, waiting for its append; ``result`` is its answer,
    filled in once the append is done."""

    plog: PartitionLog
    result: Body
    data: bytes
    epoch: int
    append_time: int
    flush_to: int = -1  # the offset after the appended batch (acks=all flushes up to it)


def _prepare(ctx: RequestContext, topic, index: int, records, transactional_id, now_ms: int) -> Body | _Append:
    """Check one partition's batch (on the event loop: no I/O): its refusal, or the append to make."""
    code, plog = ctx.resolve(topic, index)
    if code != ErrorCode.NONE:
        return _result(index, code)
    assert plog is not None  # resolve() returns the log with NONE
    if not topic.writable:
        return _result(index, ErrorCode.INVALID_REQUEST, read_only_message(topic.name))
    if records is None or len(records) == 0:
        return _result(index, ErrorCode.INVALID_RECORD, "Produce request has no record batch")
    try:
        split = split_batches(records)
    except CorruptBatch as exc:
        return _result(index, ErrorCode.CORRUPT_MESSAGE, str(exc))
    if split.consumed != len(records) or len(split.batches) != 1:
        return _result(index, ErrorCode.INVALID_RECORD, "Produce requests must contain exactly one whole record batch per partition")
    batch = split.batches[0]
    if batch.magic != 2:
        return _result(index, ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, f"Record batch magic {batch.magic} is not supported")
    if batch.is_control:
        return _result(index, ErrorCode.INVALID_RECORD, "Clients may not write control batches")
    problem: str | None
    if batch.is_transactional != (transactional_id is not None):
        problem = "a transactional record batch needs the request's transactional id" if batch.is_transactional else f"the request has transactional id {transactional_id!r} but its record batch is not transactional"
        return _result(index, ErrorCode.INVALID_RECORD, problem)
    transactions = ctx.broker.transactions
    if transactional_id is not None and transactions is None:
        return _result(index, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_UNSUPPORTED)
    if transactional_id is not None and transactions is not None:
        # The coordinator's lock for this id is held by ``produce`` across the appends (see linkd.txn.coordinator).
        code, problem = transactions.check_produce(transactional_id, batch.producer_id, batch.producer_epoch, topic.name, index)
        if code != ErrorCode.NONE:
            return _result(index, code, problem)
    configs = topic.configs
    max_size = int_value(configs, "max.message.bytes")
    if len(records) > max_size:
        message = f"The batch of {len(records)} bytes is larger than the topic's max.message.bytes ({max_size})"
        return _result(index, ErrorCode.MESSAGE_TOO_LARGE, message)
    data = bytes(records)
    append_time = -1
    log_append_time = configs.get("message.timestamp.type") == "LogAppendTime"
    codec = _CODECS.get(configs.get("compression.type", "producer"))
    if log_append_time or codec is not None:
        try:
            batch.verify()  # never re-seal the CRC of a batch that arrived corrupt
        except CorruptBatch as exc:
            return _result(index, ErrorCode.CORRUPT_MESSAGE, str(exc))
    if not log_append_time:
        problem = _timestamp_error(configs, batch, now_ms)
        if problem:
            return _result(index, ErrorCode.INVALID_TIMESTAMP, problem)
    if codec is not None:
        try:
            data = _recompress(data, codec)
        except CorruptBatch as exc:
            return _result(index, ErrorCode.CORRUPT_MESSAGE, str(exc))
        if len(data) > max_size:
            message = f"The batch of {len(data)} bytes in {configs['compression.type']} is larger than the topic's max.message.bytes ({max_size})"
            return _result(index, ErrorCode.MESSAGE_TOO_LARGE, message)
    if log_append_time:
        data, append_time = _stamp_log_append_time(data, now_ms), now_ms
    return _Append(plog, _result(index, ErrorCode.NONE), data, topic.advertised_epoch(index), append_time)


def _record_append(append: _Append, done: outcome.Outcome) -> bool:
    """Fill in ``append.result`` from its append's outcome; True if the batch is in the log."""
    result, plog = append.result, append.plog
    try:
        appended = done.unwrap()
    except CorruptBatch as exc:
        result.update(error_code=ErrorCode.CORRUPT_MESSAGE, error_message=str(exc))
        return False
    except StorageError as exc:
        result.update(error_code=exc.error_code, error_message=str(exc))
        return False
    except OSError as exc:
        # The disk refused the write (full, read-only, failing); the segment was cut back, nothing is kept.
        # Retriable for the client, as from a Kafka broker whose log directory fails.
        log.error("produce to %s: disk error: %s", plog.name, exc)
        result.update(error_code=ErrorCode.KAFKA_STORAGE_ERROR, error_message=f"Disk error when appending to {plog.name}: {exc}")
        return False
    # The producer state does not keep a duplicate's original append time.
    result.update(base_offset=appended.base_offset, log_start_offset=plog.log_start_offset, log_append_time_ms=-1 if appended.duplicate else append.append_time)
    append.flush_to = appended.last_offset + 1
    return True


async def _flush_all(ctx: RequestContext, appends: list[_Append]) -> None:
    """acks=all: every appended partition fsynced before the answer. One partition waits for the
    partition's shared flush (``Flusher.flush_to``: concurrent producers' group commit); many are flushed
    together, ``FLUSH_JOBS`` worker-thread jobs at a time."""
    if len(appends) == 1:
        try:
            await ctx.broker.flusher.flush_to(appends[0].plog, appends[0].flush_to)
            errors: list[OSError | None] = [None]
        except OSError as exc:
            errors = [exc]
    else:
        errors = await ctx.broker.flusher.flush_many([(a.plog, a.flush_to) for a in appends], min(FLUSH_JOBS, len(appends)))
    for append, error in zip(appends, errors, strict=True):
        if error is not None:
            # In the page cache but not durable: acks=all must not say it is.
            log.error("produce to %s: fsync failed: %s", append.plog.name, error)
            append.result.update(error_code=ErrorCode.KAFKA_STORAGE_ERROR, error_message=f"Disk error when flushing {append.plog.name}: {error}", base_offset=-1)


async def produce(ctx: RequestContext, body: Body) -> Body | None:
    transactional_id = body.get("transactional_id")
    if transactional_id is None or ctx.broker.transactions is None:
        return await _produce(ctx, body, transactional_id)
    # One transactional id's appends and its marker phase never interleave.
    async with ctx.broker.transactions.lock(transactional_id):
        return await _produce(ctx, body, transactional_id)


async def _produce(ctx: RequestContext, body: Body, transactional_id: str | None) -> Body | None:
    """Every partition checked on the event loop, then the accepted batches appended together
    (``storage_calls.call_batched``: a few worker-thread jobs for the whole request, each partition's
    appends in request order and after earlier calls for its log), then, for acks=all, flushed; answered
    after all of that, as Kafka answers a Produce once every partition is done."""
    registry = ctx.broker.topics
    acks = body.get("acks", ACKS_LEADER)
    use_ids = ctx.api_version >= 13
    now_ms = int(time.time() * 1000)
    responses = []
    pending: list[_Append] = []
    # Kafka: a transactional producer needs WRITE on its transactional id, else nothing of the request is written.
    transaction_denied = transactional_id is not None and not ctx.authorized("WRITE", "TRANSACTIONAL_ID", transactional_id)
    for t in body.get("topic_data", []):
        topic = registry.by_id(t["topic_id"]) if use_ids else registry.get(t["name"])
        out = {"name": t.get("name") if not use_ids else (topic.name if topic else ""), "topic_id": t.get("topic_id"), "partition_responses": []}
        responses.append(out)
        # Judged before existence, so an unauthorized client cannot tell which topics exist.
        name = topic.name if use_ids and topic is not None else t.get("name")
        topic_denied = name is not None and not (use_ids and topic is None) and not ctx.authorized("WRITE", "TOPIC", name)
        for p in t.get("partition_data", []):
            if acks not in (ACKS_NONE, ACKS_LEADER, ACKS_ALL):
                out["partition_responses"].append(_result(p["index"], ErrorCode.INVALID_REQUIRED_ACKS))
                continue
            if transaction_denied:
                out["partition_responses"].append(_result(p["index"], ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
                continue
            if topic_denied:
                out["partition_responses"].append(_result(p["index"], ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            if use_ids and topic is None:
                out["partition_responses"].append(_result(p["index"], ErrorCode.UNKNOWN_TOPIC_ID))
                continue
            if acks == ACKS_ALL and topic is not None and int_value(topic.configs, "min.insync.replicas") > 1:
                # linkd holds one replica, as a Kafka broker whose followers are all out of sync.
                out["partition_responses"].append(_result(p["index"], ErrorCode.NOT_ENOUGH_REPLICAS, f"The topic's min.insync.replicas is {topic.configs['min.insync.replicas']} and linkd holds 1 replica"))
                continue
            prepared = _prepare(ctx, topic, p["index"], p.get("records"), transactional_id, now_ms)
            if isinstance(prepared, _Append):
                pending.append(prepared)
                out["partition_responses"].append(prepared.result)
            else:
                out["partition_responses"].append(prepared)
    appended: list[_Append] = []
    if pending:
        jobs = max(1, min(APPEND_JOBS, len(pending) // PARTITIONS_PER_APPEND_JOB))
        outcomes = await storage_calls.call_batched([(a.plog, a.plog.append_assigned, (a.data, a.epoch, now_ms)) for a in pending], jobs)
        appended = [a for a, done in zip(pending, outcomes, strict=True) if _record_append(a, done)]
    if appended:
        ctx.broker.notifier.notify()
    if acks == ACKS_ALL and appended:
        await _flush_all(ctx, appended)
    if acks == ACKS_NONE:
        failed = sorted({f"{out['name'] or out['topic_id']}-{r['index']}: {ErrorCode(r['error_code']).name}" for out in responses for r in out["partition_responses"] if r["error_code"] != ErrorCode.NONE})
        if failed:
            raise AcksZeroRefused(f"acks=0 produce failed ({', '.join(failed)})")
        return None
    return {"responses": responses, "throttle_time_ms": 0}


async def init_producer_id(ctx: RequestContext, body: Body) -> Body:
    transactional_id = body.get("transactional_id")
    if transactional_id is not None and not ctx.authorized("WRITE", "TRANSACTIONAL_ID", transactional_id):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "producer_id": -1, "producer_epoch": -1}
    # An idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (Kafka since 2.8).
    if transactional_id is None and not (ctx.authorized("IDEMPOTENT_WRITE", "CLUSTER", CLUSTER_NAME) or authorized_for_any(ctx, "WRITE", "TOPIC")):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "producer_id": -1, "producer_epoch": -1}
    if transactional_id is not None:
        if ctx.broker.transactions is None:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "producer_id": -1, "producer_epoch": -1}
        return await ctx.broker.transactions.init_producer_id(body, ctx.api_version)
    pid, epoch = body.get("producer_id", -1), body.get("producer_epoch", -1)
    if pid >= 0 and 0 <= epoch < MAX_PRODUCER_EPOCH:
        # KIP-360: an idempotent producer that lost track of its sequences bumps its epoch and starts over.
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id": pid, "producer_epoch": epoch + 1}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id": ctx.broker.producer_ids.allocate(), "producer_epoch": 0}
