"""What authorization costs: decisions per second of linkd's authorizer, and Produce/Fetch request rates
through a real linkd with ``--authorizer standard`` against the same daemon without it.

    .venv/bin/python benchmarks/acl_bench.py [--acls 1000] [--requests 3000] [--repeat 3]

Prints one JSON object:
* ``decisions``: ``authorize()`` calls per second with N ACLs (half LITERAL, half PREFIXED, on other
  names), for an allowed and a denied resource.
* ``handlers_per_s``: Produce and Fetch frames per second through the request dispatcher in this process,
  authorizer off and on in alternating blocks, and their ratio: the cost of authorization alone.
* ``wire_per_s``: Produce and Fetch requests per second on one connection (acks=1, one 1 KiB batch per request;
  Fetch of 64 KiB from offset 0), median of ``--repeat`` runs, without the authorizer and with it (the
  principal allowed by one ACL among ``--acls``), and their ratio (with / without).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from linkd.broker.acl import AclBinding, StandardAuthorizer  # noqa: E402
from linkd.broker.session import Session  # noqa: E402
from protocol.messages import ApiKey  # noqa: E402
from protocol.records import build_records  # noqa: E402
from tests.broker.wire import WireConnection  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402

ANON = "User:ANONYMOUS"


def filler(n: int) -> list[AclBinding]:
    return [AclBinding("TOPIC", f"other-{i}", "LITERAL" if i % 2 else "PREFIXED", f"User:u{i}", "*", "READ", "ALLOW") for i in range(n)]


def decisions(n: int, seconds: float = 1.0) -> dict:
    a = StandardAuthorizer()
    a.create(filler(n) + [AclBinding("TOPIC", "orders-", "PREFIXED", ANON, "*", "ALL", "ALLOW")])
    session = Session(host="127.0.0.1", principal=ANON)
    out = {}
    for label, name in (("allowed", "orders-eu-1"), ("denied", "billing-eu-1")):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(1000):
                a.authorize(session, "WRITE", "TOPIC", name)
            count += 1000
        out[f"{label}_per_s"] = round(count / (time.perf_counter() - start))
    return out


def rate(bootstrap: str, topic: str, requests: int) -> tuple[float, float]:
    batch = build_records([b"x" * 1000])
    produce = {"acks": 1, "timeout_ms": 5000, "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}
    fetch = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 16, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
             "topics": [{"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 16}]}],
             "forgotten_topics_data": [], "rack_id": ""}
    with WireConnection(bootstrap) as conn:
        start = time.perf_counter()
        for _ in range(requests):
            assert conn.request(ApiKey.PRODUCE, 9, produce)["responses"][0]["partition_responses"][0]["error_code"] == 0
        produced = requests / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(requests):
            assert conn.request(ApiKey.FETCH, 12, fetch)["responses"][0]["partitions"][0]["error_code"] == 0
        fetched = requests / (time.perf_counter() - start)
    return produced, fetched


def start(mode: str, acls: int) -> tuple[LinkdProcess, str]:
    extra = ["--authorizer", "standard", "--super-users", ANON] if mode == "with" else []
    daemon = LinkdProcess(extra_args=extra).start()
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    with WireConnection(daemon.bootstrap) as conn:
        conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 5000})
        if mode == "with":
            creations = [dict(b.to_wire(), resource_pattern_type=b.to_wire()["pattern_type"]) for b in filler(acls)]
            creations.append({"resource_type": 2, "resource_name": topic, "resource_pattern_type": 3, "principal": ANON, "host": "*", "operation": 2, "permission_type": 3})
            for i in range(0, len(creations), 500):
                conn.request(ApiKey.CREATE_ACLS, 3, {"creations": creations[i:i + 500]})
    if mode == "with":  # ANONYMOUS an ordinary principal, allowed by its one ACL
        daemon.extra_args = ["--authorizer", "standard"]
    daemon.restart()  # both restarted: the same log state on both sides
    return daemon, topic


def wire(args) -> dict:
    """Both daemons run at once and are measured in alternation, so machine noise hits both alike."""
    daemons = {mode: start(mode, args.acls) for mode in ("without", "with")}
    runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    try:
        for _ in range(args.repeat):
            for mode, (daemon, topic) in daemons.items():
                runs[mode].append(rate(daemon.bootstrap, topic, args.requests))
    finally:
        for daemon, _ in daemons.values():
            daemon.close()
    results = {mode: {"produce_per_s": round(statistics.median(r[0] for r in rs)), "fetch_per_s": round(statistics.median(r[1] for r in rs))} for mode, rs in runs.items()}
    return {
        **results,
        "produce_ratio": round(results["with"]["produce_per_s"] / results["without"]["produce_per_s"], 3),
        "fetch_ratio": round(results["with"]["fetch_per_s"] / results["without"]["fetch_per_s"], 3),
    }


def in_process(args) -> dict:
    """The handlers alone, in one process: the same Produce and Fetch frames through ``handle_frame`` with
    the broker's authorizer off and on, in alternating blocks (no sockets, no second process to skew it)."""
    import tempfile

    import trio

    from linkd.broker.context import Broker, BrokerIdentity
    from linkd.broker.dispatch import handle_frame
    from linkd.controlstore import ControlStore
    from linkd.groups.coordinator import GroupCoordinator
    from linkd.producer_ids import ProducerIdAllocator
    from linkd.topics import TopicRegistry
    from protocol.messages import RequestHeader, encode_request

    with tempfile.TemporaryDirectory(prefix="acl-bench-") as tmp:
        store = ControlStore(Path(tmp) / "control.db")
        topics = TopicRegistry(store, Path(tmp) / "logs")
        topics.create("bench", 1)
        broker = Broker(BrokerIdentity(1, "127.0.0.1", 9092, "bench"), topics, GroupCoordinator(store), ProducerIdAllocator(store))
        authorizer = StandardAuthorizer()
        authorizer.create(filler(args.acls) + [AclBinding("TOPIC", "bench", "LITERAL", ANON, "*", "ALL", "ALLOW")])
        produce = encode_request(RequestHeader(ApiKey.PRODUCE, 9, 1, "bench"), {"acks": 1, "timeout_ms": 5000, "topic_data": [{"name": "bench", "partition_data": [{"index": 0, "records": build_records([b"x" * 1000])}]}]})[4:]
        fetch = encode_request(RequestHeader(ApiKey.FETCH, 12, 2, "bench"), {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 16, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": "bench", "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 16}]}],
            "forgotten_topics_data": [], "rack_id": ""})[4:]
        times: dict[str, dict[str, list[float]]] = {m: {"produce": [], "fetch": []} for m in ("without", "with")}

        async def run() -> None:
            for _ in range(args.repeat):
                for mode in ("without", "with"):
                    broker.authorizer = authorizer if mode == "with" else None
                    for kind, frame in (("produce", produce), ("fetch", fetch)):
                        start = time.perf_counter()
                        for _ in range(args.requests):
                            await handle_frame(broker, frame, "127.0.0.1")
                        times[mode][kind].append(args.requests / (time.perf_counter() - start))

        trio.run(run)
        topics.close()
        store.close()
    med = {m: {k: round(statistics.median(v)) for k, v in kinds.items()} for m, kinds in times.items()}
    return {"without": med["without"], "with": med["with"],
            "produce_ratio": round(med["with"]["produce"] / med["without"]["produce"], 3), "fetch_ratio": round(med["with"]["fetch"] / med["without"]["fetch"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--acls", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-wire", action="store_true", help="skip the two-daemon socket measurement (noisy on a busy machine)")
    args = parser.parse_args()
    out = {"acls": args.acls, "decisions": {str(n): decisions(n) for n in (10, args.acls, 10 * args.acls)}, "handlers_per_s": in_process(args)}
    if not args.no_wire:
        out["wire_per_s"] = wire(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
