"""Recovery: torn and corrupt tails are cut and reported, indexes are rebuilt, bad checkpoints are ignored."""

from __future__ import annotations

import logging

import pytest

from protocol.records import CONTROL_ABORT
from tests.storage.helpers import batch, log_dir, marker, open_log, segment_files

CONFIG = dict(segment_bytes=1200, index_interval_bytes=100)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


def _filled_log(tmp_path, count=30):
    log = open_log(tmp_path, **CONFIG)
    blobs = [batch(i * 2, 2, epoch=i // 10) for i in range(count)]
    for blob in blobs:
        log.append_mirrored(blob)
    return log, blobs


def test_a_flipped_byte_in_the_middle_of_the_last_segment_cuts_the_log_there(tmp_path, caplog):
    log, blobs = _filled_log(tmp_path)
    log.abandon()
    last = segment_files(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x10
    last.write_bytes(bytes(data))
    base = int(last.name[:20])
    # which batch of the last segment holds the flipped byte
    position, first_bad = 0, None
    for blob in blobs[base // 2 :]:
        if position <= middle < position + len(blob):
            first_bad = blob
            break
        position += len(blob)
    bad_offset = blobs.index(first_bad) * 2
    with caplog.at_level(logging.WARNING, logger="linkd.storage"):
        log = open_log(tmp_path, **CONFIG)
    assert log.log_end_offset == bad_offset
    assert log.read(0, 1 << 30).to_bytes() == b"".join(blobs[: bad_offset // 2])
    assert "recovery cut" in caplog.text and "t-0" in caplog.text and f"offsets from {bad_offset} on" in caplog.text
    log.append_mirrored(batch(bad_offset, 2))  # mirroring resumes from the exact next offset
    assert log.log_end_offset == bad_offset + 2


@pytest.mark.parametrize("cut", [1, 11, 30, 60])
def test_a_torn_tail_is_cut_at_the_last_whole_batch(tmp_path, cut, caplog):
    log, blobs = _filled_log(tmp_path)
    log.flush()
    log.append_mirrored(batch(60, 2))
    log.abandon()
    last = segment_files(tmp_path)[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - cut])
    with caplog.at_level(logging.WARNING, logger="linkd.storage"):
        log = open_log(tmp_path, **CONFIG)
    assert log.log_end_offset == 60
    assert log.read(0, 1 << 30).to_bytes() == b"".join(blobs)
    assert f"cut {len(batch(60, 2)) - cut} bytes" in caplog.text


def test_corruption_in_an_earlier_segment_drops_every_later_segment(tmp_path):
    log, blobs = _filled_log(tmp_path)
    log.abandon()
    files = segment_files(tmp_path)
    assert len(files) >= 3
    first = files[0]
    data = bytearray(first.read_bytes())
    data[len(blobs[0]) + 40] ^= 1
    first.write_bytes(bytes(data))
    (log_dir(tmp_path) / "recovery-point").unlink(missing_ok=True)  # force recovery from 0 (a young log may have none yet)
    log = open_log(tmp_path, **CONFIG)
    assert log.log_end_offset == 2
    assert len(segment_files(tmp_path)) == 1


def test_a_corrupt_index_is_rebuilt_even_after_a_clean_shutdown(tmp_path, caplog):
    log, blobs = _filled_log(tmp_path)
    log.close()
    index = segment_files(tmp_path, ".index")[0]
    good = index.read_bytes()
    assert len(good) >= 16
    index.write_bytes(good[8:16] + good[0:8] + good[16:])  # not monotonic
    timeindex = segment_files(tmp_path, ".timeindex")[1]
    timeindex.write_bytes(timeindex.read_bytes() + b"\x00\x01")  # not a multiple of 12
    with caplog.at_level(logging.WARNING, logger="linkd.storage"):
        log = open_log(tmp_path, **CONFIG)
    assert "rebuilding indexes" in caplog.text
    assert index.read_bytes() == good
    for offset in range(0, 60, 3):
        assert log.read(offset, 1).to_bytes() == blobs[offset // 2]


def test_a_missing_index_is_rebuilt(tmp_path):
    log, blobs = _filled_log(tmp_path)
    log.close()
    index = segment_files(tmp_path, ".index")[0]
    good = index.read_bytes()
    index.unlink()
    log = open_log(tmp_path, **CONFIG)
    assert index.read_bytes() == good
    assert log.read(13, 1).to_bytes() == blobs[6]


def test_half_written_checkpoints_are_ignored(tmp_path, caplog):
    log, blobs = _filled_log(tmp_path)
    log.flush()
    log.abandon()
    directory = log_dir(tmp_path)
    (directory / "recovery-point.tmp").write_bytes(b"0\n1\nt 0 9")
    (directory / "leader-epoch-checkpoint").write_bytes(b"0\n3\n0 0\n1 2")  # torn: count says 3
    (directory / "log-start-offset").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="linkd.storage"):
        log = open_log(tmp_path, **CONFIG)
    assert not (directory / "recovery-point.tmp").exists()
    assert "half-written" in caplog.text and "leader-epoch checkpoint unreadable" in caplog.text
    assert log.log_start_offset == 0 and log.log_end_offset == 60
    assert log.epoch_entries() == [(0, 0), (1, 20), (2, 40)]
    assert log.read(0, 1 << 30).to_bytes() == b"".join(blobs)


def test_unclean_open_rebuilds_the_epoch_cache_from_batches_after_the_recovery_point(tmp_path):
    log, _ = _filled_log(tmp_path, count=5)
    log.flush()
    log.append_mirrored(batch(10, 2, epoch=8))
    log.abandon()
    log = open_log(tmp_path, **CONFIG)
    assert log.epoch_entries() == [(0, 0), (8, 10)]


def test_unclean_open_without_snapshots_rebuilds_producer_and_transaction_state(tmp_path):
    log = open_log(tmp_path, **CONFIG)
    log.append_mirrored(batch(0, 2, producer_id=40, producer_epoch=0, sequence=0, transactional=True))
    log.append_mirrored(marker(CONTROL_ABORT, 40, 0, base_offset=2))
    log.append_mirrored(batch(3, 2, producer_id=41, producer_epoch=0, sequence=0, transactional=True))
    log.abandon()
    for snapshot in log_dir(tmp_path).glob("*.producer-snapshot"):
        snapshot.unlink()
    log = open_log(tmp_path, **CONFIG)
    assert log.open_transactions() == {41: 3}
    assert log.last_stable_offset == 3
    assert log.aborted_transactions(0, 5) == [(40, 0)]
    assert log.producer_ids_seen_max() == 41


def test_segments_below_the_log_start_left_by_a_crash_are_deleted(tmp_path):
    log, blobs = _filled_log(tmp_path)
    files = segment_files(tmp_path)
    second_base = int(files[1].name[:20])
    log.advance_log_start(second_base)
    log.close()
    # resurrect the deleted first segment as if the crash happened before the unlink
    (files[0]).write_bytes(b"".join(blobs[: second_base // 2]))
    log = open_log(tmp_path, **CONFIG)
    assert log.segment_base_offsets()[0] == second_base
    assert not files[0].exists()


def test_a_new_partition_skips_recovery_and_a_crash_before_its_first_flush_keeps_its_log_start(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        log = open_log(tmp_path, **CONFIG)
    assert "recovering" not in caplog.text and "no clean shutdown" not in caplog.text
    assert sorted(p.name for p in log_dir(tmp_path).iterdir()) == [f"{0:020d}{s}" for s in (".index", ".log", ".timeindex", ".txnindex")]
    log.abandon()
    log = open_log(tmp_path, **CONFIG)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    # A mirror whose source starts with a gap: the first batch renames the only segment; the log still
    # starts at 0 after a crash, so offsets 0..4 read as "below the first record", not "before the log".
    first = batch(5, 2)
    log.append_mirrored(first)
    log.abandon()
    log = open_log(tmp_path, **CONFIG)
    assert (log.log_start_offset, log.log_end_offset) == (0, 7)
    assert log.read(0, 1 << 20).to_bytes() == first


def test_a_recovery_whose_rebuilt_indexes_match_the_files_leaves_them_untouched_and_fixes_those_that_differ(tmp_path):
    """A crash restart re-verifies segments and rebuilds their indexes; where the rebuild equals the file (a
    cleanly sealed segment) the file is not written at all, and one that differs ends up exactly as rebuilt.
    Before, every recovered segment's index files were truncated and written again."""
    import time

    from tests.storage.helpers import BASE_TS

    log = open_log(tmp_path, **CONFIG)
    for i in range(30):
        log.append_mirrored(batch(i * 2, 2, ts=BASE_TS + i))
    log.close()
    directory = log_dir(tmp_path)
    assert len(segment_files(tmp_path)) > 2
    indexes = sorted([*directory.glob("*.index"), *directory.glob("*.timeindex")])
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in indexes}
    assert any(content for content, _ in before.values())
    # Unclean from the first segment on: no marker, no recovery point. One index file is damaged.
    (directory / "clean-shutdown").unlink()
    (directory / "recovery-point").unlink(missing_ok=True)
    damaged = indexes[0]
    damaged.write_bytes(before[damaged.name][0][:-3] + b"\xff\xff\xff")
    time.sleep(0.01)
    log = open_log(tmp_path, **CONFIG)
    assert log.log_end_offset == 60
    for path in indexes:
        content, mtime = before[path.name]
        assert path.read_bytes() == content, path.name
        if path != damaged:
            assert path.stat().st_mtime_ns == mtime, f"{path.name} was rewritten"
    assert log.read(0, 1 << 20).to_bytes() == b"".join(batch(i * 2, 2, ts=BASE_TS + i) for i in range(30))
    log.abandon()
