"""DescribeProducers: the idempotent and transactional producers a partition's log remembers.

Read from the partition's producer state (``linkd.storage.producer_state``), which both the mirror path
and the produce path keep from batch headers: so a mirror shows the source's producers, their epochs,
last sequences and the start offset of each open transaction, and after a failover
``kafka-transactions find-hanging`` sees exactly the transactions linkd would leave open. linkd keeps no
transaction coordinator epoch per producer: it answers -1, as Kafka does for a producer no marker has
completed a transaction for.
"""

from __future__ import annotations

from protocol.errors import ErrorCode

from .. import storage_calls
from ..storage import LogClosed
from .context import Body, RequestContext

NO_COORDINATOR_EPOCH = -1
NOT_HOSTED = "This server does not host this topic-partition."


def _error(index: int, code: ErrorCode, message: str | None = None) -> Body:
    return {"partition_index": index, "error_code": code, "error_message": message, "active_producers": []}


async def describe_producers(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    topics = []
    for item in body.get("topics") or []:
        topic = registry.get(item["name"])
        partitions = []
        if not ctx.authorized("READ", "TOPIC", item["name"]):
            topics.append({"name": item["name"], "partitions": [_error(i, ErrorCode.TOPIC_AUTHORIZATION_FAILED) for i in item.get("partition_indexes") or []]})
            continue
        for index in item.get("partition_indexes") or []:
            code, plog = ctx.resolve(topic, index)
            if plog is None:
                # Kafka words an unknown topic so, and leaves a missing partition of a known one unworded.
                partitions.append(_error(index, code, NOT_HOSTED if topic is None else None))
                continue
            try:
                producers = await storage_calls.call(plog, plog.producer_states)
            except LogClosed:
                partitions.append(_error(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            partitions.append({
                "partition_index": index,
                "error_code": ErrorCode.NONE,
                "error_message": None,
                "active_producers": [
                    {"producer_id": p.producer_id, "producer_epoch": p.epoch, "last_sequence": p.last_sequence,
                     "last_timestamp": p.last_timestamp, "coordinator_epoch": NO_COORDINATOR_EPOCH,
                     "current_txn_start_offset": p.txn_start_offset}
                    for p in producers
                ],
            })
        topics.append({"name": item["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}
