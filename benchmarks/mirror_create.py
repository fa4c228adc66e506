"""Mirror creation alone, A/B: one Apache Kafka source with ``--topics`` x ``--partitions`` empty topics, then per
round a fresh linkd running the code of ``--code NAME=DIR`` (a source tree put first on PYTHONPATH, e.g. an
extract of main: ``git archive main | tar -x -C /tmp/main``; ``new`` or any name without a DIR: this checkout).

    .venv/bin/python benchmarks/mirror_create.py --topics 1000 --rounds new,main,new,main --code main=/tmp/main [--auto] [--profile DIR]

Each round: a paused link, one ``POST .../mirrors`` per topic from ``--concurrency`` clients (as
``partitions.py``'s create phase), timed from the first call to the last answer; with ``--auto`` then a second
link with ``auto.create.mirror.topics.enable`` and a filter including every topic (named with a prefix),
timed from the link's creation to every mirror listed. Prints one JSON line per round with the load average
at its start: interleave the codes, this is disk-bound and a busy machine's disk varies by the minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from partitions import SOURCE_CONFIG, SOURCE_JVM, Profiler, create_mirrors, topic_name  # noqa: E402

from linkd.adminclient import AdminClient  # noqa: E402
from tests.peers.kafka import KafkaBroker, ensure_kafka_libs, new_cluster_id  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402


def wait_listed(admin: AdminClient, link: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        listed = len(admin.describe_link(link, include_tasks=False).get("topic_names") or [])
        if listed >= count or time.monotonic() > deadline:
            return listed
        time.sleep(0.1)


def one_round(index: int, name: str, directory: str | None, source: KafkaBroker, topics: list[str], args: argparse.Namespace) -> dict:
    extra = list(args.linkd_arg)
    if len(topics) * args.partitions > 9000:
        extra.append(f"--max-partitions={len(topics) * args.partitions + 1000}")
    daemon = LinkdProcess(extra_args=extra, env={"PYTHONPATH": directory} if directory else None, start_timeout=300).start()
    try:
        admin = AdminClient(daemon.admin_address, timeout=300)
        admin.create_link("many", {"bootstrap.servers": source.bootstrap, "cluster.link.paused": "true"})
        profiler = Profiler(args.profile, daemon.workdir)
        profiler.start(daemon.process.pid, f"create-{index}-{name}")
        result: dict = {"round": index, "code": name, "load_average": round(os.getloadavg()[0], 1)}
        clock = time.perf_counter()
        errors = create_mirrors(daemon.admin_address, "many", topics, args.concurrency)
        result["create_s"] = round(time.perf_counter() - clock, 2)
        profiler.stop()
        result["errors"] = errors[:3]
        if args.auto:
            filters = json.dumps({"topicFilters": [{"name": "part-", "patternType": "PREFIXED", "filterType": "INCLUDE"}]})
            clock = time.perf_counter()
            admin.create_link("auto", {"bootstrap.servers": source.bootstrap, "cluster.link.prefix": "auto.",
                                       "auto.create.mirror.topics.enable": "true", "auto.create.mirror.topics.filters": filters})
            result["auto_created"] = wait_listed(admin, "auto", len(topics), args.timeout)
            result["auto_create_s"] = round(time.perf_counter() - clock, 2)
        admin.close()
        return result
    finally:
        daemon.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--rounds", default="new", help="code names, comma separated, run in this order")
    parser.add_argument("--code", action="append", default=[], help="NAME=DIR: the linkd source tree of rounds named NAME")
    parser.add_argument("--concurrency", type=int, default=8, help="mirror create calls in flight")
    parser.add_argument("--auto", action="store_true", help="also time an auto-create link mirroring every topic")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", type=Path, help="py-spy linkd during each round's creation into this directory")
    parser.add_argument("--linkd-arg", action="append", default=[], help="extra argument for linkd serve (repeatable)")
    args = parser.parse_args(argv)
    codes = dict(c.split("=", 1) for c in args.code)
    ensure_kafka_libs()
    source = KafkaBroker(extra_config=SOURCE_CONFIG, jvm_opts=SOURCE_JVM, start_timeout=300)
    while source.cluster_id.startswith("-"):  # the storage tool reads a leading "-" as an option
        source.cluster_id = new_cluster_id()
    try:
        source.start()
        from confluent_kafka.admin import AdminClient as KafkaAdmin
        from confluent_kafka.admin import NewTopic

        kafka = KafkaAdmin({"bootstrap.servers": source.bootstrap, "log_level": 3})
        topics = [topic_name(i) for i in range(args.topics)]
        for first in range(0, len(topics), 200):
            for future in kafka.create_topics([NewTopic(t, args.partitions, 1) for t in topics[first:first + 200]], operation_timeout=300, request_timeout=300).values():
                future.result(600)
        for index, name in enumerate(args.rounds.split(",")):
            print(json.dumps(one_round(index, name, codes.get(name), source, topics, args)), flush=True)
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
