"""Idempotent produce semantics and producer-state snapshots."""

from __future__ import annotations

import pytest

from linkd.storage import InvalidProducerEpoch, OutOfOrderSequence
from linkd.storage.producer_state import ProducerStateManager, list_snapshots
from protocol.errors import ErrorCode
from protocol.records import RecordBatch
from tests.storage.helpers import batch, log_dir, open_log


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


def produce(log, seq, records=2, pid=1000, pepoch=0):
    return log.append_assigned(batch(0, records, producer_id=pid, producer_epoch=pepoch, sequence=seq), 1)


def test_a_retried_batch_among_the_last_five_returns_its_original_offsets(tmp_path):
    log = open_log(tmp_path)
    results = [produce(log, seq) for seq in range(0, 14, 2)]
    end = log.log_end_offset
    for original, seq in zip(results[-5:], range(4, 14, 2), strict=True):
        again = produce(log, seq)
        assert again.duplicate and (again.base_offset, again.last_offset) == (original.base_offset, original.last_offset)
        assert again.bytes == 0
    assert log.log_end_offset == end
    with pytest.raises(OutOfOrderSequence):
        produce(log, 2)  # older than the last five: no longer recognisable as a duplicate


def test_a_sequence_gap_is_out_of_order(tmp_path):
    log = open_log(tmp_path)
    produce(log, 0)
    with pytest.raises(OutOfOrderSequence) as info:
        produce(log, 5)
    assert info.value.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert log.log_end_offset == 2


def test_a_stale_producer_epoch_is_fenced_and_a_new_epoch_restarts_at_zero(tmp_path):
    log = open_log(tmp_path)
    produce(log, 0, pepoch=3)
    with pytest.raises(InvalidProducerEpoch) as info:
        produce(log, 2, pepoch=2)
    assert info.value.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    with pytest.raises(OutOfOrderSequence):
        produce(log, 7, pepoch=4)
    assert not produce(log, 0, pepoch=4).duplicate
    with pytest.raises(InvalidProducerEpoch):
        produce(log, 2, pepoch=3)


def test_an_unknown_producer_is_accepted_at_any_sequence(tmp_path):
    log = open_log(tmp_path)
    assert produce(log, 17, pid=5).base_offset == 0
    assert produce(log, 19, pid=5).base_offset == 2


def test_sequences_wrap_at_int32_max(tmp_path):
    log = open_log(tmp_path)
    produce(log, 2**31 - 2, records=1)
    produce(log, 2**31 - 1, records=1)
    produce(log, 0, records=1)
    assert log.log_end_offset == 3


def test_mirrored_batches_are_recorded_without_validation_and_then_guard_produce(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2, producer_id=9, producer_epoch=1, sequence=40))
    log.append_mirrored(batch(2, 2, producer_id=9, producer_epoch=1, sequence=90))  # the source's business
    assert produce(log, 90, pid=9, pepoch=1).duplicate
    assert log.producer_ids_seen_max() == 9


@pytest.mark.parametrize("clean", [True, False])
def test_duplicate_detection_survives_a_reopen(tmp_path, clean):
    log = open_log(tmp_path)
    first = produce(log, 0)
    produce(log, 2)
    if clean:
        log.close()
    else:
        log.abandon()
    log = open_log(tmp_path)
    again = produce(log, 0)
    assert again.duplicate and again.base_offset == first.base_offset
    with pytest.raises(OutOfOrderSequence):
        produce(log, 9)


def test_snapshots_are_written_on_flush_and_truncation_discards_newer_ones(tmp_path):
    log = open_log(tmp_path)
    produce(log, 0)
    log.flush()
    produce(log, 2)
    log.flush()
    assert list_snapshots(str(log_dir(tmp_path))) == [2, 4]
    log.truncate_to(2)
    assert list_snapshots(str(log_dir(tmp_path))) == [2]
    assert produce(log, 2).base_offset == 2  # the cut batch's sequence is free again


def test_snapshot_round_trip_and_damage_detection():
    state = ProducerStateManager()
    for seq in range(0, 20, 2):
        header = RecordBatch(memoryview(batch(seq, 2, producer_id=3, producer_epoch=1, sequence=seq, transactional=seq == 10)))
        state.apply(header)
    data = state.to_bytes(20)
    loaded = ProducerStateManager.from_bytes(data, 20)
    assert loaded.entries == state.entries and loaded.ongoing == {3: 10} and loaded.max_producer_id == 3
    damaged = bytearray(data)
    damaged[-3] ^= 1
    with pytest.raises(ValueError):
        ProducerStateManager.from_bytes(bytes(damaged), 20)
    with pytest.raises(ValueError):
        ProducerStateManager.from_bytes(data, 21)
