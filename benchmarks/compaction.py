"""Log-cleaner throughput: linkd's cleaner against Apache Kafka's compacting the same bytes in the same run.

    .venv/bin/python benchmarks/compaction.py [--mb 64] [--keys 50000] [--value-bytes 200] [--segment-mb 16]

1. A single-node Kafka broker (tests/peers/kafka.py) gets a topic with ``cleanup.policy=delete`` (no
   retention) and ``--mb`` of keyed records (uniformly random keys out of ``--keys``) from confluent-kafka.
2. Kafka's segment files are copied batch for batch into a linkd ``PartitionLog`` (``append_mirrored``,
   the mirror path), so both sides hold exactly the same batches in segments of the same size.
3. The topic is switched to ``cleanup.policy=compact`` (IncrementalAlterConfigs); Kafka's cleaner runs and
   logs its own numbers ("N MB of log processed in S seconds"), which are parsed from its server log.
4. linkd's cleaner (``clean_log``) cleans its copy; MB/s = bytes of the segments rewritten / pass time, the
   same definition as Kafka's.
5. The offsets each side kept below both cleaned-up-to points are compared.

Both key maps get the same memory (``--dedupe-mb``). Prints one JSON object with ``ratio_linkd_to_kafka``
(wall-clock MB/s) and ``cpu_ratio_linkd_to_kafka`` (MB per CPU second: linkd's process CPU during its passes
against the broker JVM's CPU while its cleaner ran, JIT and background threads included). On a shared, loaded
machine the CPU ratio is the steadier of the two; ``load_average`` says how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import cpu_seconds  # noqa: E402

from linkd.storage import LogConfig, PartitionLog  # noqa: E402
from linkd.storage.cleaner import CleanerConfig, clean_log  # noqa: E402
from protocol.records import decode_records, split_batches  # noqa: E402
from tests.peers import wait_until  # noqa: E402
from tests.peers.kafka import KafkaBroker  # noqa: E402

MB = 1 << 20
_KAFKA_STATS = re.compile(r"cleaned log (\S+) \(dirty section = \[(\d+), (\d+)\]\)\s+([\d,.]+) MB of log processed in ([\d,.]+) seconds \(([\d,.]+) MB/sec\)")


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def produce(bootstrap: str, topic: str, total_bytes: int, keys: int, value_bytes: int, seed: int) -> int:
    from confluent_kafka import Producer

    rnd = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 256 * 1024, "acks": "1",
                         "enable.idempotence": False, "compression.type": "none", "queue.buffering.max.kbytes": 65536})
    value = bytes(rnd.randrange(256) for _ in range(value_bytes))
    sent, count = 0, 0
    while sent < total_bytes:
        key = b"key-%08d" % rnd.randrange(keys)
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        sent += len(key) + len(value) + 20
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return count


def kafka_segments(partition_dir: Path) -> list[Path]:
    return sorted(p for p in partition_dir.glob("*.log"))


def copy_into_linkd(segments: list[Path], log: PartitionLog) -> int:
    total = 0
    for path in segments:
        data = path.read_bytes()
        batches = split_batches(data).batches
        for i in range(0, len(batches), 64):  # Fetch-response-sized calls
            chunk = batches[i : i + 64]
            blob = b"".join(bytes(b) for b in chunk)
            log.append_mirrored(blob)
            total += len(blob)
    return total


def kept_offsets(paths: list[Path], below: int) -> list[int]:
    out = []
    for path in paths:
        for batch in split_batches(path.read_bytes()).batches:
            if batch.is_control or batch.base_offset >= below:
                continue
            out.extend(r.offset for r in decode_records(batch))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--segment-mb", type=int, default=16)
    parser.add_argument("--dedupe-mb", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kafka-timeout", type=float, default=300.0)
    args = parser.parse_args()
    topic = "compaction-bench"
    segment_bytes = args.segment_mb * MB
    work = Path(tempfile.mkdtemp(prefix="linkd-compaction-bench-"))
    result: dict = {"data_mb": args.mb, "keys": args.keys, "value_bytes": args.value_bytes, "segment_mb": args.segment_mb,
                    "dedupe_mb": args.dedupe_mb}
    broker = KafkaBroker(extra_config={"log.cleaner.backoff.ms": "200", "log.cleaner.dedupe.buffer.size": str(args.dedupe_mb * MB)},
                         jvm_opts=("-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"))
    try:
        broker.start()
        broker.create_topic(topic, 1, {"cleanup.policy": "delete", "retention.ms": "-1", "segment.bytes": str(segment_bytes),
                                       "min.cleanable.dirty.ratio": "0.01"})
        result["records"] = produce(broker.bootstrap, topic, args.mb * MB, args.keys, args.value_bytes, args.seed)
        partition_dir = broker.data_dir / f"{topic}-0"
        wait_until(lambda: sum(p.stat().st_size for p in kafka_segments(partition_dir)) > 0, 30, what="segments on disk")
        time.sleep(1.0)  # let the broker write the last produce request's bytes

        log_path = work / f"{topic}-0"
        config = LogConfig(segment_bytes=segment_bytes, segment_ms=2**62, cleanup_policy=("compact",), retention_ms=-1)
        plog = PartitionLog.open(log_path, config, topic, 0)
        result["log_bytes"] = copy_into_linkd(kafka_segments(partition_dir), plog)
        result["segments"] = len(plog.segment_base_offsets())

        # linkd first, while the broker idles (the topic is not compacted yet), so neither slows the other.
        cpu0, passes, bytes_in, seconds, bytes_out = time.process_time(), 0, 0, 0.0, 0
        cleaner = CleanerConfig(dedupe_buffer_size=args.dedupe_mb * MB)
        while True:
            stats = clean_log(plog, None, cleaner)
            if stats is None:
                break
            passes += 1
            bytes_in += stats.bytes_in
            bytes_out += stats.bytes_out
            seconds += stats.seconds
        linkd_cleaned_to = plog.statistics().cleaned_up_to or 0
        result["linkd"] = {
            "mb_s": round(bytes_in / MB / seconds, 2) if seconds else None,
            "seconds": round(seconds, 3),
            "mb_processed": round(bytes_in / MB, 1),
            "mb_after": round(bytes_out / MB, 1),
            "passes": passes,
            "cpu_s": round(time.process_time() - cpu0, 3),
            "cleaned_up_to": linkd_cleaned_to,
        }
        cpu = result["linkd"]["cpu_s"]
        result["linkd"]["mb_per_cpu_s"] = round(bytes_in / MB / cpu, 2) if cpu else None
        plog.close()

        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
        kafka_cpu0 = cpu_seconds(broker.process.pid)
        for future in broker.admin().incremental_alter_configs([resource]).values():
            future.result(30)
        deadline = time.monotonic() + args.kafka_timeout
        found: list[tuple] = []
        while time.monotonic() < deadline:
            found = [m.groups() for m in _KAFKA_STATS.finditer(broker.log_path.read_text(errors="replace")) if m.group(1) == f"{topic}-0"]
            if found and int(found[-1][2]) >= linkd_cleaned_to - 1:
                break
            time.sleep(0.2)
        kafka_cpu = cpu_seconds(broker.process.pid) - kafka_cpu0
        if not found:
            result["kafka"] = {"error": f"no cleaner run logged within {args.kafka_timeout} s", "mb_s": None}
        else:
            kafka_mb = sum(_num(f[3]) for f in found)
            kafka_s = sum(_num(f[4]) for f in found)
            kafka_to = int(found[-1][2])
            result["kafka"] = {
                "mb_s": round(kafka_mb / kafka_s, 2) if kafka_s else None,
                "seconds": kafka_s,  # Kafka logs one decimal
                "mb_processed": kafka_mb,
                "passes": len(found),
                "reported_mb_s": [_num(f[5]) for f in found],
                "dirty_section_end": kafka_to,
                "broker_cpu_s": round(kafka_cpu, 3),
                "mb_per_cpu_s": round(kafka_mb / kafka_cpu, 2) if kafka_cpu else None,
            }
            time.sleep(1.0)
            below = min(kafka_to + 1, linkd_cleaned_to)
            plog = PartitionLog.open(log_path, config, topic, 0)
            ours = kept_offsets(kafka_segments(log_path), below)
            plog.close()
            theirs = kept_offsets(kafka_segments(partition_dir), below)
            result["compared_below_offset"] = below
            result["kept_records"] = {"linkd": len(ours), "kafka": len(theirs)}
            result["kept_offsets_identical"] = ours == theirs
        lm, km = result["linkd"]["mb_s"], result["kafka"].get("mb_s")
        result["ratio_linkd_to_kafka"] = round(lm / km, 3) if lm and km else None
        lc, kc = result["linkd"]["mb_per_cpu_s"], result["kafka"].get("mb_per_cpu_s")
        result["cpu_ratio_linkd_to_kafka"] = round(lc / kc, 3) if lc and kc else None
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
