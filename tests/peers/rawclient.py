"""A minimal blocking Kafka client built on kafka-python's protocol classes, never on our ``protocol`` package.

Tests compare what linkd serves with what a source broker serves. If both sides were read through our own
codec, a bug in it would cancel out; this module therefore uses kafka-python 3.x's independent encoder and
decoder (``KafkaProtocol`` is sans-IO: we feed it socket bytes) and cuts record batches with its own tiny
length walk rather than ``protocol.records.split_batches``.

Public API::

    fetch_raw(bootstrap, topic, partition, start_offset, end_offset=None, ...) -> bytes
    list_offsets(bootstrap, topic, partition) -> (earliest, latest)
    produce_raw(bootstrap, topic, partition, records) -> base offset   (exact bytes, e.g. from build_batch)
    RawConnection(host, port) for anything else (ApiVersions negotiation, ``request(...)``)
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.producer import ProduceRequest

# Fetch v13+ names topics by id; v12 is the newest that takes names, which every broker we test still
# serves (and the Java consumer caps itself at v12 too when it lacks topic ids).
_FETCH_MAX_VERSION = 12
_LIST_OFFSETS_MAX_VERSION = 7
_METADATA_MAX_VERSION = 9
_PRODUCE_MAX_VERSION = 12  # v13 names topics by id
_EARLIEST = -2
_LATEST = -1

# UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT,
# KAFKA_STORAGE_ERROR, UNKNOWN_LEADER_EPOCH, OFFSET_NOT_AVAILABLE: transient on a broker that just started,
# created a topic or restarted.
_RETRIABLE_FETCH_ERRORS = frozenset({3, 5, 6, 7, 56, 75, 78})

_BATCH_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_POS = 23
_LOG_OVERHEAD = 12


class RawClientError(RuntimeError):
    def __init__(self, message: str, error_code: int = -1) -> None:
        super().__init__(message)
        self.error_code = error_code


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


class RawConnection:
    """One TCP connection, one request at a time. Negotiates versions with ApiVersions v0, which every
    broker answers in the same layout."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, client_id: str = "linkd-tests-raw") -> None:
        self.host = host
        self.port = port
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._protocol = KafkaProtocol(client_id=client_id, receive_message_max_bytes=256 * 1024 * 1024)
        self.versions: dict[int, tuple[int, int]] = {}
        response = self.roundtrip(ApiVersionsRequest[0]())
        if response.error_code:
            raise RawClientError(f"ApiVersions failed with error {response.error_code}", response.error_code)
        self.versions = {api.api_key: (api.min_version, api.max_version) for api in response.api_keys}

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pick_version(self, message_class, ceiling: int) -> int:
        api_key = message_class.API_KEY
        if api_key not in self.versions:
            raise RawClientError(f"{self.host}:{self.port} does not advertise {message_class.name}")
        low, high = self.versions[api_key]
        version = min(high, ceiling, message_class.max_version)
        if version < low:
            raise RawClientError(f"no common version of {message_class.name}: broker {low}-{high}, client <= {ceiling}")
        return version

    def roundtrip(self, request):
        self._protocol.send_request(request)
        self._sock.sendall(self._protocol.send_bytes())
        while True:
            data = self._sock.recv(1 << 20)
            if not data:
                raise RawClientError(f"{self.host}:{self.port} closed the connection")
            responses = self._protocol.receive_bytes(data)
            if responses:
                return responses[0][1]

    def request(self, message_class, ceiling: int, **fields):
        """Send ``message_class`` at the highest version both sides support (at most ``ceiling``)."""
        return self.roundtrip(message_class[self.pick_version(message_class, ceiling)](**fields))


@dataclass(frozen=True)
class FetchedPartition:
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted_transactions: list[tuple[int, int]] | None  # (producer id, first offset)
    records: bytes


