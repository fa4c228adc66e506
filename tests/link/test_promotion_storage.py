"""Phase 2 of a failover reads a quiet partition on the event loop (linkd/link/promotion.py): only a log
with an open transaction to abort or data not yet durable goes to a worker thread."""

from __future__ import annotations

import pytest

from linkd.link.promotion import _close_partition, _quiet_partition
from linkd.storage import LogClosed
from tests.storage.helpers import batch, open_log

PRODUCER = 4321


def test_a_durable_log_without_open_transactions_is_closed_on_the_loop_with_the_same_answer(tmp_path):
    plog = open_log(tmp_path)
    plog.append_mirrored(batch(0, 3, producer_id=PRODUCER, producer_epoch=0, sequence=0))
    plog.flush()
    assert _quiet_partition(plog) == ([], PRODUCER) == _close_partition(plog, 1)
    assert plog.log_end_offset == 3  # nothing appended


def test_a_log_with_data_not_yet_durable_or_an_open_transaction_needs_the_worker_thread(tmp_path):
    unflushed = open_log(tmp_path / "unflushed")
    unflushed.append_mirrored(batch(0, 3))
    assert _quiet_partition(unflushed) is None
    open_txn = open_log(tmp_path / "txn")
    open_txn.append_mirrored(batch(0, 2, producer_id=PRODUCER, producer_epoch=0, sequence=0, transactional=True))
    open_txn.flush()
    assert _quiet_partition(open_txn) is None
    aborted, highest = _close_partition(open_txn, 1)
    assert [a["producer_id"] for a in aborted] == [PRODUCER] and highest == PRODUCER


def test_a_closed_log_raises_log_closed_as_the_thread_call_would(tmp_path):
    plog = open_log(tmp_path)
    plog.close()
    with pytest.raises(LogClosed):
        _quiet_partition(plog)
