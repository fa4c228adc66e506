"""Smoke tests of the benchmark tooling that need no peers: report, profile summary, data generator.

Nothing here measures or asserts anything about speed; ``benchmarks/run.py`` does the measuring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import profiling
        import report
        import workers

        yield report, profiling, workers
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_order_records_are_json_of_about_300_bytes_with_a_key(bench_modules):
    _, _, workers = bench_modules
    records = workers.OrderRecords(seed=3)
    sizes = []
    for i in range(200):
        key, value = records.record(i)
        assert key.startswith(b"cust-")
        assert json.loads(value)["order_id"] == i
        sizes.append(len(key) + len(value))
    assert 250 <= sum(sizes) / len(sizes) <= 400


def test_report_has_the_required_keys_and_judges_targets(bench_modules):
    report, _, _ = bench_modules
    results = {
        "mode": "quick",
        "errors": {"mm2": "RuntimeError: no java"},
        "mirror": {"mb_s": 100.0, "payload_mb_s": 300.0, "cpu_s_per_gb": 2.0},
        "copier_confluent": {"mb_s": 4.0, "payload_mb_s": 12.0, "cpu_s_per_gb": 20.0},
        "raw_fetch_limit": {"mb_s": 110.0, "payload_mb_s": 330.0},
        "serve": {"linkd": {"raw_mb_s": 90.0, "bytes_identical_to_source_fetch": True}, "source": {"raw_mb_s": 100.0}},
        "latency": {"linkd": {"p50": 3.0, "p99": 20.0, "max": 30.0}, "source": {"p50": 2.0, "p99": 16.0}},
        "failover": {"cli": {"seconds": 0.5}},
        "memory": {"peak_rss_mb": 80.0},
        "tail_latency": {"phases": {"idle": {"tail": {"p99": 10.0}}}, "ratios_catch_up_to_idle": {"tail": {"p99": 2.5}}},
    }
    out = report.build_report(results)
    for key in ("mirror_mb_s", "mirror_cpu_s_per_gb", "mm2_mb_s", "mm2_cpu_s_per_gb", "copier_confluent_mb_s", "copier_kafka_python_mb_s",
                "raw_fetch_limit_mb_s", "serve_linkd_mb_s", "serve_source_mb_s", "replication_latency_ms_p50", "replication_latency_ms_p99",
                "failover_100_partitions_s", "peak_rss_mb_1000_partitions"):
        assert key in out
    assert out["mm2_mb_s"] is None  # a failed phase is reported as missing, not as zero
    met = {t["key"]: t["met"] for t in out["targets"]}
    assert met["ratio_mirror_vs_copier_confluent"] is True  # 25x
    assert met["ratio_mirror_vs_raw_fetch_limit"] is True  # 0.91x
    assert met["ratio_serve_linkd_vs_source"] is False  # 0.9x
    assert met["ratio_mirror_vs_mm2"] is None
    assert met["peak_rss_mb_1000_partitions"] is True
    assert met["ratio_mirror_vs_raw_fetch_limit_issue17"] is False  # 0.91x, below issue 17's 0.95x
    assert out["replication_latency_p99_over_source_ms"] == 4.0 and met["replication_latency_p99_over_source_ms"] is True
    assert met["tail_p99_ratio_during_catch_up"] is False  # 2.5x idle
    page = report.render_markdown(out)
    assert "| catch-up >= 10x MirrorMaker 2 | n/a | n/a |" in page
    assert "`mm2`: RuntimeError: no java" in page
    json.dumps(out, default=str)


def test_partition_targets_name_the_count_measured_when_it_is_not_10000(bench_modules):
    report, _, _ = bench_modules
    quick = {"partitions": {"partitions": 1000, "create_mirrors_s": 1.3, "targets": {}}}
    texts = [t["target"] for t in report.build_report(quick)["targets"] if t["key"].startswith("partitions_")]
    assert texts and all(t.startswith("1,000 partitions (the target is for 10,000):") for t in texts)
    full = {"partitions": {"partitions": 10000, "targets": {}}}
    assert all(t["target"].startswith("10,000 partitions:") for t in report.build_report(full)["targets"] if t["key"].startswith("partitions_"))


def test_profile_summary_counts_event_loop_samples_apart_from_worker_threads(bench_modules, tmp_path):
    _, profiling, _ = bench_modules
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "thread (0x1);run (/x/trio/_core/_run.py);_fetch_round (/x/linkd/link/runtime.py);split_batches (/x/protocol/records.py) 30\n"
        "thread (0x1);run (/x/trio/_core/_run.py);_fetch_round (/x/linkd/link/runtime.py);_write_all (/x/linkd/storage/segment.py) 70\n"
        "thread (0x2);_work (/x/trio/_core/_thread_cache.py);flush (/x/linkd/storage/segment.py) 50\n"
    )
    summary = profiling.summarize(raw)
    assert summary["samples"] == 100
    assert summary["worker_thread_samples"] == 50
    assert summary["self"][0] == {"function": "linkd/storage/segment.py:_write_all", "percent": 70.0}
    assert {"function": "linkd/link/runtime.py:_fetch_round", "percent": 100.0} in summary["inclusive"]


def test_tail_latency_percentiles_and_ratios_say_unknown_rather_than_zero():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import tail_latency
    finally:
        sys.path.remove(str(BENCHMARKS))
    stats = tail_latency.percentiles([float(i) for i in range(1, 101)])
    assert (stats["count"], stats["p50"], stats["p99"], stats["max"]) == (100, 51.0, 100.0, 100.0)
    assert tail_latency.percentiles([])["p99"] is None
    assert tail_latency._ratios({"p50": 2.0, "p99": 9.0, "max": 30.0}, {"p50": 1.0, "p99": 3.0, "max": 10.0}) == {"p50": 2.0, "p99": 3.0, "max": 3.0}
    # A probe that took no samples in a phase gives no ratio, never a made-up one.
    assert tail_latency._ratios({}, {"p50": 1.0, "p99": 3.0, "max": 10.0}) == {"p50": None, "p99": None, "max": None}


@pytest.fixture(scope="module")
def wan():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import wan

        yield wan
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_wan_proxy_delays_each_way_caps_the_rate_and_passes_every_byte(wan):
    """The Go proxy of benchmarks/wan.py, built and run for real: lower bounds only (a loaded machine can
    only make it slower), so this fails when the delay or the cap is not applied, never for being slow."""
    import shutil
    import subprocess
    import time

    if shutil.which("go") is None:
        pytest.skip("no Go toolchain: benchmarks/wan.py cannot build its proxy")
    binary = wan.build_proxy()
    sink = subprocess.Popen([str(binary), "sink"], stdout=subprocess.PIPE, text=True)
    try:
        target = sink.stdout.readline().strip()
        with wan.Proxy(binary, "127.0.0.1:0", target, 60, None) as proxy:
            started = time.perf_counter()
            ack = wan.bulk(binary, proxy.address, 1)
            assert time.perf_counter() - started >= 0.06  # 30 ms there and 30 ms back
            assert ack["bytes_received"] == 1
            whole = wan.bulk(binary, proxy.address, 30_000_000)
            assert whole["bytes_received"] == 30_000_000
        with wan.Proxy(binary, "127.0.0.1:0", target, 0, 50_000_000) as proxy:
            capped = wan.bulk(binary, proxy.address, 20_000_000)
            assert capped["bytes_received"] == 20_000_000
            assert capped["seconds"] >= 0.4 * 0.98  # 20 MB at 50 MB/s (the first chunk goes out at once)
    finally:
        sink.kill()
        sink.wait()


def test_wan_report_bounds_ratios_and_targets(wan):
    assert wan.fetch_bound_mb_s((1 << 20, 10 << 20), 100) == pytest.approx(4 * (1 << 20) / 1e6 / 0.1)
    assert wan.fetch_bound_mb_s((8 << 20, 64 << 20), 100) == pytest.approx(32 * (1 << 20) / 1e6 / 0.1)
    assert wan.fetch_bound_mb_s((1 << 20, 10 << 20), 0) is None
    assert wan.fetch_bound_mb_s((1 << 20, 10 << 20), 0, 125e6) == pytest.approx(125.0)  # the cap itself
    assert wan.fetch_bound_mb_s((1 << 20, 10 << 20), 100, 125e6) == pytest.approx(4.194304 / (0.1 + 4.194304 / 125))
    points = [
        {"copier": "linkd", "rtt_ms": 0, "cap_mb_s": None, "mb_s": 100.0, "ratio_to_own_0ms": 1.0},
        {"copier": "linkd", "rtt_ms": 100, "cap_mb_s": None, "mb_s": 40.0, "ratio_to_own_0ms": 0.4},
        {"copier": "linkd", "rtt_ms": 100, "cap_mb_s": 125.0, "mb_s": 110.0, "ratio_to_cap": 0.88},
    ]
    met = {t["target"]: t["met"] for t in wan.targets(points)}
    assert list(met.values()) == [True, None, False]  # no MirrorMaker 2 point: unknown, not failed
    points.append({"copier": "mm2", "rtt_ms": 100, "cap_mb_s": 125.0, "mb_s": 10.0})
    assert [t["met"] for t in wan.targets(points)] == [True, True, False]  # 11x
    assert [t["met"] for t in wan.targets(points[:1])] == [None, None, None]  # missing, not failed


def test_tail_latency_compares_trees_named_label_equals_path_and_refuses_anything_else(tmp_path):
    import argparse

    import pytest

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import tail_latency
    finally:
        sys.path.remove(str(BENCHMARKS))
    (tmp_path / "linkd").mkdir()
    (tmp_path / "linkd" / "__init__.py").write_text("")
    trees = tail_latency._linkd_trees(argparse.Namespace(linkd_tree=[f"before={tmp_path}", "this"]))
    assert trees[0] == ("before", tmp_path.resolve())
    assert trees[1][0].startswith("this (") and trees[1][1] is None
    for bad in ("before", f"before={tmp_path / 'missing'}"):
        with pytest.raises(SystemExit, match="expected LABEL=PATH"):
            tail_latency._linkd_trees(argparse.Namespace(linkd_tree=[bad]))
    # A tree whose catch-ups took no tail samples has no verdict, never a made-up one.
    assert tail_latency._summary({"idle": {"tail": [1.0, 2.0]}})["goal_met"] is None
