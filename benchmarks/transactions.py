"""Transactional throughput: linkd against Apache Kafka 4.1, the same client (confluent-kafka) in the same run.

    .venv/bin/python benchmarks/transactions.py [--transactions 200] [--records 100] [--value-bytes 300]

Each transaction: begin, ``--records`` records to one partition, commit. Prints one JSON object with
transactions/s and MB/s (record values) for each broker, and the ratios linkd/Kafka.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402

from tests.broker.clients import create_topic  # noqa: E402
from tests.peers.kafka import KafkaBroker  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402


def run(bootstrap: str, transactions: int, records: int, value: bytes) -> dict:
    topic = f"txn-bench-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{topic}", "linger.ms": 5})
    producer.init_transactions(60)
    started = time.perf_counter()
    for _ in range(transactions):
        producer.begin_transaction()
        for _ in range(records):
            producer.produce(topic, value, partition=0)
        producer.commit_transaction(60)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "transactions_s": round(transactions / seconds, 1),
            "mb_s": round(transactions * records * len(value) / seconds / 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--value-bytes", type=int, default=300)
    args = parser.parse_args()
    value = b"v" * args.value_bytes
    out: dict = {"transactions": args.transactions, "records_per_transaction": args.records, "value_bytes": args.value_bytes}
    with LinkdProcess() as linkd:
        out["linkd"] = run(linkd.bootstrap, args.transactions, args.records, value)
    with KafkaBroker() as kafka:
        out["kafka"] = run(kafka.bootstrap, args.transactions, args.records, value)
    out["ratio_transactions_s"] = round(out["linkd"]["transactions_s"] / out["kafka"]["transactions_s"], 3)
    out["ratio_mb_s"] = round(out["linkd"]["mb_s"] / out["kafka"]["mb_s"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
