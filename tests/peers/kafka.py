"""Apache Kafka 4.1 as a real source cluster: one single-node KRaft broker (broker + controller) per session.

Jars come from Maven Central through ``tests/peers/pom.xml`` and are copied once into
``${LINKD_PEERS_CACHE:-~/.cache/linkd-peers}/kafka-<version>/libs``; a stamp file holding the pom's hash
marks a complete copy, so later runs (and offline machines) reuse it without calling Maven.

    with KafkaBroker() as broker:          # formats the log dir, starts the JVM, waits for Metadata
        broker.create_topic("t", partitions=3)
        ... broker.bootstrap ...
        broker.restart()                   # graceful; data survives
        broker.kill(); broker.start()      # SIGKILL; data survives up to what the OS had
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from . import (
    LOOPBACK,
    PeerStartError,
    PeerUnavailable,
    cache_root,
    file_lock,
    free_port,
    kill,
    log_tail,
    rawclient,
    register_for_exit,
    spawn,
    terminate,
    wait_until,
)

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("pom.xml")
TOOLS_POM = Path(__file__).with_name("tools-pom.xml")

# A 2-core machine shared by several engineers: a small heap, the serial collector, few threads.
DEFAULT_JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
# Brokers the test suite starts also stop the JIT at C1: C2 compiles the broker's start-up code for about
# half of a start's CPU time (~10 s -> ~5-6 s per start here), which a test broker serving a few megabytes
# never earns back. Same broker, same behaviour; benchmarks keep DEFAULT_JVM_OPTS (they measure throughput).
TEST_JVM_OPTS = (*DEFAULT_JVM_OPTS, "-XX:TieredStopAtLevel=1")
_default_jvm_opts = DEFAULT_JVM_OPTS


def use_test_jvm_opts() -> None:
    """Make TEST_JVM_OPTS the default of every KafkaBroker (and SecuredKafkaBroker) made from now on in
    this process; tests/conftest.py calls it, so benchmark scripts are unaffected."""
    global _default_jvm_opts
    _default_jvm_opts = TEST_JVM_OPTS


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def _resolve(profile: str | None, target: Path, pom: Path = POM) -> Path:
    """Copy the jars of ``pom`` (plus ``profile``) into ``target`` once; reuse them afterwards."""
    stamp = target / ".complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return target  # another session resolved it while we waited for the lock
        mvn = shutil.which("mvn")
        if mvn is None:
            raise PeerUnavailable(
                f"Maven ('mvn') is not on PATH and {target} has no resolved Kafka jars; install Maven "
                f"or copy a resolved cache into {cache_root()} (LINKD_PEERS_CACHE)"
            )
        if shutil.which("java") is None:
            raise PeerUnavailable("no 'java' on PATH: the Apache Kafka peer needs a JDK (17+)")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        argv = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        if profile:
            argv.insert(3, f"-P{profile}")  # before -f, which takes the next word as its value
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-3000:]
            raise PeerUnavailable(f"Maven could not resolve {pom.name} ({' '.join(argv)}), exit {result.returncode}:\n{output}")
        # Swap in atomically so a reader never sees half a classpath.
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        stamp.write_text(digest + "\n")
        (target / ".resolved-in").write_text(f"{time.monotonic() - started:.1f}s\n")
        return target


def kafka_home() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}"


def ensure_kafka_libs() -> Path:
    """Directory of the broker + kafka-clients + log4j2 jars (``java -cp '<dir>/*'``)."""
    return _resolve(None, kafka_home() / "libs")


def ensure_mm2_libs() -> Path:
    """Directory of the jars MirrorMaker 2 needs (broker jars plus connect-mirror/connect-runtime)."""
    return _resolve("mm2", kafka_home() / "mm2-libs")


def ensure_tools_libs() -> Path:
    """Directory of the jars of Kafka's command-line tools (org.apache.kafka:kafka-tools and its dependencies)."""
    return _resolve(None, kafka_home() / "tools-libs", TOOLS_POM)


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise PeerUnavailable("no 'java' on PATH: the Apache Kafka peer needs a JDK (17+)")
    return java


