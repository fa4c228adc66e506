"""The long wire fuzz run: 100,000+ frames against a live linkd with a bystander producer and consumer.

    .venv/bin/python benchmarks/fuzz.py [--frames 100000] [--seed N] [--connections 4]

Prints one JSON object: frames sent (mutated, answered, closed, silent), crashes (the daemon died), the
daemon's internal errors by message, bystander deliveries, reads and errors, peak RSS and peak open
descriptors of the daemon, and frames per second. The same engine runs bounded in every CI run
(tests/protocol/test_fuzz_live.py); this is its long form, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from linkd.broker.versions import SUPPORTED_VERSIONS  # noqa: E402
from tests.broker.clients import create_topic  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402
from tests.protocol.wirefuzz import Bystander, DescriptorSampler, FuzzFigures, WireFuzzer, internal_errors, process_figures  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--connections", type=int, default=4, help="fuzzing connections in parallel")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"wire fuzz: seed {seed}, {args.frames} frames over {args.connections} connections", file=sys.stderr)

    daemon = LinkdProcess(extra_args=["--request-arrival-timeout-ms", "2000", "--max-partitions", "2000"]).start()
    started = time.monotonic()
    try:
        pool = [f"fuzz-{i}" for i in range(3)]
        for name in pool + ["bystander"]:
            create_topic(daemon.bootstrap, name, partitions=2 if name != "bystander" else 1)
        pool += ["", "no-such-topic", "__consumer_offsets", "bad/name", "x" * 250]
        deadline = started + args.max_seconds
        per = args.frames // args.connections
        fuzzers = [WireFuzzer(daemon.bootstrap, seed + i, SUPPORTED_VERSIONS, pool) for i in range(args.connections)]
        with DescriptorSampler(daemon.process.pid) as fds, Bystander(daemon.bootstrap, "bystander") as bystander:
            threads = [threading.Thread(target=f.run, args=(per, deadline), daemon=True) for f in fuzzers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elapsed = time.monotonic() - started
        alive = daemon.running
        peak_rss = process_figures(daemon.process.pid)[0] if alive else None
        total = FuzzFigures()
        for f in fuzzers:
            for key in ("frames", "mutated", "answered", "closed", "no_answer"):
                setattr(total, key, getattr(total, key) + getattr(f.figures, key))
        errors = Counter(re.sub(r"\d{3,}", "N", e) for e in internal_errors(daemon.log_path.read_text()))
        print(json.dumps({
            "seed": seed,
            "frames": total.frames,
            "mutated": total.mutated,
            "answered": total.answered,
            "closed_by_linkd": total.closed,
            "no_answer_within_0_3s": total.no_answer,
            "crashes": 0 if alive else 1,
            "internal_errors": dict(errors),
            "bystander_delivered": bystander.delivered,
            "bystander_read": bystander.consumed,
            "bystander_errors": len(bystander.failures),
            "bystander_error_samples": bystander.failures[:5],
            "peak_rss_bytes": peak_rss,
            "peak_descriptors": fds.peak,
            "seconds": round(elapsed, 1),
            "frames_per_second": round(total.frames / elapsed, 1),
        }, indent=2))
        return 0
    finally:
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
