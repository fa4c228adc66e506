"""The log cleaner's rules one at a time: when a pass runs and how far it goes (dirty ratio, compaction lags,
the last stable offset, the key map's memory), tombstones and their delete horizon, what a truncation does to
the cleaned-up-to point, that a Fetch range read before a swap reads the old bytes (never a swapped-in
file), one pass per log, and a truncation during a pass."""

from __future__ import annotations

import os

import pytest

from linkd.storage.cleaner import CleanerConfig, OffsetMap, clean_log
from protocol.records import (
    ATTR_DELETE_HORIZON,
    BatchSpec,
    NewRecord,
    build_batch,
    decode_records,
    split_batches,
)
from tests.storage.helpers import BASE_TS, open_log

COMPACT = dict(segment_bytes=10_000, cleanup_policy=("compact",), min_cleanable_dirty_ratio=0.0)


def keyed(offset: int, key: bytes, value: bytes | None, ts: int = BASE_TS, **spec) -> bytes:
    return build_batch(BatchSpec(base_offset=offset, records=[NewRecord(key=key, value=value, timestamp=ts)], **spec))


def records(log) -> list[tuple[int, bytes | None, bytes | None]]:
    data = log.read(log.log_start_offset, 1 << 30).to_bytes()
    return [(r.offset, r.key, r.value) for b in split_batches(data).batches if not b.is_control for r in decode_records(b)]


def roll(log) -> None:
    """Append a batch in a fresh segment so everything before it is cleanable."""
    log._roll(log.log_end_offset)  # noqa: SLF001 - the test needs a segment boundary exactly here
    log.append_mirrored(keyed(log.log_end_offset, b"roll-%d" % log.log_end_offset, b"x"))


def test_a_pass_keeps_the_latest_value_per_key_and_only_below_the_active_segment(tmp_path):
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i))
    roll(log)
    log.append_mirrored(keyed(log.log_end_offset, b"k", b"active"))
    stats = clean_log(log, BASE_TS, force=True)
    assert stats is not None and stats.end_offset == 6 == log.statistics().cleaned_up_to
    assert records(log) == [(5, b"k", b"v5"), (6, b"roll-6", b"x"), (7, b"k", b"active")]
    assert log.log_end_offset == 8 and log.log_start_offset == 0


def test_not_compacted_no_pass(tmp_path):
    log = open_log(tmp_path, segment_bytes=10_000)
    for i in range(4):
        log.append_mirrored(keyed(i, b"k", b"v"))
    roll(log)
    assert clean_log(log, BASE_TS, force=True) is None and len(records(log)) == 5


def test_the_dirty_ratio_decides_unless_max_compaction_lag_is_exceeded(tmp_path):
    log = open_log(tmp_path, **dict(COMPACT, min_cleanable_dirty_ratio=0.99))
    for i in range(4):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i, ts=BASE_TS + i))
    roll(log)
    assert clean_log(log, BASE_TS + 10) is not None  # all dirty: ratio 1.0 > 0.99
    for i in range(5, 9):
        log.append_mirrored(keyed(i, b"k", b"w%d" % i, ts=BASE_TS + i))
    roll(log)
    assert clean_log(log, BASE_TS + 20) is None  # dirty share below 0.99 now
    lagged = open_log(tmp_path / "lag", **dict(COMPACT, min_cleanable_dirty_ratio=0.99, max_compaction_lag_ms=1000))
    for i in range(4):
        lagged.append_mirrored(keyed(i, b"k", b"v%d" % i, ts=BASE_TS + i))
    roll(lagged)
    clean_log(lagged, BASE_TS + 10)
    for i in range(5, 9):
        lagged.append_mirrored(keyed(i, b"k", b"w%d" % i, ts=BASE_TS + i))
    roll(lagged)
    assert clean_log(lagged, BASE_TS + 20) is None
    assert clean_log(lagged, BASE_TS + 5000) is not None  # a dirty segment older than max.compaction.lag.ms


def test_min_compaction_lag_keeps_young_segments_dirty(tmp_path):
    log = open_log(tmp_path, **dict(COMPACT, min_compaction_lag_ms=1000))
    for i in range(4):
        log.append_mirrored(keyed(i, b"k", b"old%d" % i, ts=BASE_TS))
    roll(log)
    for i in range(log.log_end_offset, log.log_end_offset + 3):
        log.append_mirrored(keyed(i, b"k", b"young%d" % i, ts=BASE_TS + 5000))
    roll(log)
    stats = clean_log(log, BASE_TS + 5500, force=True)
    assert stats is not None and stats.end_offset == 4  # stops before the segment younger than the lag
    kept = [r for r in records(log) if r[1] == b"k"]
    assert kept == [(3, b"k", b"old3"), (5, b"k", b"young5"), (6, b"k", b"young6"), (7, b"k", b"young7")]


