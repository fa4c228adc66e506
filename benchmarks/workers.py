"""The client side of the benchmarks, one subprocess per measurement so each one's CPU is its own.

``benchmarks/run.py`` starts these; each prints one JSON object as its last stdout line. Every worker
times only its own work (clients constructed, connections warm) and reports ``wall_s`` and ``cpu_s``
(``time.process_time``: user + system of every thread, librdkafka's included) for that span.

    python benchmarks/workers.py load --bootstrap H:P --topic T --codec zstd --payload-bytes N
    python benchmarks/workers.py raw-fetch --bootstrap H:P --ends JSON (--out DIR | --discard) [--partition-max-bytes N]
    python benchmarks/workers.py consume --bootstrap H:P --ends JSON
    python benchmarks/workers.py copy-confluent|copy-kafka-python --source H:P --dest H:P --ends JSON --topic-map JSON
    python benchmarks/workers.py produce-rate --bootstrap H:P --topic T --rate 2000 --seconds 20
    python benchmarks/workers.py latency-consume --bootstrap H:P --topic T --partitions 4 --expect N

``--ends`` is ``{"topic": [end offset of partition 0, ...]}``: a reader stops once it holds every record
below those offsets, so no worker depends on end-of-partition events or group coordination.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from pathlib import Path

MB = 1 << 20
_CITIES = ("Lyon", "Berlin", "Austin", "Osaka", "Porto", "Leeds", "Gdansk", "Quito", "Perth", "Tartu", "Accra", "Cusco")
_COUNTRIES = ("FR", "DE", "US", "JP", "PT", "GB", "PL", "EC", "AU", "EE", "GH", "PE")
_STATUS = ("created", "paid", "packed", "shipped", "delivered", "returned")
_ORDER = (
    '{"order_id":%d,"customer":"cust-%06d","created_at":"2024-%02d-%02dT%02d:%02d:%02d.%03dZ","status":"%s",'
    '"total":%d.%02d,"items":[{"sku":"SKU-%05d","qty":%d,"price":%d.%02d},{"sku":"SKU-%05d","qty":%d,"price":%d.%02d}],'
    '"shipping":{"city":"%s","zip":"%05d","country":"%s"},"session":"%016x"}'
)


class OrderRecords:
    """JSON order events of ~300 bytes with a customer key: the shape of a typical business topic.

    Fields come from two 64-bit random draws per record (fast enough to feed a producer from Python);
    the session id is 16 random hex digits, so batches do not compress unrealistically well.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def record(self, order_id: int) -> tuple[bytes, bytes]:
        r = self._rng.getrandbits(64)
        s = self._rng.getrandbits(64)
        customer = r % 200_000
        key = b"cust-%06d" % customer
        value = _ORDER % (
            order_id, customer, 1 + (r >> 17) % 12, 1 + (r >> 21) % 28, (r >> 26) % 24, (r >> 31) % 60, (r >> 37) % 60, (r >> 43) % 1000,
            _STATUS[(r >> 53) % 6], (s % 900) + 10, (s >> 10) % 100,
            (s >> 17) % 50_000, 1 + (s >> 33) % 4, (s >> 35) % 300, (s >> 44) % 100,
            (s >> 51) % 50_000, 1 + (r >> 59) % 3, (r >> 7) % 300, (r >> 2) % 100,
            _CITIES[(s >> 3) % 12], (r >> 11) % 100_000, _COUNTRIES[(s >> 7) % 12],
            s ^ r,
        )
        return key, value.encode()


def _emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def _span():
    return time.perf_counter(), time.process_time()


def _since(start) -> dict:
    return {"wall_s": time.perf_counter() - start[0], "cpu_s": time.process_time() - start[1]}


# -- loading --------------------------------------------------------------------------------------


