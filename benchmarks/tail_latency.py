"""Tail-consumer latency on linkd while another mirror catches up from Apache Kafka.

    .venv/bin/python benchmarks/tail_latency.py [--megabytes 300] [--rounds 8] [--idle-seconds 4] [--json PATH] [--profile PATH]
        [--linkd-tree LABEL=PATH ...] [--passes N]

A consumer at the end of a local topic should not notice that the daemon is busy copying a big backlog
for someone else. This starts an Apache Kafka source, loads ``--megabytes`` of uncompressed JSON order
events into a 4-partition topic (uncompressed so the figure is about the bytes linkd writes), starts
linkd, and runs three probes, each on its own connection, the whole time:

* ``tail``: a producer appends one record to a local linkd topic every 5 ms (acks=1), the value carrying
  its send time; a consumer long-polls that topic at its end (Fetch, max_wait 500 ms). The figure is send
  to fetched, per record: what a tail consumer sees.
* ``fetch_local``: Fetch with max_wait 0 of the first batch of a pre-filled local topic every 5 ms; its
  round trip is how long linkd takes to answer a Fetch that has data at hand.
* ``fetch_mirror``: the same against partition 0 of the mirror being caught up (reads the log an append is
  writing to). Its baseline is the previous mirror, caught up, in the idle windows.

Phases alternate so that both see the same machine (a shared one's load drifts): an ``idle`` window of
``--idle-seconds``, a catch-up of the whole source topic (a new link and mirror, the previous mirror deleted
first), ``--rounds`` times, and a last idle window. Prints one JSON object: per phase and probe
p50/p90/p99/max in ms, and the catch-up percentiles as ratios to the idle ones. ``--profile`` samples linkd
with py-spy (per thread, raw collapsed stacks to PATH) over the rounds; that run's numbers carry the
profiler's overhead.

Before/after: ``--linkd-tree before=/tmp/old --linkd-tree this --passes 2`` runs the daemon from a copy of
another revision (``git archive REV linkd protocol | tar -x -C /tmp/old``) and from this checkout, taking
turns (before, this, before, this) against the same loaded source; each pass is a fresh daemon. Per tree:
the merged percentiles and ratios, and per pass its tail ratio, catch-up speed and load average (spread).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EndOffsets, machine_description, run_worker  # noqa: E402
from rawwire import RawConnection  # noqa: E402

from protocol.messages import ApiKey  # noqa: E402
from protocol.records import BatchSpec, NewRecord, build_batch, decode_records, split_batches  # noqa: E402
from tests.peers.kafka import KafkaBroker, ensure_kafka_libs, new_cluster_id  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402

MB = 1_000_000
SOURCE_TOPIC = "catch-up-source"
SOURCE_PARTITIONS = 4
TAIL_TOPIC = "tail"
FILLED_TOPIC = "filled"
PROBE_INTERVAL_S = 0.005
FETCH_VERSION = 12
PRODUCE_VERSION = 9
_STAMP = struct.Struct(">q")


def _fetch_body(topic: str, partition: int, offset: int, max_wait_ms: int, partition_max_bytes: int) -> dict:
    return {
        "replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": partition_max_bytes, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
        "topics": [{"topic": topic, "partitions": [{"partition": partition, "current_leader_epoch": -1, "fetch_offset": offset,
                                                    "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": partition_max_bytes}]}],
    }


def _produce(conn: RawConnection, topic: str, records: bytes, acks: int = 1) -> None:
    body = {"transactional_id": None, "acks": acks, "timeout_ms": 30_000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]}
    response = conn.request(ApiKey.PRODUCE, PRODUCE_VERSION, body, timeout=60)
    code = response["responses"][0]["partition_responses"][0]["error_code"]
    if code:
        raise RuntimeError(f"produce to {topic}: error {code}")


class Samples:
    """Latencies (ms) tagged with the phase running when each was taken."""

    def __init__(self) -> None:
        self.phase = "warm-up"
        self.by_phase: dict[str, dict[str, list[float]]] = {}
        self.errors: list[str] = []
        self.reconnects: list[str] = []
        self._lock = threading.Lock()

    def add(self, probe: str, ms: float, phase: str | None = None) -> None:
        with self._lock:
            self.by_phase.setdefault(phase or self.phase, {}).setdefault(probe, []).append(ms)


class Probes:
    """The three probe threads; they run until ``stop()``. ``mirror`` names the partition fetch_mirror reads."""

    def __init__(self, bootstrap: str, samples: Samples) -> None:
        self.bootstrap = bootstrap
        self.samples = samples
        self.mirror: str | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard, args=(fn,), daemon=True) for fn in (self._tail_producer, self._tail_consumer, self._fetch_local, self._fetch_mirror)]
        self._sent: dict[int, str] = {}  # stamp -> phase it was sent in (a record fetched after a phase change counts for the one it was sent in)

    def start(self) -> Probes:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # reported in the JSON; a dead probe must not look like a fast one
            self.samples.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")

    def _tail_producer(self) -> None:
        conn = RawConnection(self.bootstrap, client_id="tail-producer")
        next_at = time.perf_counter()
        while not self._stop.is_set():
            stamp = time.perf_counter_ns()
            self._sent[stamp] = self.samples.phase
            _produce(conn, TAIL_TOPIC, build_batch(BatchSpec(records=[NewRecord(_STAMP.pack(stamp) + b"x" * 92)])))
            next_at += PROBE_INTERVAL_S
            time.sleep(max(0.0, next_at - time.perf_counter()))
        conn.close()

    def _tail_consumer(self) -> None:
        conn = RawConnection(self.bootstrap, client_id="tail-consumer")
        offset = self._end(conn, TAIL_TOPIC)
        while not self._stop.is_set():
            response = conn.request(ApiKey.FETCH, FETCH_VERSION, _fetch_body(TAIL_TOPIC, 0, offset, 500, 1 << 20), timeout=60)
            arrived = time.perf_counter_ns()
            part = response["responses"][0]["partitions"][0]
            if part["error_code"]:
                raise RuntimeError(f"fetch {TAIL_TOPIC}: error {part['error_code']}")
            records = part.get("records")
            if not records:
                continue
            for batch in split_batches(records).batches:
                for record in decode_records(batch):
                    if record.offset < offset:
                        continue
                    stamp = _STAMP.unpack_from(record.value)[0]
                    self.samples.add("tail", (arrived - stamp) / 1e6, self._sent.pop(stamp, None))
                offset = batch.next_offset

    def _end(self, conn: RawConnection, topic: str) -> int:
        body = {"replica_id": -1, "isolation_level": 0, "topics": [{"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]}
        return conn.request(ApiKey.LIST_OFFSETS, 7, body, timeout=30)["topics"][0]["partitions"][0]["offset"]

    def _fetch_round_trips(self, probe: str, topic_of) -> None:
        conn = RawConnection(self.bootstrap, client_id=probe)
        next_at = time.perf_counter()
        while not self._stop.is_set():
            topic = topic_of()
            if topic is not None:
                phase = self.samples.phase
                began = time.perf_counter_ns()
                try:
                    response = conn.request(ApiKey.FETCH, FETCH_VERSION, _fetch_body(topic, 0, 0, 0, 1), timeout=60)
                except ConnectionError as exc:
                    # linkd closes a connection whose records it cannot send whole (the mirror was deleted
                    # while being sent): counted, no sample, and a new connection.
                    self.samples.reconnects.append(f"{probe} in {phase}: {exc}")
                    conn.close()
                    conn = RawConnection(self.bootstrap, client_id=probe)
                    continue
                took = (time.perf_counter_ns() - began) / 1e6
                part = response["responses"][0]["partitions"][0]
                # A mirror not created yet or just deleted answers an error: no sample, not a fast one.
                if part["error_code"] == 0 and part.get("records"):
                    self.samples.add(probe, took, phase)
            next_at += PROBE_INTERVAL_S
            time.sleep(max(0.0, next_at - time.perf_counter()))
        conn.close()

    def _fetch_local(self) -> None:
        self._fetch_round_trips("fetch_local", lambda: FILLED_TOPIC)

    def _fetch_mirror(self) -> None:
        self._fetch_round_trips("fetch_mirror", lambda: self.mirror)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"count": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 3)}


def _ratios(busy: dict, idle: dict) -> dict:
    return {k: (round(busy[k] / idle[k], 2) if busy.get(k) and idle.get(k) else None) for k in ("p50", "p99", "max")}


def _revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "linkd", "protocol"], capture_output=True, text=True, cwd=root, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) if head else "unknown"


def _du(path: Path, prefix: str) -> int:
    return sum(f.stat().st_size for d in path.iterdir() if d.name.startswith(prefix) for f in d.iterdir() if f.suffix == ".log")


def _linkd_trees(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """(label, tree) per ``--linkd-tree LABEL=PATH``; None = this checkout's linkd."""
    trees: list[tuple[str, Path | None]] = []
    for spec in args.linkd_tree or ["this"]:
        label, _, path = spec.partition("=")
        if label == "this" and not path:
            trees.append((f"this ({_revision()})", None))
            continue
        if not path or not (Path(path) / "linkd" / "__init__.py").is_file():
            raise SystemExit(f"--linkd-tree {spec!r}: expected LABEL=PATH, PATH holding linkd/ and protocol/")
        trees.append((label, Path(path).resolve()))
    return trees


