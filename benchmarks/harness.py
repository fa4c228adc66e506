"""Process accounting from /proc, worker subprocesses, offsets polling and MirrorMaker 2 for ``run.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.peers import LOOPBACK, _die_with_parent, spawn, terminate
from tests.peers.kafka import _LOG4J2 as KAFKA_LOG4J2  # same file-only logging as the test brokers
from tests.peers.kafka import KafkaBroker, ensure_mm2_libs, java_binary

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, e.g. VmHWM (peak resident set) or VmRSS."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class CpuMeter:
    """CPU seconds used by a set of processes between ``start()`` and ``stop()``."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        return self.used


def machine_description() -> dict:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    java = subprocess.run([java_binary(), "-version"], capture_output=True, text=True).stderr.splitlines()[:1]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / (1 << 20), 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "java": java[0] if java else "?",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- worker subprocesses ---------------------------------------------------------------------------


@dataclass
class WorkerResult:
    result: dict
    pid: int
    process_cpu_s: float  # the whole process, startup included (for reference; workers report their span)


def start_worker(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "workers.py"), *args], stdout=subprocess.PIPE, stderr=open(log, "ab"), env=env, cwd=REPO,  # noqa: SIM115
        preexec_fn=_die_with_parent,
    )
    process.log_path = log  # type: ignore[attr-defined]
    return process


def finish_worker(process: subprocess.Popen, timeout: float, what: str) -> WorkerResult:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"{what}: no result within {timeout:.0f}s") from None
    if process.returncode != 0:
        tail = Path(process.log_path).read_text(errors="replace").strip().splitlines()[-1:] if Path(process.log_path).exists() else []  # type: ignore[attr-defined]
        raise RuntimeError(f"{what}: worker exited with {process.returncode}: {tail[0] if tail else '?'} (log {process.log_path})")  # type: ignore[attr-defined]
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what}: worker printed no result")
    return WorkerResult(json.loads(lines[-1]), process.pid, 0.0)


def run_worker(*args: str, log: Path, timeout: float, what: str) -> dict:
    return finish_worker(start_worker(*args, log=log), timeout, what).result


# -- offsets ---------------------------------------------------------------------------------------