def cmd_load(args) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "compression.type": args.codec,
            "linger.ms": args.linger_ms,
            "batch.size": args.batch_size,
            "acks": "all",
            "queue.buffering.max.kbytes": 256 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "log_level": 3,
        }
    )
    records = OrderRecords(args.seed)
    payload = count = 0
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    start = _span()
    while payload < args.payload_bytes:
        key, value = records.record(args.first_id + count)
        while True:
            try:
                producer.produce(args.topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        payload += len(key) + len(value)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        raise SystemExit(f"load {args.topic}: {remaining} undelivered, errors: {errors}")
    _emit({"records": count, "payload_bytes": payload, **_since(start)})


# -- raw Fetch: the practical limit, and serving ------------------------------------------------


class RawFetcher:
    """Fetch v12 over one blocking socket with linkd's own codec, one request in flight (as a link does)."""

    VERSION = 12

    def __init__(self, bootstrap: str) -> None:
        from rawwire import RawConnection

        from protocol.messages import ApiKey

        self._api = ApiKey.FETCH
        self._conn = RawConnection(bootstrap)

    def fetch(self, positions: dict[tuple[str, int], int], partition_max_bytes: int, max_bytes: int) -> dict:
        by_topic: dict[str, list] = {}
        for (topic, partition), offset in positions.items():
            by_topic.setdefault(topic, []).append(
                {"partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": partition_max_bytes}
            )
        body = {
            "replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": max_bytes, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": t, "partitions": parts} for t, parts in by_topic.items()], "forgotten_topics_data": [], "rack_id": "",
        }
        return self._conn.request(self._api, self.VERSION, body)

    def close(self) -> None:
        self._conn.close()


def fetch_to_ends(bootstrap: str, ends: dict[tuple[str, int], int], partition_max_bytes: int, max_bytes: int, files: dict | None = None) -> dict:
    """Fetch every partition from offset 0 to its end (``ends``), one request in flight; whole batches go to
    ``files[(topic, partition)]`` when given. Returns bytes, requests and the span."""
    from protocol.records import split_batches

    positions = {tp: 0 for tp, end in ends.items() if end > 0}
    fetcher = RawFetcher(bootstrap)
    written = requests = 0
    start = _span()
    try:
        while positions:
            response = fetcher.fetch(positions, partition_max_bytes, max_bytes)
            requests += 1
            for topic in response["responses"]:
                for pdata in topic["partitions"]:
                    tp = (topic["topic"], pdata["partition_index"])
                    if pdata["error_code"]:
                        raise SystemExit(f"fetch {tp}: error {pdata['error_code']}")
                    records = pdata.get("records")
                    if not records or tp not in positions:
                        continue
                    split = split_batches(records)
                    if not split.batches:
                        continue
                    if files:
                        files[tp].write(memoryview(records)[: split.consumed])
                    written += split.consumed
                    positions[tp] = split.batches[-1].next_offset
                    if positions[tp] >= ends[tp]:
                        del positions[tp]
    finally:
        fetcher.close()
    return {"bytes": written, "requests": requests, **_since(start)}


def cmd_raw_fetch(args) -> None:
    """Fetch every partition from offset 0 to its end and write the whole batches to one file per partition
    in ``--out`` (partition by partition the bytes must match across servers; the interleaving need not).
    ``--discard`` drops the bytes instead: for timing a server, whose figure should not include this
    client's page-cache writes."""
    ends = {(t, p): end for t, offsets in json.loads(args.ends).items() for p, end in enumerate(offsets)}
    files = {}
    if not args.discard:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {tp: open(out_dir / f"{tp[0]}-{tp[1]}.bin", "wb", buffering=0) for tp, end in ends.items() if end > 0}  # noqa: SIM115
    try:
        result = fetch_to_ends(args.bootstrap, ends, args.partition_max_bytes, args.max_bytes, files)
    finally:
        for f in files.values():
            f.close()
    _emit(result)


# -- record consumers ------------------------------------------------------------------------------


def _confluent_consumer(bootstrap: str, group: str):
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * MB,
            "max.partition.fetch.bytes": 8 * MB,
            "queued.max.messages.kbytes": 256 * 1024,
            "log_level": 3,
        }
    )


