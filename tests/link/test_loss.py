"""linkd.link.loss: the loss report is the source's end seen since start minus the stop offset, or
unknown, never a made-up 0; reconciliation turns the source's later end into exact lost ranges."""

from __future__ import annotations

from linkd.link.loss import lost_offsets, partition_report, reconciled
from linkd.link.mirror import PartitionProgress


def test_an_end_seen_since_start_gives_a_count_and_its_age():
    progress = PartitionProgress(0, source_high_watermark=3700, last_source_fetch_offset=3500, source_end_seen_ms=10_000)
    report = partition_report(0, 3500, 3501, progress, stopped_ms=12_500)
    assert (report["records_possibly_lost"], report["source_end_offset"], report["source_end_offset_age_ms"]) == (200, 3700, 2_500)
    assert report["mirror_end_offset"] == 3501 and report["source_end_offset_seen_since_restart"] is True


def test_an_end_from_before_a_restart_is_a_lower_bound_not_a_count():
    progress = PartitionProgress(0, persisted_end=(3600, 3500, 9_000))
    report = partition_report(0, 3500, 3500, progress, stopped_ms=60_000)
    assert report["records_possibly_lost"] is None
    assert (report["records_possibly_lost_at_least"], report["source_end_offset"], report["source_end_offset_age_ms"]) == (100, 3600, 51_000)


def test_an_end_never_seen_is_unknown_everywhere():
    report = partition_report(0, 3500, 3500, PartitionProgress(0), stopped_ms=1)
    assert (report["records_possibly_lost"], report["records_possibly_lost_at_least"], report["source_end_offset"], report["source_end_offset_age_ms"]) == (None, None, None, None)


def _stop(*stops: int) -> dict:
    return {"kind": "failover", "partitions": [{"partition": p, "stop_offset": s} for p, s in enumerate(stops)]}


def test_reconciliation_needs_every_partition_and_gives_exact_ranges():
    info = _stop(300, 500)
    assert reconciled(info, {0: 320}, {0: 0}) is None
    assert lost_offsets(info) is None  # unknown until reconciled
    info["reconciled"] = {"recorded_ms": 5, **reconciled(info, {0: 320, 1: 400}, {0: 0, 1: 0})}
    ranges = lost_offsets(info)
    assert [(r["partition"], r["from"], r["to"], r["offsets"]) for r in ranges] == [(0, 300, 320, 20), (1, 500, 500, 0)]
    assert "before the stop offset" in ranges[1]["note"]  # the source ends at 400 < 500: it lost data itself


def test_a_lost_range_the_source_no_longer_holds_says_so():
    info = _stop(300)
    info["reconciled"] = {"recorded_ms": 5, **reconciled(info, {0: 400}, {0: 350})}
    [r] = lost_offsets(info)
    assert (r["from"], r["to"]) == (300, 400) and "300..349" in r["note"]
