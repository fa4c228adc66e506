"""Transactions: LSO, open transactions and aborted ranges from batch headers, in memory and on disk."""

from __future__ import annotations

import struct

import pytest

from protocol.records import CONTROL_ABORT, CONTROL_COMMIT
from tests.storage.helpers import batch, marker, open_log, segment_files

CONFIG = dict(segment_bytes=700, index_interval_bytes=64)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


def txn(log, pid, records=2):
    offset = log.log_end_offset
    log.append_mirrored(batch(offset, records, producer_id=pid, producer_epoch=0, sequence=offset, transactional=True))
    return offset


def end_txn(log, pid, kind):
    offset = log.log_end_offset
    log.append_mirrored(marker(kind, pid, 0, base_offset=offset))
    return offset


def plain(log, records=2):
    log.append_mirrored(batch(log.log_end_offset, records))


def interleaved(tmp_path):
    log = open_log(tmp_path, **CONFIG)
    a0 = txn(log, 1)          # 0-1  A opens
    plain(log)                # 2-3
    b0 = txn(log, 2)          # 4-5  B opens
    txn(log, 1)               # 6-7
    a_end = end_txn(log, 1, CONTROL_ABORT)   # 8   A aborted
    c0 = txn(log, 3)          # 9-10 C opens
    b_end = end_txn(log, 2, CONTROL_COMMIT)  # 11  B committed
    d0 = txn(log, 4)          # 12-13 D opens
    plain(log)                # 14-15
    d_end = end_txn(log, 4, CONTROL_ABORT)   # 16  D aborted; C still open
    for _ in range(6):
        plain(log)            # 17-28, more segments
    return log, dict(a0=a0, b0=b0, c0=c0, d0=d0, a_end=a_end, b_end=b_end, d_end=d_end)


def check(log, o):
    assert log.open_transactions() == {3: o["c0"]}
    assert log.last_stable_offset == o["c0"] == 9
    assert log.high_watermark in (29, 31)
    assert log.aborted_transactions(0, 29) == [(1, 0), (4, 12)]
    assert log.aborted_transactions(9, 12) == []
    assert log.aborted_transactions(7, 9) == [(1, 0)]
    assert log.aborted_transactions(13, 29) == [(4, 12)]
    assert log.aborted_transactions(0, 1) == [(1, 0)]  # the marker is later, the data is in range
    assert log.aborted_transactions(17, 29) == []


def test_interleaved_transactions_give_the_lso_and_aborted_ranges(tmp_path):
    log, offsets = interleaved(tmp_path)
    check(log, offsets)
    assert log.read(0, 1 << 20, upper_bound=log.last_stable_offset).next_offset == 9


@pytest.mark.parametrize("shutdown", ["clean", "unclean", "unclean-no-flush"])
def test_transaction_state_survives_reopen(tmp_path, shutdown):
    log, offsets = interleaved(tmp_path)
    if shutdown == "clean":
        log.close()
    elif shutdown == "unclean":
        log.flush()
        plain(log)
        log.abandon()
    else:
        log.abandon()
    log = open_log(tmp_path, **CONFIG)
    check(log, offsets)
    end_txn(log, 3, CONTROL_COMMIT)
    assert log.last_stable_offset == log.high_watermark and log.open_transactions() == {}


def test_txnindex_files_hold_kafka_entries_in_the_marker_segment(tmp_path):
    log, offsets = interleaved(tmp_path)
    log.close()
    entries = []
    for path in segment_files(tmp_path, ".txnindex"):
        data = path.read_bytes()
        assert len(data) % 34 == 0
        entries += [(int(path.name[:20]),) + e for e in struct.iter_unpack(">hqqqq", data)]
    assert [e[1:] for e in entries] == [(0, 1, 0, 8, 4), (0, 4, 12, 16, 9)]
    for base, *_rest, last, _lso in entries:
        assert base <= last


def test_truncation_reopens_a_transaction_whose_marker_was_cut(tmp_path):
    log, offsets = interleaved(tmp_path)
    log.truncate_to(offsets["d_end"])
    assert log.open_transactions() == {3: 9, 4: 12}
    assert log.aborted_transactions(0, 16) == [(1, 0)]
    log.close()
    log = open_log(tmp_path, **CONFIG)
    assert log.open_transactions() == {3: 9, 4: 12}
    assert log.aborted_transactions(0, 16) == [(1, 0)]


def test_produced_transactional_batches_and_markers(tmp_path):
    log = open_log(tmp_path, **CONFIG)
    log.append_assigned(batch(0, 2, producer_id=5, producer_epoch=0, sequence=0, transactional=True), 3)
    assert log.last_stable_offset == 0
    log.append_assigned(marker(CONTROL_ABORT, 5, 0), 3)
    assert log.last_stable_offset == 3 and log.aborted_transactions(0, 3) == [(5, 0)]
