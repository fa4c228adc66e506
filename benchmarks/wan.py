"""Catch-up across a simulated WAN: a delay-and-bandwidth proxy in front of the source broker.

    .venv/bin/python benchmarks/wan.py [--quick] [--rtt-ms 0,20,50,100,200] [--payload-mb 600]
                                       [--copiers linkd,linkd-large,raw,confluent] [--json PATH] [--docs]
    .venv/bin/python benchmarks/wan.py --render RUN.json [MORE.json ...]   # docs/benchmarks-wan.md from saved runs

The proxy is ``benchmarks/wanproxy`` (Go, standard library only), built with ``go build`` into the peers
cache on first use. It applies a one-way delay of RTT/2 per direction to every chunk by its arrival time
(chunks stay in flight concurrently, as netem delays packets; the reader never sleeps), and with a cap
paces each direction of the whole proxy (all connections: one WAN link) as a token bucket. Go rather than
Python/trio: the proxy must not be the bottleneck at 0 ms, and a Python relay on this 2-core machine moves
a few hundred MB/s at best while a Go one passes well over 1 GB/s (checked below on every run).

The source Apache Kafka broker advertises the proxy's port, so every connection any copier makes after
bootstrap (metadata points at the leader) also crosses the "WAN". Loading goes through the proxy at 0 ms.

Self-checks (printed in the JSON, ``self_checks``): a bulk transfer through the proxy at 0 ms (>= 1 GB/s
wanted), a 1-byte request/ack at 100 ms round trip (should take ~100 ms), and a bulk transfer at 100 ms
with the 1 Gbit/s cap (should reach ~the cap).

Then for every round trip, without a cap and with a 1 Gbit/s cap (125 MB/s per direction), each copier
catches up the whole topic from offset 0 through the proxy (a fresh proxy per point):

* ``linkd``: a fresh ``linkd serve``, a link with default settings (``replica.fetch.max.bytes`` 1 MiB,
  ``replica.fetch.response.max.bytes`` 10 MiB), ``mirror create``, timed to linkd's end offsets == the source's;
* ``linkd-1``, ``linkd-4``: the same with ``num.cluster.link.fetchers`` 1 (Cluster Linking's default) and 4
  (linkd's default adapts: 1 under 20 ms of round trip, 4 beyond);
* ``linkd-large``: the same with 8 MiB / 64 MiB fetches;
* ``raw``: the raw Fetch loop (benchmarks/workers.py raw-fetch, our codec, one request in flight, bytes
  discarded) with 1 MiB / 10 MiB, the same fetch sizes as linkd's defaults;
* ``confluent`` (optional): the confluent-kafka consume-and-produce copier to a second local broker;
* ``mm2`` (optional): MirrorMaker 2 as run.py tunes it, to a fresh local broker per point, timed from its
  first record at the destination (its start-up excluded).

A copier with one Fetch in flight moves at most min(partitions x partition max bytes, response max bytes)
per round trip (plus that response's time on the wire under a cap); each point shows that bound
(``fetch_bound_mb_s``) beside the figure. MB = 10^6 bytes of
record batches as stored (wire).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EndOffsets, MirrorMaker2, cpu_seconds, ensure_mm2_libs, machine_description, run_worker  # noqa: E402

from tests.peers import LOOPBACK, _die_with_parent, cache_root, file_lock, free_port, terminate  # noqa: E402
from tests.peers.kafka import KafkaBroker  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
TOPIC = "bench-wan"
PARTITIONS = 4
CAP_BYTES_S = 125_000_000  # 1 Gbit/s
PROXY_SOURCE = Path(__file__).resolve().parent / "wanproxy"
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-wan.md"
DOCS_PLOT = DOCS_PAGE.with_suffix(".png")
FETCH_SIZES = {"linkd": (MiB, 10 * MiB), "linkd-1": (MiB, 10 * MiB), "linkd-4": (MiB, 10 * MiB), "linkd-large": (8 * MiB, 64 * MiB), "raw": (MiB, 10 * MiB), "confluent": (MiB, 50 * MiB), "mm2": (8 * MiB, 64 * MiB)}
MODES = {
    "quick": {"rtt_ms": [0, 100], "payload_mb": 120, "bulk_mb": 1000, "capped_bulk_mb": 250, "copiers": ["raw", "linkd"]},
    "full": {"rtt_ms": [0, 20, 50, 100, 200], "payload_mb": 600, "bulk_mb": 2000, "capped_bulk_mb": 500, "copiers": ["raw", "linkd", "linkd-1", "linkd-large"]},
}


# Fetch connections per source broker (num.cluster.link.fetchers) of each copier. linkd's default (0) adapts:
# 1 under 20 ms of round trip, 4 beyond (None here); ``linkd-1`` and ``linkd-4`` set it. Others: one Fetch in flight.
FETCHERS: dict[str, int | None] = {"linkd": None, "linkd-1": 1, "linkd-4": 4, "linkd-large": None}
LINKD_CONFIGS = {"linkd-1": {"num.cluster.link.fetchers": "1"}, "linkd-4": {"num.cluster.link.fetchers": "4"}}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the proxy -------------------------------------------------------------------------------------


def build_proxy() -> Path:
    """``go build`` the proxy once per source version into the peers cache; reused afterwards."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("benchmarks/wan.py needs the Go toolchain ('go' on PATH) to build benchmarks/wanproxy")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(PROXY_SOURCE.glob("*.go")) + [PROXY_SOURCE / "go.mod"])).hexdigest()[:16]
    binary = cache_root() / f"wanproxy-{digest}" / "wanproxy"
    if binary.is_file():
        return binary
    with file_lock(binary.parent.parent / ".wanproxy.lock"):
        if not binary.is_file():
            binary.parent.mkdir(parents=True, exist_ok=True)
            partial = binary.with_suffix(".partial")
            subprocess.run([go, "build", "-o", str(partial), "."], cwd=PROXY_SOURCE, check=True, timeout=600)
            partial.rename(binary)
    return binary


