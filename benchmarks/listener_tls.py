"""Serving over linkd's own secured listeners against its PLAINTEXT listener, in the same run.

    .venv/bin/python benchmarks/listener_tls.py [--payload-mb 60] [--rounds 3] [--json PATH]

One linkd with three listeners (PLAINTEXT, SSL with a PKCS12 keystore, SASL_SSL with SCRAM-SHA-512),
one topic (4 partitions, lz4) loaded through PLAINTEXT, then, round after round and interleaved so machine
noise hits every variant alike, a fresh confluent-kafka consumer (assign, from offset 0) reads everything
over each listener. PLAINTEXT serves records with ``os.sendfile``; TLS cannot, so records go from the
segment through the TLS stream. Prints JSON: median MB/s (wire bytes, and payload bytes) per listener and
each ratio to PLAINTEXT in the same run. The consumer is a Python loop over single records, so on a small
machine it, not the listener, sets the pace: the ratio bounds what TLS costs linkd from below, not above.
Nothing here asserts a goal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import LOOPBACK  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402
from tests.peers.securekafka import STORE_PASSWORD, make_pki  # noqa: E402

MB = 1_000_000
TOPIC = "bench-listener-tls"
PARTITIONS = 4
USER, PASSWORD = "bench", "bench-password"


def load(bootstrap: str, payload_mb: int) -> tuple[int, int]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures resolve
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 20, "batch.size": 1_000_000})
    sent = 0
    i = 0
    while sent < payload_mb * MB:
        value = json.dumps({"order": i, "customer": f"c{i % 977}", "items": [{"sku": f"s{i % 31}", "qty": i % 7}], "note": "x" * (i % 200)}).encode()
        while True:
            try:
                producer.produce(TOPIC, value=value, key=f"k{i}".encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        sent += len(value)
        i += 1
    producer.flush(120)
    return i, sent


def read_all(conf: dict, records: int) -> float:
    """Seconds a fresh consumer takes to read ``records`` records from offset 0."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**conf, "group.id": "bench", "enable.auto.commit": False, "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    got = 0
    started = time.perf_counter()
    while got < records:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is None:
                got += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payload-mb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-listener-tls-"))
    pki = make_pki(work / "pki")
    data = work / "data"
    data.mkdir()
    subprocess.run([sys.executable, "-m", "linkd", "user", "add", USER, "--data-dir", str(data)], input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    props = work / "listeners.properties"
    props.write_text(f"ssl.keystore.location={pki.server_p12}\nssl.keystore.password={STORE_PASSWORD}\n")
    extra = ["--listener", f"SSL://{LOOPBACK}:0", "--listener", f"SASL_SSL://{LOOPBACK}:0", "--listener-config-file", str(props)]
    with LinkdProcess(data_dir=data, extra_args=extra) as linkd:
        records, payload = load(linkd.bootstrap, args.payload_mb)
        wire = sum(p.stat().st_size for p in data.glob(f"logs/{TOPIC}-*/*.log"))
        tls = {"ssl.ca.location": str(pki.ca_pem)}
        variants = {
            "PLAINTEXT": {"bootstrap.servers": linkd.bootstrap},
            "SSL": {"bootstrap.servers": linkd.address("SSL"), "security.protocol": "SSL", **tls},
            "SASL_SSL": {"bootstrap.servers": linkd.address("SASL_SSL"), "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD, **tls},
        }
        for conf in variants.values():  # warm-up: page cache, first TLS handshakes
            read_all(conf, records)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, conf in variants.items():
                seconds[name].append(read_all(conf, records))
    rates = {name: wire / MB / statistics.median(s) for name, s in seconds.items()}
    result = {
        "benchmark": "listener_tls",
        "records": records,
        "wire_mb": round(wire / MB, 1),
        "payload_mb": round(payload / MB, 1),
        "median_payload_mb_per_s": {k: round(payload / MB / statistics.median(s), 1) for k, s in seconds.items()},
        "rounds": args.rounds,
        "median_mb_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_plaintext": {k: round(v / rates["PLAINTEXT"], 3) for k, v in rates.items()},
        "seconds": seconds,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
