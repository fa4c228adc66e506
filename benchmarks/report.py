"""Headline figures, ratios and targets from a ``run.py`` result; the stdout table, docs page and plot."""

from __future__ import annotations

import math
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
NAN = float("nan")


def _get(results: dict, *path, default=NAN):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _ratio(a: float, b: float) -> float:
    try:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else NAN
    except TypeError:
        return NAN


# (key, description, comparison, threshold)
TARGETS = [
    ("ratio_mirror_vs_copier_confluent", "catch-up >= 20x the confluent-kafka copier", ">=", 20.0),
    ("ratio_mirror_vs_mm2", "catch-up >= 10x MirrorMaker 2", ">=", 10.0),
    ("ratio_mirror_vs_raw_fetch_limit", "catch-up >= 0.8x the raw Fetch limit", ">=", 0.8),
    ("ratio_cpu_mm2_vs_linkd", "CPU per GB <= 1/10 of MirrorMaker 2's", ">=", 10.0),
    ("ratio_serve_linkd_vs_source", "serving (raw Fetch) >= 1.0x the source broker", ">=", 1.0),
    ("replication_latency_ms_p99", "replication latency p99 <= 50 ms at 2,000 records/s", "<=", 50.0),
    ("failover_100_partitions_s", "failover of 100 partitions < 1 s (command to produce)", "<", 1.0),
    ("peak_rss_mb_1000_partitions", "peak RSS < 300 MB mirroring 1,000 partitions", "<", 300.0),
    ("wan_100ms_capped_ratio_to_cap", "WAN 100 ms RTT, 1 Gbit/s cap: catch-up >= 0.8x the cap", ">=", 0.8),
    ("wan_100ms_ratio_to_0ms", "WAN 100 ms RTT, no cap: catch-up >= 0.8x linkd at 0 ms via the proxy", ">=", 0.8),
    ("ratio_mirror_vs_raw_fetch_limit_issue17", "catch-up on loopback >= 0.95x the raw Fetch limit (issue 17)", ">=", 0.95),
    ("replication_latency_p99_over_source_ms", "replication latency p99 <= the source consumer's p99 + 5 ms", "<=", 5.0),
    ("tail_p99_ratio_during_catch_up", "tail consumer p99 during a catch-up <= 2x its idle p99", "<=", 2.0),
    ("partitions_create_mirrors_s", "10,000 partitions: mirrors created in < 10 s", "<", 10.0),
    ("partitions_catch_up_rate_ratio", "10,000 partitions: catch-up >= 0.8x the 8-partition rate", ">=", 0.8),
    ("partitions_idle_cpu_fraction", "10,000 partitions: idle daemon < 5% of one core", "<", 0.05),
    ("partitions_failover_s", "10,000 partitions: failover of all (command to writable) < 3 s", "<", 3.0),
    ("partitions_restart_to_serving_s", "10,000 partitions: restart to serving < 10 s", "<", 10.0),
    ("partitions_peak_rss_mb", "10,000 partitions: peak RSS < 300 MB", "<", 300.0),
]


def _wan_point(r: dict, rtt_ms: float, capped: bool, key: str) -> float:
    """A figure of linkd's catch-up at one point of benchmarks/wan.py's curve (NAN when not measured)."""
    for p in _get(r, "wan", "points", default=None) or []:
        if p.get("copier") == "linkd" and p.get("rtt_ms") == rtt_ms and bool(p.get("cap_mb_s")) == capped and key in p:
            return p[key]
    return NAN


def _partitions_value(r: dict, key: str) -> float:
    """A figure of benchmarks/partitions.py's run (NAN when not measured)."""
    value = _get(r, "partitions", "targets", key, "value", default=None)
    return NAN if value is None else value


