"""The daemon's lifetime: open the stores, start the listener (and later the links and admin API),
drain on shutdown.

One nursery for the daemon's lifetime. Components are started with ``nursery.start`` so the daemon
reports ready only when its sockets are bound.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio

from .broker.context import Broker, BrokerIdentity
from .broker.limits import Limits, raise_descriptor_limit
from .broker.server import KafkaListener
from .controlstore import ControlStore
from .groups.coordinator import GroupCoordinator
from .link.manager import LinkManager
from .link.secrets import SecretsKey
from .maintenance import run_maintenance
from .producer_ids import ProducerIdAllocator
from .storage.cleaner import CleanerConfig
from .topics import TopicRegistry
from .txn.coordinator import TransactionCoordinator, TxnConfig

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    listener: tuple[str, int]
    advertised: tuple[str, int] | None
    admin: tuple[str, int]
    node_id: int = 1
    max_request_bytes: int = 100 * 1024 * 1024
    idle_timeout_s: float | None = None  # None: limits.connections_max_idle_ms
    ready_file: Path | None = None
    retention_check_interval_ms: int = 30_000  # Kafka's log.retention.check.interval.ms (its default is 5 min)
    cleaner: CleanerConfig = CleanerConfig()
    limits: Limits = field(default_factory=Limits)
    secrets_key_file: Path | None = None  # seals link secrets in control.db (see linkd/link/secrets.py)
    transactions: TxnConfig = TxnConfig()  # transaction.max.timeout.ms and friends (linkd/txn)


class DataDirInUse(Exception):
    """Another process holds the data dir's lock: opening anything in it would corrupt that daemon's logs."""


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/.lock`` (Kafka's log dirs have the same ``.lock``), held for the
    daemon's lifetime. The kernel drops it when the process dies however it dies (SIGKILL included), so a
    restart after a crash never needs cleanup; the pid in the file is only there for the error message."""

    FILE = ".lock"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.FILE
        # Opened without truncating: a holder's pid must stay readable for the refusal below.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(f"data dir {data_dir} is in use by another linkd (pid {holder})") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _cluster_id(store: ControlStore) -> str:
    store.ensure_schema("CREATE TABLE IF NOT EXISTS cluster (id INTEGER PRIMARY KEY CHECK (id = 0), cluster_id TEXT NOT NULL)")
    rows = store.query("SELECT cluster_id FROM cluster WHERE id = 0")
    if rows:
        return rows[0][0]
    # Kafka's cluster ids are 22-character url-safe base64 uuids.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    with store.transaction() as db:
        db.execute("INSERT INTO cluster (id, cluster_id) VALUES (0, ?)", (cluster_id,))
    return cluster_id


class Daemon:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # Before anything in the data dir is opened: a second daemon must not even read it.
        self.lock = DataDirLock(config.data_dir)
        self.store = ControlStore(config.data_dir / "control.db")
        self.topics = TopicRegistry(self.store, config.data_dir / "logs")
        self.groups = GroupCoordinator(self.store, partition_exists=self._partition_exists)
        self.producer_ids = ProducerIdAllocator(self.store)
        self.secrets_key = SecretsKey.from_file(config.secrets_key_file) if config.secrets_key_file else None
        self.cluster_id = _cluster_id(self.store)
        self.broker: Broker | None = None
        self.listener: KafkaListener | None = None
        self.links: LinkManager | None = None
        self.admin_port: int | None = None

    def _partition_exists(self, topic: str, partition: int) -> bool:
        t = self.topics.get(topic)
        return t is not None and 0 <= partition < len(t.logs)

    def _apply_limits(self) -> Limits:
        """Raise the open-file limit, then derive the partition budget from it (linkd.broker.limits)."""
        descriptors, _ = raise_descriptor_limit()
        limits = replace(self.config.limits, max_request_bytes=self.config.max_request_bytes).validated()
        limits = limits.with_descriptor_defaults(descriptors)
        self.topics.max_partitions = limits.max_partitions
        self.topics.max_partitions_per_topic = limits.max_partitions_per_topic
        log.info("limits: %d descriptors, at most %s partitions (%s per topic, %d per request), max.connections %s",
                 descriptors, limits.max_partitions, limits.max_partitions_per_topic or limits.max_partitions,
                 limits.max_partitions_per_request, limits.max_connections or "unbounded")
        return limits

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        limits = self._apply_limits()
        self.topics.load()
        self.transactions = TransactionCoordinator(self.store, self.topics, self.producer_ids, self.groups,
                                                   notify=lambda: self.broker.notifier.notify() if self.broker else None,
                                                   config=self.config.transactions)
        # Before serving: a transaction a crash left in PrepareCommit/PrepareAbort is completed first.
        self.transactions.recover()
        try:
            async with trio.open_nursery() as nursery:
                host, port = self.config.listener
                # The advertised port is only known after binding when the listener asks for port 0.
                identity_port = self.config.advertised[1] if self.config.advertised else port
                identity_host = self.config.advertised[0] if self.config.advertised else host
                self.broker = Broker(
                    identity=BrokerIdentity(self.config.node_id, identity_host, identity_port, self.cluster_id),
                    topics=self.topics,
                    groups=self.groups,
                    producer_ids=self.producer_ids,
                    max_request_bytes=self.config.max_request_bytes,
                    limits=limits,
                    transactions=self.transactions,
                )
                await nursery.start(self.groups.run)
                await nursery.start(self.transactions.run)
                await nursery.start(partial(run_maintenance, self.topics, cleaner=self.config.cleaner,
                                            retention_interval_s=self.config.retention_check_interval_ms / 1000))
                self.listener = KafkaListener(self.broker, self.config.idle_timeout_s, limits)
                bound = await nursery.start(self.listener.serve, host, port)
                if not self.config.advertised and port == 0:
                    self.broker.identity = BrokerIdentity(self.config.node_id, identity_host, bound, self.cluster_id)
                self.links = LinkManager(self.store, self.topics, self.producer_ids, self.broker.notifier.notify, self.groups, secrets_key=self.secrets_key)
                self.broker.hooks.append(self.links)
                await nursery.start(self.links.run)
                self.admin_port = await nursery.start(self._serve_admin)
                log.info("linkd node %d ready (cluster %s, data in %s)", self.config.node_id, self.cluster_id, self.config.data_dir)
                if self.config.ready_file:
                    # Written last and atomically: supervisors and tests that bind port 0 learn the real ports.
                    tmp = self.config.ready_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"kafka_port": bound, "admin_port": self.admin_port, "pid": os.getpid(), "cluster_id": self.cluster_id}))
                    os.replace(tmp, self.config.ready_file)
                task_status.started(self)
        finally:
            self.close()  # synchronous: no checkpoint in it for a cancellation to interrupt

    async def _serve_admin(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve

        from .admin.api import build_app
        from .admin.metrics import Metrics

        host, port = self.config.admin
        config = Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("linkd.admin.http")
        app = build_app(self.links, self.cluster_id, Metrics(self))

        class _Status:
            """Translate hypercorn's bound URLs into the port number our caller waits for."""

            def started(self, binds=None):
                bound = int(binds[0].rsplit(":", 1)[1]) if binds else port
                log.info("admin API on %s:%d", host, bound)
                task_status.started(bound)

        await hypercorn_serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=_Status())

    def close(self) -> None:
        """Flush every log and write clean-shutdown markers."""
        try:
            self.topics.close()
            self.store.close()
        finally:
            self.lock.release()


async def serve(config: ServeConfig) -> None:
    daemon = Daemon(config)  # outside the nursery: DataDirInUse reaches the caller as itself
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_signal)
        await nursery.start(daemon.run)