class EndOffsets:
    """Latest offsets of many partitions in one ListOffsets request to a single-node cluster (a source test
    broker or linkd), over a raw connection: no client library's metadata cache or back-off between the
    server's answer and the clock. While waiting, a partition the server does not know yet (a mirror not
    created yet) reads -1."""

    VERSION = 7

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self.conn = self._connect()

    def _connect(self):
        from rawwire import RawConnection

        return RawConnection(self._bootstrap, client_id="linkd-bench-watcher")

    def query(self, partitions: dict[str, int], timeout: float = 10.0, missing_ok: bool = False) -> dict[str, list[int]]:
        from protocol.errors import ErrorCode
        from protocol.messages import ApiKey

        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [{"name": t, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": -1} for p in range(n)]} for t, n in partitions.items()],
        }
        response = self.conn.request(ApiKey.LIST_OFFSETS, self.VERSION, body, timeout=timeout)
        out = {t: [-1] * n for t, n in partitions.items()}
        for topic in response["topics"]:
            for p in topic["partitions"]:
                if p["error_code"] == 0:
                    out[topic["name"]][p["partition_index"]] = p["offset"]
                elif not missing_ok:
                    raise LookupError(f"ListOffsets {topic['name']}-{p['partition_index']}: {ErrorCode(p['error_code']).name}")
        return out

    def close(self) -> None:
        self.conn.close()

    def wait_for(self, targets: dict[str, list[int]], timeout: float, interval: float = 0.1, rename=lambda t: t, on_first=None) -> tuple[float | None, float]:
        """Poll until every partition of ``rename(topic)`` reaches its target. Returns (first time any
        partition moved, time all reached), both ``time.perf_counter()`` values; ``on_first()`` is called
        as soon as the first record is seen."""
        partitions = {rename(t): len(offsets) for t, offsets in targets.items()}
        goal = {rename(t): offsets for t, offsets in targets.items()}
        first_moved = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                now_offsets = self.query(partitions, missing_ok=True)
            except (OSError, ValueError):  # broker busy or restarting: reconnect, poll until the deadline
                now_offsets = None
                self.conn.close()
                try:
                    self.conn = self._connect()
                except OSError:
                    pass
            now = time.perf_counter()
            if now_offsets is not None:
                if first_moved is None and any(o > 0 for offsets in now_offsets.values() for o in offsets):
                    first_moved = now
                    if on_first is not None:
                        on_first()
                if all(now_offsets[t][p] >= goal[t][p] for t in goal for p in range(len(goal[t]))):
                    return first_moved, now
            if time.monotonic() > deadline:
                raise TimeoutError(f"offsets {now_offsets} did not reach {goal} within {timeout:.0f}s")
            time.sleep(interval)


# -- MirrorMaker 2 ---------------------------------------------------------------------------------


# MirrorMaker 2 tuned for throughput the way its documentation and operator guides recommend: as many
# tasks as cores, big consumer fetches and poll batches, producer batching with linger and compression,
# and none of the optional flows (group checkpoints, ACL sync) that the copy under test does not need.
MM2_TUNING = {
    "tasks.max": "2",
    "src.consumer.fetch.max.bytes": str(64 << 20),
    "src.consumer.max.partition.fetch.bytes": str(8 << 20),
    "src.consumer.max.poll.records": "10000",
    "src.consumer.receive.buffer.bytes": str(1 << 20),
    "dst.producer.compression.type": "lz4",
    "dst.producer.batch.size": str(1 << 20),
    "dst.producer.linger.ms": "50",
    "dst.producer.max.request.size": str(8 << 20),
    "dst.producer.buffer.memory": str(256 << 20),
    "dst.producer.acks": "all",
    "emit.checkpoints.enabled": "false",
    "sync.group.offsets.enabled": "false",
    "refresh.groups.enabled": "false",
    "sync.topic.acls.enabled": "false",
    "offset.flush.timeout.ms": "10000",
}
MM2_HEAP = ("-Xms256m", "-Xmx2g")  # what bin/connect-mirror-maker.sh sets



class MirrorMaker2:
    """``org.apache.kafka.connect.mirror.MirrorMaker`` (dedicated mode) copying ``topics`` src -> dst."""

    def __init__(self, workdir: Path, source: KafkaBroker, dest: KafkaBroker, topics: list[str]) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "mm2.log"
        config = {
            "clusters": "src, dst",
            "src.bootstrap.servers": source.bootstrap,
            "dst.bootstrap.servers": dest.bootstrap,
            "src->dst.enabled": "true",
            "dst->src.enabled": "false",
            "src->dst.topics": ", ".join(topics),
            "replication.factor": "1",
            "checkpoints.topic.replication.factor": "1",
            "heartbeats.topic.replication.factor": "1",
            "offset-syncs.topic.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "config.storage.replication.factor": "1",
            **MM2_TUNING,
        }
        (workdir / "mm2.properties").write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
        (workdir / "log4j2.properties").write_text(KAFKA_LOG4J2.format(log=self.log_path))
        self.process: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        libs = ensure_mm2_libs()
        argv = [
            java_binary(), *MM2_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}", "-cp", f"{libs}/*",
            "org.apache.kafka.connect.mirror.MirrorMaker", str(self.workdir / "mm2.properties"),
        ]
        self.process = spawn(argv, self.workdir / "mm2.stdout.log", cwd=self.workdir)
        return self.process

    def stop(self) -> None:
        terminate(self.process, 20)
        self.process = None


def loopback(port: int) -> str:
    return f"{LOOPBACK}:{port}"