def _leader_connection(bootstrap: str, topic: str, partition: int, timeout: float) -> RawConnection:
    """Connect to the partition leader: single-node peers lead everything, but staying honest keeps this
    usable against a real multi-broker cluster."""
    conn = RawConnection(*parse_bootstrap(bootstrap), timeout=timeout)
    try:
        meta = conn.request(MetadataRequest, _METADATA_MAX_VERSION, topics=[MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False)
    except Exception:
        conn.close()
        raise
    brokers = {b.node_id: (b.host, b.port) for b in meta.brokers}
    for t in meta.topics:
        if t.name != topic:
            continue
        if t.error_code:
            conn.close()
            raise RawClientError(f"metadata for {topic!r}: error {t.error_code}", t.error_code)
        for p in t.partitions:
            if p.partition_index == partition:
                leader = brokers.get(p.leader_id)
                if leader is None or leader == (conn.host, conn.port):
                    return conn
                conn.close()
                return RawConnection(*leader, timeout=timeout)
    conn.close()
    raise RawClientError(f"{topic}-{partition} not found in metadata of {bootstrap}", 3)


def fetch_once(
    conn: RawConnection,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int = 1 << 20,
    max_wait_ms: int = 100,
    isolation_level: int = 0,
) -> FetchedPartition:
    """One sessionless Fetch for one partition; returns the partition's response as sent."""
    fetch_partition = FetchRequest.FetchTopic.FetchPartition(
        partition=partition, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=max_bytes
    )
    response = conn.request(
        FetchRequest,
        _FETCH_MAX_VERSION,
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=max_bytes,
        isolation_level=isolation_level,
        session_id=0,
        session_epoch=-1,
        topics=[FetchRequest.FetchTopic(topic=topic, partitions=[fetch_partition])],
        forgotten_topics_data=[],
        rack_id="",
    )
    if response.error_code:
        raise RawClientError(f"Fetch failed with top-level error {response.error_code}", response.error_code)
    for t in response.responses:
        for p in t.partitions:
            if p.partition_index == partition:
                aborted = None if p.aborted_transactions is None else [(a.producer_id, a.first_offset) for a in p.aborted_transactions]
                return FetchedPartition(p.error_code, p.high_watermark, p.last_stable_offset, p.log_start_offset, aborted, bytes(p.records or b""))
    raise RawClientError(f"Fetch response has no entry for {topic}-{partition}")


def whole_batches(records: bytes) -> list[tuple[int, int, int, int]]:
    """(start byte, end byte, base offset, last offset) of each whole batch; a partial tail is dropped."""
    out = []
    pos = 0
    while len(records) - pos >= _LOG_OVERHEAD:
        base_offset, batch_length = _BATCH_PREFIX.unpack_from(records, pos)
        end = pos + _LOG_OVERHEAD + batch_length
        if batch_length <= 0 or end > len(records):
            break
        (last_delta,) = _LAST_OFFSET_DELTA.unpack_from(records, pos + _LAST_OFFSET_DELTA_POS)
        out.append((pos, end, base_offset, base_offset + last_delta))
        pos = end
    return out


def fetch_raw(
    bootstrap: str,
    topic: str,
    partition: int,
    start_offset: int,
    end_offset: int | None = None,
    max_bytes: int = 1 << 20,
    isolation_level: int = 0,
    timeout: float = 30.0,
) -> bytes:
    """The bytes of every whole batch that holds an offset in ``[start_offset, end_offset)``, concatenated.

    Batches are returned exactly as the broker sent them; the first one may begin before ``start_offset``
    (a broker always answers with the whole batch containing the fetch offset). With ``end_offset=None``
    the loop stops at the first Fetch that returns nothing new, rather than at the high watermark,
    because Tansu's high watermark can lag the offsets it actually serves (see peers.md).
    """
    out = bytearray()
    deadline = time.monotonic() + timeout
    with _leader_connection(bootstrap, topic, partition, timeout) as conn:
        offset = start_offset
        while end_offset is None or offset < end_offset:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fetch_raw {topic}-{partition} stuck at offset {offset} (wanted up to {end_offset})")
            fetched = fetch_once(conn, topic, partition, offset, max_bytes=max_bytes, isolation_level=isolation_level)
            if fetched.error_code in _RETRIABLE_FETCH_ERRORS:
                time.sleep(0.1)  # what real consumers do: wait for leadership/metadata to settle, then retry
                continue
            if fetched.error_code:
                raise RawClientError(f"Fetch {topic}-{partition}@{offset}: error {fetched.error_code}", fetched.error_code)
            progressed = False
            for begin, end, _base, last in whole_batches(fetched.records):
                if last < offset:
                    continue  # a broker may resend the tail of a batch we already have
                if end_offset is not None and _base >= end_offset:
                    break
                out += fetched.records[begin:end]
                offset = last + 1
                progressed = True
            if not progressed and end_offset is None:
                break
    return bytes(out)


def list_offsets(bootstrap: str, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    """(earliest, latest) as the partition leader reports them with ListOffsets."""
    with _leader_connection(bootstrap, topic, partition, timeout) as conn:
        return _list_offset(conn, topic, partition, _EARLIEST), _list_offset(conn, topic, partition, _LATEST)


def _list_offset(conn: RawConnection, topic: str, partition: int, timestamp: int) -> int:
    topic_entry = ListOffsetsRequest.ListOffsetsTopic(
        name=topic, partitions=[ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1, timestamp=timestamp)]
    )
    response = conn.request(ListOffsetsRequest, _LIST_OFFSETS_MAX_VERSION, replica_id=-1, isolation_level=0, topics=[topic_entry])
    for t in response.topics:
        for p in t.partitions:
            if p.partition_index == partition:
                if p.error_code:
                    raise RawClientError(f"ListOffsets {topic}-{partition}: error {p.error_code}", p.error_code)
                return p.offset
    raise RawClientError(f"ListOffsets response has no entry for {topic}-{partition}")


def metadata(bootstrap: str, timeout: float = 5.0):
    """The broker's Metadata response for all topics (brokers, controller, topics)."""
    with RawConnection(*parse_bootstrap(bootstrap), timeout=timeout) as conn:
        return conn.request(MetadataRequest, _METADATA_MAX_VERSION, topics=None, allow_auto_topic_creation=False)


def produce_raw(bootstrap: str, topic: str, partition: int, records: bytes, acks: int = -1, timeout: float = 30.0) -> int:
    """Produce ``records`` (whole v2 batches, exactly these bytes) and return the base offset assigned.

    This is how tests hand a broker batches our own builder made (to check another implementation accepts
    them) or batches with unusual headers no client library would write.
    """
    with _leader_connection(bootstrap, topic, partition, timeout) as conn:
        topic_data = ProduceRequest.TopicProduceData(name=topic, partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=records)])
        response = conn.request(ProduceRequest, _PRODUCE_MAX_VERSION, transactional_id=None, acks=acks, timeout_ms=int(timeout * 1000), topic_data=[topic_data])
    for t in response.responses:
        for p in t.partition_responses:
            if p.index == partition:
                if p.error_code:
                    detail = p.error_message or ", ".join(f"batch {e.batch_index}: {e.batch_index_error_message}" for e in p.record_errors or [])
                    raise RawClientError(f"Produce {topic}-{partition}: error {p.error_code} {detail}", p.error_code)
                return p.base_offset
    raise RawClientError(f"Produce response has no entry for {topic}-{partition}")
