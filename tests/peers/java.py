"""Python side of the reference Java client (tests/peers/javaclient/LinkdClient.java).

The program is compiled against the cached kafka-clients jars into
``<cache>/kafka-<version>/javaclient/<source hash>/`` and recompiled only when its source changes.

    java_produce(bootstrap, topic, count, compression="none") -> JavaProduceResult
    java_consume(bootstrap, topic, group, expected, timeout_ms=30000, isolation="read_uncommitted") -> JavaConsumeResult
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import PeerUnavailable, file_lock
from .kafka import ensure_kafka_libs, kafka_home

SOURCE = Path(__file__).with_name("javaclient") / "LinkdClient.java"
MAIN_CLASS = "LinkdClient"
# Short-lived client JVMs: C1 only and a small heap start fastest on a shared 2-core machine.
CLIENT_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

_LOG4J2 = """\
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %c{1} %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""


class JavaClientError(RuntimeError):
    pass


def compile_once(what: str, name: str, sources: list[Path], classpath: Callable[[], str], log4j2: str = _LOG4J2) -> Path:
    """Compile ``sources`` against ``classpath()`` into ``<cache>/kafka-<version>/<name>/<source hash>/``
    (with ``log4j2`` as its log4j2.properties), once per version of the sources and safely across test
    processes; the directory. ``what`` names the program in the error a missing JDK gives."""
    javac = shutil.which("javac")
    if javac is None or shutil.which("java") is None:
        raise PeerUnavailable(f"{what} needs a JDK ('java' and 'javac' on PATH)")
    jars = classpath()  # after the JDK check: it may download jars
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    out = kafka_home() / name / digest
    done = out / ".compiled"
    if done.is_file():
        return out
    with file_lock(out.parent / ".lock"):
        if done.is_file():
            return out
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        result = subprocess.run([javac, "-cp", jars, "-d", str(out), *map(str, sources)], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(out, ignore_errors=True)
            raise JavaClientError(f"javac failed:\n{result.stdout}\n{result.stderr}")
        (out / "log4j2.properties").write_text(log4j2)
        done.write_text(digest + "\n")
    return out


def ensure_compiled() -> Path:
    """Directory holding LinkdClient.class (compiled once per source version)."""
    return compile_once("the Java reference client", "javaclient", [SOURCE], lambda: f"{ensure_kafka_libs()}/*")


def run_java_client(*args: str, timeout: float = 120.0, properties: Path | None = None) -> subprocess.CompletedProcess:
    """``properties``: a client .properties file merged into the client's config (security settings)."""
    classes = ensure_compiled()
    libs = ensure_kafka_libs()
    argv = [
        shutil.which("java") or "java",
        *CLIENT_JVM_OPTS,
        *([f"-Dlinkd.client.properties={properties}"] if properties else []),
        f"-Dlog4j2.configurationFile={classes / 'log4j2.properties'}",
        "-cp",
        f"{classes}:{libs}/*",
        MAIN_CLASS,
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class JavaProduceResult:
    acks: list[tuple[int, int]]  # (partition, offset) per record, in send order
    summary: dict
    stderr: str


@dataclass(frozen=True)
class JavaConsumeResult:
    consumed: int
    partitions: dict[int, dict]  # partition -> {"first", "last", "count"}
    committed: dict[int, int | None]
    records: list[tuple[int, int, str | None, str | None, int]]  # (partition, offset, key, value, timestamp)
    elapsed_ms: int
    stderr: str


def java_produce(bootstrap: str, topic: str, count: int, compression: str = "none", timeout: float = 120.0, properties: Path | None = None) -> JavaProduceResult:
    """Produce ``count`` records (key ``k<i>``, value ``v<i>``) with the default, idempotent Java producer."""
    result = run_java_client("produce", bootstrap, topic, str(count), compression, timeout=timeout, properties=properties)
    if result.returncode != 0:
        raise JavaClientError(f"java produce exited {result.returncode}:\n{result.stderr[-4000:]}")
    acks: list[tuple[int, int]] = []
    summary: dict = {}
    for line in result.stdout.splitlines():
        obj = json.loads(line)
        if "summary" in obj:
            summary = obj["summary"]
        else:
            acks.append((obj["partition"], obj["offset"]))
    if len(acks) != count:
        raise JavaClientError(f"java produce acknowledged {len(acks)} of {count} records:\n{result.stderr[-4000:]}")
    return JavaProduceResult(acks, summary, result.stderr)


def java_consume(
    bootstrap: str,
    topic: str,
    group: str,
    expected: int,
    timeout_ms: int = 30_000,
    isolation: str = "read_uncommitted",
    properties: Path | None = None,
) -> JavaConsumeResult:
    """Consume with a Java group consumer until ``expected`` records or ``timeout_ms``; commits before exit."""
    result = run_java_client("consume", bootstrap, topic, group, str(expected), str(timeout_ms), isolation, timeout=timeout_ms / 1000 + 60, properties=properties)
    if result.returncode != 0:
        raise JavaClientError(f"java consume exited {result.returncode}:\n{result.stderr[-4000:]}")
    obj = json.loads(result.stdout.strip().splitlines()[-1])
    return JavaConsumeResult(
        consumed=obj["consumed"],
        partitions={int(p): v for p, v in obj["partitions"].items()},
        committed={int(p): v for p, v in obj["committed"].items()},
        records=[tuple(r) for r in obj["records"]],
        elapsed_ms=obj["elapsed_ms"],
        stderr=result.stderr,
    )