def _session(tree: Path | None, source: KafkaBroker, source_ends: dict, args: argparse.Namespace, profile: Path | None) -> dict:
    """One linkd (from ``tree``) through ``--rounds`` idle windows and catch-ups: its samples and catch-ups."""
    from confluent_kafka.admin import AdminClient as KafkaAdmin
    from confluent_kafka.admin import NewTopic

    # The daemon runs from ``tree`` ahead of this checkout (same interpreter and dependencies); the probes,
    # the admin client and the source stay this checkout's, so only the daemon differs between trees.
    env = {"PYTHONPATH": str(tree)} if tree is not None else {}
    linkd = LinkdProcess(env=env)

    def cli(*argv: str) -> None:
        # The tree's own CLI against its own daemon (the admin API's shapes changed over time).
        # cwd: ``-m`` puts it first on sys.path, ahead of PYTHONPATH.
        done = subprocess.run([sys.executable, "-m", "linkd", *argv], capture_output=True, text=True, timeout=120,
                              cwd=linkd.workdir, env=dict(os.environ, LINKD_ADMIN=linkd.admin_address, **env))
        if done.returncode:
            raise RuntimeError(f"linkd {' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        linkd.start()
        kafka_admin = KafkaAdmin({"bootstrap.servers": linkd.bootstrap, "log_level": 3})
        for future in kafka_admin.create_topics([NewTopic(TAIL_TOPIC, 1, 1), NewTopic(FILLED_TOPIC, 1, 1)], operation_timeout=30).values():
            future.result(60)
        filler = RawConnection(linkd.bootstrap)
        _produce(filler, FILLED_TOPIC, build_batch(BatchSpec(records=[NewRecord(b"y" * 100) for _ in range(10)])))
        filler.close()

        samples = Samples()
        probes = Probes(linkd.bootstrap, samples).start()
        time.sleep(2)  # connections up, first round trips out of the way
        watcher = EndOffsets(linkd.bootstrap)
        catch_ups = []
        mirror = None
        spy = None
        if profile is not None:
            from profiling import PySpy

            spy = PySpy(linkd.process.pid, profile, profile.with_suffix(".log"))
            spy.argv.insert(spy.argv.index("--nolineno"), "--threads")
            spy.start()
        for i in range(args.rounds):
            samples.phase = "idle"  # the previous round's mirror, if any, is caught up and idle
            time.sleep(args.idle_seconds)
            if mirror is not None:
                probes.mirror = None
                samples.phase = "between"
                for future in kafka_admin.delete_topics([mirror], operation_timeout=30).values():
                    future.result(60)
            link, mirror = f"src{i}", f"mirror{i}"
            cli("link", "create", link, "--bootstrap-server", source.bootstrap)
            samples.phase = "catch_up"
            started = time.perf_counter()  # includes the CLI's start (~0.5 s), for every tree alike
            cli("mirror", "create", mirror, "--link", link, "--source-topic", SOURCE_TOPIC)
            probes.mirror = mirror
            watcher.wait_for({mirror: source_ends[SOURCE_TOPIC]}, timeout=600, interval=0.1)
            wall = time.perf_counter() - started
            size = _du(linkd.data_dir / "logs", f"{mirror}-")
            catch_ups.append({"wall_s": round(wall, 2), "bytes": size, "mb_s": round(size / MB / wall, 1)})
        if spy is not None:
            spy.stop()
        samples.phase = "idle"
        time.sleep(args.idle_seconds)
        probes.stop()
        watcher.close()
        return {"samples": samples, "catch_ups": catch_ups, "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}}
    finally:
        linkd.close()


def _summary(by_phase: dict[str, dict[str, list[float]]]) -> dict:
    phases = {phase: {probe: percentiles(v) for probe, v in probes_.items()} for phase, probes_ in by_phase.items() if phase in ("idle", "catch_up")}
    busy, idle = phases.get("catch_up", {}), phases.get("idle", {})
    ratios = {probe: _ratios(busy.get(probe, {}), idle.get(probe, {})) for probe in ("tail", "fetch_local", "fetch_mirror")}
    p99 = ratios["tail"]["p99"]
    return {"phases": phases, "ratios_catch_up_to_idle": ratios, "goal_met": None if p99 is None else p99 <= 2.0}


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="linkd-tail-bench-"))
    trees = _linkd_trees(args)
    results: dict = {"benchmark": "tail_latency", "revision": _revision(), "machine": machine_description(), "megabytes": args.megabytes,
                     "goal": "tail p99 during catch-up within 2x of idle"}
    ensure_kafka_libs()
    source = KafkaBroker(extra_config={"message.max.bytes": str(16 << 20)})
    while source.cluster_id.startswith("-"):  # the storage tool reads a leading "-" as an option
        source.cluster_id = new_cluster_id()
    try:
        source.start()
        source.create_topic(SOURCE_TOPIC, SOURCE_PARTITIONS)
        loaded = run_worker("load", "--bootstrap", source.bootstrap, "--topic", SOURCE_TOPIC, "--codec", "none",
                            "--payload-bytes", str(args.megabytes * MB), log=workdir / "load.log", timeout=900, what="load")
        ends = EndOffsets(source.bootstrap)
        source_ends = ends.query({SOURCE_TOPIC: SOURCE_PARTITIONS})
        ends.close()
        results["records"] = loaded["records"]

        # Trees take turns, pass after pass (A B A B ...), so a drift in the shared machine's load hits
        # each about equally; every pass is a fresh daemon with a fresh data dir.
        merged: dict[str, dict[str, dict[str, list[float]]]] = {label: {} for label, _ in trees}
        per_tree: dict[str, dict] = {label: {"passes": []} for label, _ in trees}
        for n in range(args.passes):
            for label, tree in trees:
                profile = None
                if args.profile is not None:
                    profile = args.profile if len(trees) * args.passes == 1 else args.profile.with_name(f"{args.profile.stem}-{label}-{n}{args.profile.suffix}")
                session = _session(tree, source, source_ends, args, profile)
                samples = session["samples"]
                for phase, probes_ in samples.by_phase.items():
                    for probe, values in probes_.items():
                        merged[label].setdefault(phase, {}).setdefault(probe, []).extend(values)
                summary = _summary(samples.by_phase)
                per_tree[label]["passes"].append({
                    "pass": n, "catch_ups": session["catch_ups"], "load_average": session["load_average"],
                    "tail": {phase: summary["phases"].get(phase, {}).get("tail") for phase in ("idle", "catch_up")},
                    "ratios_catch_up_to_idle": summary["ratios_catch_up_to_idle"],
                    "probe_errors": samples.errors, "probe_reconnects": samples.reconnects,
                })
        for label, _ in trees:
            per_tree[label].update(_summary(merged[label]))
            tail_p99 = [p["ratios_catch_up_to_idle"]["tail"]["p99"] for p in per_tree[label]["passes"]]
            per_tree[label]["tail_p99_ratio_per_pass"] = tail_p99
        if len(trees) == 1:
            only = per_tree[trees[0][0]]
            results.update(catch_ups=[c for p in only["passes"] for c in p["catch_ups"]], phases=only["phases"],
                           ratios_catch_up_to_idle=only["ratios_catch_up_to_idle"], goal_met=only["goal_met"],
                           passes=only["passes"])
        else:
            results["trees"] = per_tree
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return results
    finally:
        source.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300, help="size of the backlog each catch-up copies (payload, uncompressed)")
    parser.add_argument("--rounds", type=int, default=8, help="catch-ups of the whole backlog, one after the other")
    parser.add_argument("--idle-seconds", type=float, default=4.0, help="length of each idle phase")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--profile", type=Path, help="py-spy linkd's threads over the rounds (raw collapsed stacks)")
    parser.add_argument("--linkd-tree", action="append", metavar="LABEL=PATH",
                        help="run the daemon from PATH (a copy of another revision's linkd/ and protocol/, e.g. from git archive); "
                             "repeat to compare, 'this' = this checkout; trees take turns pass after pass")
    parser.add_argument("--passes", type=int, default=1, help="sessions per tree (a fresh daemon each), interleaved across trees")
    args = parser.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
