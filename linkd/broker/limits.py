"""Limits that keep one bad client from taking the daemon down (Kafka's names where Kafka has one).

Theory of operation:

* **Descriptors.** At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit. The Kafka listener
  refuses a new connection when fewer than ``fd_headroom`` descriptors would stay free, so the admin API,
  log segments and the control store can always open files however many clients connect.
* **Connections.** ``max.connections`` (all Kafka connections) and ``max.connections.per.ip`` (with
  ``max.connections.per.ip.overrides``) are checked as a connection is accepted; one over a limit is
  closed at once and counted. ``max.connection.creation.rate`` bounds accepts per second by delaying the
  next accept (the kernel's backlog holds the rest), as Kafka's acceptor throttles.
* **Time.** ``connections.max.idle.ms`` closes a connection with no request under way for that long;
  ``request.arrival.timeout.ms`` closes one whose request has not arrived whole that long after its first
  byte, so bytes trickling in cannot hold a connection (and its buffers) forever.
* **Memory.** ``queued.max.request.bytes`` bounds the request bytes being received or handled across all
  connections. A frame's size is known from its 4-byte prefix; its bytes are reserved from the budget
  before its buffer is allocated, and a frame that does not fit waits (its connection is not read
  meanwhile, so TCP pushes back on the sender). Frames above ``SMALL_REQUEST_BYTES`` may not use the last
  ``SMALL_REQUEST_RESERVE`` bytes of the budget, so large frames waiting never delay ordinary requests.
* **Partitions.** ``max.partitions`` (the whole daemon), ``max.partitions.per.topic`` and
  ``max.partitions.per.request`` are checked before anything touches the disk (see ``TopicRegistry``).

The default partition budget follows from the descriptor limit: every partition holds at least one open
segment file, so a daemon that accepted more partitions than it has descriptors could not restart.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import trio

log = logging.getLogger(__name__)

# Kafka's own defaults where it has one.
DEFAULT_IDLE_MS = 600_000
DEFAULT_REQUEST_ARRIVAL_TIMEOUT_MS = 60_000
DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024
DEFAULT_QUEUED_MAX_REQUEST_BYTES = 256 * 1024 * 1024
DEFAULT_FD_HEADROOM = 128
# Kafka's controller refuses one operation that would write more than 10,000 records
# (QuorumController's MAX_RECORDS_PER_USER_OP); a partition is one record.
DEFAULT_MAX_PARTITIONS_PER_REQUEST = 10_000
# A descriptor per partition for its active segment, plus room for rolled segments and connections.
DESCRIPTORS_PER_PARTITION = 4

SMALL_REQUEST_BYTES = 1024 * 1024
SMALL_REQUEST_RESERVE = 16 * 1024 * 1024


class LimitConfigError(ValueError):
    """A limit given on the command line that cannot work; the message names it."""


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("raised the open-file limit from %d to %d", soft, hard)
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    elif hard == resource.RLIM_INFINITY and soft == resource.RLIM_INFINITY:
        soft = hard = 1 << 20
    return soft, hard


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_descriptors() -> int:
    """How many descriptors this process holds now (Linux: /proc; elsewhere unknown -> 0)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


def parse_ip_overrides(value: str) -> dict[str, int]:
    """Kafka's ``max.connections.per.ip.overrides``: ``host:count,host:count`` (host an IP address)."""
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        host, sep, count = item.rpartition(":")
        if not sep or not host or not count.isdigit():
            raise LimitConfigError(f"max.connections.per.ip.overrides: {item!r} is not HOST:COUNT")
        try:
            host = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError as exc:
            raise LimitConfigError(f"max.connections.per.ip.overrides: {host!r} is not an IP address") from exc
        out[host] = int(count)
    return out


