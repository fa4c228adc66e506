"""Closing a log's open transactions with ABORT markers (a promoted mirror; later a transaction
coordinator that times a transaction out).

``abort_open_transactions`` appends one ABORT control batch per producer with an open transaction, at the
log end, stamped with ``leader_epoch``, and returns what it aborted. Writer: blocking (appends), from the
thread that owns the log's writes at that moment; idempotent in effect, since an aborted transaction is no
longer open.
"""

from __future__ import annotations

import time

from protocol.records import CONTROL_ABORT, build_control_batch

from .log import PartitionLog


def abort_open_transactions(plog: PartitionLog, leader_epoch: int) -> list[dict]:
    """ABORT every open transaction of ``plog``; returns [{producer_id, first_offset, abort_marker_offset}]."""
    aborted = []
    for pid, first_offset in sorted(plog.open_transactions().items()):
        header = plog.batch_header(first_offset)
        producer_epoch = header.producer_epoch if header is not None else 0
        marker = build_control_batch(CONTROL_ABORT, pid, producer_epoch, base_offset=plog.log_end_offset, partition_leader_epoch=leader_epoch, timestamp=int(time.time() * 1000))
        plog.append_mirrored(marker)
        aborted.append({"producer_id": pid, "first_offset": first_offset, "abort_marker_offset": plog.log_end_offset - 1})
    return aborted
