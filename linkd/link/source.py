"""The source cluster as a link sees it: bootstrap, metadata, connections per broker.

A broker answers one connection's requests in order, and a Fetch that finds nothing new waits there up to
``replica.fetch.wait.max.ms``. So each of a broker's fetchers (``num.cluster.link.fetchers``) has a
connection of its own, keyed by (broker address, fetcher index), and everything
else (metadata, ListOffsets for a create, consumer offset sync) uses another, never queued behind a long
poll; requests on it are pipelined (``client``). Connections are opened lazily and dropped on any error;
the next use reconnects. A new connection to a broker that another open connection already negotiated
with starts on that one's API versions: its ApiVersions is sent but not waited for (a round trip less
before a new fetcher's first request across a WAN). Metadata is asked
of any reachable broker (bootstrap servers first, then known brokers), so a link keeps working while the
bootstrap host is down but other brokers are up.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import trio

from protocol.errors import ErrorCode
from protocol.messages import ApiKey

from .client import AuthenticationFailed, Connection, SourceProtocolError, SourceUnavailable, source_error
from .readturn import ReadTurn
from .security import SecuritySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePartition:
    partition: int
    leader: int
    leader_epoch: int
    error: ErrorCode


@dataclass(frozen=True)
class SourceTopic:
    name: str
    topic_id: uuid.UUID | None
    error: ErrorCode
    partitions: dict[int, SourcePartition] = field(default_factory=dict)


@dataclass
class SourceCluster:
    bootstrap: list[tuple[str, int]]
    client_id: str
    request_timeout_s: float = 30.0
    cluster_id: str | None = None
    brokers: dict[int, tuple[str, int]] = field(default_factory=dict)
    security: SecuritySettings | None = None  # TLS and SASL for every connection: bootstrap, short requests, fetches
    receive_buffer_bytes: int = -1  # SO_RCVBUF of fetch connections (receive.buffer.bytes); -1: the OS's own
    # The source closed the connection on a DescribeConfigs naming configuration keys (Tansu does): config
    # sync asks it for every config from then on.
    named_config_keys_refused: bool = False

    def __post_init__(self) -> None:
        self._connections: dict[tuple[str, int], Connection] = {}
        # (broker address, fetcher index) -> that fetcher's connection
        self._fetch_connections: dict[tuple[tuple[str, int], int], Connection] = {}
        self._least_round_trip: float | None = None
        self._versions: dict[tuple[str, int], dict[int, tuple[int, int]]] = {}  # by address, while a connection to it is open
        self._opening: dict[tuple[int, object], trio.Lock] = {}
        # The fetch connections' reads take turns on the loop (readturn.py): a fetcher whose answer is
        # whole gets on while the others' answers are still being copied.
        self._fetch_read_turn = ReadTurn()

    async def _open(self, pool: dict, key, address: tuple[str, int], receive_buffer_bytes: int = -1, read_turn: ReadTurn | None = None) -> Connection:
        # Requests run concurrently now (pipelined): two that find no connection must not open two (the
        # one overwritten in the pool would never be closed). One opening per pool key at a time.
        lock = self._opening.setdefault((id(pool), key), trio.Lock())
        async with lock:
            return await self._open_locked(pool, key, address, receive_buffer_bytes, read_turn)

    async def _open_locked(self, pool: dict, key, address: tuple[str, int], receive_buffer_bytes: int, read_turn: ReadTurn | None) -> Connection:
        conn = pool.get(key)
        if conn is not None and conn.session_expired():
            # Idle past its SASL session lifetime: the broker would close it at the next request.
            log.debug("reconnecting to %s:%d: its SASL session expired while idle", *address)
            del pool[key]
            await conn.aclose()
            conn = None
        if conn is not None and conn.closed:  # out of step with the broker after a cancelled request
            del pool[key]
            conn = None
        if conn is None:
            conn = await Connection.open(address[0], address[1], self.client_id, security=self.security, receive_buffer_bytes=receive_buffer_bytes, versions=self._known_versions(address), read_turn=read_turn)
            pool[key] = conn
            self._versions[address] = conn.versions
        return conn

    def adopt(self, other: SourceCluster) -> None:
        """Take over ``other``'s open connections for short requests: a probe of the same source, with the
        same security and client id, that has just negotiated them (their round trips count here too)."""
        for address, conn in list(other._connections.items()):
            if not conn.closed and address not in self._connections:
                self._connections[address] = conn
                self._versions[address] = conn.versions
                del other._connections[address]

    def _known_versions(self, address: tuple[str, int]) -> dict[int, tuple[int, int]] | None:
        """The API versions an open connection to ``address`` negotiated (None: no such connection)."""
        if any(k == address and not c.closed for k, c in self._connections.items()) or any(k[0] == address and not c.closed for k, c in self._fetch_connections.items()):
            return self._versions.get(address)
        return None

    async def connection(self, address: tuple[str, int]) -> Connection:
        """The connection for short requests to ``address`` (never holds a long-polling Fetch)."""
        return await self._open(self._connections, address, address)

    def _address(self, node_id: int) -> tuple[str, int]:
        address = self.brokers.get(node_id)
        if address is None:
            raise SourceUnavailable(f"source broker {node_id} is not in the metadata")
        return address

    async def broker_connection(self, node_id: int) -> Connection:
        return await self.connection(self._address(node_id))

    async def fetch_connection(self, node_id: int, index: int = 0) -> Connection:
        """The connection only fetcher ``index`` of ``node_id`` uses: its Fetches long-poll, and whatever
        else it asks (ListOffsets, OffsetForLeaderEpoch) it asks between them."""
        address = self._address(node_id)
        return await self._open(self._fetch_connections, (address, index), address, self.receive_buffer_bytes, self._fetch_read_turn)

    def least_round_trip(self) -> float | None:
        """The least time any request to the source took, over every connection so far (None: none
        answered yet): the path's round trip, near enough, whatever the load (see ``fetcher_count``)."""
        samples = [c.round_trip_s for c in (*self._connections.values(), *self._fetch_connections.values()) if c.round_trip_s is not None]
        if self._least_round_trip is not None:
            samples.append(self._least_round_trip)
        self._least_round_trip = min(samples, default=None)
        return self._least_round_trip

    async def drop(self, address: tuple[str, int]) -> None:
        conn = self._connections.pop(address, None)
        if conn is not None:
            await conn.aclose()

    async def drop_fetch(self, address: tuple[str, int], index: int = 0) -> None:
        conn = self._fetch_connections.pop((address, index), None)
        if conn is not None:
            await conn.aclose()

    async def close(self) -> None:
        for address in list(self._connections):
            await self.drop(address)
        for address, index in list(self._fetch_connections):
            await self.drop_fetch(address, index)

    async def request_any(self, api_key: int, body: dict) -> dict:
        """Send to the first broker that answers: bootstrap servers, then known brokers."""
        errors = []
        refused: AuthenticationFailed | None = None
        candidates = list(dict.fromkeys([*self.bootstrap, *self.brokers.values()]))
        for address in candidates:
            try:
                conn = await self.connection(address)
                return await conn.request(api_key, body, timeout=self.request_timeout_s)
            except (SourceUnavailable, SourceProtocolError) as exc:
                errors.append(str(exc))
                refused = refused or (exc if isinstance(exc, AuthenticationFailed) else None)
                await self.drop(address)
        if refused is not None:
            # Keep the type: an authentication failure is the operator's to fix, not a network outage.
            raise AuthenticationFailed(refused.error, "; ".join(errors).removeprefix(f"{refused.error}: "))
        raise SourceUnavailable("no source broker reachable: " + "; ".join(errors))

    async def metadata(self, topics: list[str] | None) -> dict[str, SourceTopic]:
        body = await self.request_any(
            ApiKey.METADATA,
            {"topics": None if topics is None else [{"name": t, "topic_id": uuid.UUID(int=0)} for t in topics], "allow_auto_topic_creation": False},
        )
        self.cluster_id = body.get("cluster_id") or self.cluster_id
        brokers = {b["node_id"]: (b["host"], b["port"]) for b in body.get("brokers", [])}
        if brokers:
            self.brokers = brokers
        out = {}
        for t in body.get("topics", []):
            parts = {
                p["partition_index"]: SourcePartition(p["partition_index"], p["leader_id"], p.get("leader_epoch", -1), source_error(p["error_code"]))
                for p in t.get("partitions", [])
            }
            topic_id = t.get("topic_id")
            if topic_id is not None and topic_id.int == 0:
                topic_id = None
            out[t["name"]] = SourceTopic(t["name"], topic_id, source_error(t["error_code"]), parts)
        return out