def test_an_open_transaction_bounds_the_pass_at_the_last_stable_offset(tmp_path):
    log = open_log(tmp_path, **COMPACT)
    log.append_mirrored(keyed(0, b"k", b"v0"))
    log.append_mirrored(keyed(1, b"k", b"open", producer_id=5, producer_epoch=0, base_sequence=0, transactional=True))
    log.append_mirrored(keyed(2, b"k", b"v2"))
    roll(log)
    assert log.last_stable_offset == 1
    stats = clean_log(log, BASE_TS, force=True)
    assert stats is not None and stats.end_offset == 1
    assert [r[2] for r in records(log) if r[1] == b"k"] == [b"v0", b"open", b"v2"]


def test_tombstones_stay_until_delete_retention_after_the_pass_that_stamped_them(tmp_path):
    log = open_log(tmp_path, **dict(COMPACT, delete_retention_ms=1000))
    log.append_mirrored(keyed(0, b"k", b"v"))
    log.append_mirrored(keyed(1, b"k", None))
    roll(log)
    clean_log(log, BASE_TS + 10, force=True)
    assert records(log)[0] == (1, b"k", None)
    stamped = log.batch_header(1)
    assert stamped.attributes & ATTR_DELETE_HORIZON and stamped.base_timestamp == BASE_TS + 10 + 1000
    assert decode_records(split_batches(log.read(1, 1 << 20).to_bytes()).batches[0])[0].timestamp == BASE_TS
    roll(log)
    clean_log(log, BASE_TS + 500, force=True)  # before the horizon: kept
    assert (1, b"k", None) in records(log)
    roll(log)
    clean_log(log, BASE_TS + 1011, force=True)  # past it: gone
    assert all(r[1] != b"k" for r in records(log))


def test_a_small_key_map_cleans_in_several_passes(tmp_path):
    log = open_log(tmp_path, **COMPACT)
    for i in range(40):
        log.append_mirrored(keyed(i, b"key-%02d" % (i % 20), b"v%d" % i))
    roll(log)
    small = CleanerConfig(dedupe_buffer_size=1024)  # room for 8 keys
    ends = []
    while (stats := clean_log(log, BASE_TS, small, force=True)) is not None:
        assert stats.map_full or stats.end_offset == 40
        ends.append(stats.end_offset)
    assert len(ends) > 2 and ends == sorted(ends) and ends[-1] == 40
    assert [r for r in records(log) if r[1].startswith(b"key-")] == [(i, b"key-%02d" % (i % 20), b"v%d" % i) for i in range(20, 40)]


def test_the_offset_map_respects_its_memory_budget():
    budget = 10 * 1024
    offsets = OffsetMap(budget)
    stored = 0
    while offsets.put(b"k%06d" % stored, stored):
        stored += 1
    assert offsets.used <= budget and 0 < stored < budget // 100
    assert offsets.put(b"k%06d" % 0, 99)  # an existing key still updates
    assert offsets.get(b"k%06d" % 0) == 99 and offsets.get(b"absent") == -1
    assert offsets.put(b"L" * 100, 1) is False  # a new long key does not fit either


def test_a_truncation_below_the_cleaned_point_lowers_it(tmp_path):
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k%d" % (i % 2), b"v"))
    roll(log)
    clean_log(log, BASE_TS, force=True)
    assert log.statistics().cleaned_up_to == 6
    log.truncate_to(5, "test")
    assert log.log_end_offset == 5 and log.statistics().cleaned_up_to == 5
    log.close()
    assert open_log(tmp_path, **COMPACT).statistics().cleaned_up_to == 5


def test_a_fetch_range_read_before_a_swap_still_reads_the_old_bytes(tmp_path):
    """The swapped-out segment leaves through the retirement path: its descriptor stays open, so a range
    read from an older view reads (and sendfile sends) the bytes it named, not the cleaned file now at
    its path."""
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i))
    roll(log)
    before = log.read(0, 1 << 20).ranges[0]
    old_bytes = before.read_bytes()
    old_view = log.view
    assert before.inode == os.stat(before.path).st_ino
    clean_log(log, BASE_TS, force=True)
    assert os.stat(before.path).st_ino != before.inode  # a cleaned segment is at the path now
    assert before.read_bytes() == old_bytes
    fd = before.open_fd()  # what the Kafka listener sends from
    try:
        assert os.pread(fd, before.length, before.position) == old_bytes
    finally:
        os.close(fd)
    # A reader on the older view still finds every old batch through the old segment.
    assert old_view.segments[0].segment.read_at(0, old_view.segments[0].size) == old_bytes
    assert log.read(0, 1 << 20).ranges[0].read_bytes() != old_bytes


