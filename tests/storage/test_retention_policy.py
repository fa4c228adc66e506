"""Retention obeys cleanup.policy: a compacted topic is never deleted by time or size unless its policy
includes "delete" (the data-loss bug of issue 12: old records of a compacted topic vanished in one pass)."""

from __future__ import annotations

import pytest

from linkd.storage import InvalidConfig, LogConfig
from tests.storage.helpers import BASE_TS, batch, open_log

MONTH_MS = 30 * 24 * 3600 * 1000


def _fill(log, n=10):
    for i in range(n):
        log.append_mirrored(batch(i * 3, 3, ts=BASE_TS + i * 1000))


@pytest.mark.parametrize("policy", [("compact",), ()])
def test_a_compacted_topic_keeps_every_segment_past_retention_time_and_size(tmp_path, policy):
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=100, retention_ms=1000, cleanup_policy=policy)
    _fill(log)
    before = (log.log_start_offset, log.segment_base_offsets(), log.statistics().size_bytes)
    assert log.apply_retention(BASE_TS + MONTH_MS) == 0
    assert (log.log_start_offset, log.segment_base_offsets(), log.statistics().size_bytes) == before
    assert log.read(0, 1 << 20).to_bytes() == b"".join(batch(i * 3, 3, ts=BASE_TS + i * 1000) for i in range(10))


@pytest.mark.parametrize("policy", [("compact", "delete"), ("delete", "compact"), ("delete",)])
def test_a_policy_with_delete_applies_time_and_size_retention(tmp_path, policy):
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=-1, retention_ms=5000, cleanup_policy=policy)
    _fill(log)
    assert log.apply_retention(BASE_TS + MONTH_MS) > 0
    assert log.log_start_offset == log.log_end_offset == 30


def test_cleanup_policy_is_read_from_the_topic_config_like_kafka():
    assert LogConfig.from_topic_configs({"cleanup.policy": "compact"}).cleanup_policy == ("compact",)
    both = LogConfig.from_topic_configs({"cleanup.policy": " compact , delete"})
    assert both.compact and both.delete
    assert not LogConfig.from_topic_configs({"cleanup.policy": "compact"}).delete
    empty = LogConfig.from_topic_configs({"cleanup.policy": ""})
    assert not empty.compact and not empty.delete
    default = LogConfig()
    assert default.delete and not default.compact
    assert (default.delete_retention_ms, default.min_compaction_lag_ms, default.max_compaction_lag_ms,
            default.min_cleanable_dirty_ratio) == (86_400_000, 0, 2**63 - 1, 0.5)
    parsed = LogConfig.from_topic_configs({"delete.retention.ms": "5", "min.compaction.lag.ms": "7",
                                           "max.compaction.lag.ms": "9", "min.cleanable.dirty.ratio": "0.01"})
    assert (parsed.delete_retention_ms, parsed.min_compaction_lag_ms, parsed.max_compaction_lag_ms,
            parsed.min_cleanable_dirty_ratio) == (5, 7, 9, 0.01)
    assert LogConfig.from_topic_configs(parsed.to_topic_configs()) == parsed


@pytest.mark.parametrize("configs", [
    {"cleanup.policy": "compacted"},
    {"cleanup.policy": "delete,delete"},
    {"delete.retention.ms": "-1"},
    {"delete.retention.ms": "soon"},
    {"min.compaction.lag.ms": "-5"},
    {"max.compaction.lag.ms": "0"},
    {"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"},
    {"min.cleanable.dirty.ratio": "1.5"},
    {"min.cleanable.dirty.ratio": "half"},
    {"min.cleanable.dirty.ratio": "nan"},
])
def test_bad_compaction_configs_are_refused_with_the_key_named(configs):
    with pytest.raises(InvalidConfig) as err:
        LogConfig.from_topic_configs(configs)
    assert any(key in str(err.value) for key in configs)


def test_max_compaction_lag_bounds_the_active_segment_age_of_a_compacted_topic():
    assert LogConfig(segment_ms=10_000, max_compaction_lag_ms=3_000, cleanup_policy=("compact",)).max_segment_ms == 3_000
    assert LogConfig(segment_ms=10_000, max_compaction_lag_ms=3_000).max_segment_ms == 10_000


def test_the_active_segment_of_a_compacted_topic_rolls_at_max_compaction_lag(tmp_path):
    log = open_log(tmp_path, segment_ms=100_000, max_compaction_lag_ms=2_000, cleanup_policy=("compact",))
    log.append_mirrored(batch(0, 1, ts=BASE_TS))
    log.append_mirrored(batch(1, 1, ts=BASE_TS + 2_500))
    assert log.segment_base_offsets() == [0, 1]


def test_delete_records_is_refused_unless_the_policy_includes_delete(tmp_path):
    from linkd.storage import PolicyViolation
    from protocol.errors import ErrorCode

    compacted = open_log(tmp_path / "c", segment_bytes=300, cleanup_policy=("compact",))
    _fill(compacted)
    with pytest.raises(PolicyViolation) as err:
        compacted.advance_log_start(10)
    assert err.value.error_code == ErrorCode.POLICY_VIOLATION and "cleanup.policy=compact" in str(err.value)
    assert compacted.log_start_offset == 0
    both = open_log(tmp_path / "b", segment_bytes=300, cleanup_policy=("compact", "delete"))
    _fill(both)
    assert both.advance_log_start(10) == 10


@pytest.mark.parametrize(("retention_ms", "retention_bytes", "policy"), [
    (5000, -1, ("delete",)), (-1, 700, ("delete",)), (-1, 100, ("delete",)), (5000, 700, ("compact", "delete")),
    (-1, -1, ("delete",)), (1000, 100, ("compact",)), (MONTH_MS, 1 << 30, ("delete",)),
])
def test_retention_due_is_false_only_when_a_retention_pass_would_delete_nothing(tmp_path, retention_ms, retention_bytes, policy):
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=retention_bytes, retention_ms=retention_ms, cleanup_policy=policy)
    assert not log.retention_due(BASE_TS + MONTH_MS)  # empty: nothing to delete
    _fill(log)
    for now in (BASE_TS, BASE_TS + 4000, BASE_TS + 6000, BASE_TS + 20_000, BASE_TS + MONTH_MS, BASE_TS + 2 * MONTH_MS):
        due = log.retention_due(now)
        deleted = log.apply_retention(now)
        assert due or deleted == 0, (now, deleted)
        if deleted:
            assert due
    # What is left is not due again at the last time asked, and an applied pass found nothing more.
    assert not log.retention_due(BASE_TS + 2 * MONTH_MS) or log.apply_retention(BASE_TS + 2 * MONTH_MS) == 0


def test_retention_due_says_so_for_old_data_and_for_a_log_over_its_size(tmp_path):
    by_time = open_log(tmp_path / "time", segment_bytes=300, retention_bytes=-1, retention_ms=5000)
    by_size = open_log(tmp_path / "size", segment_bytes=300, retention_bytes=400, retention_ms=-1)
    _fill(by_time)
    _fill(by_size)
    assert not by_time.retention_due(BASE_TS + 5000)  # the oldest segment's newest record is 5 s old: kept
    assert by_time.retention_due(BASE_TS + MONTH_MS)
    assert by_size.retention_due(BASE_TS)
    assert by_time.apply_retention(BASE_TS + MONTH_MS) > 0 and by_size.apply_retention(BASE_TS) > 0
    assert not by_size.retention_due(BASE_TS)
