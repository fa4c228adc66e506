"""PartitionLog: appends, reads, offsets, cutting, retention, queries."""

from __future__ import annotations

import dataclasses
import logging
import os
import struct

import pytest

from linkd.storage import LogConfig, OffsetOutOfRange, PartitionLog
from linkd.storage.errors import InvalidRecord
from protocol.errors import CorruptBatch, ErrorCode
from protocol.records import RecordBatch, split_batches
from tests.storage.helpers import BASE_TS, batch, log_dir, open_log, segment_files


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


def test_mirrored_batches_are_stored_byte_for_byte_with_source_offsets_and_gaps(tmp_path):
    log = open_log(tmp_path)
    blobs = [batch(0, 3, epoch=4), batch(10, 2, epoch=4), batch(12, 1, epoch=5)]
    result = log.append_mirrored(b"".join(blobs))
    assert (result.base_offset, result.last_offset, result.bytes, result.duplicate) == (0, 12, sum(map(len, blobs)), False)
    assert log.log_end_offset == 13
    assert log.read(0, 1 << 20).to_bytes() == b"".join(blobs)
    assert segment_files(tmp_path)[0].read_bytes() == b"".join(blobs)
    assert log.latest_epoch == 5


def test_a_corrupt_batch_rejects_the_whole_append_and_writes_nothing(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2))
    before = segment_files(tmp_path)[0].read_bytes()
    bad = bytearray(batch(3, 2))
    bad[70] ^= 0xFF
    with pytest.raises(CorruptBatch) as info:
        log.append_mirrored(batch(2, 1) + bytes(bad))
    assert info.value.reason == "BAD_CRC"
    assert log.log_end_offset == 2
    assert segment_files(tmp_path)[0].read_bytes() == before


@pytest.mark.parametrize("base_offsets", [[1], [2, 2], [5, 4]])
def test_mirrored_offsets_must_increase_from_the_log_end(tmp_path, base_offsets):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2))
    with pytest.raises(CorruptBatch) as info:
        log.append_mirrored(b"".join(batch(o, 1) for o in base_offsets))
    assert info.value.reason == "NON_MONOTONIC_OFFSETS"
    assert log.log_end_offset == 2


def test_a_partial_trailing_batch_is_not_appended(tmp_path):
    log = open_log(tmp_path)
    whole, partial = batch(0, 2), batch(2, 2)
    result = log.append_mirrored(whole + partial[:30])
    assert result.bytes == len(whole) and log.log_end_offset == 2


def test_unsupported_magic_is_refused(tmp_path):
    log = open_log(tmp_path)
    old = bytearray(batch(0, 1))
    old[16] = 1
    with pytest.raises(CorruptBatch):
        log.append_mirrored(bytes(old))


def test_assigned_append_rewrites_only_base_offset_and_leader_epoch(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 5, epoch=3))
    produced = batch(0, 2, epoch=0)
    result = log.append_assigned(produced, leader_epoch=4, now_ms=BASE_TS)
    assert (result.base_offset, result.last_offset, result.log_append_time) == (5, 6, -1)
    stored = log.read(5, 1 << 20).to_bytes()
    assert stored[:8] == struct.pack(">q", 5) and stored[12:16] == struct.pack(">i", 4)
    assert stored[8:12] == produced[8:12] and stored[16:] == produced[16:]
    RecordBatch(memoryview(stored)).verify()
    assert log.latest_epoch == 4 and log.end_offset_for_epoch(3) == (3, 5)


def test_assigned_append_needs_exactly_one_whole_batch(tmp_path):
    log = open_log(tmp_path)
    with pytest.raises(InvalidRecord):
        log.append_assigned(batch(0, 1) + batch(1, 1), 0)
    with pytest.raises(InvalidRecord):
        log.append_assigned(batch(0, 1)[:-1], 0)