def test_once_the_old_descriptor_is_closed_a_range_refuses_the_new_file(tmp_path, monkeypatch):
    monkeypatch.setattr("linkd.storage.log.RETIRED_SEGMENT_GRACE_S", 0.0)
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i))
    roll(log)
    before = log.read(0, 1 << 20).ranges[0]
    clean_log(log, BASE_TS, force=True)
    assert before.segment.fd == -1  # retired with no grace: closed as the swap published its view
    with pytest.raises(FileNotFoundError, match="replaced"):
        before.read_bytes()
    assert log.read(0, 1 << 20).ranges[0].read_bytes()


def test_a_second_pass_on_the_same_log_returns_at_once(tmp_path):
    """Two passes of one log would write the same <base>.*.cleaned files: one runs, the other returns."""
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i))
    roll(log)
    with log.cleaner_lock:  # as a pass running in another thread holds it
        assert clean_log(log, BASE_TS, force=True) is None
    assert len(records(log)) == 7 and log.statistics().cleaned_up_to is None
    assert clean_log(log, BASE_TS, force=True) is not None
    assert [(o, v) for o, _k, v in records(log)] == [(5, b"v5"), (6, b"x")]


def test_a_truncation_during_a_pass_makes_its_swap_refuse_even_if_sizes_match_again(tmp_path, monkeypatch):
    """A mirror truncates (a leader change) while a pass runs and refetches batches of the same sizes:
    the segment the pass read is the same object with the same size but other batches. The swap must not
    put the cleaned old batches back."""
    from linkd.storage import cleaner

    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(keyed(i, b"k", b"v%d" % i))
    roll(log)
    real_finish = cleaner._CleanedWriter.finish  # noqa: SLF001
    done = []

    def finish(writer) -> None:
        real_finish(writer)
        if not done:
            done.append(True)
            log.truncate_to(3, "test: the source's leader changed")
            for i in range(3, 6):
                log.append_mirrored(keyed(i, b"k", b"w%d" % i))
            roll(log)

    monkeypatch.setattr(cleaner._CleanedWriter, "finish", finish)  # noqa: SLF001
    assert clean_log(log, BASE_TS, force=True) is None
    assert done
    assert [v for _o, _k, v in records(log)] == [b"v0", b"v1", b"v2", b"w3", b"w4", b"w5", b"x"]
    monkeypatch.undo()
    clean_log(log, BASE_TS, force=True)
    assert [(o, v) for o, _k, v in records(log)] == [(5, b"w5"), (6, b"x")]


def test_cleaning_while_appends_and_reads_go_on_in_other_threads(tmp_path):
    """Passes in one thread, mirrored appends in another, reads here: every read returns valid batches in
    offset order, even one whose segment a swap replaced meanwhile (read through the retired descriptor),
    and nothing is lost."""
    import threading

    log = open_log(tmp_path, **dict(COMPACT, segment_bytes=600))
    stop = threading.Event()
    errors: list[BaseException] = []
    appended = [0]

    def append() -> None:
        try:
            offset = 0
            while not stop.is_set() and offset < 3000:
                batch = build_batch(BatchSpec(base_offset=offset, records=[
                    NewRecord(key=b"k%d" % ((offset + j) % 7), value=b"v%d" % (offset + j), timestamp=BASE_TS + offset) for j in range(3)]))
                log.append_mirrored(batch)
                offset += 3
                appended[0] = offset
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def clean() -> None:
        try:
            while not stop.is_set():
                clean_log(log, BASE_TS, force=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=append), threading.Thread(target=clean)]
    for t in threads:
        t.start()
    reads = 0
    try:
        while threads[0].is_alive() and not errors:
            result = log.read(log.log_start_offset, 1 << 20)
            data = result.to_bytes()
            previous = -1
            for batch in split_batches(data).batches:
                batch.verify()
                assert batch.base_offset > previous
                previous = batch.last_offset
            reads += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert reads > 10, reads
    clean_log(log, BASE_TS, force=True)
    latest = {}
    for offset in range(appended[0]):
        latest[b"k%d" % (offset % 7)] = (offset, b"v%d" % offset)
    kept = {key: (offset, value) for offset, key, value in records(log)}  # the last record read per key
    assert kept == latest and log.log_end_offset == appended[0]