def new_cluster_id() -> str:
    """Kafka cluster ids are 16 random bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaBroker:
    """A single-node KRaft Apache Kafka broker on free loopback ports, stopped by itself.

    ``extra_config`` is merged into server.properties (e.g. ``{"log.retention.ms": "1000"}``).
    Ports are chosen once and kept across restarts so clients and links reconnect to the same address.
    """

    def __init__(self, extra_config: dict[str, str] | None = None, jvm_opts: tuple[str, ...] | None = None, start_timeout: float = 90.0) -> None:
        self.extra_config = dict(extra_config or {})
        self.jvm_opts = tuple(_default_jvm_opts if jvm_opts is None else jvm_opts)
        self.start_timeout = start_timeout
        self.libs: Path | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="linkd-kafka-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.stdout_path = self.workdir / "stdout.log"
        self.cluster_id = new_cluster_id()
        self.port = 0
        self.controller_port = 0
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None  # of the latest start(), for reports
        self._formatted = False
        self._admin = None
        register_for_exit(self)

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        if self.running:
            return self
        self.libs = self.libs or ensure_kafka_libs()
        java_binary()
        started = time.monotonic()
        if not self._formatted:
            # A port picked by free_port() can be taken before the JVM binds it; only the very first start
            # may pick new ports (afterwards the address is part of the broker's identity).
            for attempt in range(3):
                self.port, self.controller_port = free_port(), free_port()
                self._write_config()
                self._format()
                try:
                    self._launch_and_wait()
                    break
                except PeerStartError:
                    if attempt == 2 or "Address already in use" not in log_tail(self.stdout_path, 200) + log_tail(self.log_path, 200):
                        raise
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    self._formatted = False
        else:
            self._launch_and_wait()
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful shutdown (SIGTERM: Kafka flushes and closes its logs cleanly)."""
        self._admin = None
        status = terminate(self.process, timeout)
        self.process = None
        return status

    def kill(self) -> int | None:
        """SIGKILL: no flush, no clean shutdown marker; the next start runs log recovery."""
        self._admin = None
        status = kill(self.process)
        self.process = None
        return status

    def restart(self) -> KafkaBroker:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the working directory, unless LINKD_KEEP_PEERS is set (for post-mortems).

        The data is deleted anyway, so the JVM is killed rather than shut down gracefully (a controlled
        shutdown flushes and checkpoints for seconds); with LINKD_KEEP_PEERS it stops gracefully."""
        if os.environ.get("LINKD_KEEP_PEERS"):
            self.stop()
            return
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- setup -------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # Few internal partitions: each one costs startup time and threads on a 2-core box.
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the controller refuses the broker's new registration until the old session
            # expires (9 s by default); a shorter session keeps kill-and-restart tests quick.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),  # default 128 MiB would not fit the heap
            # Retention tests need the cleaner to look often. Tests stamp records in 2023 for determinism, older
            # than the default 7-day retention: that check would roll and delete them behind the test's back
            # (from 30 s after start-up on), so time retention is off unless a test or topic asks for it.
            "log.retention.check.interval.ms": "1000",
            "log.retention.ms": "-1",
        }
        config.update(self.extra_config)
        (self.workdir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path))

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        return [
            java_binary(),
            *self.jvm_opts,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _format(self) -> None:
        argv = self._java_argv("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(self.workdir / "server.properties"))
        # The storage tool needs no big heap; its defaults start faster than the broker's flags would.
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PeerStartError(f"kafka-storage format failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        self._formatted = True

    def _launch_and_wait(self) -> None:
        self.process = spawn(self._java_argv("kafka.Kafka", str(self.workdir / "server.properties")), self.stdout_path, cwd=self.workdir)
        try:
            wait_until(self._ready, self.start_timeout, interval=0.2, what=f"Kafka broker on {self.bootstrap}")
        except (TimeoutError, PeerStartError) as exc:
            status = kill(self.process)
            self.process = None
            raise PeerStartError(
                f"Kafka broker did not become ready ({exc}; exit status {status}).\n"
                f"--- {self.stdout_path} ---\n{log_tail(self.stdout_path)}\n--- {self.log_path} ---\n{log_tail(self.log_path)}"
            ) from exc

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise PeerStartError("the JVM exited during startup")
        try:
            meta = rawclient.metadata(self.bootstrap, timeout=2.0)
        except OSError:
            return False
        except Exception:
            return False  # the socket server accepts before the broker has caught up with the metadata log
        # Registered and unfenced: the broker lists itself and the controller answers.
        return any(b.node_id == 1 for b in meta.brokers) and meta.controller_id >= 0

    # -- admin helpers -----------------------------------------------------------------------------

    def admin(self):
        """A confluent-kafka AdminClient for this broker (cached until the next stop)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        return self._admin

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None, timeout: float = 30.0) -> str:
        """Create ``name`` and wait until every partition has a leader that serves ListOffsets."""
        from confluent_kafka.admin import NewTopic

        futures = self.admin().create_topics([NewTopic(name, partitions, 1, config=dict(config or {}))], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout)
        for partition in range(partitions):
            wait_until(lambda p=partition: self._partition_ready(name, p), timeout, interval=0.1, what=f"leader for {name}-{partition}")
        return name

    def _partition_ready(self, topic: str, partition: int) -> bool:
        try:
            rawclient.list_offsets(self.bootstrap, topic, partition, timeout=2.0)
            return True
        except (rawclient.RawClientError, OSError):
            return False

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        self.admin().delete_topics([name], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)

    def delete_records(self, topic: str, partition: int, before_offset: int, timeout: float = 30.0) -> int:
        """Move the log start offset to ``before_offset`` (AdminClient.deleteRecords); returns the new low watermark."""
        from confluent_kafka import TopicPartition

        futures = self.admin().delete_records([TopicPartition(topic, partition, before_offset)], request_timeout=timeout, operation_timeout=timeout)
        (future,) = futures.values()
        result = future.result(timeout)
        return getattr(result, "low_watermark", before_offset)

    def list_offsets(self, topic: str, partition: int = 0) -> tuple[int, int]:
        return rawclient.list_offsets(self.bootstrap, topic, partition)

    def logs(self, lines: int = 80) -> str:
        return f"--- {self.stdout_path} ---\n{log_tail(self.stdout_path, lines)}\n--- {self.log_path} ---\n{log_tail(self.log_path, lines)}"

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap}, running={self.running}, workdir={self.workdir})"