def build_report(results: dict) -> dict:
    r = results
    top = {
        "mirror_mb_s": _get(r, "mirror", "mb_s"),
        "mirror_payload_mb_s": _get(r, "mirror", "payload_mb_s"),
        "mirror_cpu_s_per_gb": _get(r, "mirror", "cpu_s_per_gb"),
        "mirror_large_fetch_sizes_mb_s": _get(r, "mirror_large_fetch_sizes", "mb_s"),
        "mirror_streaming_mb_s": _get(r, "mirror", "streaming_mb_s", default=NAN) or NAN,
        "mm2_mb_s": _get(r, "mm2", "mb_s"),
        "mm2_payload_mb_s": _get(r, "mm2", "payload_mb_s"),
        "mm2_cpu_s_per_gb": _get(r, "mm2", "cpu_s_per_gb"),
        "mm2_dest_broker_cpu_s_per_gb": _get(r, "mm2", "dest_broker_cpu_s_per_gb"),
        "copier_confluent_mb_s": _get(r, "copier_confluent", "mb_s"),
        "copier_confluent_payload_mb_s": _get(r, "copier_confluent", "payload_mb_s"),
        "copier_confluent_cpu_s_per_gb": _get(r, "copier_confluent", "cpu_s_per_gb"),
        "copier_kafka_python_mb_s": _get(r, "copier_kafka_python", "mb_s"),
        "copier_kafka_python_payload_mb_s": _get(r, "copier_kafka_python", "payload_mb_s"),
        "copier_kafka_python_cpu_s_per_gb": _get(r, "copier_kafka_python", "cpu_s_per_gb"),
        "raw_fetch_limit_mb_s": _get(r, "raw_fetch_limit", "mb_s"),
        "raw_fetch_limit_payload_mb_s": _get(r, "raw_fetch_limit", "payload_mb_s"),
        "serve_linkd_mb_s": _get(r, "serve", "linkd", "raw_mb_s"),
        "serve_source_mb_s": _get(r, "serve", "source", "raw_mb_s"),
        "serve_linkd_consumer_mb_s": _get(r, "serve", "linkd", "consumer_mb_s"),
        "serve_source_consumer_mb_s": _get(r, "serve", "source", "consumer_mb_s"),
        "serve_linkd_consumer_records_s": _get(r, "serve", "linkd", "consumer_records_s"),
        "serve_source_consumer_records_s": _get(r, "serve", "source", "consumer_records_s"),
        "replication_latency_ms_p50": _get(r, "latency", "linkd", "p50"),
        "replication_latency_ms_p99": _get(r, "latency", "linkd", "p99"),
        "replication_latency_ms_max": _get(r, "latency", "linkd", "max"),
        "source_latency_ms_p50": _get(r, "latency", "source", "p50"),
        "source_latency_ms_p99": _get(r, "latency", "source", "p99"),
        "failover_100_partitions_s": _get(r, "failover", "cli", "seconds"),
        "failover_100_partitions_api_s": _get(r, "failover", "api", "seconds"),
        "peak_rss_mb_1000_partitions": _get(r, "memory", "peak_rss_mb"),
        "mirror_bytes_identical": _get(r, "serve", "linkd", "bytes_identical_to_source_fetch", default=None),
        "wan_100ms_capped_ratio_to_cap": _wan_point(r, 100, True, "ratio_to_cap"),
        "wan_100ms_ratio_to_0ms": _wan_point(r, 100, False, "ratio_to_own_0ms"),
        "wan_100ms_mb_s": _wan_point(r, 100, False, "mb_s"),
        "wan_0ms_mb_s": _wan_point(r, 0, False, "mb_s"),
        "tail_p99_ratio_during_catch_up": _get(r, "tail_latency", "ratios_catch_up_to_idle", "tail", "p99"),
        "tail_p99_idle_ms": _get(r, "tail_latency", "phases", "idle", "tail", "p99"),
        **{f"partitions_{key}": _partitions_value(r, key) for key, _text in PARTITIONS_ROWS},
    }
    top.update(
        {
            "ratio_mirror_vs_copier_confluent": _ratio(top["mirror_mb_s"], top["copier_confluent_mb_s"]),
            "ratio_mirror_vs_copier_kafka_python": _ratio(top["mirror_mb_s"], top["copier_kafka_python_mb_s"]),
            "ratio_mirror_vs_mm2": _ratio(top["mirror_mb_s"], top["mm2_mb_s"]),
            "ratio_mirror_vs_raw_fetch_limit": _ratio(top["mirror_mb_s"], top["raw_fetch_limit_mb_s"]),
            "ratio_mirror_vs_raw_fetch_limit_issue17": _ratio(top["mirror_mb_s"], top["raw_fetch_limit_mb_s"]),
            "replication_latency_p99_over_source_ms": top["replication_latency_ms_p99"] - top["source_latency_ms_p99"],
            "ratio_cpu_mm2_vs_linkd": _ratio(top["mm2_cpu_s_per_gb"], top["mirror_cpu_s_per_gb"]),
            "ratio_cpu_copier_confluent_vs_linkd": _ratio(top["copier_confluent_cpu_s_per_gb"], top["mirror_cpu_s_per_gb"]),
            "ratio_serve_linkd_vs_source": _ratio(top["serve_linkd_mb_s"], top["serve_source_mb_s"]),
            "ratio_serve_consumer_linkd_vs_source": _ratio(top["serve_linkd_consumer_mb_s"], top["serve_source_consumer_mb_s"]),
        }
    )
    targets = []
    measured = _get(results, "partitions", "partitions", default=None)
    for key, text, op, threshold in TARGETS:
        value = top[key]
        if key.startswith("partitions_") and measured and measured != 10_000:  # quick mode: say what was measured
            text = text.replace("10,000 partitions:", f"{measured:,} partitions (the target is for 10,000):")
        if isinstance(value, float) and math.isnan(value):
            met = None
        else:
            met = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        targets.append({"key": key, "target": text, "threshold": f"{op} {threshold:g}", "value": value, "met": met})
    return {**{k: _clean(v) for k, v in top.items()}, "targets": targets, "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "details": results}


def _clean(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(what, MB/s wire, MB/s payload, CPU s/GB payload) rows of the throughput table."""
    d = report["details"]
    kp_note = " (partial, see notes)" if _get(d, "copier_kafka_python", "fraction_copied", default=1) < 1 else ""
    return [
        ("linkd mirror catch-up", _fmt(report["mirror_mb_s"]), _fmt(report["mirror_payload_mb_s"]), _fmt(report["mirror_cpu_s_per_gb"])),
        ("  same with 8 MiB/64 MiB fetches", _fmt(_get(d, "mirror_large_fetch_sizes", "mb_s")), _fmt(_get(d, "mirror_large_fetch_sizes", "payload_mb_s")), _fmt(_get(d, "mirror_large_fetch_sizes", "cpu_s_per_gb"))),
        (f"raw Fetch loop to files (limit, median of {len(_get(d, 'raw_fetch_limit', 'rounds_wall_s', default=[]))} rounds)", _fmt(report["raw_fetch_limit_mb_s"]), _fmt(report["raw_fetch_limit_payload_mb_s"]), _fmt(_get(d, "raw_fetch_limit", "cpu_s_per_gb"))),
        ("MirrorMaker 2 (JVM only)", _fmt(report["mm2_mb_s"]), _fmt(report["mm2_payload_mb_s"]), _fmt(report["mm2_cpu_s_per_gb"])),
        ("  + destination broker CPU", "", "", _fmt(report["mm2_dest_broker_cpu_s_per_gb"])),
        ("confluent-kafka copier", _fmt(report["copier_confluent_mb_s"]), _fmt(report["copier_confluent_payload_mb_s"]), _fmt(report["copier_confluent_cpu_s_per_gb"])),
        ("kafka-python copier" + kp_note, _fmt(report["copier_kafka_python_mb_s"]), _fmt(report["copier_kafka_python_payload_mb_s"]), _fmt(report["copier_kafka_python_cpu_s_per_gb"])),
        ("serve: raw Fetch from linkd", _fmt(report["serve_linkd_mb_s"]), "", ""),
        ("serve: raw Fetch from source Kafka", _fmt(report["serve_source_mb_s"]), "", ""),
        ("serve: confluent consumer from linkd", _fmt(report["serve_linkd_consumer_mb_s"]), "", ""),
        ("serve: confluent consumer from source", _fmt(report["serve_source_consumer_mb_s"]), "", ""),
    ]


def _other_rows(report: dict) -> list[tuple[str, str]]:
    return [
        ("replication latency p50 / p99 / max (ms)", f"{_fmt(report['replication_latency_ms_p50'])} / {_fmt(report['replication_latency_ms_p99'])} / {_fmt(report['replication_latency_ms_max'])}"),
        ("  same consumer on the source itself p50 / p99", f"{_fmt(report['source_latency_ms_p50'])} / {_fmt(report['source_latency_ms_p99'])}"),
        ("tail consumer p99 idle (ms) / during a catch-up, as a ratio to idle", f"{_fmt(report['tail_p99_idle_ms'])} / {_fmt(report['tail_p99_ratio_during_catch_up'], 2)}"),
        ("failover 100 partitions, CLI command to produce (s)", _fmt(report["failover_100_partitions_s"], 2)),
        ("failover 100 partitions, admin API call to produce (s)", _fmt(report["failover_100_partitions_api_s"], 2)),
        ("peak RSS mirroring 1,000 partitions (MB)", _fmt(report["peak_rss_mb_1000_partitions"])),
        ("mirror bytes identical to the source's, every partition", _fmt(report["mirror_bytes_identical"])),
    ]


def print_table(report: dict) -> None:
    d = report["details"]
    print()
    print(f"linkd benchmarks ({d['mode']} mode, {_fmt(_get(d, 'data', 'payload_bytes', default=0) / 1e6)} MB payload, "
          f"{_fmt(_get(d, 'data', 'wire_bytes', default=0) / 1e6)} MB on the wire, total {_fmt(d.get('total_seconds'))} s)")
    print(f"{'':42} {'MB/s wire':>10} {'MB/s payload':>13} {'CPU s/GB':>9}")
    for what, wire, payload, cpu in _rows(report):
        print(f"{what:42} {wire:>10} {payload:>13} {cpu:>9}")
    print()
    for what, value in _other_rows(report):
        print(f"{what:56} {value}")
    print()
    print("Targets:")
    for t in report["targets"]:
        status = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        print(f"  [{status:7}] {t['target']:58} value {_fmt(t['value'], 2)}")
    for phase, error in d.get("errors", {}).items():
        print(f"  phase {phase} failed: {error}")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    copy_bars = [
        ("raw Fetch limit", report["raw_fetch_limit_mb_s"], "#9e9e9e"),
        ("linkd mirror", report["mirror_mb_s"], "#1f77b4"),
        ("MirrorMaker 2", report["mm2_mb_s"], "#d62728"),
        ("confluent-kafka copier", report["copier_confluent_mb_s"], "#ff7f0e"),
        ("kafka-python copier", report["copier_kafka_python_mb_s"], "#8c564b"),
    ]
    serve_bars = [
        ("raw Fetch: source Kafka", report["serve_source_mb_s"], "#9e9e9e"),
        ("raw Fetch: linkd", report["serve_linkd_mb_s"], "#1f77b4"),
        ("consumer: source Kafka", report["serve_source_consumer_mb_s"], "#c7c7c7"),
        ("consumer: linkd", report["serve_linkd_consumer_mb_s"], "#aec7e8"),
    ]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), gridspec_kw={"height_ratios": [5, 4]})
    for ax, bars, title in ((axes[0], copy_bars, "Copying the same topics (catch-up from offset 0)"), (axes[1], serve_bars, "Reading everything back")):
        names = [b[0] for b in bars][::-1]
        values = [b[1] or 0.0 for b in bars][::-1]
        ax.barh(names, values, color=[b[2] for b in bars][::-1])
        ax.set_xscale("log")
        ax.set_xlim(left=max(min([v for v in values if v > 0] or [1]) / 2, 0.1), right=max(values + [1]) * 3)
        for y, v in enumerate(values):
            ax.text(v * 1.08 if v else 0.1, y, f"{v:,.1f} MB/s" if v else "n/a", va="center", fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("MB/s of compressed record batches (log scale)")
    d = report["details"]
    fig.suptitle(f"linkd benchmarks, {d['mode']} mode, {d.get('machine', {}).get('cores', '?')} cores ({report['generated']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(report: dict) -> None:
    DOCS.mkdir(exist_ok=True)
    plot(report, DOCS / "benchmarks-throughput.png")
    (DOCS / "benchmarks.md").write_text(render_markdown(report))


def _profile_md(profile: dict | None) -> list[str]:
    if not profile:
        return ["No profile in this run (`--profile` adds one; see below).", ""]
    out = []
    for phase, title in (("catch_up", "Catch-up (mirroring from offset 0, default link)"), ("catch_up_large_fetches", "Catch-up with 8 MiB/64 MiB fetches"),
                         ("serve", "Serving (raw Fetch then a confluent consumer)")):
        p = profile.get(phase) or {}
        out += [f"**{title}**: {p.get('samples', 0):,} samples of the event-loop thread (plus {p.get('worker_thread_samples', 0):,} of "
                "trio worker threads, i.e. the periodic log fsync, left out of the percentages).", "", "| self % | function | | inclusive % | function |", "|---:|---|---|---:|---|"]
        selfs, incl = p.get("self", [])[:10], p.get("inclusive", [])[:10]
        for i in range(max(len(selfs), len(incl))):
            a = selfs[i] if i < len(selfs) else {"percent": "", "function": ""}
            b = incl[i] if i < len(incl) else {"percent": "", "function": ""}
            out.append(f"| {a['percent']} | `{a['function']}` | | {b['percent']} | `{b['function']}` |")
        out.append("")
    return out


PARTITIONS_ROWS = (  # (key in partitions.py's targets, what it is)
    ("create_mirrors_s", "mirrors created (one POST per topic, 8 in flight), s"),
    ("catch_up_rate_ratio", "catch-up rate vs the same bytes in an 8-partition topic"),
    ("idle_cpu_fraction", "idle daemon, fraction of one core"),
    ("failover_s", "failover of every mirror, command to every partition writable, s"),
    ("restart_to_serving_s", "restart (SIGTERM and SIGKILL) to Metadata + ListOffsets of every partition, s"),
    ("peak_rss_mb", "peak RSS (VmHWM), MB"),
)


def partitions_markdown(p: dict | None) -> list[str]:
    """The 10,000-partition table (``benchmarks/partitions.py``'s result) for docs/benchmarks.md."""
    if not p:
        return ["Not measured in this run (`benchmarks/partitions.py`; see below).", ""]
    targets = p.get("targets", {})
    out = [f"{p.get('partitions', '?'):,} mirrored partitions ({p.get('mode', '?')} mode) from one Apache Kafka source:", "",
           "| figure | value | target | met |", "|---|---:|---|---|"]
    for key, text in PARTITIONS_ROWS:
        t = targets.get(key, {})
        met = t.get("met")
        out.append(f"| {text} | {_fmt(t.get('value'), 3 if key.endswith(('ratio', 'fraction')) else 1)} | {t.get('target', '')} | {'n/a' if met is None else ('yes' if met else '**no**')} |")
    listing = p.get("listing") or {}
    if listing:
        out.append(f"| admin API listing of every mirror (`GET .../links/-/mirrors`), s / MB | {_fmt(listing.get('seconds'), 2)} / {_fmt(listing.get('bytes', 0) / 1e6, 1)} | (listed) | {'yes' if listing.get('partitions') else 'n/a'} |")
    out.append("")
    if p.get("errors"):
        out += [f"Errors: {p['errors']}", ""]
    return out


def render_markdown(report: dict) -> str:
    d = report["details"]
    m = d.get("machine", {})
    data = d.get("data", {})
    lines = [
        "# Benchmarks",
        "",
        "linkd against the copiers users run today (MirrorMaker 2, consume-then-produce copiers with",
        "confluent-kafka and kafka-python) and against the machine's limit (a raw Fetch loop that only writes the",
        "fetched bytes to a file), all on the same data in the same run. This page is generated by",
        "`benchmarks/run.py`; do not edit it by hand.",
        "",
        f"Latest run: **{d['mode']} mode**, {report['generated']}, {_fmt(d.get('total_seconds'))} s in total, linkd at `{', '.join(dict.fromkeys(d.get('linkd_revisions') or [d.get('revision', '?')]))}` (as each daemon started).",
        "",
        "![throughput comparison](benchmarks-throughput.png)",
        "",
        "## Targets",
        "",
        "| target | value | met |",
        "|---|---:|---|",
    ]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['value'], 2)} | {({True: 'yes', False: '**no**', None: 'n/a'})[t['met']]} |")
    lines += ["", "## Throughput and CPU", "", "| | MB/s wire | MB/s payload | CPU s/GB payload |", "|---|---:|---:|---:|"]
    for what, wire, payload, cpu in _rows(report):
        lines.append(f"| {what.strip()} | {wire} | {payload} | {cpu} |")
    lines += ["", "| other | value |", "|---|---:|"]
    for what, value in _other_rows(report):
        lines.append(f"| {what.strip()} | {value} |")
    ratios = [k for k in report if k.startswith("ratio_")]
    lines += ["", "Ratios: " + ", ".join(f"`{k[6:]}` {_fmt(report[k], 2)}" for k in ratios) + ".", ""]
    if d.get("errors"):
        lines += ["Phases that failed in this run:", ""] + [f"- `{k}`: {v}" for k, v in d["errors"].items()] + [""]
    notes = []
    for key in ("copier_kafka_python", "copier_confluent"):
        if _get(d, key, "note", default=None):
            notes.append(f"- {key}: {d[key]['note']}.")
    lines += [
        "## What was measured",
        "",
        f"- **Data**: {data.get('records', 0):,} JSON order events (avg {_fmt(data.get('avg_record_bytes'))} bytes of key + value) in two topics of "
        f"{next(iter(data.get('topics', {}).values()), {}).get('partitions', '?')} partitions, one written with zstd and one with lz4 batches by "
        f"{data.get('producer', 'confluent-kafka')}: {_fmt(data.get('payload_bytes', 0) / 1e6)} MB of payload, "
        f"{_fmt(data.get('wire_bytes', 0) / 1e6)} MB of record batches (compression ratio {_fmt(data.get('compression_ratio'), 2)}).",
        "- **Units**: MB = 10^6 bytes. *Wire* MB/s counts the record batches as stored and fetched (compressed); *payload* MB/s the",
        "  uncompressed keys and values. CPU s/GB is CPU seconds (user + system, all threads) per 10^9 bytes of payload, from",
        "  `/proc/<pid>/stat` for linkd and MirrorMaker 2 and `time.process_time()` inside each Python worker.",
        "- **Catch-up against the limit, in turns**: a fresh `linkd serve`; then "
        f"{len(_get(d, 'mirror', 'runs_wall_s', default=[]))} rounds, each of one raw Fetch pass with each fetch size and one linkd catch-up;",
        "  each side's figure is its median round, so both see the same machine (this VM's speed drifts, see below). Every pass",
        "  and catch-up starts right after about its size of earlier output was deleted.",
        "- **linkd catch-up**: `link create` with the default link settings (`replica.fetch.max.bytes`",
        "  1 MiB, `replica.fetch.response.max.bytes` 10 MiB), then `mirror create` for both topics; timed from the first",
        "  `mirror create` until ListOffsets on linkd returns every source end offset (polled every 5 ms by a client connected beforehand).",
        f"  Each round mirrors into differently named topics over its own link ({_get(d, 'mirror', 'runs_wall_s', default='?')} s), deleted after the round",
        f"  except the last (best round {_fmt(_get(d, 'mirror', 'best_mb_s'))} MB/s). The same catch-up with 8 MiB/64 MiB fetches runs once afterwards over another link",
        "  (linkd refuses a second mirror of one source topic on the same link). The headline includes",
        f"  linkd's set-up ({_fmt(_get(d, 'mirror', 'first_records_after_s'), 2)} s to the first mirrored record); timed like MirrorMaker 2, from",
        f"  the first record on, it is {_fmt(report.get('mirror_streaming_mb_s'))} MB/s.",
        "- **Raw Fetch limit**: one blocking socket, Fetch v12 encoded and decoded with linkd's `protocol` package, one request in",
        "  flight, read into one reused buffer, whole batches written to a new file per partition; nothing else (no CRC check). It reads from the source broker with both fetch",
        "  sizes (1 MiB/10 MiB and 8 MiB/64 MiB) in every round and the faster one counts for that round "
        f"({_get(d, 'raw_fetch_limit', 'rounds_wall_s', default='?')} s; best round",
        f"  {_fmt(_get(d, 'raw_fetch_limit', 'best_mb_s'))} MB/s); an untimed pass first warms the broker's JIT. Each pass writes new files and deletes them",
        "  at once, as a catch-up writes new segments (rewriting one set of files would let passes reuse page-cache pages).",
        "- **MirrorMaker 2**: `org.apache.kafka.connect.mirror.MirrorMaker` (Kafka 4.1.1, dedicated mode, `-Xmx2g`, G1) to a second",
        "  Kafka broker, tuned for throughput: `tasks.max=2` (the core count), consumer `fetch.max.bytes=64 MiB`,",
        "  `max.partition.fetch.bytes=8 MiB`, `max.poll.records=10000`, producer `batch.size=1 MiB`, `linger.ms=50`,",
        "  `compression.type=lz4` (one codec per producer: the cheapest), `buffer.memory=256 MiB`, checkpoints and ACL sync off.",
        "  Timed from the first record at the destination to the last, so the JVM and Connect start-up "
        f"({_fmt(_get(d, 'mm2', 'startup_s'))} s here) is excluded; CPU over the same span. The destination broker's CPU is shown separately.",
        "- **Copiers**: one process, `assign` from offset 0, consume, produce each record again (key, value, timestamp, same",
        "  partition) with one producer per topic using that topic's codec, `linger.ms=50`, `batch.size=1 MB`, `acks=all`, delivery",
        "  callbacks counted; timed until the last record is acknowledged. The kafka-python copier has a time limit; its rates are",
        "  over the records it copied.",
        "- **Serving**: the same raw Fetch loop reading everything from linkd and from the source broker, in turns (the order",
        f"  flips each round), median of {len(_get(d, 'serve', 'linkd', 'raw_passes_wall_s', default=[]))} passes each; these passes count the bytes and drop them, so the figure is the",
        "  server's and not this client's page-cache writes. A first pass on each writes files that are checked to be",
        "  byte-identical to the source's. Then a confluent-kafka consumer (`assign`, `consume(10000)`, touching key and value) on each.",
        "- **Run-to-run spread**: the development VM returns freed memory to its host (DAMON reclaim), so writing 312 MB into",
        "  the page cache costs 0.1 s or 1.1 s of CPU depending on whether recently freed pages are at hand (perf puts 40% of a",
        "  catch-up's CPU in that copy). Single passes therefore vary by up to 3x within a run; the medians of interleaved",
        "  rounds above are what the ratios use, and every round's figure is listed so the spread is visible.",
        f"- **Latency**: {_fmt(_get(d, 'latency', 'rate_records_s'))} records/s for {_fmt(_get(d, 'latency', 'seconds'))} s to a 4-partition source topic already mirrored "
        "(confluent producer, `linger.ms=5`), started once the link has fetched every partition of it (steady state, not mirror",
        "  start-up); each value starts with the send time; confluent consumers on linkd and on the source",
        "  subtract it from the arrival time. The source column is the floor that linkd's figure includes.",
        "- **Failover**: 100 topics x 10 partitions with 5 records per partition mirrored by a fresh linkd; `linkd mirror failover` of",
        "  10 topics (100 partitions) run as a CLI process (Python start-up included), then one record produced with confluent-kafka",
        "  to each of the 100 partitions and acknowledged; the admin-API variant calls the API in-process for 10 other topics.",
        "- **Memory**: VmHWM of that linkd (from `/proc/<pid>/status`) after the 1,000 mirror partitions caught up and ran a few",
        f"  fetch rounds (an idle daemon: {_fmt(_get(d, 'memory', 'idle_peak_rss_mb_before'))} MB).",
        "- Everything runs on one machine with other work on it, so single figures are noisy, and every process (brokers, linkd,",
        "  copiers) shares the same cores: a copier competes with both brokers for CPU, as linkd does with the source broker.",
        *notes,
        "",
        "## Profile",
        "",
        *_profile_md(d.get("profile")),
        "## Machine",
        "",
        f"- {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB RAM, Linux {m.get('kernel', '?')}",
        f"- Python {m.get('python', '?')}, {m.get('java', '?')}; load average at start {m.get('load_average_at_start', '?')}",
        "",
        "## Reproduce",
        "",
        "```",
        "make setup                               # venv with the test extra (Kafka jars come from Maven Central)",
        ".venv/bin/pip install -e '.[bench]'      # matplotlib, py-spy",
        ".venv/bin/python benchmarks/run.py --quick --json /tmp/bench.json   # ~150 MB, under 5 minutes",
        ".venv/bin/python benchmarks/run.py --profile                         # ~1 GB, regenerates this page",
        "```",
        "",
        "`--keep` keeps the working directory (broker logs, worker logs, py-spy raw stacks) for a post-mortem. Phase times of",
        "this run (s): " + ", ".join(f"{k} {v}" for k, v in d.get("phase_seconds", {}).items()) + ".",
        "",
        "Catch-up from a secured source (TLS, SASL_SSL) against the same broker's PLAINTEXT listener is measured",
        "separately: see [benchmarks-secure.md](benchmarks-secure.md) (`benchmarks/secure_catchup.py`).",
        "",
        "A tail consumer's latency on linkd while a mirror catches up (the goal: p99 within 2x of idle) is measured by",
        "`benchmarks/tail_latency.py`: see [benchmarks-tail-latency.md](benchmarks-tail-latency.md).",
        "",
        "## 10,000 partitions",
        "",
        "`benchmarks/partitions.py` (run here as the `partitions` phase: 100 x 10 partitions in quick mode, 1,000 x 10",
        "in a full run; its own source broker): creation on a paused link, catch-up once resumed, idle CPU, the REST",
        "listing, restarts after SIGTERM and SIGKILL, and failover of every mirror.",
        "",
        *partitions_markdown(d.get("partitions")),
        "Dated runs of it, A/B comparisons of each change and what they found: [benchmarks-history.md](benchmarks-history.md#10000-partitions).",
        "",
        "## WAN",
        "",
        "Catch-up through a delay-and-bandwidth proxy (round trips 0-200 ms, with and without a 1 Gbit/s cap) is",
        "measured by `benchmarks/wan.py` (run here as the `wan` phase, in this run's mode): see",
        "[benchmarks-wan.md](benchmarks-wan.md) for the method, the proxy's self-checks and the curve per copier.",
        "Dated runs and traces: [benchmarks-history.md](benchmarks-history.md#wan).",
        "",
        "![catch-up by round trip](benchmarks-wan.png)",
        "",
    ]
    return "\n".join(lines)
