"""``linkd demo``: the product end to end on one machine with nothing else installed.

1. starts a throwaway *source* cluster (a plain linkd broker) and a *destination* linkd,
2. writes sample data to the source (JSON-like records, zstd / lz4 / gzip batches, 3 partitions),
3. runs ``linkd link create`` and ``linkd mirror create --wait`` (with a progress bar),
4. proves the mirror byte-identical with ``linkd mirror verify`` (batch by batch: offsets, lengths, CRCs),
5. promotes the mirror and produces to it: offsets continue where the source's ended.

With ``--bootstrap-server`` (and ``--topic``) it links a real source cluster instead and keeps the
destination serving.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from protocol.compression import Compression
from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import BatchSpec, NewRecord, build_batch

from .link.client import Connection

TOPIC = "orders"
PARTITIONS = 3
BATCH_RECORDS = 500
CODECS = (Compression.ZSTD, Compression.LZ4, Compression.GZIP)


def _start_daemon(name: str, root: Path) -> tuple[subprocess.Popen, int, int]:
    """Start ``linkd serve`` on port 0; return the process and its (kafka, admin) ports."""
    log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    ready = root / f"{name}.ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "linkd", "serve", "--data-dir", str(root / name), "--listener", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ready-file", str(ready)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"linkd demo: the {name} daemon exited; see {root / f'{name}.log'}")
        if ready.exists():
            ports = json.loads(ready.read_text())
            return process, ports["kafka_port"], ports["admin_port"]
        time.sleep(0.05)
    raise SystemExit(f"linkd demo: the {name} daemon did not start; see {root / f'{name}.log'}")


def _record(i: int, rng: random.Random) -> tuple[bytes, bytes]:
    key = f"customer-{rng.randrange(10_000):05d}".encode()
    value = json.dumps(
        {
            "order_id": i,
            "customer": key.decode(),
            "items": [{"sku": f"SKU-{rng.randrange(500):04d}", "qty": rng.randrange(1, 5), "price": round(rng.uniform(1, 200), 2)} for _ in range(rng.randrange(1, 4))],
            "status": rng.choice(["created", "paid", "shipped"]),
            "ts": 1_700_000_000_000 + i,
        }
    ).encode()
    return key, value


async def _produce_sample(bootstrap: tuple[str, int], records: int) -> None:
    conn = await Connection.open(*bootstrap, client_id="linkd-demo")
    try:
        created = await conn.request(ApiKey.CREATE_TOPICS, {"topics": [{"name": TOPIC, "num_partitions": PARTITIONS, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000, "validate_only": False})
        code = created["topics"][0]["error_code"]
        if code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise SystemExit(f"linkd demo: cannot create {TOPIC}: {created['topics'][0].get('error_message')}")
        rng = random.Random(7)
        sent = 0
        batch_no = 0
        while sent < records:
            count = min(BATCH_RECORDS, records - sent)
            recs = [NewRecord(value=v, key=k, headers=[("source", b"demo")]) for k, v in (_record(sent + j, rng) for j in range(count))]
            data = build_batch(BatchSpec(compression=CODECS[batch_no % len(CODECS)], records=recs))
            body = {"transactional_id": None, "acks": -1, "timeout_ms": 10_000, "topic_data": [{"name": TOPIC, "partition_data": [{"index": batch_no % PARTITIONS, "records": data}]}]}
            response = await conn.request(ApiKey.PRODUCE, body)
            error = response["responses"][0]["partition_responses"][0]["error_code"]
            if error:
                raise SystemExit(f"linkd demo: produce failed with {ErrorCode(error).name}")
            sent += count
            batch_no += 1
    finally:
        await conn.aclose()


async def _produce_after_promotion(dest: tuple[str, int]) -> list[int]:
    conn = await Connection.open(*dest, client_id="linkd-demo")
    try:
        offsets = []
        for p in range(PARTITIONS):
            data = build_batch(BatchSpec(records=[NewRecord(value=b'{"order_id": "after-promotion"}')]))
            body = {"transactional_id": None, "acks": -1, "timeout_ms": 10_000, "topic_data": [{"name": TOPIC, "partition_data": [{"index": p, "records": data}]}]}
            r = (await conn.request(ApiKey.PRODUCE, body))["responses"][0]["partition_responses"][0]
            if r["error_code"]:
                raise SystemExit(f"linkd demo: produce to the promoted topic failed: {r.get('error_message') or ErrorCode(r['error_code']).name}")
            offsets.append(r["base_offset"])
        return offsets
    finally:
        await conn.aclose()


def _cli(*argv: str) -> None:
    from .cli import main

    print(f"$ linkd {' '.join(argv)}", flush=True)
    code = main(list(argv))
    if code:
        raise SystemExit(f"linkd demo: `linkd {' '.join(argv)}` failed")


def run_demo(args) -> int:
    root = Path(tempfile.mkdtemp(prefix="linkd-demo-"))
    processes: list[subprocess.Popen] = []
    try:
        if args.bootstrap_server:
            return _demo_real_source(args, root, processes)
        source_process, src_port, _src_admin = _start_daemon("source", root)
        processes.append(source_process)
        dest_process, dst_port, dst_admin = _start_daemon("linkd", root)
        processes.append(dest_process)
        print(f"Started a throwaway source cluster on 127.0.0.1:{src_port} and linkd on 127.0.0.1:{dst_port} (admin {dst_admin}); files in {root}")
        source, dest = ("127.0.0.1", src_port), ("127.0.0.1", dst_port)
        started = time.monotonic()
        trio.run(_produce_sample, source, args.records)
        print(f"Wrote {args.records:,} sample records to '{TOPIC}' ({PARTITIONS} partitions, zstd/lz4/gzip batches) in {time.monotonic() - started:.1f}s")
        admin = f"127.0.0.1:{dst_admin}"
        _cli("link", "create", "demo", "--bootstrap-server", f"127.0.0.1:{src_port}", "--admin", admin)
        started = time.monotonic()
        _cli("mirror", "create", TOPIC, "--link", "demo", "--wait", "--progress", "--admin", admin)
        print(f"Caught up in {time.monotonic() - started:.1f}s")
        _cli("mirror", "describe", TOPIC, "--admin", admin)
        _cli("mirror", "verify", TOPIC, "--admin", admin)
        print("Byte-identical: every batch of every partition has the source's offsets, length and CRC (checked against its bytes)")
        _cli("mirror", "promote", TOPIC, "--admin", admin)
        offsets = trio.run(_produce_after_promotion, dest)
        print(f"Produced to the promoted topic: offsets continue at {offsets} (one record per partition)")
        if args.keep_running:
            print(f"linkd keeps serving on 127.0.0.1:{dst_port} (admin {admin}); Ctrl-C stops it")
            processes[-1].wait()
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        if not args.keep_running and os.environ.get("LINKD_DEMO_KEEP_FILES") is None:
            shutil.rmtree(root, ignore_errors=True)


def _demo_real_source(args, root: Path, processes: list) -> int:
    if not args.topic:
        raise SystemExit("linkd demo: --topic is required with --bootstrap-server")
    dest_process, dst_port, dst_admin = _start_daemon("linkd", root)
    processes.append(dest_process)
    admin = f"127.0.0.1:{dst_admin}"
    print(f"linkd serving on 127.0.0.1:{dst_port} (admin {admin}), data in {root}")
    _cli("link", "create", "source", "--bootstrap-server", args.bootstrap_server, "--admin", admin)
    _cli("mirror", "create", args.topic, "--link", "source", "--wait", "--progress", "--admin", admin)
    _cli("mirror", "verify", args.topic, "--admin", admin)
    print(f"linkd keeps mirroring and serving on 127.0.0.1:{dst_port}; Ctrl-C stops it")
    processes[-1].wait()
    return 0
