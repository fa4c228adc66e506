"""Partition log throughput against a plain sequential file write of the same bytes on the same disk.

    .venv/bin/python benchmarks/storage_bench.py [--mb 128] [--dir /tmp] [--repeat 3]

Prints one JSON object. Appends run with flushing off (the default durability policy), like the baseline.
* ``mirror_1mb``: one 1 MiB batch per ``append_mirrored`` call.
* ``mirror_16kb``: 16 KiB batches handed over 64 at a time (one 1 MiB Fetch response per call).
* ``produce_16kb``: one 16 KiB batch per ``append_assigned`` call (offset assignment, sequence checks).
* ``read``: sequential ``read(offset, 1 MiB)`` over the log, resolving ranges and reading their bytes.
Each baseline writes the same chunks with ``os.write`` to a fresh file in the same directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from linkd.storage import LogConfig, PartitionLog
from protocol.records import BatchSpec, NewRecord, build_batch, set_base_offset_and_epoch

MB = 1 << 20


def make_batch(size: int, records: int, producer_id: int = -1) -> tuple[bytearray, int]:
    value = os.urandom(max(1, size // records - 16))
    spec = BatchSpec(records=[NewRecord(value=value, timestamp=1_700_000_000_000 + i) for i in range(records)],
                     producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                     base_sequence=0 if producer_id >= 0 else -1)
    return bytearray(build_batch(spec)), records


def mirror_chunks(total: int, batch_size: int, records: int, per_call: int) -> list[bytes]:
    """Fetch-response-like chunks of ``per_call`` batches with consecutive offsets (built before timing)."""
    template, n = make_batch(batch_size, records)
    chunks, offset, written = [], 0, 0
    while written < total:
        parts = []
        for _ in range(per_call):
            set_base_offset_and_epoch(template, offset, 0)
            parts.append(bytes(template))
            offset += n
        chunk = b"".join(parts)
        chunks.append(chunk)
        written += len(chunk)
    return chunks


def plain_write(directory: str, chunks: list[bytes]) -> float:
    path = os.path.join(directory, "plain.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    start = time.perf_counter()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.unlink(path)
    return elapsed


def fresh_log(directory: str) -> PartitionLog:
    path = os.path.join(directory, "bench-0")
    shutil.rmtree(path, ignore_errors=True)
    return PartitionLog.open(path, LogConfig(segment_bytes=64 * MB), "bench", 0)


def log_mirror(directory: str, chunks: list[bytes]) -> float:
    log = fresh_log(directory)
    start = time.perf_counter()
    for chunk in chunks:
        log.append_mirrored(chunk)
    elapsed = time.perf_counter() - start
    log.delete()
    return elapsed


def log_produce(directory: str, batches: list[bytes]) -> float:
    log = fresh_log(directory)
    start = time.perf_counter()
    for i, produced in enumerate(batches):
        log.append_assigned(produced, 1, i)
    elapsed = time.perf_counter() - start
    log.delete()
    return elapsed


def log_read(directory: str, chunks: list[bytes]) -> tuple[float, float, int]:
    log = fresh_log(directory)
    for chunk in chunks:
        log.append_mirrored(chunk)
    end = log.log_end_offset
    # ranges only (what the listener does before os.sendfile)
    start = time.perf_counter()
    offset, reads = 0, 0
    while offset < end:
        offset = log.read(offset, MB).next_offset
        reads += 1
    ranges_elapsed = time.perf_counter() - start
    start = time.perf_counter()
    offset = 0
    while offset < end:
        result = log.read(offset, MB)
        for file_range in result.ranges:
            with open(file_range.path, "rb") as f:
                os.pread(f.fileno(), file_range.length, file_range.position)
        offset = result.next_offset
    bytes_elapsed = time.perf_counter() - start
    log.delete()
    return ranges_elapsed, bytes_elapsed, reads


def best(samples: list[float]) -> float:
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=128, help="bytes per run, in MiB")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure (default: system temp)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.mb * MB
    directory = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir)
    try:
        mirror_1mb = mirror_chunks(total, MB, 256, 1)
        mirror_16kb = mirror_chunks(total, 16 * 1024, 16, 64)
        produce_template, _ = make_batch(16 * 1024, 16, producer_id=7)
        produce_batches = []
        for i in range(total // len(produce_template)):
            produce_template[53:57] = (i * 16).to_bytes(4, "big")  # baseSequence is under the CRC: rebuild it
            produce_batches.append(build_batch(BatchSpec(
                records=[NewRecord(value=b"x" * 1008, timestamp=1_700_000_000_000 + j) for j in range(16)],
                producer_id=7, producer_epoch=0, base_sequence=i * 16)))
        size_1mb = sum(map(len, mirror_1mb))
        size_16kb = sum(map(len, mirror_16kb))
        size_produce = sum(map(len, produce_batches))

        results: dict[str, dict[str, float]] = {}
        samples: dict[str, list[float]] = {k: [] for k in ("p1", "l1", "p16", "l16", "pp", "lp", "rr", "rb")}
        reads = 0
        for _ in range(args.repeat):
            samples["p1"].append(plain_write(directory, mirror_1mb))
            samples["l1"].append(log_mirror(directory, mirror_1mb))
            samples["p16"].append(plain_write(directory, mirror_16kb))
            samples["l16"].append(log_mirror(directory, mirror_16kb))
            samples["pp"].append(plain_write(directory, produce_batches))
            samples["lp"].append(log_produce(directory, produce_batches))
            ranges_elapsed, bytes_elapsed, reads = log_read(directory, mirror_16kb)
            samples["rr"].append(ranges_elapsed)
            samples["rb"].append(bytes_elapsed)

        def rate(size: int, key: str) -> float:
            return round(size / MB / best(samples[key]), 1)

        for name, size, plain_key, log_key in (
            ("mirror_1mb", size_1mb, "p1", "l1"),
            ("mirror_16kb", size_16kb, "p16", "l16"),
            ("produce_16kb", size_produce, "pp", "lp"),
        ):
            plain_rate, log_rate = rate(size, plain_key), rate(size, log_key)
            results[name] = {"plain_write_mb_s": plain_rate, "log_append_mb_s": log_rate,
                             "ratio": round(log_rate / plain_rate, 3),
                             "ratio_median": round(statistics.median(samples[plain_key]) / statistics.median(samples[log_key]), 3)}
        results["read"] = {
            "ranges_only_mb_s": rate(size_16kb, "rr"),
            "ranges_and_pread_mb_s": rate(size_16kb, "rb"),
            "reads_per_s": round(reads / best(samples["rr"]), 0),
            "max_bytes": MB,
            "batch_bytes": 16 * 1024,
        }
        results["setup"] = {"mb_per_run": args.mb, "repeat": args.repeat, "directory": directory, "cpu_count": os.cpu_count()}
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
