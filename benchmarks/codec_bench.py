"""Codec throughput on the data path, printed as JSON.

Measures, on a 64 MiB Fetch response (100 partitions of real v2 batches):
  * server-side encode (``encode_response``: one copy into the frame; ``encode_response_chunks``: none),
  * client-side decode with the fast buffer-offset path and with construct's stream path,
  * ``split_batches`` over one 64 MiB records blob,
  * the decode time of a Fetch v12 answer naming 10,000 partitions without records (a failover's probe),
and, for the structure-heavy case, messages per second decoding a 200-partition Metadata response and a
100-partition Produce request with both decoders (this is what the "fast path for Fetch/Produce,
construct elsewhere" choice in ``protocol.messages`` rests on).

    .venv/bin/python benchmarks/codec_bench.py [--total-mb 64] [--partitions 100]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from protocol.messages import (
    ApiKey,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_response_chunks,
)
from protocol.records import BatchSpec, NewRecord, build_batch, split_batches

MB = 1 << 20


def records_blob(size: int) -> bytes:
    """Real batches of ~16 KiB (100 records of 150 bytes) repeated up to ``size`` bytes."""
    batch = build_batch(
        BatchSpec(records=[NewRecord(b"v" * 150, key=b"k%d" % i, timestamp=1_700_000_000_000 + i) for i in range(100)])
    )
    return batch * max(1, size // len(batch))


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total-mb", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    per_partition = records_blob(args.total_mb * MB // args.partitions)
    version = 16
    body = {
        "responses": [
            {
                "topic_id": uuid.UUID(int=7),
                "partitions": [
                    {
                        "partition_index": i,
                        "high_watermark": 10**9,
                        "last_stable_offset": 10**9,
                        "log_start_offset": 0,
                        "records": per_partition,
                    }
                    for i in range(args.partitions)
                ],
            }
        ]
    }
    frame = encode_response(ApiKey.FETCH, version, 1, body)
    payload = memoryview(frame)[4:]
    total = len(frame)
    results: dict = {"fetch_response_bytes": total, "partitions": args.partitions, "fetch_version": version}

    t = best_of(args.runs, lambda: encode_response(ApiKey.FETCH, version, 1, body))
    results["fetch_encode_response_MBps"] = round(total / MB / t, 1)
    t = best_of(args.runs, lambda: encode_response_chunks(ApiKey.FETCH, version, 1, body))
    results["fetch_encode_chunks_MBps"] = round(total / MB / t, 1)
    t = best_of(args.runs, lambda: decode_response(ApiKey.FETCH, version, payload, fast=True))
    results["fetch_decode_fast_MBps"] = round(total / MB / t, 1)
    t = best_of(args.runs, lambda: decode_response(ApiKey.FETCH, version, payload, fast=False))
    results["fetch_decode_construct_MBps"] = round(total / MB / t, 1)

    # An idle or probe answer of a 10,000-partition link (Fetch v12: three tagged struct defaults to fill
    # in per partition): what a failover's probe and a full session round cost to decode.
    quiet = encode_response(ApiKey.FETCH, 12, 1, {"responses": [
        {"topic": f"part-{t:04d}", "partitions": [{"partition_index": i, "high_watermark": 1, "last_stable_offset": 1, "records": b""} for i in range(10)]}
        for t in range(1000)]})
    quiet_payload = memoryview(quiet)[4:]
    t = best_of(max(args.runs, 15), lambda: decode_response(ApiKey.FETCH, 12, quiet_payload, fast=True))
    results["fetch_decode_10000_quiet_partitions_ms"] = round(t * 1000, 1)

    blob = memoryview(records_blob(args.total_mb * MB))
    t = best_of(args.runs, lambda: split_batches(blob))
    results["split_batches_MBps"] = round(len(blob) / MB / t, 1)
    results["split_batches_count"] = len(split_batches(blob).batches)

    produce = encode_request(
        RequestHeader(ApiKey.PRODUCE, 9, 1, "bench"),
        {
            "acks": -1,
            "timeout_ms": 30000,
            "topic_data": [{"name": "t", "partition_data": [{"index": i, "records": per_partition[:16384]} for i in range(100)]}],
        },
    )[4:]
    metadata = encode_response(
        ApiKey.METADATA,
        12,
        1,
        {
            "brokers": [{"node_id": 1, "host": "localhost", "port": 9092}],
            "topics": [
                {
                    "name": f"topic-{t}",
                    "topic_id": uuid.uuid4(),
                    "partitions": [{"partition_index": i, "replica_nodes": [1], "isr_nodes": [1]} for i in range(20)],
                }
                for t in range(10)
            ],
        },
    )[4:]
    loops = 200
    for label, fn in [
        ("produce_request_100p", lambda fast: decode_request(produce, fast=fast)),
        ("metadata_response_200p", lambda fast: decode_response(ApiKey.METADATA, 12, metadata, fast=fast)),
    ]:
        for name, fast in (("fast", True), ("construct", False)):
            t = best_of(3, lambda fn=fn, fast=fast: [fn(fast) for _ in range(loops)])
            results[f"{label}_decode_{name}_per_s"] = round(loops / t)

    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
