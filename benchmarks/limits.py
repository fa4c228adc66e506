"""How fast linkd refuses what it must refuse, and how other clients fare while it does heavy admin work.

    .venv/bin/python benchmarks/limits.py [--no-kafka]

Prints one JSON object:
* ``refuse_ms``: CreateTopics of 100,000 and 2**31-1 partitions (and CreatePartitions to 2**31-1), answered
  POLICY_VIOLATION, on linkd and on Apache Kafka 4.1 in the same run, with the ratio linkd/Kafka;
* ``create_3000``: creating one 3,000-partition topic: seconds, and the bystander's round trips (produce
  acks=all + fetch back) meanwhile, with their median and worst latency, against the same bystander with
  nothing else going on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.messages import ApiKey  # noqa: E402
from protocol.records import build_records  # noqa: E402
from tests.broker.clients import create_topic  # noqa: E402
from tests.broker.wire import WireConnection, fetch_request, produce_request  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402


def _create(bootstrap: str, name: str, partitions: int) -> tuple[int, float]:
    with WireConnection(bootstrap, timeout=120) as conn:
        started = time.perf_counter()
        body = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 60_000, "validate_only": False})
        return body["topics"][0]["error_code"], (time.perf_counter() - started) * 1000


def _grow(bootstrap: str, name: str, count: int) -> tuple[int, float]:
    with WireConnection(bootstrap, timeout=120) as conn:
        started = time.perf_counter()
        body = conn.request(ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": name, "count": count, "assignments": None}], "timeout_ms": 60_000, "validate_only": False})
        return body["results"][0]["error_code"], (time.perf_counter() - started) * 1000


def refusals(bootstrap: str, tag: str) -> dict:
    out = {}
    for partitions in (100_000, 2**31 - 1):
        code, ms = _create(bootstrap, f"refuse-{tag}-{partitions}", partitions)
        out[f"create_{partitions}"] = {"error_code": code, "ms": round(ms, 2)}
    create_topic(bootstrap, f"grow-{tag}")
    code, ms = _grow(bootstrap, f"grow-{tag}", 2**31 - 1)
    out["add_partitions_2147483647"] = {"error_code": code, "ms": round(ms, 2)}
    return out


class Bystander:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with WireConnection(self.bootstrap, timeout=120) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                answer = produce_request(conn, self.topic, 0, build_records([b"bystander"]))
                fetch_request(conn, self.topic, 0, answer["base_offset"])
                self.latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)

    def window(self, seconds: float | None = None, action=None) -> dict:
        self.latencies = []
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(0.3)
        self.latencies = []
        started = time.perf_counter()
        result = action() if action else time.sleep(seconds)
        took = time.perf_counter() - started
        self.stop.set()
        self.thread.join(30)
        lat = self.latencies or [float("nan")]
        return {"seconds": round(took, 2), "round_trips": len(self.latencies), "median_ms": round(statistics.median(lat), 2), "max_ms": round(max(lat), 2), "result": result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-kafka", action="store_true", help="skip the Apache Kafka baseline")
    args = parser.parse_args()
    report: dict = {}
    with LinkdProcess(extra_args=["--max-partitions", "5000"]) as daemon:
        report["refuse_ms"] = {"linkd": refusals(daemon.bootstrap, "l")}
        create_topic(daemon.bootstrap, "bystander")
        bystander = Bystander(daemon.bootstrap, "bystander")
        idle = bystander.window(seconds=3)
        busy = bystander.window(action=lambda: _create(daemon.bootstrap, "big", 3000)[0])
        report["create_3000"] = {"bystander_alone": idle, "bystander_during_create": busy}
    if not args.no_kafka:
        from tests.peers.kafka import KafkaBroker, ensure_kafka_libs

        ensure_kafka_libs()
        with KafkaBroker() as kafka:
            report["refuse_ms"]["kafka"] = refusals(kafka.bootstrap, "k")
        ratios = {}
        for key, ours in report["refuse_ms"]["linkd"].items():
            theirs = report["refuse_ms"]["kafka"][key]["ms"]
            ratios[key] = round(ours["ms"] / theirs, 2) if theirs else None
        report["refuse_ms"]["linkd_over_kafka"] = ratios
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
