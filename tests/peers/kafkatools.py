"""Apache Kafka's command-line tools (kafka-topics, kafka-configs, kafka-consumer-groups, ...) run in one JVM.

Each ``bin/kafka-*.sh`` script only starts a main class; ``tests/peers/kafkatools/ToolRunner.java`` runs
many of those main classes one after another in a single JVM (a JVM start costs seconds on a shared
2-core machine), turning each tool's ``Exit.exit`` into its exit code and capturing its stdout and stderr.

    run_tools([Tool("kafka-topics", "--bootstrap-server", b, "--list"), ...]) -> [ToolResult, ...]
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .java import CLIENT_JVM_OPTS, compile_once
from .kafka import ensure_kafka_libs, ensure_tools_libs

SOURCES = sorted(Path(__file__).with_name("kafkatools").glob("*.java"))  # ToolRunner, KafkaFiles

# The main class behind each bin/ script of Kafka 4.1.
MAIN_CLASSES = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
    "kafka-leader-election": "org.apache.kafka.tools.LeaderElectionCommand",
    "kafka-dump-log": "kafka.tools.DumpLogSegments",
    "kafka-files": "KafkaFiles",  # ours: Kafka's readers of checkpoint, partition.metadata and .snapshot files
}

_LOG4J2 = """\
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.follow = true
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %c{1} %m%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = STDERR
"""


@dataclass(frozen=True)
class Tool:
    script: str
    args: tuple[str, ...]

    def __init__(self, script: str, *args: str) -> None:
        object.__setattr__(self, "script", script)
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class ToolResult:
    tool: Tool
    exit_code: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]


def _classpath() -> str:
    # The tools' jars, then the broker's (kafka_2.13 holds ConfigCommand and DumpLogSegments).
    return f"{ensure_tools_libs()}/*:{ensure_kafka_libs()}/*"


def ensure_compiled() -> Path:
    return compile_once("Kafka's tools", "toolrunner", list(SOURCES), _classpath, log4j2=_LOG4J2)


def run_tools(tools: list[Tool], timeout: float = 240.0) -> list[ToolResult]:
    """Run ``tools`` in order in one JVM; one result per tool."""
    classes = ensure_compiled()
    for tool in tools:
        if any("\t" in a or "\n" in a for a in tool.args):
            raise ValueError(f"tool arguments cannot hold tabs or newlines: {tool}")
    script = "".join("\t".join((MAIN_CLASSES[t.script], *t.args)) + "\n" for t in tools)
    argv = [shutil.which("java") or "java", *CLIENT_JVM_OPTS, f"-Dlog4j2.configurationFile={classes / 'log4j2.properties'}",
            "-cp", f"{classes}:{_classpath()}", "ToolRunner"]
    done = subprocess.run(argv, input=script.encode(), capture_output=True, timeout=timeout)
    data = done.stdout
    results: list[ToolResult] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        marker, code, out_len, err_len = data[pos:end].decode().split(" ")
        assert marker == "@@@", data[pos : pos + 200]
        pos = end + 1
        out = data[pos : pos + int(out_len)].decode()
        pos += int(out_len)
        err = data[pos : pos + int(err_len)].decode()
        pos += int(err_len)
        results.append(ToolResult(tools[len(results)], int(code), out, err))
    if len(results) != len(tools):
        raise RuntimeError(f"the tool runner exited {done.returncode} after {len(results)} of {len(tools)} tools:\n"
                           f"{done.stderr.decode()[-4000:]}")
    return results