def test_read_starts_at_the_batch_holding_the_offset_not_the_next(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=0)
    blobs = [batch(i * 4, 4) for i in range(20)]
    log.append_mirrored(b"".join(blobs))
    for offset in range(80):
        assert log.read(offset, 1).to_bytes() == blobs[offset // 4]


def test_read_returns_at_least_one_batch_then_whole_batches_within_max_bytes(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=100)
    blobs = [batch(i * 2, 2, value_size=50) for i in range(30)]
    log.append_mirrored(b"".join(blobs))
    size = len(blobs[0])
    assert log.read(0, 0).to_bytes() == blobs[0]
    assert log.read(0, size * 3 + 5).to_bytes() == b"".join(blobs[:3])
    result = log.read(7, size * 10)
    assert result.to_bytes() == b"".join(blobs[3:13]) and result.next_offset == 26


def test_read_stops_below_the_upper_bound(tmp_path):
    log = open_log(tmp_path)
    blobs = [batch(i * 2, 2) for i in range(10)]
    log.append_mirrored(b"".join(blobs))
    assert log.read(0, 1 << 20, upper_bound=6).to_bytes() == b"".join(blobs[:3])
    assert log.read(6, 1 << 20, upper_bound=6).ranges == ()


def test_read_crosses_segments_and_skips_gaps(tmp_path):
    log = open_log(tmp_path, segment_bytes=300)
    blobs = [batch(i * 10, 2) for i in range(8)]
    for blob in blobs:
        log.append_mirrored(blob)
    assert len(log.segment_base_offsets()) > 2
    result = log.read(5, 1 << 20)
    assert result.to_bytes() == b"".join(blobs[1:])
    assert len(result.ranges) == len(log.segment_base_offsets())
    assert log.read(71, 1 << 20).to_bytes() == blobs[7]


def test_reads_outside_the_log_are_out_of_range_and_the_end_is_empty(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 3))
    assert log.read(3, 100).ranges == ()
    with pytest.raises(OffsetOutOfRange) as info:
        log.read(4, 100)
    assert info.value.error_code == ErrorCode.OFFSET_OUT_OF_RANGE == 1
    log.advance_log_start(2)
    with pytest.raises(OffsetOutOfRange):
        log.read(1, 100)
    assert log.read(2, 100).to_bytes() == batch(0, 3)  # the batch holding the new log start


def test_file_ranges_can_be_sent_with_sendfile(tmp_path):
    log = open_log(tmp_path)
    blob = batch(0, 3)
    log.append_mirrored(blob)
    (file_range,) = log.read(0, 100).ranges
    out = tmp_path / "out"
    with open(file_range.path, "rb") as src, open(out, "wb") as dst:
        os.sendfile(dst.fileno(), src.fileno(), file_range.position, file_range.length)
    assert out.read_bytes() == blob


def test_segments_roll_by_size_and_by_time_with_kafka_file_names(tmp_path):
    log = open_log(tmp_path, segment_bytes=400, segment_ms=1000)
    for i in range(6):
        log.append_mirrored(batch(i * 2, 2))
    by_size = log.segment_base_offsets()
    assert len(by_size) >= 2
    assert [p.name for p in segment_files(tmp_path)] == [f"{b:020d}.log" for b in by_size]
    log.append_mirrored(batch(12, 1, ts=BASE_TS + 10_000))
    assert log.segment_base_offsets()[-1] == 12
    for suffix in (".index", ".timeindex", ".txnindex"):
        assert len(segment_files(tmp_path, suffix)) == len(log.segment_base_offsets())


def test_offset_index_entries_are_kafka_relative_offset_and_position(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=0)
    blobs = [batch(100 + i * 3, 3) for i in range(4)]
    log.append_mirrored(b"".join(blobs))
    log.close()
    index = (log_dir(tmp_path) / f"{100:020d}.index").read_bytes()
    entries = list(struct.iter_unpack(">ii", index))
    positions = [sum(map(len, blobs[:i])) for i in range(1, 4)]
    assert entries == [(3 * i + 2, positions[i - 1]) for i in range(1, 4)]


