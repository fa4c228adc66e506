"""The link's per-partition fetch core (linkd/link/partition.py), without sockets: each kind of Fetch
answer gives exactly one action, against a real PartitionLog as the mirror log."""

from __future__ import annotations

import pytest

from linkd.link.mirror import PartitionProgress
from linkd.link.partition import (
    MAX_PARTITION_FETCH_BYTES,
    Append,
    CaughtUp,
    CheckRange,
    Denied,
    Fail,
    FetchAgain,
    PartitionCore,
    RefreshMetadata,
    Revalidate,
    SkipTo,
    TruncateTo,
    fetch_position,
)
from linkd.link.states import MirrorError
from linkd.link.wire import FetchedPartition
from linkd.storage import LogConfig, PartitionLog
from protocol.errors import ErrorCode
from protocol.records import split_batches

from .corehelpers import batch

FETCH_MAX = 1 << 20


@pytest.fixture
def plog(tmp_path):
    log = PartitionLog.open(tmp_path / "m-0", LogConfig(), "m", 0)
    yield log
    log.close()


def core(validated: bool = True, **kw) -> PartitionCore:
    return PartitionCore(PartitionProgress(0, validated=validated, **kw), FETCH_MAX)


def answer(records: bytes | None = None, error: ErrorCode = ErrorCode.NONE, hw: int = 10, start: int = 0, diverging=None) -> FetchedPartition:
    return FetchedPartition(0, error, hw, start, records, diverging)


def test_new_batches_past_the_log_end_are_one_append_slice_holding_exactly_them(plog):
    plog.append_mirrored(batch(0, 2))
    c = core()
    blob = batch(0, 2) + batch(2, 3) + batch(5, 1)
    action = c.on_answer(answer(blob), plog, 1000)
    assert isinstance(action, Append)
    assert [b.base_offset for b in action.slice.batches] == [2, 5]
    assert bytes(action.slice.data) == blob[len(batch(0, 2)) :]
    assert c.progress.inflight_end == 6 and fetch_position(c.progress, plog) == 6
    plog.append_mirrored(action.slice)
    c.appended(plog, 2000)
    c.append_ended()
    assert plog.log_end_offset == 6 and c.progress.caught_up_ms == 0  # hw 10: not at the end yet


def test_a_partial_trailing_batch_is_left_for_the_next_fetch(plog):
    whole = batch(0, 2)
    action = core().on_answer(answer(whole + batch(2, 4)[:40]), plog, 1)
    assert isinstance(action, Append) and action.slice.next_offset == 2 and len(action.slice.data) == len(whole)


def test_an_empty_answer_is_caught_up_and_records_the_source_end(plog):
    c = core()
    action = c.on_answer(answer(b"", hw=0, start=0), plog, 1234)
    assert action == CaughtUp()
    p = c.progress
    assert (p.source_high_watermark, p.last_fetch_ms, p.caught_up_ms, p.last_source_fetch_offset) == (0, 1234, 1234, 0)


def test_an_empty_answer_below_the_high_watermark_is_not_caught_up(plog):
    c = core()
    assert c.on_answer(answer(None, hw=5), plog, 99) == CaughtUp()
    assert c.progress.caught_up_ms == 0


def test_out_of_range_asks_for_the_source_range_then_skips_a_deleted_range(plog):
    plog.append_mirrored(batch(0, 3))
    c = core()
    assert c.on_answer(answer(error=ErrorCode.OFFSET_OUT_OF_RANGE), plog, 1) == CheckRange()
    action = c.on_range(10, 20, plog)
    assert isinstance(action, SkipTo) and (action.offset, action.from_offset, action.restart_log) == (10, 3, False)
    assert c.progress.skip_to == 10 and fetch_position(c.progress, plog) == 10


def test_skipping_on_an_empty_log_starts_the_log_over(plog):
    c = core()
    action = c.on_range(7, 9, plog)
    assert isinstance(action, SkipTo) and action.restart_log and action.offset == 7
    assert c.progress.skip_to == -1


