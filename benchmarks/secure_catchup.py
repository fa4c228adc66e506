"""Catch-up over TLS and SASL_SSL against the same broker's PLAINTEXT listener, in the same run.

    .venv/bin/python benchmarks/secure_catchup.py [--payload-mb 400] [--rounds 3] [--json PATH] [--docs]
    .venv/bin/python benchmarks/secure_catchup.py --render RUN.json [RUN.json ...]   # docs from saved runs

Starts one secured Apache Kafka broker (tests/peers/securekafka.py: PLAINTEXT, SSL, SASL_SSL listeners on
loopback), loads JSON order events (lz4, 4 partitions) through PLAINTEXT, then, round after round and
interleaved so machine noise hits every variant alike, has a fresh linkd mirror the topic from offset 0
to the end over each listener (after one warm-up round that is not counted):

* PLAINTEXT (the baseline: raw-descriptor reads with SO_RCVLOWAT),
* SSL (TLS 1.3, server authentication; the broker picks TLS_AES_256_GCM_SHA384),
* SSL_TLS12_AES128: the same listener with ``ssl.enabled.protocols=TLSv1.2`` and an AES-128-GCM suite,
* SASL_SSL with SCRAM-SHA-512 (TLS plus authentication; re-authentication is off on this broker),
* with ``--fetchers N``: PLAINTEXT and SSL again with ``num.cluster.link.fetchers=N`` (the others run
  linkd's default, which on loopback is one fetch connection to the broker).

Beside them, the reference limit: a raw Fetch loop with linkd's own client connection (same read path,
nothing appended) over PLAINTEXT and over TLS. Prints JSON: median MB/s (wire bytes, as stored) per
variant, linkd's and the broker's CPU seconds per wire GB (on a small shared machine the two compete for
the same cores, so the sum of both bounds the speed; the broker cannot ``sendfile`` over TLS and encrypts
in Java), and each ratio to PLAINTEXT measured in the same run. The goal (from the issue) is TLS >= 0.7x
PLAINTEXT; nothing here asserts it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EndOffsets, cpu_seconds, machine_description, run_worker  # noqa: E402

from tests.peers.linkd import LinkdProcess  # noqa: E402
from tests.peers.securekafka import LINK_USER, SecuredKafkaBroker  # noqa: E402

MB = 1_000_000
TOPIC = "bench-secure"
PARTITIONS = 4
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def link_configs(broker: SecuredKafkaBroker) -> dict[str, dict[str, str]]:
    ca = str(broker.pki.ca_pem)
    return {
        "PLAINTEXT": {"bootstrap.servers": broker.bootstrap},
        "SSL": {"bootstrap.servers": broker.address("SSL"), "security.protocol": "SSL", "ssl.truststore.location": ca},
        # The same listener with a cheaper cipher an operator may choose (TLS 1.3 above gets AES-256-GCM).
        "SSL_TLS12_AES128": {
            "bootstrap.servers": broker.address("SSL"),
            "security.protocol": "SSL",
            "ssl.truststore.location": ca,
            "ssl.enabled.protocols": "TLSv1.2",
            "ssl.cipher.suites": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        },
        "SASL_SSL": {
            "bootstrap.servers": broker.address("SASL_SSL"),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": f'{SCRAM} required username="{LINK_USER}" password="{broker.password}";',
            "ssl.truststore.location": ca,
        },
    }


def wire_bytes(broker: SecuredKafkaBroker, ends: list[int]) -> int:
    """Record-batch bytes of the topic as stored (what a catch-up moves), from a raw fetch of it."""
    from tests.peers import rawclient

    return sum(len(rawclient.fetch_raw(broker.bootstrap, TOPIC, p, 0, ends[p])) for p in range(PARTITIONS))


def catch_up(broker: SecuredKafkaBroker, name: str, config: dict[str, str], ends: list[int], key_file: Path, timeout: float) -> dict:
    assert broker.process is not None
    from linkd.adminclient import AdminClient

    daemon = LinkdProcess(extra_args=["--secrets-key-file", str(key_file), "--log-level", "warning"])
    daemon.start()
    try:
        client = AdminClient(daemon.admin_address)
        client.create_link("bench", config)
        watcher = EndOffsets(daemon.bootstrap)
        cpu_before, broker_before = cpu_seconds(daemon.process.pid), cpu_seconds(broker.process.pid)
        started = time.perf_counter()
        client.create_mirror(TOPIC, "bench")
        _first, done = watcher.wait_for({TOPIC: ends}, timeout, interval=0.02)
        cpu = cpu_seconds(daemon.process.pid) - cpu_before
        broker_cpu = cpu_seconds(broker.process.pid) - broker_before
        watcher.close()
        client.close()
        return {"variant": name, "seconds": done - started, "linkd_cpu_s": cpu, "broker_cpu_s": broker_cpu}
    finally:
        daemon.close()


def raw_fetch(host: str, port: int, security, ends: list[int]) -> float:
    """Seconds to fetch the whole topic with linkd's client connection (10 MB responses), bytes discarded;
    the connection runs in this process."""
    import trio

    from linkd.link.client import Connection
    from protocol.messages import ApiKey

    async def run() -> float:
        conn = await Connection.open(host, port, "bench-raw", security=security)
        started = time.perf_counter()
        try:
            offsets = [0] * PARTITIONS
            while any(offsets[p] < ends[p] for p in range(PARTITIONS)):
                body = {
                    "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 10 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                    "topics": [{"topic": TOPIC, "partitions": [
                        {"partition": p, "current_leader_epoch": -1, "fetch_offset": offsets[p], "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}
                        for p in range(PARTITIONS) if offsets[p] < ends[p]
                    ]}],
                    "forgotten_topics_data": [], "rack_id": "",
                }
                response = await conn.request(ApiKey.FETCH, body, version=12)
                from protocol.records import split_batches

                for t in response["responses"]:
                    for pdata in t["partitions"]:
                        records = pdata.get("records")
                        if records:
                            batches = split_batches(records).batches
                            if batches:
                                offsets[pdata["partition_index"]] = batches[-1].next_offset
            return time.perf_counter() - started
        finally:
            await conn.aclose()

    return trio.run(run)


DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-secure.md"


def render_markdown(results: list[dict]) -> str:
    """docs/benchmarks-secure.md: one table per run (ratios are only comparable within a run)."""
    m = results[-1]["machine"]
    lines = [
        "# Benchmarks: catch-up from a secured source",
        "",
        "Generated by `benchmarks/secure_catchup.py` (`--docs`, or `--render` from saved `--json` runs); do not edit",
        "by hand. One secured Apache Kafka broker (tests/peers/securekafka.py) and, per variant, a fresh linkd",
        "mirroring one lz4 topic (4 partitions) from offset 0 to its end over that broker's PLAINTEXT, SSL (TLS 1.3)",
        "or SASL_SSL (SCRAM-SHA-512) listener, in interleaved rounds after a warm-up round; the *raw Fetch limit*",
        "is linkd's client connection fetching the topic with nothing appended. Figures are medians of the rounds;",
        "MB = 10^6 bytes of record batches as stored (wire). CPU is user + system seconds per wire GB from",
        "`/proc/<pid>/stat`. linkd and the broker share the machine's cores (with other work), so their CPU",
        "per GB adds up: the broker's TLS (no `sendfile`, encryption in the JVM) is most of what TLS costs here.",
        "",
    ]
    for n, r in enumerate(results, 1):
        started = r["machine"].get("load_average_at_start", "?")
        lines += [
            f"## Run {n} of {len(results)}: {r['wire_bytes'] / MB:,.0f} MB wire ({r['records']:,} records), {r['rounds']} rounds, load average at start {started}",
            "",
            "| | MB/s wire | ratio to PLAINTEXT | linkd CPU s/GB | broker CPU s/GB | rounds (s) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, v in r["catch_up"].items():
            lines.append(f"| catch-up {name} | {v['wire_mb_per_s']:,} | {v['ratio_to_plaintext']} | {v['linkd_cpu_s_per_wire_gb']} | {v.get('broker_cpu_s_per_wire_gb', '')} | {v['all_seconds']} |")
        for name, v in r["raw_fetch_limit"].items():
            lines.append(f"| raw Fetch limit {name} | {v['wire_mb_per_s']:,} | {v['ratio_to_plaintext']} | {v.get('client_cpu_s_per_wire_gb', '')} | {v.get('broker_cpu_s_per_wire_gb', '')} | {v.get('all_seconds', '')} |")
        lines += ["", f"TLS catch-up against the raw Fetch limit over TLS: {r['catch_up']['SSL'].get('ratio_to_raw_tls_limit')}.", ""]
    lines += [
        "## Machine",
        "",
        f"- {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB RAM, Linux {m.get('kernel', '?')}",
        f"- Python {m.get('python', '?')}, {m.get('java', '?')}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload-mb", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fetchers", type=int, metavar="N",
                        help="also run PLAINTEXT and SSL with num.cluster.link.fetchers=N beside the default (1 on loopback)")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--docs", action="store_true", help=f"write {DOCS_PAGE.name} from this run")
    parser.add_argument("--render", nargs="+", metavar="RUN_JSON", help=f"only write {DOCS_PAGE.name} from these saved runs")
    args = parser.parse_args()
    if args.render:
        DOCS_PAGE.write_text(render_markdown([json.loads(Path(p).read_text()) for p in args.render]))
        return

    from linkd.link.config import validate
    from linkd.link.security import SecuritySettings

    work = Path(tempfile.mkdtemp(prefix="linkd-bench-secure-"))
    key_file = work / "secrets.key"
    from linkd.link.secrets import generate_key_file

    generate_key_file(key_file)
    with SecuredKafkaBroker() as broker:
        broker.grant_link_read(f"User:{LINK_USER}", "bench-", "bench-")
        broker.create_topic(TOPIC, PARTITIONS)
        loaded = run_worker("load", "--bootstrap", broker.bootstrap, "--topic", TOPIC, "--codec", "lz4", "--payload-bytes", str(args.payload_mb * MB),
                            log=work / "load.log", timeout=900, what="load")
        ends = [broker.list_offsets(TOPIC, p)[1] for p in range(PARTITIONS)]
        wire = wire_bytes(broker, ends)
        configs = link_configs(broker)
        if args.fetchers:
            configs |= {f"{name}_{args.fetchers}_FETCHERS": {**configs[name], "num.cluster.link.fetchers": str(args.fetchers)} for name in ("PLAINTEXT", "SSL")}
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        raw: dict[str, list[dict]] = {"PLAINTEXT": [], "SSL": []}
        # Round 0 warms up: the broker's JIT compiles its TLS path on first use (the first TLS fetch of a
        # fresh broker ran 4-5x slower than later ones), and the page cache takes the topic in.
        for round_number in range(args.rounds + 1):
            for name, config in configs.items():
                run = catch_up(broker, name, config, ends, key_file, timeout=900)
                if round_number:
                    runs[name].append(run)
            for name in raw:
                security = SecuritySettings.from_config(validate(configs[name]))
                host, port = configs[name]["bootstrap.servers"].rsplit(":", 1)
                cpu_before, broker_before = time.process_time(), cpu_seconds(broker.process.pid)
                seconds = raw_fetch(host, int(port), security, ends)
                cpu, broker_cpu = time.process_time() - cpu_before, cpu_seconds(broker.process.pid) - broker_before
                if round_number:
                    raw[name].append({"seconds": seconds, "linkd_cpu_s": cpu, "broker_cpu_s": broker_cpu})
    result = {
        "benchmark": "secure_catchup",
        "machine": machine_description(),
        "payload_bytes": loaded["payload_bytes"],
        "records": loaded["records"],
        "wire_bytes": wire,
        "rounds": args.rounds,
        "catch_up": {},
        "raw_fetch_limit": {},
    }
    base = statistics.median(r["seconds"] for r in runs["PLAINTEXT"])
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["linkd_cpu_s"] for r in rs)
        broker_cpu = statistics.median(r["broker_cpu_s"] for r in rs)
        result["catch_up"][name] = {
            "seconds": round(seconds, 3),
            "wire_mb_per_s": round(wire / MB / seconds, 1),
            "linkd_cpu_s_per_wire_gb": round(cpu / (wire / 1e9), 2),
            "broker_cpu_s_per_wire_gb": round(broker_cpu / (wire / 1e9), 2),
            "ratio_to_plaintext": round(base / seconds, 3),
            "all_seconds": [round(r["seconds"], 3) for r in rs],
        }
    raw_base = statistics.median(r["seconds"] for r in raw["PLAINTEXT"])
    for name, rs in raw.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        result["raw_fetch_limit"][name] = {
            "seconds": round(seconds, 3),
            "wire_mb_per_s": round(wire / MB / seconds, 1),
            "client_cpu_s_per_wire_gb": round(statistics.median(r["linkd_cpu_s"] for r in rs) / (wire / 1e9), 2),
            "broker_cpu_s_per_wire_gb": round(statistics.median(r["broker_cpu_s"] for r in rs) / (wire / 1e9), 2),
            "ratio_to_plaintext": round(raw_base / seconds, 3),
            "all_seconds": [round(r["seconds"], 3) for r in rs],
        }
    tls = result["catch_up"]["SSL"]
    result["catch_up"]["SSL"]["ratio_to_raw_tls_limit"] = round(result["raw_fetch_limit"]["SSL"]["seconds"] / tls["seconds"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        DOCS_PAGE.write_text(render_markdown([result]))


if __name__ == "__main__":
    main()
