"""Python side of the Kafka Streams exactly-once application (tests/peers/streamsapp/EosCountApp.java).

kafka-streams (with rocksdbjni and kafka-clients) comes from Maven Central through
``tests/peers/streams-pom.xml`` into ``<cache>/kafka-<version>/streams-libs``; the program is compiled
against it into ``<cache>/kafka-<version>/streamsapp/<source hash>/`` once per source version.

    run_streams_app(bootstrap, app_id, input, output, state_dir, expected) -> StreamsRun
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .java import CLIENT_JVM_OPTS, JavaClientError, compile_once
from .kafka import _resolve, kafka_home

SOURCE = Path(__file__).with_name("streamsapp") / "EosCountApp.java"
STREAMS_POM = Path(__file__).with_name("streams-pom.xml")
MAIN_CLASS = "EosCountApp"



def ensure_streams_libs() -> Path:
    return _resolve(None, kafka_home() / "streams-libs", STREAMS_POM)


def ensure_compiled() -> Path:
    return compile_once("the Kafka Streams application", "streamsapp", [SOURCE], lambda: f"{ensure_streams_libs()}/*")


@dataclass(frozen=True)
class StreamsRun:
    records: list[tuple[int, str | None, str | None]]  # (partition, key, value) in read order
    summary: dict
    stderr: str

    def by_key(self) -> dict[str | None, list[str | None]]:
        """Each key's output values in read order (deterministic for a key, whatever the interleaving)."""
        out: dict[str | None, list[str | None]] = {}
        for _partition, key, value in self.records:
            out.setdefault(key, []).append(value)
        return out


def run_streams_app(bootstrap: str, app_id: str, input_topic: str, output_topic: str, state_dir: Path,
                    expected: int, timeout_ms: int = 90_000) -> StreamsRun:
    """One JVM: the application runs until a read_committed reader saw ``expected`` output records."""
    classes = ensure_compiled()
    libs = ensure_streams_libs()
    argv = [
        shutil.which("java") or "java", *CLIENT_JVM_OPTS,
        f"-Dlog4j2.configurationFile={classes / 'log4j2.properties'}",
        "-cp", f"{classes}:{libs}/*", MAIN_CLASS,
        bootstrap, app_id, input_topic, output_topic, str(state_dir), str(expected), str(timeout_ms),
    ]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_ms / 1000 + 90)
    print(f"Streams application {app_id} against {bootstrap}: {time.monotonic() - started:.1f}s")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = next((obj["summary"] for obj in lines if "summary" in obj), {})
    records = [(obj["partition"], obj["key"], obj["value"]) for obj in lines if "summary" not in obj]
    if result.returncode != 0:
        raise JavaClientError(f"Streams application exited {result.returncode} ({summary}):\n{result.stderr[-6000:]}")
    return StreamsRun(records, summary, result.stderr)