def test_a_new_mirror_that_fetched_from_zero_unasked_starts_at_the_source_start_without_a_gap(plog):
    # Validation at earliest asks Apache Kafka nothing (a round trip saved): its first fetch is at 0, and an
    # OFFSET_OUT_OF_RANGE from a source whose log starts later is where the mirror starts, not a loss.
    c = core()
    c.validated(truncated=False, start_unconfirmed=True)
    action = c.on_range(7, 9, plog)
    assert action == SkipTo(7, action.reason, 7, True)  # from == to: no gap to record
    assert not c.progress.start_unconfirmed
    # Once answered, a later skip of the still empty log is a real hole again.
    assert c.on_range(12, 14, plog).from_offset == 0


def test_the_first_append_ends_an_unconfirmed_start(plog):
    c = core()
    c.validated(truncated=False, start_unconfirmed=True)
    plog.append_mirrored(batch(0, 5))
    c.appended(plog, 0)
    plog.reset_to(0)  # (an empty log again, e.g. after a truncation)
    assert c.on_range(7, 9, plog).from_offset == 0


def test_out_of_range_past_the_source_end_revalidates(plog):
    plog.append_mirrored(batch(0, 5))
    c = core()
    assert isinstance(c.on_range(0, 3, plog), Revalidate)
    assert not c.progress.validated


def test_out_of_range_inside_the_source_range_fetches_again(plog):
    plog.append_mirrored(batch(0, 5))
    c = core()
    assert isinstance(c.on_range(0, 9, plog), FetchAgain)
    assert c.progress.validated and c.progress.skip_to == -1


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.OFFSET_NOT_AVAILABLE])
def test_a_leadership_error_refreshes_metadata_and_revalidates(plog, code):
    c = core()
    assert c.on_answer(answer(error=code), plog, 1) == RefreshMetadata(code)
    assert not c.progress.validated


def test_a_read_denial_is_denied_not_a_failure(plog):
    assert core().on_answer(answer(error=ErrorCode.TOPIC_AUTHORIZATION_FAILED), plog, 1) == Denied()


def test_another_source_error_fetches_again_and_records_nothing(plog):
    c = core()
    action = c.on_answer(answer(batch(0), error=ErrorCode.UNKNOWN_SERVER_ERROR), plog, 1)
    assert isinstance(action, FetchAgain) and "UNKNOWN_SERVER_ERROR" in action.reason
    assert c.progress.last_fetch_ms == 0 and c.progress.source_high_watermark == -1


def test_a_corrupt_blob_fails_the_mirror(plog):
    bad = bytearray(batch(0, 2))
    bad[8:12] = (3).to_bytes(4, "big")  # an impossible batch length
    action = core().on_answer(answer(bytes(bad)), plog, 1)
    assert isinstance(action, Fail) and action.error == MirrorError.CORRUPT_BATCH


def test_old_message_formats_fail_as_corrupt_naming_the_format(plog):
    old = bytearray(batch(0))
    old[8:12] = (20).to_bytes(4, "big")
    old[16] = 1
    action = core().on_answer(answer(bytes(old)), plog, 1)
    assert isinstance(action, Fail) and "message format v1" in action.message


def test_a_batch_larger_than_asked_doubles_the_partition_fetch_size_up_to_a_bound(plog):
    c = core(max_bytes=FETCH_MAX)
    action = c.on_answer(answer(batch(0, 5)[:50]), plog, 1)
    assert isinstance(action, FetchAgain) and c.progress.max_bytes == 2 * FETCH_MAX
    c.progress.max_bytes = MAX_PARTITION_FETCH_BYTES
    c.on_answer(answer(batch(0, 5)[:50]), plog, 1)
    assert c.progress.max_bytes == MAX_PARTITION_FETCH_BYTES
    c.on_answer(answer(batch(0, 5)), plog, 1)
    assert c.progress.max_bytes == FETCH_MAX  # an append resets it


def test_batches_all_below_the_position_fetch_again(plog):
    plog.append_mirrored(batch(0, 3))
    assert isinstance(core().on_answer(answer(batch(0, 3)), plog, 1), FetchAgain)