@dataclass(frozen=True)
class Limits:
    max_connections: int | None = None  # None: bounded only by descriptors
    max_connections_per_ip: int | None = None
    max_connections_per_ip_overrides: dict[str, int] = field(default_factory=dict)
    max_connection_creation_rate: float | None = None  # accepts per second
    connections_max_idle_ms: int = DEFAULT_IDLE_MS
    request_arrival_timeout_ms: int = DEFAULT_REQUEST_ARRIVAL_TIMEOUT_MS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # socket.request.max.bytes
    queued_max_request_bytes: int = DEFAULT_QUEUED_MAX_REQUEST_BYTES
    fd_headroom: int = DEFAULT_FD_HEADROOM
    max_partitions: int | None = None  # None: derived from the descriptor limit at start
    max_partitions_per_topic: int | None = None  # None: max_partitions
    max_partitions_per_request: int = DEFAULT_MAX_PARTITIONS_PER_REQUEST

    def validated(self) -> Limits:
        def positive(name: str, value) -> None:
            if value is not None and value <= 0:
                raise LimitConfigError(f"{name} must be positive, got {value}")

        positive("max.connections", self.max_connections)
        positive("max.connections.per.ip", self.max_connections_per_ip)
        positive("max.connection.creation.rate", self.max_connection_creation_rate)
        positive("connections.max.idle.ms", self.connections_max_idle_ms)
        positive("request.arrival.timeout.ms", self.request_arrival_timeout_ms)
        positive("socket.request.max.bytes", self.max_request_bytes)
        positive("max.partitions", self.max_partitions)
        positive("max.partitions.per.topic", self.max_partitions_per_topic)
        positive("max.partitions.per.request", self.max_partitions_per_request)
        if self.fd_headroom < 0:
            raise LimitConfigError(f"the descriptor headroom must not be negative, got {self.fd_headroom}")
        if self.queued_max_request_bytes < self.max_request_bytes:
            raise LimitConfigError(
                f"queued.max.request.bytes ({self.queued_max_request_bytes}) must be at least socket.request.max.bytes "
                f"({self.max_request_bytes}), or a largest request could never be read"
            )
        return self

    def with_descriptor_defaults(self, descriptors: int) -> Limits:
        """Fill the partition budget from the descriptor limit (after raising it)."""
        if self.max_partitions is not None:
            return self
        return replace(self, max_partitions=max(1, (descriptors - self.fd_headroom) // DESCRIPTORS_PER_PARTITION))

    def per_ip_limit(self, host: str) -> int | None:
        return self.max_connections_per_ip_overrides.get(host, self.max_connections_per_ip)


class ByteBudget:
    """``queued.max.request.bytes``: request bytes reserved across all connections.

    Not FIFO on purpose: a small request is granted as soon as it fits, so it never queues behind a large
    frame that is waiting; large frames leave ``reserve`` bytes for small ones (see the module docstring).
    """

    def __init__(self, capacity: int, small: int = SMALL_REQUEST_BYTES, reserve: int = SMALL_REQUEST_RESERVE) -> None:
        self.capacity = capacity
        self.small = small
        self.reserve = min(reserve, capacity // 4)
        self.in_use = 0
        self.peak = 0
        self.waits = 0
        self._changed = trio.Event()

    def _fits(self, n: int) -> bool:
        limit = self.capacity if n <= self.small else self.capacity - self.reserve
        return self.in_use + n <= limit or self.in_use == 0

    async def acquire(self, n: int) -> int:
        """Reserve ``n`` bytes (waiting until they fit); returns what to hand back to ``release``."""
        n = min(n, self.capacity)
        if not self._fits(n):
            self.waits += 1
            while not self._fits(n):
                await self._changed.wait()
        self.in_use += n
        self.peak = max(self.peak, self.in_use)
        return n

    def release(self, n: int) -> None:
        self.in_use -= n
        self._changed.set()
        self._changed = trio.Event()


class AcceptRate:
    """A sliding one-second window of accepts: ``delay()`` says how long to wait before the next one."""

    def __init__(self, per_second: float | None) -> None:
        self.per_second = per_second
        self._times: deque[float] = deque()

    def delay(self, now: float) -> float:
        if not self.per_second:
            return 0.0
        while self._times and now - self._times[0] >= 1.0:
            self._times.popleft()
        if len(self._times) < self.per_second:
            self._times.append(now)
            return 0.0
        return 1.0 - (now - self._times[0])


# -- `linkd serve` flags -------------------------------------------------------------------------------

# flag -> (Limits field, Kafka/linkd property name, type, help)
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--max-connections", "max_connections", int, "max.connections: Kafka connections at once (default: bounded by descriptors only)"),
    ("--max-connections-per-ip", "max_connections_per_ip", int, "max.connections.per.ip (default: unlimited)"),
    ("--max-connections-per-ip-overrides", "max_connections_per_ip_overrides", str, "max.connections.per.ip.overrides: IP:COUNT[,IP:COUNT...]"),
    ("--max-connection-creation-rate", "max_connection_creation_rate", float, "max.connection.creation.rate: accepts per second (default: unlimited)"),
    ("--connections-max-idle-ms", "connections_max_idle_ms", int, f"connections.max.idle.ms (default {DEFAULT_IDLE_MS})"),
    ("--request-arrival-timeout-ms", "request_arrival_timeout_ms", int, f"a request must arrive whole this long after its first byte (default {DEFAULT_REQUEST_ARRIVAL_TIMEOUT_MS})"),
    ("--queued-max-request-bytes", "queued_max_request_bytes", int, f"queued.max.request.bytes: request bytes received or in handling, all connections (default {DEFAULT_QUEUED_MAX_REQUEST_BYTES})"),
    ("--fd-headroom", "fd_headroom", int, f"refuse Kafka connections when fewer descriptors than this stay free (default {DEFAULT_FD_HEADROOM})"),
    ("--max-partitions", "max_partitions", int, f"partitions this daemon hosts at most (default: open-file limit / {DESCRIPTORS_PER_PARTITION})"),
    ("--max-partitions-per-topic", "max_partitions_per_topic", int, "partitions of one topic at most (default: --max-partitions)"),
    ("--max-partitions-per-request", "max_partitions_per_request", int, f"partitions one CreateTopics/CreatePartitions may add (default {DEFAULT_MAX_PARTITIONS_PER_REQUEST}, as Kafka)"),
]


def add_serve_arguments(parser) -> None:
    group = parser.add_argument_group("limits (see the operator guide, Limits)")
    for flag, dest, kind, text in _FLAGS:
        group.add_argument(flag, dest=f"limit_{dest}", type=kind, default=None, metavar="LIST" if kind is str else "N", help=text)


def limits_from_args(args) -> Limits:
    """The Limits the serve flags ask for; raises LimitConfigError naming a flag that cannot work."""
    values: dict[str, Any] = {}  # Limits field -> parsed flag value (argparse converted it to the field's type)
    for _flag, dest, _, _ in _FLAGS:
        value = getattr(args, f"limit_{dest}", None)
        if value is None:
            continue
        if dest == "max_connections_per_ip_overrides":
            value = parse_ip_overrides(value)
        values[dest] = value
    try:
        return Limits(**values).validated()
    except LimitConfigError as exc:
        flags = {dest: flag for flag, dest, _, _ in _FLAGS}
        raise LimitConfigError(f"{exc} ({', '.join(flags[d] for d in values) or 'defaults'})") from exc
