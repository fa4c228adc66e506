"""10,000 mirrored partitions from one Apache Kafka source: creation, catch-up, idle, restart, failover, listing.

    .venv/bin/python benchmarks/partitions.py [--quick] [--topics 1000] [--partitions 10] [--json PATH] [--profile DIR]

Issue 17's targets for a platform team that mirrors a whole cluster. This starts an Apache Kafka source with
``--topics`` x ``--partitions`` topics (1,000 x 10; ``--quick``: 100 x 10), ``--bytes-per-partition`` of
uncompressed records in each, and an 8-partition reference topic holding the same total bytes. Then, on
one linkd:

1. ``create``: a link created paused (``cluster.link.paused=true``, so no fetch overlaps the clock), then
   one ``POST .../mirrors`` per topic from ``--create-concurrency`` clients; timed from the first call to
   the last answer.
2. ``catch_up``: the link resumed; timed to every partition's end offset on linkd (a ListOffsets of those still short,
   every 250 ms while more than 100 are). The same for the reference topic on a second paused link; the ratio of the two rates
   (bytes / second) is the target (>= 0.8). Then the *raw Fetch limit*: a bare Fetch loop (``workers.fetch_to_ends``,
   one request in flight, Kafka's default 1 MiB per partition and 10 MiB per response, no appends) reads both
   sets from the source, after linkd did (so warm); its ratio of the two is what the source itself allows
   any Fetch copier, and ``catch_up_vs_raw`` is linkd's time against the loop's for each set.
3. ``idle``: linkd's CPU (utime + stime, /proc/<pid>/stat) over ``--idle-seconds`` with everything caught
   up and nothing produced: fetch sessions should keep idle rounds small.
4. ``listing``: ``GET .../links/-/mirrors`` (every mirror with its partitions' lags), time and size.
5. ``restart``: SIGTERM (timed to exit), start, timed from spawn to serving: a Metadata naming every topic
   and a ListOffsets answering every partition without error. Then the same after SIGKILL (recovery).
6. ``failover``: ``POST .../mirrors:failover`` with a pattern matching every mirror, timed from the command
   to a Produce (one request, one record per partition) that every partition accepts.

Peak RSS is /proc/<pid>/status VmHWM of each daemon process (before and after the restarts). Prints one
JSON object with each figure and ``targets``: each one's value, bound and met (true/false, null = not
measured). ``--profile DIR`` samples linkd with py-spy during creation+catch-up, idle and failover (those
numbers then carry the profiler's overhead).

``--only idle,failover`` (a comma-separated subset of ``reference,raw,idle,listing,restart,failover``) runs
creation and catch-up of the many topics and then only the phases named, skipping the rest (the reference
catch-up and its ratio, the raw Fetch limit, the idle window, the listing, the restarts, the failover), to
iterate on one figure without waiting for the others; figures of skipped phases are absent (``met`` null).

``--trees /tmp/main-export,`` with ``--rounds 4``: an A/B in one sitting against one source (loaded once:
at 10,000 partitions that takes minutes): each round a fresh linkd runs every phase asked for, with
``PYTHONPATH`` naming the round's tree in turn (empty = this tree), so old and new alternate under the same
load. The first round's figures are the top-level ones; later rounds are under ``rounds``, each with its
``tree`` and ``load_average_at_start``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EndOffsets, cpu_seconds, machine_description, status_kb  # noqa: E402
from rawwire import RawConnection  # noqa: E402
from workers import fetch_to_ends  # noqa: E402

from protocol.messages import ApiKey  # noqa: E402
from protocol.records import BatchSpec, NewRecord, build_batch  # noqa: E402
from tests.peers.kafka import KafkaBroker, ensure_kafka_libs, new_cluster_id  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402

MB = 1_000_000
REFERENCE_TOPIC = "reference-8"
REFERENCE_PARTITIONS = 8
RECORD_BYTES = 1000
TARGETS = {  # issue 17, "10,000 partitions"
    "peak_rss_mb": ("<", 300.0),
    "create_mirrors_s": ("<", 10.0),
    "catch_up_rate_ratio": (">=", 0.8),
    "idle_cpu_fraction": ("<", 0.05),
    "failover_s": ("<", 3.0),
    "restart_to_serving_s": ("<", 10.0),
}
SOURCE_JVM = ("-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
# The test brokers' 4 s broker session (quick kill-and-restart tests) is too short for a broker creating
# 10,000 partitions on a loaded machine: its controller fences it and every partition loses its leader.
SOURCE_CONFIG = {"broker.session.timeout.ms": "60000", "broker.heartbeat.interval.ms": "3000"}
WATCH_INTERVAL_S = 0.25  # a ListOffsets of the partitions not caught up yet this often, while more than 100 are
WATCH_SAMPLE = 100  # with more short than this, a random sample of them is asked about until it is there
OPTIONAL_PHASES = ("reference", "raw", "idle", "listing", "restart", "failover")


def topic_name(i: int) -> str:
    return f"part-{i:04d}"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the source ------------------------------------------------------------------------------------


def load_source(source: KafkaBroker, topics: list[str], partitions: int, bytes_per_partition: int) -> None:
    """Create the topics and write ``bytes_per_partition`` of records into each partition, and the same
    total into the reference topic (uncompressed, so both carry the same bytes on the wire)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": source.bootstrap, "log_level": 3})
    for first in range(0, len(topics), 200):  # Kafka's controller takes a few hundred topics per request easily
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in topics[first:first + 200]], operation_timeout=300, request_timeout=300)
        for future in futures.values():
            future.result(600)
    admin.create_topics([NewTopic(REFERENCE_TOPIC, REFERENCE_PARTITIONS, 1)], operation_timeout=60)[REFERENCE_TOPIC].result(120)
    producer = Producer({"bootstrap.servers": source.bootstrap, "linger.ms": 50, "batch.size": 1 << 20, "compression.type": "none",
                         "queue.buffering.max.kbytes": 1 << 20, "log_level": 3, "message.timeout.ms": 600_000})
    wanted = {*topics, REFERENCE_TOPIC}
    deadline = time.monotonic() + 600
    while True:  # every partition led, as the producer's metadata sees it (it refuses unknown topics)
        listed = producer.list_topics(timeout=60).topics
        if all(t in listed and listed[t].partitions and all(p.leader >= 0 for p in listed[t].partitions.values()) for t in wanted):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the source did not elect leaders for every partition within 600s")
        time.sleep(1)
    records = max(1, bytes_per_partition // RECORD_BYTES)
    value = os.urandom(RECORD_BYTES // 2).hex().encode()

    def put(topic: str, partition: int) -> None:
        while True:
            try:
                producer.produce(topic, value, partition=partition)
                return
            except BufferError:
                producer.poll(0.05)

    for name in topics:
        for p in range(partitions):
            for _ in range(records):
                put(name, p)
        producer.poll(0)
    total_records = records * partitions * len(topics)
    for i in range(total_records):
        put(REFERENCE_TOPIC, i % REFERENCE_PARTITIONS)
    while producer.flush(5):
        pass


# -- linkd probes ----------------------------------------------------------------------------------


def serving_all(bootstrap: str, topics: dict[str, int]) -> bool:
    """Metadata names every topic with all its partitions, and ListOffsets answers each without error."""
    try:
        conn = RawConnection(bootstrap, timeout=30)
    except OSError:
        return False
    try:
        meta = conn.request(ApiKey.METADATA, 9, {"topics": [{"name": t} for t in topics], "allow_auto_topic_creation": False,
                                                 "include_cluster_authorized_operations": False, "include_topic_authorized_operations": False}, timeout=60)
        known = {t["name"]: len(t["partitions"]) for t in meta["topics"] if t["error_code"] == 0}
        if any(known.get(t) != n for t, n in topics.items()):
            return False
        shim = EndOffsets.__new__(EndOffsets)  # its query over this connection
        shim.conn = conn
        shim.query(topics, timeout=60)  # raises on any partition's error
        return True
    except (OSError, ValueError, LookupError):
        return False
    finally:
        conn.close()


def produce_everywhere(bootstrap: str, topics: dict[str, int], timing: dict | None = None) -> tuple[int, int]:
    """One Produce request with a record for every partition; returns (accepted, refused). ``timing``
    gets where the time went: building the request, connecting, this client's encode, the wait for the
    whole answer (linkd's work and both transfers), this client's decode, seconds each."""
    began = time.perf_counter()
    batch = build_batch(BatchSpec(records=[NewRecord(b"after-failover")]))
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 30_000,
            "topic_data": [{"name": t, "partition_data": [{"index": p, "records": batch} for p in range(n)]} for t, n in topics.items()]}
    built = time.perf_counter()
    conn = RawConnection(bootstrap, timeout=60)
    connected = time.perf_counter()
    try:
        response = conn.request(ApiKey.PRODUCE, 9, body, timeout=60)
    finally:
        conn.close()
    if timing is not None:
        timing.update({"build_s": round(built - began, 3), "connect_s": round(connected - built, 3),
                       **{k: round(v, 3) if k != "at" else v for k, v in conn.last_timing.items()}})
    codes = [p["error_code"] for t in response["responses"] for p in t["partition_responses"]]
    return sum(1 for c in codes if c == 0), sum(1 for c in codes if c != 0)


def source_end_offsets(bootstrap: str, partitions: dict[str, int], timeout: float = 120.0) -> dict[str, list[int]]:
    """The source's end offsets, once every partition has a leader that answers."""
    ends = EndOffsets(bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return ends.query(partitions, timeout=120)
            except LookupError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        ends.close()


def wait_caught_up(bootstrap: str, targets: dict[str, list[int]], timeout: float) -> float:
    """Poll linkd's end offsets until every partition reaches its target; returns the perf_counter time
    the last one was seen there. Each poll asks only for the partitions still short of their target, and
    a large set less often: the watcher's ListOffsets of 10,000 partitions costs linkd CPU of its own."""
    watcher = EndOffsets(bootstrap)
    pending = {(t, p) for t, offsets in targets.items() for p in range(len(offsets))}
    deadline = time.monotonic() + timeout
    probe: set[tuple[str, int]] = set()
    try:
        while True:
            if len(pending) > WATCH_SAMPLE:
                # Ask about a random sample of the partitions still short until all of it is there, and
                # only then about all of them: a ListOffsets of 10,000 partitions every 250 ms took
                # half of linkd's event loop during the catch-up it measures.
                probe &= pending
                if not probe:
                    probe = set(random.sample(sorted(pending), WATCH_SAMPLE))
                    ask = pending
                else:
                    ask = probe
            else:
                ask = pending
            asked: dict[str, int] = {}
            for t, p in ask:
                asked[t] = max(asked.get(t, 0), p + 1)
            try:
                found = watcher.query(asked, timeout=60, missing_ok=True)
            except (OSError, ValueError):
                watcher.close()
                watcher = EndOffsets(bootstrap)
                found = {}
            now = time.perf_counter()
            pending = {(t, p) for t, p in pending if not (t in found and p < len(found[t]) and found[t][p] >= targets[t][p])}
            if not pending:
                return now
            if ask is probe and not (probe & pending):
                continue  # the sample is there: ask about everything at once
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} partitions short of the source's end after {timeout:.0f}s, e.g. {sorted(pending)[:3]}")
            time.sleep(WATCH_INTERVAL_S if len(pending) > 100 else 0.02)
    finally:
        watcher.close()


def create_mirrors(admin_address: str, link: str, topics: list[str], concurrency: int) -> list[str]:
    """One POST per topic from ``concurrency`` clients; returns the errors."""
    from linkd.adminclient import AdminClient

    queue = list(reversed(topics))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        admin = AdminClient(admin_address, timeout=120)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    topic = queue.pop()
                try:
                    admin._send("POST", f"{admin.cluster}/links/{link}/mirrors", json={"mirror_topic_name": topic})
                except Exception as exc:  # reported; the run goes on to show what else holds
                    errors.append(f"{topic}: {exc}")
        finally:
            admin.close()

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class Profiler:
    def __init__(self, directory: Path | None, workdir: Path) -> None:
        self.directory = directory
        self.workdir = workdir
        self.spy = None
        self.suffix = ""  # per round, when there are several

    def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        from profiling import PySpy

        self.directory.mkdir(parents=True, exist_ok=True)
        self.spy = PySpy(pid, self.directory / f"{name}{self.suffix}.txt", self.workdir / "py-spy.log", rate=100).start()

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.stop()
            self.spy = None


def judge(results: dict) -> dict:
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = results.get(name)
        met = None if value is None else (value < bound if op == "<" else value >= bound)
        out[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return out


def run(args: argparse.Namespace) -> dict:
    began = time.monotonic()
    topics = [topic_name(i) for i in range(args.topics)]
    total_partitions = args.topics * args.partitions
    workdir = Path(tempfile.mkdtemp(prefix="linkd-partitions-bench-"))
    profiler = Profiler(args.profile, workdir)
    results: dict = {"benchmark": "partitions", "mode": "quick" if args.quick else "full", "machine": machine_description(),
                     "topics": args.topics, "partitions_per_topic": args.partitions, "partitions": total_partitions,
                     "bytes_per_partition": args.bytes_per_partition, "errors": {}}
    ensure_kafka_libs()
    source = KafkaBroker(extra_config=SOURCE_CONFIG, jvm_opts=SOURCE_JVM, start_timeout=300)
    while source.cluster_id.startswith("-"):  # the storage tool reads a leading "-" as an option
        source.cluster_id = new_cluster_id()
    try:
        source.start()
        started = time.monotonic()
        load_source(source, topics, args.partitions, args.bytes_per_partition)
        source_ends = source_end_offsets(source.bootstrap, {t: args.partitions for t in topics})
        reference_ends = source_end_offsets(source.bootstrap, {REFERENCE_TOPIC: REFERENCE_PARTITIONS})
        results["source_load_s"] = round(time.monotonic() - started, 1)
        _log(f"source loaded: {total_partitions} partitions in {results['source_load_s']}s")

        trees = args.trees or [""]
        for index in range(args.rounds or len(trees)):
            tree = trees[index % len(trees)]
            figures = results if index == 0 else {"errors": {}}
            figures["tree"] = tree or "."
            figures["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
            env = {"PYTHONPATH": str(Path(tree).resolve())} if tree else None
            profiler.suffix = f"-{index}" if (args.rounds or len(trees)) > 1 else ""
            one_daemon(args, figures, source, topics, source_ends, reference_ends, profiler, env)
            if index:
                figures["targets"] = judge(figures)
                results.setdefault("rounds", []).append(figures)
            _log(f"round {index} ({figures['tree']}): failover {figures.get('failover_s')} s "
                 f"(command {figures.get('failover', {}).get('command_s')}), idle {figures.get('idle_cpu_fraction')}")
    except Exception as exc:
        results["errors"]["run"] = f"{type(exc).__name__}: {exc}"
        _log(f"FAILED: {exc}")
    finally:
        source.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = judge(results)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds_total"] = round(time.monotonic() - began, 1)
    return results


def one_daemon(args: argparse.Namespace, results: dict, source: KafkaBroker, topics: list[str], source_ends: dict[str, list[int]],
               reference_ends: dict[str, list[int]], profiler: Profiler, env: dict[str, str] | None) -> None:
    """A fresh linkd (``env``: e.g. PYTHONPATH naming another tree's code) through every phase asked for."""
    from linkd.adminclient import AdminClient

    linkd = LinkdProcess(extra_args=list(args.linkd_arg), env=env, start_timeout=300)
    try:
        linkd.start()
        pid = linkd.process.pid
        results["rss_mb_at_start"] = round(status_kb(pid, "VmHWM") / 1024, 1)
        admin = AdminClient(linkd.admin_address, timeout=300)
        admin.create_link("many", {"bootstrap.servers": source.bootstrap, "cluster.link.paused": "true"})
        admin.create_link("reference", {"bootstrap.servers": source.bootstrap, "cluster.link.paused": "true"})
        admin.create_mirror(REFERENCE_TOPIC, "reference")

        # 1. creation
        profiler.start(pid, "create_and_catch_up")
        clock = time.perf_counter()
        errors = create_mirrors(linkd.admin_address, "many", topics, args.create_concurrency)
        results["create_mirrors_s"] = round(time.perf_counter() - clock, 2)
        results["create_errors"] = errors[:5] + ([f"... {len(errors) - 5} more"] if len(errors) > 5 else [])
        _log(f"created {len(topics)} mirrors in {results['create_mirrors_s']}s ({len(errors)} errors)")

        # 2. catch-up, then the reference
        total_bytes = sum(sum(o) for o in source_ends.values()) * RECORD_BYTES  # every record is RECORD_BYTES of value
        clock = time.perf_counter()
        admin.alter_link_configs("many", {"cluster.link.paused": "false"}, [])
        try:  # a catch-up that does not finish is reported; the other phases still run
            many_s: float | None = wait_caught_up(linkd.bootstrap, source_ends, timeout=args.timeout) - clock
        except TimeoutError as exc:
            results["errors"]["catch_up"] = str(exc)
            many_s = None
        profiler.stop()
        results["catch_up"] = {"payload_mb": round(total_bytes / MB, 1),
                               "many_s": round(many_s, 2) if many_s else None, "many_mb_s": round(total_bytes / MB / many_s, 1) if many_s else None}
        if "reference" in args.only:
            clock = time.perf_counter()
            admin.alter_link_configs("reference", {"cluster.link.paused": "false"}, [])
            reference_s = wait_caught_up(linkd.bootstrap, reference_ends, timeout=args.timeout) - clock
            results["catch_up"].update(reference_s=round(reference_s, 2), reference_mb_s=round(total_bytes / MB / reference_s, 1))
            results["catch_up_rate_ratio"] = round(reference_s / many_s, 3) if many_s else None
        _log(f"caught up: {results['catch_up']}")
        if "raw" in args.only and "reference" in args.only:
            raw_fetch_limit(results, source.bootstrap, source_ends, reference_ends, many_s, reference_s)

        # 3. idle
        time.sleep(args.settle_seconds)
        if "idle" in args.only:
            profiler.start(pid, "idle")
            before = cpu_seconds(pid)
            time.sleep(args.idle_seconds)
            results["idle_cpu_fraction"] = round((cpu_seconds(pid) - before) / args.idle_seconds, 4)
            profiler.stop()
            link = admin.describe_link("many", include_tasks=False)
            results["link_statistics"] = link.get("statistics")
            _log(f"idle CPU {results['idle_cpu_fraction'] * 100:.1f}% of a core")

        # 4. listing
        if "listing" in args.only:
            clock = time.perf_counter()
            response = admin._send("GET", f"{admin.cluster}/links/-/mirrors")
            listed = response.json()["data"]
            results["listing"] = {"seconds": round(time.perf_counter() - clock, 3), "bytes": len(response.content), "mirrors": len(listed),
                                  "partitions": sum(len(m.get("mirror_lags", [])) for m in listed)}
            _log(f"listing: {results['listing']}")
        results["peak_rss_mb_first_daemon"] = round(status_kb(pid, "VmHWM") / 1024, 1)
        admin.close()

        # 5. restarts
        if "restart" in args.only:
            restart_twice(results, args, linkd, topics, source_ends)
        pid = linkd.process.pid

        # 6. failover of everything
        if "failover" in args.only:
            failover_everything(results, args, linkd, topics, profiler)
        results["peak_rss_mb_restarted_daemon"] = round(status_kb(pid, "VmHWM") / 1024, 1)
        results["peak_rss_mb"] = max(results["peak_rss_mb_first_daemon"], results["peak_rss_mb_restarted_daemon"])
    except Exception as exc:
        results["errors"]["run"] = f"{type(exc).__name__}: {exc}"
        _log(f"FAILED: {exc}")
        _log(linkd.logs(30))
    finally:
        linkd.close()


def raw_fetch_limit(results: dict, bootstrap: str, source_ends: dict[str, list[int]], reference_ends: dict[str, list[int]],
                    many_s: float | None, reference_s: float) -> None:
    raw = {name: fetch_to_ends(bootstrap, {(t, p): end for t, offsets in ends.items() for p, end in enumerate(offsets)}, 1 << 20, 10 << 20)
           for name, ends in (("many", source_ends), ("reference", reference_ends))}
    results["raw_fetch_limit"] = {
        **{f"{name}_s": round(r["wall_s"], 4) for name, r in raw.items()},
        **{f"{name}_requests": r["requests"] for name, r in raw.items()},
        "rate_ratio": round(raw["reference"]["wall_s"] / raw["many"]["wall_s"], 3),
    }
    if many_s:
        results["catch_up_vs_raw"] = {"many": round(raw["many"]["wall_s"] / many_s, 3), "reference": round(raw["reference"]["wall_s"] / reference_s, 3)}
    _log(f"raw Fetch limit: {results['raw_fetch_limit']}")


def restart_twice(results: dict, args: argparse.Namespace, linkd: LinkdProcess, topics: list[str], source_ends: dict[str, list[int]]) -> None:
    """SIGTERM, start, serving; then SIGKILL, start, serving; then caught up again (reconnected and idle)."""
    expected = {t: args.partitions for t in topics}
    expected[REFERENCE_TOPIC] = REFERENCE_PARTITIONS
    restarts = {}
    for how in ("sigterm", "sigkill"):
        clock = time.perf_counter()
        if how == "sigterm":
            linkd.stop(timeout=120)
        else:
            linkd.kill()
        stopped = time.perf_counter() - clock
        clock = time.perf_counter()
        linkd.start()
        ready = time.perf_counter() - clock
        deadline = time.monotonic() + args.timeout
        while not serving_all(linkd.bootstrap, expected):
            if time.monotonic() > deadline:
                raise TimeoutError(f"linkd not serving every partition {args.timeout:.0f}s after a {how} restart")
            time.sleep(0.05)
        restarts[how] = {"stop_s": round(stopped, 2), "ready_file_s": round(ready, 2), "serving_s": round(time.perf_counter() - clock, 2),
                         "peak_rss_mb": round(status_kb(linkd.process.pid, "VmHWM") / 1024, 1)}
        _log(f"restart after {how}: {restarts[how]}")
    results["restart"] = restarts
    results["restart_to_serving_s"] = max(r["serving_s"] for r in restarts.values())
    if "catch_up" not in results["errors"]:
        wait_caught_up(linkd.bootstrap, source_ends, timeout=args.timeout)  # reconnected and idle again


def failover_everything(results: dict, args: argparse.Namespace, linkd: LinkdProcess, topics: list[str], profiler: Profiler) -> None:
    """``POST .../mirrors:failover`` by pattern, timed to a Produce that every partition accepts."""
    from linkd.adminclient import AdminClient

    admin = AdminClient(linkd.admin_address, timeout=300)
    mirrored = {t: args.partitions for t in topics}
    profiler.start(linkd.process.pid, "failover")
    clock = time.perf_counter()
    answers = admin.mirror_action("failover", None, link="many", pattern="part-.*")
    commanded = time.perf_counter() - clock
    first_produce: dict = {}
    accepted, refused = produce_everywhere(linkd.bootstrap, mirrored, first_produce)
    attempts = 1
    while refused and time.perf_counter() - clock < args.timeout:
        time.sleep(0.05)
        accepted, refused = produce_everywhere(linkd.bootstrap, mirrored)
        attempts += 1
    results["failover_s"] = round(time.perf_counter() - clock, 2)
    profiler.stop()
    results["failover_daemon_log"] = [line for line in linkd.log_path.read_text().splitlines() if " failover of " in line][-1:]
    results["failover"] = {"command_s": round(commanded, 2), "answers": len(answers), "answer_errors": sum(1 for a in answers if a.get("error_code")),
                           "partitions_written": accepted, "partitions_refused": refused, "produce_attempts": attempts,
                           "first_produce": {k: v for k, v in first_produce.items() if k != "at"}}
    _log(f"first Produce answered at {first_produce.get('at', 0):.3f} (wall clock)")
    _log(f"failover: {results['failover']} in {results['failover_s']}s")
    admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 topics x 10 partitions (for make bench)")
    parser.add_argument("--topics", type=int, help="source topics to mirror (default 1000; --quick 100)")
    parser.add_argument("--partitions", type=int, default=10, help="partitions per topic")
    parser.add_argument("--bytes-per-partition", type=int, default=10_000, help="record bytes written to each partition")
    parser.add_argument("--create-concurrency", type=int, default=8, help="mirror create calls in flight")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--settle-seconds", type=float, help="wait after catch-up before the idle window (default 3; 20 in full mode: "
                        "the first periodic flush of 10,000 freshly written partitions takes that long, and is not idling)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per wait")
    parser.add_argument("--linkd-arg", action="append", default=[], help="extra argument for linkd serve (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--profile", type=Path, help="py-spy linkd into this directory (raw collapsed stacks per phase)")
    parser.add_argument("--trees", type=lambda text: text.split(","),
                        help="comma-separated source trees whose linkd to run, one fresh daemon per round against the same source "
                             "(an empty name = this tree), e.g. '/tmp/main-export,' for main then this branch")
    parser.add_argument("--rounds", type=int, help="daemons to run in turn over --trees (default one per tree)")
    parser.add_argument("--only", default=",".join(OPTIONAL_PHASES),
                        help=f"phases to run after creation and catch-up, comma-separated (default all: {','.join(OPTIONAL_PHASES)})")
    args = parser.parse_args(argv)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    if args.only - set(OPTIONAL_PHASES):
        parser.error(f"--only: unknown phase(s) {', '.join(sorted(args.only - set(OPTIONAL_PHASES)))}; known: {', '.join(OPTIONAL_PHASES)}")
    if args.topics is None:
        args.topics = 100 if args.quick else 1000
    if args.settle_seconds is None:
        args.settle_seconds = 3.0 if args.quick else 20.0
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if not results["errors"] and not any(r["errors"] for r in results.get("rounds", [])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