def _assign_from_start(consumer, ends: dict[tuple[str, int], int]) -> None:
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])


def cmd_consume(args) -> None:
    """A confluent-kafka consumer reading every record (key and value touched, nothing else)."""
    ends = {(t, p): end for t, offsets in json.loads(args.ends).items() for p, end in enumerate(offsets)}
    consumer = _confluent_consumer(args.bootstrap, "linkd-bench-consume")
    _assign_from_start(consumer, ends)
    remaining = {tp for tp, end in ends.items() if end > 0}
    count = payload = 0
    deadline = time.monotonic() + args.timeout
    start = _span()
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error():
                continue
            count += 1
            payload += len(msg.value() or b"") + len(msg.key() or b"")
            tp = (msg.topic(), msg.partition())
            if msg.offset() + 1 >= ends[tp]:
                remaining.discard(tp)
    result = {"records": count, "payload_bytes": payload, "complete": not remaining, **_since(start)}
    consumer.close()
    _emit(result)


# -- consume-then-produce copiers ----------------------------------------------------------------


def cmd_copy_confluent(args) -> None:
    """What MirrorMaker-style tools do, with librdkafka: consume each record and produce it again, keeping
    key, value, timestamp and partition, compressing with the source topic's codec."""
    from confluent_kafka import Producer

    ends = {(t, p): end for t, offsets in json.loads(args.ends).items() for p, end in enumerate(offsets)}
    topic_map = json.loads(args.topic_map)  # source topic -> [dest topic, codec]
    consumer = _confluent_consumer(args.source, "linkd-bench-copier")
    _assign_from_start(consumer, ends)
    producers = {
        src: Producer(
            {
                "bootstrap.servers": args.dest, "compression.type": codec, "linger.ms": 50, "batch.size": 1_000_000, "acks": "all",
                "queue.buffering.max.kbytes": 512 * 1024, "queue.buffering.max.messages": 1_000_000, "log_level": 3,
            }
        )
        for src, (_dest, codec) in topic_map.items()
    }
    dests = {src: dest for src, (dest, _codec) in topic_map.items()}
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    remaining = {tp for tp, end in ends.items() if end > 0}
    count = payload = 0
    deadline = time.monotonic() + args.time_limit
    start = _span()
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error():
                continue
            topic, partition = msg.topic(), msg.partition()
            producer = producers[topic]
            key, value = msg.key(), msg.value()
            while True:
                try:
                    producer.produce(dests[topic], value, key, partition=partition, timestamp=msg.timestamp()[1], on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
            payload += len(value or b"") + len(key or b"")
            if msg.offset() + 1 >= ends[(topic, partition)]:
                remaining.discard((topic, partition))
        for producer in producers.values():
            producer.poll(0)
    undelivered = sum(p.flush(120) for p in producers.values())
    result = {"records": count, "payload_bytes": payload, "complete": not remaining, "undelivered": undelivered, "errors": errors, **_since(start)}
    consumer.close()
    _emit(result)


def cmd_copy_kafka_python(args) -> None:
    """The same copier with kafka-python (pure Python protocol and record codec)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ends = {(t, p): end for t, offsets in json.loads(args.ends).items() for p, end in enumerate(offsets)}
    topic_map = json.loads(args.topic_map)
    consumer = KafkaConsumer(
        bootstrap_servers=args.source, group_id=None, enable_auto_commit=False, fetch_max_bytes=64 * MB,
        max_partition_fetch_bytes=8 * MB, max_poll_records=10_000, auto_offset_reset="earliest",
    )
    tps = [TopicPartition(t, p) for (t, p), end in ends.items() if end > 0]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    producers = {
        src: KafkaProducer(bootstrap_servers=args.dest, compression_type=codec, linger_ms=50, batch_size=1_000_000, max_request_size=4 * MB, acks="all")
        for src, (_dest, codec) in topic_map.items()
    }
    dests = {src: dest for src, (dest, _codec) in topic_map.items()}
    remaining = {(tp.topic, tp.partition) for tp in tps}
    count = payload = 0
    deadline = time.monotonic() + args.time_limit
    start = _span()
    while remaining and time.monotonic() < deadline:
        for tp, messages in consumer.poll(timeout_ms=1000).items():
            producer, dest = producers[tp.topic], dests[tp.topic]
            for msg in messages:
                producer.send(dest, value=msg.value, key=msg.key, partition=tp.partition, timestamp_ms=msg.timestamp)
                count += 1
                payload += len(msg.value or b"") + len(msg.key or b"")
            if messages and messages[-1].offset + 1 >= ends[(tp.topic, tp.partition)]:
                remaining.discard((tp.topic, tp.partition))
    for producer in producers.values():
        producer.flush(120)
    result = {"records": count, "payload_bytes": payload, "complete": not remaining, **_since(start)}
    for producer in producers.values():
        producer.close(10)
    consumer.close()
    _emit(result)


# -- replication latency --------------------------------------------------------------------------

_STAMP = struct.Struct(">q")


def cmd_produce_rate(args) -> None:
    """Produce ``rate`` records/s for ``seconds``; each value starts with the send time (ns, wall clock)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": args.linger_ms, "compression.type": "lz4", "acks": "all", "log_level": 3})
    records = OrderRecords(args.seed)
    total = int(args.rate * args.seconds)
    tick = 0.01  # send in 10 ms slices: smooth at 2,000 records/s without a Python call per record of sleep
    per_tick = args.rate * tick
    start = _span()
    began = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - began) / tick * per_tick) + 1)
        while sent < due:
            key, value = records.record(sent)
            producer.produce(args.topic, _STAMP.pack(time.time_ns()) + value[8:], key)
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, began + (sent / per_tick) * tick - time.perf_counter()))
    producer.flush(30)
    _emit({"records": sent, **_since(start)})