def test_truncate_drops_the_batch_holding_the_offset_and_everything_after(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=300)
    blobs = [batch(i * 3, 3, epoch=i) for i in range(8)]
    for blob in blobs:
        log.append_mirrored(blob)
    with caplog.at_level(logging.WARNING, logger="linkd.storage"):
        removed = log.truncate_to(10, reason="test")
    assert removed == sum(map(len, blobs[3:]))
    assert log.log_end_offset == 9
    assert log.read(0, 1 << 20).to_bytes() == b"".join(blobs[:3])
    assert log.latest_epoch == 2 and log.end_offset_for_epoch(2) == (2, 9)
    assert "truncated to offset 10 (test)" in caplog.text
    log.append_mirrored(batch(9, 1, epoch=9))
    assert log.log_end_offset == 10


def test_truncate_below_the_log_start_restarts_the_log(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 10))
    log.advance_log_start(5)
    log.truncate_to(3)
    assert (log.log_start_offset, log.log_end_offset) == (3, 3)
    log.append_mirrored(batch(3, 1))
    assert log.read(3, 100).to_bytes() == batch(3, 1)


def test_advance_log_start_deletes_whole_segments_below_it(tmp_path):
    log = open_log(tmp_path, segment_bytes=300)
    for i in range(8):
        log.append_mirrored(batch(i * 3, 3, epoch=i))
    segments = log.segment_base_offsets()
    assert log.advance_log_start(segments[2] + 1) == segments[2] + 1
    assert log.segment_base_offsets()[0] == segments[2]
    assert log.epoch_entries()[0] == (segments[2] // 3, segments[2] + 1)
    with pytest.raises(OffsetOutOfRange):
        log.advance_log_start(log.log_end_offset + 1)
    log.advance_log_start(log.log_end_offset)
    assert log.read(log.log_end_offset, 10).ranges == ()
    assert log.statistics().size_bytes == 0


def test_retention_by_bytes_and_time_moves_the_log_start(tmp_path):
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=600, retention_ms=-1)
    for i in range(10):
        log.append_mirrored(batch(i * 3, 3, ts=BASE_TS + i * 1000))
    total = log.statistics().size_bytes
    deleted = log.apply_retention(BASE_TS)
    assert deleted > 0 and log.log_start_offset == log.segment_base_offsets()[0] > 0
    assert log.statistics().size_bytes < total
    log.config = dataclasses.replace(log.config, retention_bytes=-1, retention_ms=5000)
    log.apply_retention(BASE_TS + 9000)
    assert log.log_start_offset >= 12
    log.apply_retention(BASE_TS + 100_000)  # everything expired, the active segment too
    assert log.log_start_offset == log.log_end_offset == 30


def test_offset_for_timestamp_and_max_timestamp(tmp_path):
    log = open_log(tmp_path, segment_bytes=300, index_interval_bytes=0)
    for i in range(10):
        log.append_mirrored(batch(i * 2, 2, ts=BASE_TS + i * 100))
    assert log.offset_for_timestamp(BASE_TS) == (0, BASE_TS)
    assert log.offset_for_timestamp(BASE_TS + 450) == (10, BASE_TS + 500)
    assert log.offset_for_timestamp(BASE_TS + 501) == (10, BASE_TS + 501)  # batch-granular: record 11 is the exact one
    assert log.offset_for_timestamp(BASE_TS + 10_000) is None
    assert log.max_timestamp_offset() == (18, BASE_TS + 901)
    log.close()
    log = open_log(tmp_path, segment_bytes=300, index_interval_bytes=0)
    assert log.offset_for_timestamp(BASE_TS + 450) == (10, BASE_TS + 500)
    assert log.max_timestamp_offset() == (18, BASE_TS + 901)


def test_end_offset_for_epoch_has_offset_for_leader_epoch_semantics(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 5, epoch=2) + batch(5, 5, epoch=4) + batch(10, 5, epoch=7))
    assert log.end_offset_for_epoch(2) == (2, 5)
    assert log.end_offset_for_epoch(3) == (2, 5)
    assert log.end_offset_for_epoch(6) == (4, 10)
    assert log.end_offset_for_epoch(7) == (7, 15)
    assert log.end_offset_for_epoch(8) == (-1, -1)
    assert log.end_offset_for_epoch(1) == (-1, -1)
    assert log.end_offset_for_epoch(-1) == (-1, -1)