def test_a_source_batch_starting_inside_our_log_revalidates_instead_of_appending(plog):
    plog.append_mirrored(batch(0, 3))
    c = core()
    action = c.on_answer(answer(batch(2, 4)), plog, 1)  # boundaries disagree: not a prefix
    assert isinstance(action, Revalidate) and not c.progress.validated
    assert plog.log_end_offset == 3


def test_after_a_skip_the_batch_holding_the_new_start_may_begin_before_it(plog):
    plog.append_mirrored(batch(0, 3))
    c = core(skip_to=12)
    action = c.on_answer(answer(batch(10, 5), hw=15, start=12), plog, 1)
    assert isinstance(action, Append) and action.slice.batches[0].base_offset == 10


def test_a_diverging_epoch_truncates_to_the_common_prefix(plog):
    plog.append_mirrored(batch(0, 3, epoch=1))
    plog.append_mirrored(batch(3, 3, epoch=2))
    c = core(skip_to=-1)
    action = c.on_answer(answer(diverging=(1, 4)), plog, 1)  # source: epoch 1 ends at 4; ours ends at 3
    assert action == TruncateTo(3, 1)
    assert c.progress.validated


def test_a_diverging_epoch_past_our_end_keeps_the_log(plog):
    plog.append_mirrored(batch(0, 3, epoch=1))
    action = core().on_answer(answer(diverging=(1, 9)), plog, 1)
    assert isinstance(action, FetchAgain)


def test_a_divergence_before_our_log_start_fails_the_mirror(plog):
    plog.reset_to(100)
    plog.append_mirrored(batch(100, 3, epoch=4))
    c = core()
    action = c.on_answer(answer(diverging=(2, 50)), plog, 1)
    assert isinstance(action, Fail) and action.error == MirrorError.UNEXPECTED_TRUNCATION


def test_the_slice_is_the_split_tail_of_the_blob():
    blob = batch(0) + batch(1, 2) + batch(3)
    split = split_batches(blob)
    tail = split.tail(blob, 1)
    assert [b.base_offset for b in tail.batches] == [1, 3] and bytes(tail.data) == blob[len(batch(0)) :]


def _timed(base: int, count: int, ts: int) -> bytes:
    from protocol.records import BatchSpec, NewRecord, build_batch

    return build_batch(BatchSpec(base_offset=base, records=[NewRecord(b"x", timestamp=ts + i) for i in range(count)]))


def test_lag_seconds_is_the_age_of_the_oldest_record_not_yet_mirrored(plog):
    from linkd.link.mirror import lag_seconds, partition_lag

    c = core()
    first, second = _timed(0, 2, 10_000), _timed(2, 2, 20_000)
    # A size limit let the first batch in whole and the second's header only.
    action = c.on_answer(answer(first + second[:50], hw=4), plog, 30_000)
    assert isinstance(action, Append)
    assert lag_seconds(c.progress, 4, 30_000) == 20.0  # offset 0, written at 10 s, is not mirrored yet
    plog.append_mirrored(action.slice)
    c.appended(plog, 31_000)
    c.append_ended()
    lag = partition_lag(c.progress, fetch_position(c.progress, plog), True)
    assert lag == 2 and lag_seconds(c.progress, lag, 31_000) == 11.0  # offset 2, written at 20 s
    c.on_answer(answer(second, hw=4), plog, 32_000)
    plog.append_mirrored(split_batches(second).tail(second, 0))
    c.appended(plog, 33_000)
    assert lag_seconds(c.progress, 0, 33_000) == 0.0 and c.progress.unmirrored_ts == -1


def test_lag_seconds_without_a_known_record_is_bounded_by_the_last_caught_up_time(plog):
    from linkd.link.mirror import lag_seconds

    c = core()
    c.on_answer(answer(b"", hw=0), plog, 5_000)  # caught up at 5 s
    assert lag_seconds(c.progress, 3, 9_000) == 4.0  # behind since, by at most 4 s; no record seen yet
    assert lag_seconds(c.progress, None, 9_000) == 4.0  # source unreachable: since the last fetch
    assert lag_seconds(core().progress, 3, 9_000) is None  # nothing known since start
