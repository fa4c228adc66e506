"""WriteTxnMarkers: how ``kafka-transactions abort`` ends a transaction in one partition.

In Kafka a transaction coordinator sends this to partition leaders; linkd is its own coordinator and
writes its markers into its own logs, so the only sender is an operator's admin client
(``Admin.abortTransaction``, behind ``kafka-transactions abort --topic T --partition P --start-offset O``).
linkd accepts ABORT markers only, on writable partitions:

- the transaction is one linkd coordinates: the coordinator aborts all of it (every partition, its
  pending offsets dropped) and bumps its producer's epoch, as for a timed-out transaction. Kafka would
  write the marker to the named partition alone and leave the coordinator's transaction ongoing, so the
  producer could still commit the other partitions; aborting the whole transaction keeps it atomic.
- an open transaction no coordinator here knows (a hanging one): the ABORT marker is appended to that
  partition with the request's producer id and epoch, as Kafka does.
- the producer has no open transaction there: nothing to end, answered NONE.

A mirror topic is read-only (its transactions are the source's and end with the source's markers, or with
linkd's at promote/failover): ``INVALID_TXN_STATE``, whose text the tool prints ("attempted a transactional
operation in an invalid state"); linkd logs why. A COMMIT marker is ``INVALID_REQUEST``: no other
coordinator may complete a transaction on linkd. Authorization is Kafka's: ``CLUSTER_ACTION`` on the cluster.
There is no coordinator epoch in linkd (DescribeProducers answers -1), so the request's is not compared.
"""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode
from protocol.records import CONTROL_ABORT, build_control_batch

from .. import storage_calls
from ..storage import InvalidProducerEpoch, LogClosed
from .acl import CLUSTER_NAME
from .context import Body, RequestContext

log = logging.getLogger(__name__)


async def _abort_one(ctx: RequestContext, marker: Body, name: str, index: int) -> ErrorCode:
    topic = ctx.broker.topics.get(name)
    code, plog = ctx.resolve(topic, index)
    if plog is None or topic is None:
        return code
    if marker.get("transaction_result"):
        return ErrorCode.INVALID_REQUEST
    if not topic.writable:
        log.warning("%s-%d: refusing to abort a transaction of producer %d in a read-only mirror (the source ends it, or promote/failover does)",
                    name, index, marker["producer_id"])
        return ErrorCode.INVALID_TXN_STATE
    producer_id, epoch = marker["producer_id"], marker["producer_epoch"]
    try:
        states = {p.producer_id: p for p in await storage_calls.call(plog, plog.producer_states)}
    except LogClosed:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    state = states.get(producer_id)
    if state is None or state.txn_start_offset < 0:
        return ErrorCode.NONE  # no open transaction of this producer here: nothing to end
    if epoch < state.epoch:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    coordinator = ctx.broker.transactions
    if coordinator is not None and await coordinator.abort_for_operator(producer_id, name, index):
        return ErrorCode.NONE
    if producer_id not in plog.open_transactions():
        return ErrorCode.NONE  # ended meanwhile
    log.warning("%s-%d: writing an ABORT marker for the hanging transaction of producer %d epoch %d (from offset %d), on an operator's request",
                name, index, producer_id, epoch, state.txn_start_offset)
    batch = build_control_batch(CONTROL_ABORT, producer_id, epoch)
    try:
        await storage_calls.call(plog, plog.append_assigned, batch, topic.advertised_epoch(index))
        await storage_calls.call(plog, plog.flush)
    except InvalidProducerEpoch:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    except LogClosed:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    return ErrorCode.NONE


async def write_txn_markers(ctx: RequestContext, body: Body) -> Body:
    allowed = ctx.authorized("CLUSTER_ACTION", "CLUSTER", CLUSTER_NAME)
    results = []
    for marker in body.get("markers") or []:
        topics = []
        for item in marker.get("topics") or []:
            partitions = []
            for index in item.get("partition_indexes") or []:
                code = await _abort_one(ctx, marker, item["name"], index) if allowed else ErrorCode.CLUSTER_AUTHORIZATION_FAILED
                partitions.append({"partition_index": index, "error_code": code})
            topics.append({"name": item["name"], "partitions": partitions})
        results.append({"producer_id": marker["producer_id"], "topics": topics})
    return {"markers": results}
