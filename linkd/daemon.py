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
from typing import TYPE_CHECKING

import trio

from . import gcpolicy
from .broker.acl import StandardAuthorizer
from .broker.context import Broker, BrokerIdentity
from .broker.limits import Limits, raise_descriptor_limit
from .broker.listeners import ListenerSpec, SecurityProperties
from .broker.server import KafkaListener
from .broker.users import UserStore
from .controlstore import ControlStore
from .groups.coordinator import GroupCoordinator
from .link.manager import LinkManager
from .link.secrets import SecretsKey
from .maintenance import run_maintenance
from .producer_ids import ProducerIdAllocator
from .storage.cleaner import CleanerConfig
from .topics import TopicRegistry
from .txn.coordinator import TransactionCoordinator, TxnConfig

if TYPE_CHECKING:
    from .admin.security import Authenticator  # for annotations only: the daemon loads the admin API lazily

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class AdminTls:
    """TLS for the admin API; ``ca`` also turns on mTLS (a client certificate signed by it is required)."""

    cert: Path
    key: Path
    ca: Path | None = None


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
    admin_tls: AdminTls | None = None
    admin_basic_auth_file: Path | None = None
    admin_allowed_hosts: tuple[str, ...] = ()
    # (username, password) -> Principal | None: how the admin API checks HTTP Basic credentials. Set by the
    # embedding code (linkd's own users store); otherwise built from admin_basic_auth_file.
    admin_authenticator: Authenticator | None = None
    admin_auth: str | None = None  # "users": HTTP Basic against linkd's SCRAM users, ACLs on CLUSTER decide
    retention_check_interval_ms: int = 30_000  # Kafka's log.retention.check.interval.ms (its default is 5 min)
    cleaner: CleanerConfig = CleanerConfig()
    limits: Limits = field(default_factory=Limits)
    secrets_key_file: Path | None = None  # seals link secrets in control.db (see linkd/link/secrets.py)
    authorizer: str | None = None  # "standard": Kafka's ACL model (linkd/broker/acl.py); None: allow everything
    super_users: tuple[str, ...] = ()
    allow_everyone_if_no_acl_found: bool = False
    # Named listeners (linkd.broker.listeners); empty: one PLAINTEXT listener at ``listener``/``advertised``.
    listeners: tuple[ListenerSpec, ...] = ()
    security: SecurityProperties = field(default_factory=SecurityProperties)

    def listener_specs(self) -> list[ListenerSpec]:
        if self.listeners:
            return list(self.listeners)
        adv_host, adv_port = self.advertised if self.advertised else (None, None)
        return [ListenerSpec("PLAINTEXT", self.listener[0], self.listener[1], "PLAINTEXT", adv_host, adv_port)]
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
        self.users = UserStore(self.store)
        self.secrets_key = SecretsKey.from_file(config.secrets_key_file) if config.secrets_key_file else None
        self.cluster_id = _cluster_id(self.store)
        self.authorizer = (
            StandardAuthorizer(self.store, config.super_users, config.allow_everyone_if_no_acl_found) if config.authorizer == "standard" else None
        )
        if self.authorizer is not None and not config.super_users and not self.authorizer.acls() and not config.allow_everyone_if_no_acl_found:
            log.warning("authorizer on with no ACL and no super user: every request is denied and nobody may add ACLs; "
                        "restart with --super-users (e.g. 'User:admin') to manage them")
        self.broker: Broker | None = None
        self.listener: KafkaListener | None = None
        self.links: LinkManager | None = None
        self.admin_port: int | None = None
        self.ready = False  # listener bound and links loaded: what /readyz and /health report

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
        from .broker.endpoints import build_endpoints, warn_if_exposed

        specs = self.config.listener_specs()
        endpoints = build_endpoints(specs, self.config.security)  # before anything binds: config errors first
        limits = self._apply_limits()
        self.topics.load()
        self.transactions = TransactionCoordinator(self.store, self.topics, self.producer_ids, self.groups,
                                                   notify=lambda: self.broker.notifier.notify() if self.broker else None,
                                                   config=self.config.transactions)
        # Before serving: a transaction a crash left in PrepareCommit/PrepareAbort is completed first.
        self.transactions.recover()
        gcpolicy.settle("start: every partition loaded")
        try:
            async with trio.open_nursery() as nursery:
                first = specs[0]
                # The advertised port is only known after binding when the listener asks for port 0.
                identity_host = first.advertised_host or first.host
                identity_port = first.advertised_port if first.advertised_port is not None else first.port
                self.broker = Broker(
                    identity=BrokerIdentity(self.config.node_id, identity_host, identity_port, self.cluster_id),
                    topics=self.topics,
                    groups=self.groups,
                    producer_ids=self.producer_ids,
                    max_request_bytes=self.config.max_request_bytes,
                    limits=limits,
                    users=self.users,
                    authorizer=self.authorizer,
                    transactions=self.transactions,
                )
                await nursery.start(self.groups.run)
                await nursery.start(self.transactions.run)
                await nursery.start(partial(run_maintenance, self.topics, cleaner=self.config.cleaner,
                                            retention_interval_s=self.config.retention_check_interval_ms / 1000))
                self.listener = KafkaListener(self.broker, self.config.idle_timeout_s, limits)
                ports: dict[str, int] = {}
                for spec, endpoint in zip(specs, endpoints, strict=True):
                    warn_if_exposed(spec, self.config.security.for_listener(spec.name))
                    ports[spec.name] = await nursery.start(self.listener.serve, spec.host, spec.port, endpoint)
                    adv_port = spec.advertised_port or ports[spec.name]  # None or 0: the bound port
                    self.broker.advertised[spec.name] = (spec.advertised_host or spec.host, adv_port)
                bound = ports[first.name]
                if first.advertised_port in (None, 0):
                    self.broker.identity = BrokerIdentity(self.config.node_id, identity_host, bound, self.cluster_id)
                self.links = LinkManager(self.store, self.topics, self.producer_ids, self.broker.notifier.notify, self.groups,
                                         secrets_key=self.secrets_key, authorizer=self.authorizer)
                self.broker.hooks.append(self.links)
                await nursery.start(self.links.run)
                self.admin_port = await nursery.start(self._serve_admin)
                log.info("linkd node %d ready (cluster %s, data in %s)", self.config.node_id, self.cluster_id, self.config.data_dir)
                if self.config.ready_file:
                    # Written last and atomically: supervisors and tests that bind port 0 learn the real ports.
                    tmp = self.config.ready_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"kafka_port": bound, "admin_port": self.admin_port, "pid": os.getpid(), "cluster_id": self.cluster_id, "listeners": ports}))
                    os.replace(tmp, self.config.ready_file)
                self.ready = True
                from . import sdnotify

                sdnotify.notify("READY=1", f"STATUS=serving Kafka on port {bound}, admin API on port {self.admin_port}")
                task_status.started(self)
        finally:
            self.ready = False
            self.close()  # synchronous: no checkpoint in it for a cancellation to interrupt

    async def _serve_admin(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve

        from .admin.api import build_app
        from .admin.metrics import Metrics
        from .admin.security import AdminGuard

        host, port = self.config.admin
        config = Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("linkd.admin.http")
        security = self._admin_security()
        tls = self.config.admin_tls
        if tls is not None:
            config.certfile, config.keyfile = str(tls.cert), str(tls.key)
            if tls.ca is not None:
                import ssl

                config.ca_certs = str(tls.ca)
                config.verify_mode = ssl.CERT_REQUIRED
        warning = security.exposure_warning()
        if warning:
            log.warning("%s", warning)
        assert self.links is not None  # run() creates the link manager before it starts the admin API
        app = AdminGuard(build_app(self.links, self.cluster_id, Metrics(self)), security, ready=lambda: self.ready)

        class _Status:
            """Translate hypercorn's bound URLs into the port number our caller waits for."""

            def started(self, binds=None):
                bound = int(binds[0].rsplit(":", 1)[1]) if binds else port
                log.info("admin API on %s:%d", host, bound)
                task_status.started(bound)

        # AdminGuard is typed with plain-dict ASGI aliases (linkd/admin/security.py); hypercorn's signature wants its
        # TypedDict events, which a dict-typed app can never match. Same protocol at run time.
        await hypercorn_serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=_Status())  # type: ignore[arg-type]

    def _admin_security(self):
        from .admin.api import MAX_BODY
        from .admin.security import AdminSecurity, BasicAuthFile, UsersAuthenticator
        from .broker.session import Session
        from .broker.users import CLUSTER_RESOURCE

        authenticate = self.config.admin_authenticator
        authorize = None
        if self.config.admin_auth == "users":
            authorizer = self.authorizer
            if authorizer is None:
                raise ValueError("admin_auth 'users' needs an authorizer (--authorizer standard): nothing would decide who may do what")
            authenticate = UsersAuthenticator(self.users)

            def authorize(principal, operation: str, host: str) -> bool:
                return authorizer.authorize(Session(host=host, principal=f"User:{principal.name}"), operation, "CLUSTER", CLUSTER_RESOURCE)
        if authenticate is None and self.config.admin_basic_auth_file is not None:
            authenticate = BasicAuthFile.load(self.config.admin_basic_auth_file)
        tls = self.config.admin_tls
        return AdminSecurity(
            bound_host=self.config.admin[0],
            allowed_hosts=frozenset(self.config.admin_allowed_hosts),
            authenticate=authenticate,
            mtls=tls is not None and tls.ca is not None,
            max_body=MAX_BODY,
            authorize=authorize,
        )

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
                    daemon.ready = False
                    from . import sdnotify

                    sdnotify.notify("STOPPING=1")
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_signal)
        await nursery.start(daemon.run)
    # Reached only when every task ended without an error: logs flushed, stores closed, lock released.
    log.info("linkd node %d stopped cleanly", config.node_id)