def test_clean_reopen_keeps_everything(tmp_path):
    log = open_log(tmp_path, segment_bytes=300)
    blobs = [batch(i * 2, 2, epoch=i // 3, producer_id=7 + i, producer_epoch=0, sequence=0) for i in range(9)]
    for blob in blobs:
        log.append_mirrored(blob)
    log.advance_log_start(3)
    before = log.statistics()
    log.close()
    assert (log_dir(tmp_path) / "clean-shutdown").exists()
    log = open_log(tmp_path, segment_bytes=300)
    assert not (log_dir(tmp_path) / "clean-shutdown").exists()
    assert log.statistics() == dataclasses.replace(before, recovery_point=18)
    assert log.read(3, 1 << 20).to_bytes() == b"".join(blobs[1:])
    assert log.producer_ids_seen_max() == 15


def test_statistics_is_an_immutable_record(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2))
    stats = log.statistics()
    assert (stats.log_end_offset, stats.segment_count, stats.size_bytes) == (2, 1, len(batch(0, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.log_end_offset = 3  # type: ignore[misc]


def test_flush_messages_fsyncs_after_that_many_records(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr("os.fsync", lambda fd: synced.append(fd))
    log = open_log(tmp_path, flush_messages=4)
    log.append_mirrored(batch(0, 3))
    assert log.recovery_point == 0
    log.append_mirrored(batch(3, 1))
    assert log.recovery_point == 4 and synced


def _record_fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    monkeypatch.setattr("os.fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    return synced


@pytest.mark.parametrize("how", ["flush", "flush_messages", "close"])
def test_a_new_partitions_directory_entry_is_made_durable_by_its_first_flush(tmp_path, monkeypatch, how):
    synced = _record_fsynced_paths(monkeypatch)
    log = open_log(tmp_path, flush_messages=1) if how == "flush_messages" else open_log(tmp_path)
    parent = str(tmp_path.resolve())
    assert parent not in synced  # creating a partition costs no fsync: nothing in it needs one yet
    log.append_mirrored(batch(0, 2))
    if how == "flush":
        log.flush()
    elif how == "close":
        log.close()
    # The directory holding the partition directories: without it a crash could lose a flushed log whole.
    assert parent in synced and str(log_dir(tmp_path).resolve()) in synced
    count = synced.count(parent)
    if how != "close":
        log.append_mirrored(batch(2, 1))
        log.flush()
        assert synced.count(parent) == count  # once is enough


def test_a_flush_without_checkpoints_makes_the_data_durable_and_leaves_the_checkpoint_files_for_later(tmp_path, monkeypatch):
    """``flush(checkpoints=False)`` (a failover): the segment and the directories are fsynced and the
    recovery point advances, but no checkpoint file is written although one is due (interval 0); the
    next ordinary flush writes them."""
    synced = _record_fsynced_paths(monkeypatch)
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 3))
    before = sorted(p.name for p in log_dir(tmp_path).iterdir())
    assert log.flush(checkpoints=False) == 3 and log.recovery_point == 3
    segment = str(segment_files(tmp_path)[0].resolve())
    assert set(synced) == {segment, str(log_dir(tmp_path).resolve()), str(tmp_path.resolve())}
    assert sorted(p.name for p in log_dir(tmp_path).iterdir()) == before
    log.append_mirrored(batch(3, 1))
    log.flush()
    assert len(sorted(p.name for p in log_dir(tmp_path).iterdir())) > len(before)


def test_a_failed_fsync_leaves_the_recovery_point_and_the_next_flush_syncs_everything_again(tmp_path, monkeypatch):
    import errno

    synced = _record_fsynced_paths(monkeypatch)
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 3))
    segment = str(segment_files(tmp_path)[0].resolve())

    def failing(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr("os.fsync", failing)
    with pytest.raises(OSError):
        log.flush()
    assert log.recovery_point == 0  # nothing was made durable
    synced = _record_fsynced_paths(monkeypatch)
    assert log.flush() == 3
    assert segment in synced and str(tmp_path.resolve()) in synced  # retried, not taken as done


def test_closed_log_refuses_calls_and_delete_removes_the_directory(tmp_path):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 1))
    log.close()
    with pytest.raises(Exception) as info:
        log.append_mirrored(batch(1, 1))
    assert info.value.error_code
    log = open_log(tmp_path)
    log.delete()
    assert not log_dir(tmp_path).exists()


def test_config_from_topic_configs_maps_kafka_names():
    config = LogConfig.from_topic_configs({"segment.bytes": "1048576", "retention.ms": "-1", "flush.messages": str(2**63 - 1),
                                           "flush.ms": "1000", "cleanup.policy": "delete"})
    assert (config.segment_bytes, config.retention_ms, config.flush_messages, config.flush_ms) == (1048576, -1, None, 1000)
    assert LogConfig.from_topic_configs(config.to_topic_configs()) == config


def test_storage_does_not_import_the_network():
    import sys

    import linkd.storage  # noqa: F401

    assert "trio" not in sys.modules or all(not m.startswith("linkd.storage") for m in ())
    source_dir = os.path.dirname(PartitionLog.__module__.replace(".", "/"))
    for name in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", source_dir)):
        if name.endswith(".py"):
            text = open(os.path.join(os.path.dirname(__file__), "..", "..", source_dir, name)).read()
            assert "import trio" not in text and "socket" not in text, name


def test_split_helper_agrees_with_what_is_stored(tmp_path):
    log = open_log(tmp_path)
    blobs = b"".join(batch(i, 1) for i in range(5))
    log.append_mirrored(blobs)
    assert [b.base_offset for b in split_batches(log.read(0, 1 << 20).to_bytes()).batches] == [0, 1, 2, 3, 4]


def test_open_returns_a_partition_log(tmp_path):
    log = PartitionLog.open(tmp_path / "x-3", LogConfig(), "x", 3)
    assert log.statistics().partition == 3 and (tmp_path / "x-3").is_dir()


def test_batch_header_finds_the_batch_holding_an_offset_without_reading_its_payload(tmp_path):
    log = open_log(tmp_path)
    blobs = [batch(0, 3, producer_id=7, producer_epoch=2, sequence=0), batch(10, 2, epoch=4, value_size=5000)]
    log.append_mirrored(b"".join(blobs))
    first, last = split_batches(b"".join(blobs)).batches
    header = log.batch_header(1)
    assert (header.base_offset, header.crc, header.producer_id, header.producer_epoch) == (0, first.crc, 7, 2)
    assert log.batch_header(11).crc == last.crc and log.batch_header(11).size == last.size
    assert log.batch_header(5) is None  # in the gap between the batches
    assert log.batch_header(12) is None and log.batch_header(-1) is None


def test_append_mirrored_refuses_batches_that_are_not_the_datas(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), "t", 0)
    first, second = batch(0, 2), batch(2, 3)
    with pytest.raises(ValueError):
        log.append_mirrored(first, split_batches(second).batches)
    assert log.log_end_offset == 0
    log.append_mirrored(first + second, split_batches(first + second).batches)
    assert log.log_end_offset == 5
    log.close()


def test_closing_a_log_that_changed_nothing_leaves_its_offset_checkpoints_alone(tmp_path):
    """Each checkpoint write is a temp file, two fsyncs and a rename: an idle partition's close rewrote its
    recovery point and log start unchanged, and stopping 10,000 partitions took minutes."""
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 3))
    log.close()
    files = [log_dir(tmp_path) / name for name in ("recovery-point", "log-start-offset")]
    before = {path.name: (os.stat(path).st_ino, path.read_bytes()) for path in files}
    again = open_log(tmp_path)
    assert again.log_end_offset == 3
    again.close()
    assert {path.name: (os.stat(path).st_ino, path.read_bytes()) for path in files} == before
    # A change is still written: a new batch moves the recovery point.
    third = open_log(tmp_path)
    third.append_mirrored(batch(3, 2))
    third.close()
    assert (log_dir(tmp_path) / "recovery-point").read_bytes() != before["recovery-point"][1]
    assert open_log(tmp_path).recovery_point == 5
