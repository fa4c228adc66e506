"""Stop and restart of a linkd holding many partitions, without a source cluster: the storage side of issue 17's
"restart to serving < 10 s at 10,000 partitions".

    .venv/bin/python benchmarks/restart.py [--topics 1000] [--partitions 10] [--rounds 2] [--profile DIR]

Creates ``--topics`` x ``--partitions`` ordinary topics on one linkd (CreateTopics, 100 topics a request), produces
one record to every partition (``--produce-rounds`` Produce requests, each with a record for every partition),
waits ``--settle-seconds`` (so a periodic flush may run), then per round: SIGTERM, timed to exit (``stop_s``);
start, timed from spawn to serving (a Metadata naming every topic and a ListOffsets answering every partition,
as ``benchmarks/partitions.py`` checks), with the daemon's CPU seconds for each (``*_cpu_s``: on a loaded
machine the wall times mostly measure the wait for a core); one Produce to every partition; SIGKILL; start again, timed to serving.
``--profile DIR`` samples the daemon with py-spy over each stop (from the SIGTERM or SIGKILL) and each start (py-spy
attaches right after the spawn, so the profile covers spawn -> serving: interpreter start, imports and the opening and
recovery of every log, which all come before the ready file); the figures then carry py-spy's overhead.
Prints one JSON object; ``partitions.py`` measures the same with mirror topics and a link.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu_seconds  # noqa: E402
from partitions import produce_everywhere, serving_all  # noqa: E402
from rawwire import RawConnection  # noqa: E402

from protocol.messages import ApiKey  # noqa: E402
from tests.peers.linkd import LinkdProcess  # noqa: E402

CREATE_BATCH = 100


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    conn = RawConnection(bootstrap, timeout=300)
    try:
        names = list(topics)
        for i in range(0, len(names), CREATE_BATCH):
            body = {"topics": [{"name": t, "num_partitions": topics[t], "replication_factor": 1, "assignments": [], "configs": []}
                               for t in names[i : i + CREATE_BATCH]], "timeout_ms": 300_000, "validate_only": False}
            response = conn.request(ApiKey.CREATE_TOPICS, 5, body, timeout=300)
            bad = [t for t in response["topics"] if t["error_code"] != 0]
            if bad:
                raise RuntimeError(f"CreateTopics failed: {bad[:3]}")
    finally:
        conn.close()


class Sampler:
    """py-spy on the daemon for one phase (``--profile``), written as a flame graph per phase."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.process: subprocess.Popen | None = None
        if directory:
            directory.mkdir(parents=True, exist_ok=True)

    def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.process = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "100", "--threads", "--format", "raw",
                                         "-o", str(self.directory / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(2)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


def wait_serving(linkd: LinkdProcess, expected: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not serving_all(linkd.bootstrap, expected):
        if time.monotonic() > deadline:
            raise TimeoutError(f"linkd not serving every partition after {timeout:.0f}s")
        time.sleep(0.05)


def run(args: argparse.Namespace) -> dict:
    expected = {f"restart-{i:04d}": args.partitions for i in range(args.topics)}
    total = args.topics * args.partitions
    workdir = Path(tempfile.mkdtemp(prefix="linkd-restart-bench-"))
    results: dict = {"benchmark": "restart", "topics": args.topics, "partitions": total, "rounds": [],
                     "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    extra = [f"--max-partitions={max(total + 100, 1000)}", *args.linkd_arg]
    linkd = LinkdProcess(data_dir=workdir / "data", extra_args=extra, start_timeout=600)
    sampler = Sampler(args.profile)
    try:
        linkd.start()
        clock = time.perf_counter()
        create_topics(linkd.bootstrap, expected)
        results["create_s"] = round(time.perf_counter() - clock, 2)
        for _ in range(args.produce_rounds):
            accepted, refused = produce_everywhere(linkd.bootstrap, expected)
            if refused:
                raise RuntimeError(f"{refused} partitions refused the Produce")
        _log(f"{total} partitions created in {results['create_s']}s and written; settling {args.settle_seconds}s")
        time.sleep(args.settle_seconds)
        for round_no in range(args.rounds):
            figures: dict = {}
            for how in ("sigterm", "sigkill"):
                pid = linkd.process.pid
                sampler.start(pid, f"round{round_no}-{how}-stop")
                clock = time.perf_counter()
                cpu_before = cpu_seconds(pid)
                if how == "sigterm":
                    stopping = threading.Thread(target=linkd.stop, kwargs={"timeout": 300})
                    stopping.start()
                    last = cpu_before
                    while stopping.is_alive():  # the daemon's CPU until it exits: its last reading
                        try:
                            last = cpu_seconds(pid)
                        except (OSError, IndexError, ValueError):
                            pass
                        time.sleep(0.02)
                    figures["sigterm_stop_cpu_s"] = round(last - cpu_before, 2)
                else:
                    linkd.kill()
                figures[f"{how}_stop_s"] = round(time.perf_counter() - clock, 2)
                sampler.stop()
                clock = time.perf_counter()
                linkd.process = None
                # The profile covers spawn -> serving: the logs open (and recover) before the ready file.
                linkd.start(on_spawn=lambda pid, name=f"round{round_no}-{how}-start": sampler.start(pid, name))
                figures[f"{how}_ready_file_s"] = round(time.perf_counter() - clock, 2)
                wait_serving(linkd, expected, args.timeout)
                figures[f"{how}_serving_s"] = round(time.perf_counter() - clock, 2)
                figures[f"{how}_start_cpu_s"] = round(cpu_seconds(linkd.process.pid), 2)  # spawn to serving, imports included
                sampler.stop()
                # New data since the start, so the next stop (and a kill) has something to flush.
                accepted, refused = produce_everywhere(linkd.bootstrap, expected)
                if refused:
                    raise RuntimeError(f"{refused} partitions refused the Produce after the {how} restart")
                _log(f"round {round_no} {how}: {figures}")
            results["rounds"].append(figures)
    finally:
        sampler.stop()
        if linkd.running:
            linkd.kill()
        linkd.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--produce-rounds", type=int, default=1)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--linkd-arg", action="append", default=[], help="an extra argument for linkd serve (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