def cmd_latency_consume(args) -> None:
    """Read the latency topic from offset 0; for each record, arrival time minus the send time it carries."""
    from confluent_kafka import TopicPartition

    consumer = _confluent_consumer(args.bootstrap, "linkd-bench-latency")
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(args.partitions)])
    consumer.consume(1, 0.5)  # connections and assignment up before the producer starts
    Path(args.ready_file).write_text("ready")
    latencies: list[float] = []
    deadline = time.monotonic() + args.timeout
    while len(latencies) < args.expect and time.monotonic() < deadline:
        # poll() hands over each record as soon as it is fetched (consume(n) would wait for n of them).
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        arrived = time.time_ns()
        latencies.append((arrived - _STAMP.unpack_from(msg.value())[0]) / 1e6)
    consumer.close()
    _emit({"latencies_ms": latencies})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("load")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--codec", required=True)
    p.add_argument("--payload-bytes", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first-id", type=int, default=0)
    p.add_argument("--linger-ms", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256 * 1024)
    p.set_defaults(fn=cmd_load)

    p = sub.add_parser("raw-fetch")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--ends", required=True)
    p.add_argument("--out", default="")
    p.add_argument("--partition-max-bytes", type=int, default=MB)
    p.add_argument("--max-bytes", type=int, default=10 * MB)
    p.add_argument("--discard", action="store_true", help="count the fetched bytes, write nothing")
    p.set_defaults(fn=cmd_raw_fetch)

    p = sub.add_parser("consume")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--ends", required=True)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(fn=cmd_consume)

    for name, fn in (("copy-confluent", cmd_copy_confluent), ("copy-kafka-python", cmd_copy_kafka_python)):
        p = sub.add_parser(name)
        p.add_argument("--source", required=True)
        p.add_argument("--dest", required=True)
        p.add_argument("--ends", required=True)
        p.add_argument("--topic-map", required=True)
        p.add_argument("--time-limit", type=float, default=600)
        p.set_defaults(fn=fn)

    p = sub.add_parser("produce-rate")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--seed", type=int, default=99)
    p.set_defaults(fn=cmd_produce_rate)

    p = sub.add_parser("latency-consume")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=cmd_latency_consume)

    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