class Proxy:
    """One ``wanproxy proxy`` process: ``listen`` (HOST:PORT, port 0 for any) -> ``upstream``."""

    def __init__(self, binary: Path, listen: str, upstream: str, rtt_ms: float, cap: int | None) -> None:
        argv = [str(binary), "proxy", "-map", f"{listen}={upstream}", "-delay-ms", str(rtt_ms / 2)]
        if cap:
            argv += ["-rate-bytes", str(cap)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"wanproxy did not start: {' '.join(argv)}")
        self.address = json.loads(line)["listening"][0]

    def close(self) -> None:
        terminate(self.process, 5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bulk(binary: Path, address: str, size: int) -> dict:
    out = subprocess.run([str(binary), "send", "-to", address, "-bytes", str(size)], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def self_checks(binary: Path, settings: dict) -> dict:
    sink = subprocess.Popen([str(binary), "sink"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=_die_with_parent)
    try:
        target = sink.stdout.readline().strip()
        direct = bulk(binary, target, settings["bulk_mb"] * MB)
        with Proxy(binary, f"{LOOPBACK}:0", target, 0, None) as p:
            zero = bulk(binary, p.address, settings["bulk_mb"] * MB)
        with Proxy(binary, f"{LOOPBACK}:0", target, 100, None) as p:
            probe = min((bulk(binary, p.address, 1) for _ in range(3)), key=lambda r: r["seconds"])
        with Proxy(binary, f"{LOOPBACK}:0", target, 100, CAP_BYTES_S) as p:
            capped = bulk(binary, p.address, settings["capped_bulk_mb"] * MB)
    finally:
        terminate(sink, 5)
    # The capped transfer includes one round trip (the last byte's way there and the ack's way back).
    capped_rate = capped["bytes_received"] / MB / (capped["seconds"] - 0.1)
    return {
        "bulk_direct_mb_s": round(direct["mb_s"], 1),
        "bulk_through_proxy_0ms_mb_s": round(zero["mb_s"], 1),
        "proxy_0ms_passes_1_gb_s": zero["mb_s"] >= 1000,
        "one_byte_ack_at_100ms_rtt_ms": round(probe["seconds"] * 1000, 1),
        "bulk_100ms_rtt_1gbit_cap_mb_s": round(capped_rate, 1),
        "bulk_100ms_rtt_1gbit_cap_ratio_to_cap": round(capped_rate / (CAP_BYTES_S / MB), 3),
        "capped_bulk_reaches_cap": capped_rate >= 0.95 * CAP_BYTES_S / MB,
    }


# -- copiers ---------------------------------------------------------------------------------------


def catch_up_linkd(proxy: str, ends: list[int], sizes: tuple[int, int], timeout: float, extra: dict[str, str] | None = None) -> dict:
    from linkd.adminclient import AdminClient

    daemon = LinkdProcess(extra_args=["--log-level", "warning"])
    daemon.start()
    try:
        client = AdminClient(daemon.admin_address)
        config = {"bootstrap.servers": proxy}
        if sizes != FETCH_SIZES["linkd"]:
            config |= {"replica.fetch.max.bytes": str(sizes[0]), "replica.fetch.response.max.bytes": str(sizes[1])}
        config |= extra or {}
        client.create_link("wan", config)
        watcher = EndOffsets(daemon.bootstrap)  # connected before the clock starts
        cpu_before = cpu_seconds(daemon.process.pid)
        started = time.perf_counter()
        client.create_mirror(TOPIC, "wan")
        first, done = watcher.wait_for({TOPIC: ends}, timeout, interval=0.005)
        cpu = cpu_seconds(daemon.process.pid) - cpu_before
        watcher.close()
        client.close()
        return {"seconds": done - started, "first_record_after_s": (first - started) if first else None, "cpu_s": cpu,
                "streaming_seconds": (done - first) if first and done > first else None}
    finally:
        daemon.close()


def catch_up_raw(proxy: str, ends: list[int], sizes: tuple[int, int], work: Path, timeout: float) -> dict:
    result = run_worker("raw-fetch", "--bootstrap", proxy, "--ends", json.dumps({TOPIC: ends}), "--discard",
                        "--partition-max-bytes", str(sizes[0]), "--max-bytes", str(sizes[1]), log=work / "raw-fetch.log", timeout=timeout, what="raw-fetch")
    return {"seconds": result["wall_s"], "cpu_s": result["cpu_s"], "requests": result["requests"], "bytes": result["bytes"]}


def catch_up_confluent(proxy: str, ends: list[int], dest: KafkaBroker, name: str, work: Path, timeout: float) -> dict:
    dest.create_topic(name, PARTITIONS)
    result = run_worker("copy-confluent", "--source", proxy, "--dest", dest.bootstrap, "--ends", json.dumps({TOPIC: ends}),
                        "--topic-map", json.dumps({TOPIC: [name, "lz4"]}), "--time-limit", str(timeout),
                        log=work / "copy-confluent.log", timeout=timeout + 180, what="copy-confluent")
    dest.delete_topic(name)
    if not result["complete"] or result["undelivered"] or result["errors"]:
        raise RuntimeError(f"confluent copier incomplete: {result}")
    return {"seconds": result["wall_s"], "cpu_s": result["cpu_s"]}


def catch_up_mm2(proxy: str, ends: list[int], work: Path, timeout: float) -> dict:
    """MirrorMaker 2 (harness.MirrorMaker2, tuned as in run.py) to a fresh destination broker per point (its
    internal offset topics would make a second instance resume); timed from the first record at the
    destination to the last, as run.py times it, so JVM and Connect start-up are excluded."""
    from types import SimpleNamespace

    ensure_mm2_libs()
    dest = KafkaBroker().start()
    mm2 = MirrorMaker2(work, SimpleNamespace(bootstrap=proxy), dest, [TOPIC])
    try:
        watcher = EndOffsets(dest.bootstrap)
        launched = time.perf_counter()
        mm2.start()
        first, done = watcher.wait_for({TOPIC: ends}, timeout, interval=0.05, rename=lambda t: f"src.{t}")
        watcher.close()
    finally:
        mm2.stop()
        dest.close()
    return {"seconds": done - first, "startup_s": first - launched}


# -- the run ---------------------------------------------------------------------------------------


def fetch_bound_mb_s(sizes: tuple[int, int], rtt_ms: float, cap: float | None = None, fetchers: int = 1, grows: bool = False) -> float | None:
    """What the copier's Fetches in flight can move. One Fetch in flight: one response of
    min(partitions x partition max, response max) per round trip plus, with a cap (bytes/s), that
    response's time on the wire. linkd (``grows``): min(fetchers, partitions) connections, each with one
    Fetch in flight whose partitions grow to their share of the response max while behind; never more
    than the cap."""
    connections = min(fetchers, PARTITIONS)
    share = PARTITIONS // connections
    per_partition = max(sizes[0], sizes[1] // share) if grows else sizes[0]
    size = min(share * per_partition, sizes[1])
    seconds = rtt_ms / 1000 + (size / cap if cap else 0)
    if seconds <= 0:
        return None
    rate = connections * size / seconds
    return min(rate, cap) / MB if cap else rate / MB


def run(args: argparse.Namespace) -> dict:
    mode = "quick" if args.quick else "full"
    settings = dict(MODES[mode])
    if args.rtt_ms:
        settings["rtt_ms"] = [float(x) for x in args.rtt_ms.split(",")]
    if args.payload_mb:
        settings["payload_mb"] = args.payload_mb
    if args.copiers:
        settings["copiers"] = args.copiers.split(",")
    if settings["copiers"][0] != "raw" and "raw" in settings["copiers"]:
        settings["copiers"].remove("raw")
        settings["copiers"].insert(0, "raw")  # first at each point: its pass measures the wire bytes
    if "raw" not in settings["copiers"] or not set(settings["copiers"]) <= set(FETCH_SIZES):
        raise SystemExit(f"--copiers: choose from {', '.join(FETCH_SIZES)}, including raw (its pass measures the wire bytes)")
    work = Path(tempfile.mkdtemp(prefix="linkd-bench-wan-"))
    started = time.monotonic()
    binary = build_proxy()
    log(f"proxy {binary}; self-checks")
    result: dict = {"benchmark": "wan", "mode": mode, "machine": machine_description(), "proxy": "benchmarks/wanproxy (Go)", "settings": settings}
    result["self_checks"] = self_checks(binary, settings)
    log(f"self-checks {result['self_checks']}")
    proxy_port = free_port()  # advertised by the source before the proxy listens on it
    source = KafkaBroker(extra_config={"advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{proxy_port}"})
    dest = None
    try:
        source.start()
        listen = f"{LOOPBACK}:{proxy_port}"
        with Proxy(binary, listen, source.bootstrap, 0, None):
            source.create_topic(TOPIC, PARTITIONS)
            loaded = run_worker("load", "--bootstrap", listen, "--topic", TOPIC, "--codec", "lz4", "--payload-bytes", str(settings["payload_mb"] * MB),
                                log=work / "load.log", timeout=900, what="load")
            ends = [source.list_offsets(TOPIC, p)[1] for p in range(PARTITIONS)]  # the leader's address is the proxy's
        source._admin = None  # its AdminClient would keep reconnecting to the proxy port between points
        result["data"] = {"payload_bytes": loaded["payload_bytes"], "records": loaded["records"], "ends": ends}
        if "confluent" in settings["copiers"]:
            dest = KafkaBroker().start()
        points = []
        for rtt in settings["rtt_ms"]:
            for cap in (None, CAP_BYTES_S):
                for copier in settings["copiers"]:
                    sizes = FETCH_SIZES[copier]
                    point = {"rtt_ms": rtt, "cap_mb_s": cap / MB if cap else None, "copier": copier, "fetch_sizes": list(sizes)}
                    try:
                        with Proxy(binary, listen, source.bootstrap, rtt, cap) as proxy:
                            if copier == "raw":
                                point |= catch_up_raw(proxy.address, ends, sizes, work, timeout=900)
                                result["data"].setdefault("wire_bytes", point["bytes"])
                            elif copier == "mm2":
                                point |= catch_up_mm2(proxy.address, ends, work / f"mm2-{len(points)}", timeout=900)
                            elif copier == "confluent":
                                point |= catch_up_confluent(proxy.address, ends, dest, f"copy-{len(points)}", work, timeout=900)
                            else:
                                point |= catch_up_linkd(proxy.address, ends, sizes, timeout=900, extra=LINKD_CONFIGS.get(copier))
                    except Exception as exc:  # one failed point must not hide the others
                        point["error"] = f"{type(exc).__name__}: {exc}"
                    points.append(point)
                    log(f"rtt {rtt} ms cap {point['cap_mb_s']} {copier}: {point.get('seconds', point.get('error'))}")
    finally:
        source.close()
        if dest is not None:
            dest.close()
    wire = result["data"]["wire_bytes"]
    for point in points:
        if "seconds" in point:
            point["mb_s"] = round(wire / MB / point["seconds"], 1)
            if point.get("streaming_seconds"):  # linkd from its first mirrored record on (its set-up excluded)
                point["streaming_mb_s"] = round(wire / MB / point["streaming_seconds"], 1)
            cap = point["cap_mb_s"] * MB if point["cap_mb_s"] else None
            copier = point["copier"]
            fetchers = FETCHERS.get(copier, 1) or (4 if point["rtt_ms"] >= 20 else 1)
            bound = fetch_bound_mb_s(tuple(point["fetch_sizes"]), point["rtt_ms"], cap, fetchers, copier in FETCHERS) if copier not in ("confluent", "mm2") else None
            point["fetch_bound_mb_s"] = round(bound, 1) if bound else None
            if point["cap_mb_s"]:
                point["ratio_to_cap"] = round(point["mb_s"] / point["cap_mb_s"], 3)
    base = {p["copier"]: p["mb_s"] for p in points if p["rtt_ms"] == 0 and p["cap_mb_s"] is None and "mb_s" in p}
    for point in points:
        if "mb_s" in point and base.get(point["copier"]):
            point["ratio_to_own_0ms"] = round(point["mb_s"] / base[point["copier"]], 3)
        if "mb_s" in point and base.get("linkd"):
            point["ratio_to_linkd_0ms"] = round(point["mb_s"] / base["linkd"], 3)
    result["points"] = points
    result["targets"] = targets(points)
    result["seconds_total"] = round(time.monotonic() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    return result


def targets(points: list[dict]) -> list[dict]:
    """Issue 17's WAN targets, judged on this run (None when a figure is missing)."""
    def get(copier: str, rtt: float, capped: bool, key: str):
        for p in points:
            if p["copier"] == copier and p["rtt_ms"] == rtt and bool(p["cap_mb_s"]) == capped:
                return p.get(key)
        return None

    out = []
    capped = get("linkd", 100, True, "ratio_to_cap")
    out.append({"target": "linkd at 100 ms RTT, 1 Gbit/s cap: >= 0.8x the cap", "value": capped, "met": None if capped is None else capped >= 0.8})
    linkd, mm2 = get("linkd", 100, True, "mb_s"), get("mm2", 100, True, "mb_s")
    versus = round(linkd / mm2, 2) if linkd and mm2 else None
    out.append({"target": "linkd at 100 ms RTT, 1 Gbit/s cap: >= 10x MirrorMaker 2 through the same proxy", "value": versus, "met": None if versus is None else versus >= 10})
    own = get("linkd", 100, False, "ratio_to_own_0ms")
    out.append({"target": "linkd at 100 ms RTT, no cap: >= 0.8x linkd at 0 ms through the proxy", "value": own, "met": None if own is None else own >= 0.8})
    return out


# -- docs ------------------------------------------------------------------------------------------


def _catch_up_table(r: dict) -> list[str]:
    lines = [
        "| copier (partition / response max) | cap | " + " | ".join(f"{rtt:g} ms" for rtt in r["settings"]["rtt_ms"]) + " |",
        "|---|---|" + "---:|" * len(r["settings"]["rtt_ms"]),
    ]
    for copier in r["settings"]["copiers"]:
        for capped in (False, True):
            cells = []
            for rtt in r["settings"]["rtt_ms"]:
                p = next((p for p in r["points"] if p["copier"] == copier and p["rtt_ms"] == rtt and bool(p["cap_mb_s"]) == capped), None)
                if p is None or "mb_s" not in p:
                    cells.append("failed" if p else "")
                    continue
                cell = f"{p['mb_s']:,}"
                if p.get("fetch_bound_mb_s"):
                    cell += f" (bound {p['fetch_bound_mb_s']:,})"
                cells.append(cell)
            sizes = FETCH_SIZES[copier]
            lines.append(f"| {copier} ({sizes[0] // MiB} / {sizes[1] // MiB} MiB) | {'1 Gbit/s' if capped else 'none'} | " + " | ".join(cells) + " |")
    return lines


def _targets_table(r: dict) -> list[str]:
    lines = ["", "## Targets (issue 17)", "", "| target | value | met |", "|---|---:|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['value'] if t['value'] is not None else 'n/a'} | {'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
    return lines


def render_markdown(r: dict, extra: list[dict] = ()) -> str:
    """The page for run ``r`` (tables, plot), then the catch-up table of each ``extra`` run (e.g. a shorter one
    with MirrorMaker 2)."""
    m = r["machine"]
    checks = r["self_checks"]
    lines = [
        "# Benchmarks: catch-up across a WAN",
        "",
        "Generated by `benchmarks/wan.py` (`--docs`, or `--render` from a saved `--json` run); do not edit by hand.",
        "One Apache Kafka source broker behind `benchmarks/wanproxy` (a Go TCP proxy: one-way delay of RTT/2 applied",
        "to each chunk by its arrival time, chunks in flight concurrently as netem does, and an optional token-bucket",
        "cap per direction shared by all connections); the broker advertises the proxy's port, so every connection",
        "a copier makes crosses it. Each point is one catch-up of the whole topic from offset 0 through a fresh proxy.",
        f"MB = 10^6 bytes of record batches as stored (wire). Mode **{r['mode']}**, {r['data']['wire_bytes'] / MB:,.0f} MB wire",
        f"({r['data']['records']:,} records, lz4, {PARTITIONS} partitions), {r['seconds_total']:.0f} s in total. One run",
        "on a shared 2-core machine: expect a spread of 10-20% between runs at low round trips.",
        "",
        "The proxy is Go (standard library, built by `go build` into the peers cache on first use) rather than Python:",
        "at 0 ms it must not be the bottleneck, and a Python relay on this machine moves a few hundred MB/s while the Go",
        "one passes over 1 GB/s (self-check below). It terminates TCP on both sides, so the WAN's own TCP behaviour",
        "(slow start, the receiver's window) is not modelled: up to 256 MiB per direction of each connection is in",
        "flight in the proxy, far above any bandwidth-delay product here, so a copier is limited only by what it keeps",
        "in flight itself.",
        "",
        "## Proxy self-checks",
        "",
        "| check | value |",
        "|---|---:|",
        f"| bulk transfer, direct (MB/s) | {checks['bulk_direct_mb_s']:,} |",
        f"| bulk transfer through the proxy at 0 ms (MB/s; >= 1,000 wanted) | {checks['bulk_through_proxy_0ms_mb_s']:,} |",
        f"| 1-byte send + ack at 100 ms RTT (ms) | {checks['one_byte_ack_at_100ms_rtt_ms']} |",
        f"| bulk transfer at 100 ms RTT, 1 Gbit/s cap (MB/s; cap 125) | {checks['bulk_100ms_rtt_1gbit_cap_mb_s']} |",
        "",
        "## Catch-up MB/s by round trip",
        "",
        "`bound` is what the copier's Fetches in flight can move. raw: one Fetch in flight, one response of",
        "min(partitions x partition max bytes, response max bytes) per round trip plus, with the cap, that response's",
        "time on the wire (size / cap). linkd: `num.cluster.link.fetchers` connections (by default 1 under 20 ms of round",
        "trip and 4 beyond; 1 for `linkd-1`, 4 for `linkd-4`; at most one per partition), each with one Fetch in flight whose partitions grow to their share of the response",
        "max while behind; never above the cap.",
        "",
        *_catch_up_table(r),
    ]
    lines += [
        "",
        "Each figure includes the copier's set-up (linkd: from `mirror create`; the raw loop from its first Fetch;",
        "the confluent copier from its first poll; MirrorMaker 2 from its first record at the destination, so its JVM",
        "and Connect start-up are left out, as in run.py). linkd from its first mirrored record on (set-up excluded),",
        "against its bound (this leaves out the first response's round, so with few rounds,",
        "as the large fetches take here, it can read a little above the bound):",
        "",
        "| linkd | cap | " + " | ".join(f"{rtt:g} ms" for rtt in r["settings"]["rtt_ms"]) + " |",
        "|---|---|" + "---:|" * len(r["settings"]["rtt_ms"]),
    ]
    for copier in [c for c in r["settings"]["copiers"] if c.startswith("linkd")]:
        for capped in (False, True):
            cells = []
            for rtt in r["settings"]["rtt_ms"]:
                p = next((p for p in r["points"] if p["copier"] == copier and p["rtt_ms"] == rtt and bool(p["cap_mb_s"]) == capped), None)
                if p is None or not p.get("streaming_mb_s"):
                    cells.append("")
                    continue
                bound = p.get("fetch_bound_mb_s")
                cells.append(f"{p['streaming_mb_s']:,}" + (f" ({p['streaming_mb_s'] / bound:.2f}x bound)" if bound else ""))
            lines.append(f"| {copier} streaming | {'1 Gbit/s' if capped else 'none'} | " + " | ".join(cells) + " |")
    lines += _targets_table(r)
    for n, e in enumerate(extra, 2):
        lines += [
            "",
            f"## Run {n}: {', '.join(e['settings']['copiers'])} at {', '.join(f'{x:g}' for x in e['settings']['rtt_ms'])} ms",
            "",
            f"Another run ({e['mode']} settings, {e['data']['wire_bytes'] / MB:,.0f} MB wire, load average at start",
            f"{e['machine'].get('load_average_at_start')}, proxy at 0 ms {e['self_checks']['bulk_through_proxy_0ms_mb_s']:,} MB/s); ratios only hold within one run.",
            "",
            *_catch_up_table(e),
            "",
            "| target | value | met |",
            "|---|---:|---|",
            *_targets_table(e)[5:],
        ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        ".venv/bin/python benchmarks/wan.py --quick                 # 0 and 100 ms, ~120 MB payload, linkd and raw: ~1 minute",
        ".venv/bin/python benchmarks/wan.py --copiers raw,linkd,linkd-large,confluent --json /tmp/wan.json --docs   # this page",
        ".venv/bin/python benchmarks/wan.py --copiers raw,linkd,mm2 --rtt-ms 0,100 --json /tmp/wan-mm2.json        # MirrorMaker 2 (~6 minutes)",
        ".venv/bin/python benchmarks/wan.py --render /tmp/wan.json /tmp/wan-mm2.json   # the page and plot from saved runs",
        "```",
        "",
        "`benchmarks/run.py` runs the same script as its last phase (`wan`, in its own mode) and judges the two targets.",
        "",
        "## Machine",
        "",
        f"- {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB RAM, Linux {m.get('kernel', '?')}, load average at start {m.get('load_average_at_start')}",
        f"- Python {m.get('python', '?')}, {m.get('java', '?')}",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> bool:
    """MB/s against round trip, one line per copier and cap setting (matplotlib, the bench extra)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, capped in zip(axes, (False, True), strict=True):
        for copier in r["settings"]["copiers"]:
            xs, ys = [], []
            for p in r["points"]:
                if p["copier"] == copier and bool(p["cap_mb_s"]) == capped and "mb_s" in p:
                    xs.append(p["rtt_ms"])
                    ys.append(p["mb_s"])
            if xs:
                ax.plot(xs, ys, marker="o", label=copier)
        bound = [(rtt, fetch_bound_mb_s(FETCH_SIZES["linkd"], rtt, CAP_BYTES_S if capped else None)) for rtt in r["settings"]["rtt_ms"] if rtt > 0 or capped]
        ax.plot([b[0] for b in bound], [b[1] for b in bound], linestyle=":", color="grey", label="1 Fetch in flight, 4 x 1 MiB per RTT")
        if capped:
            ax.axhline(CAP_BYTES_S / MB, color="red", linestyle="--", linewidth=0.8, label="cap (1 Gbit/s)")
        ax.set_yscale("log")
        ax.set_xlabel("round trip (ms)")
        ax.set_title("1 Gbit/s cap" if capped else "no cap", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("catch-up MB/s (wire, log scale)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Catch-up through the WAN proxy, {r['mode']} mode, {r['data']['wire_bytes'] / MB:,.0f} MB, {r['machine'].get('cores', '?')} shared cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_docs(r: dict, extra: list[dict] = ()) -> None:
    page = render_markdown(r, extra)
    if plot(r, DOCS_PLOT):
        page = page.replace("## Proxy self-checks", f"![catch-up by round trip]({DOCS_PLOT.name})\n\n## Proxy self-checks", 1)
    DOCS_PAGE.write_text(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 round trips (0, 100 ms), ~120 MB payload, linkd and raw only: ~2 minutes")
    parser.add_argument("--rtt-ms", help="comma-separated round trips (default: mode's)")
    parser.add_argument("--payload-mb", type=int, help="payload to load (default: 120 quick, 600 full)")
    parser.add_argument("--copiers", help="comma-separated from linkd, linkd-1, linkd-4, linkd-large, raw, confluent, mm2 (raw is needed for the wire size)")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--docs", action="store_true", help=f"write docs/{DOCS_PAGE.name} from this run")
    parser.add_argument("--render", nargs="+", metavar="RUN_JSON", help=f"only write docs/{DOCS_PAGE.name} from saved runs (the first one plotted)")
    args = parser.parse_args()
    if args.render:
        runs = [json.loads(Path(p).read_text()) for p in args.render]
        write_docs(runs[0], runs[1:])
        return
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        write_docs(result)


if __name__ == "__main__":
    main()
