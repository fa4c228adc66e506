"""A blocking Kafka connection on our own codec, for tests that send exact (or deliberately wrong) frames.

Client-library tests use the real libraries; this is for the raw-socket cases: malformed frames, every
advertised (api, version) pair, and requests no library would send.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

from protocol import messages
from protocol.messages import ApiKey, RequestHeader

_SIZE = struct.Struct(">i")


class ConnectionClosed(Exception):
    """The broker closed the connection instead of answering."""


class WireConnection:
    def __init__(self, bootstrap: str, timeout: float = 10.0, client_id: str | None = "linkd-tests-wire") -> None:
        host, _, port = bootstrap.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.client_id = client_id
        self._correlation = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionClosed(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def receive_frame(self) -> bytes:
        (size,) = _SIZE.unpack(self._recv_exact(4))
        return self._recv_exact(size)

    def request(self, api_key: int, version: int, body: dict) -> dict:
        """Send one request and return the decoded response body (raises ConnectionClosed)."""
        correlation_id = next(self._correlation)
        self.send_bytes(messages.encode_request(RequestHeader(api_key, version, correlation_id, self.client_id), body))
        got, response = messages.decode_response(api_key, version, self.receive_frame())
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        return response

    def expect_closed(self, within: float = 10.0) -> None:
        """Assert the broker closes the connection (EOF or reset) without sending a response frame."""
        self.sock.settimeout(within)
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the connection to be closed, got {len(data)} bytes: {data[:40]!r}"


def api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "linkd-tests", "client_software_version": "0"})
    assert body["error_code"] == 0, body
    return {a["api_key"]: (a["min_version"], a["max_version"]) for a in body["api_keys"]}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.1f}s")
        time.sleep(interval)


def produce_request(conn: WireConnection, topic: str, partition: int, records: bytes, acks: int = -1, version: int = 9,
                    transactional_id: str | None = None) -> dict:
    """Produce exactly ``records`` to one partition; return that partition's response entry."""
    body = conn.request(
        ApiKey.PRODUCE,
        version,
        {"transactional_id": transactional_id, "acks": acks, "timeout_ms": 10_000, "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}]},
    )
    (topic_response,) = body["responses"]
    (partition_response,) = topic_response["partition_responses"]
    return partition_response


def fetch_request(
    conn: WireConnection,
    topic: str,
    partition: int,
    offset: int,
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 50 * 1024 * 1024,
    partition_max_bytes: int = 1024 * 1024,
    isolation_level: int = 0,
    version: int = 12,
) -> dict:
    """One sessionless Fetch of one partition; return that partition's response entry."""
    body = conn.request(
        ApiKey.FETCH,
        version,
        {
            "replica_id": -1,
            "max_wait_ms": max_wait_ms,
            "min_bytes": min_bytes,
            "max_bytes": max_bytes,
            "isolation_level": isolation_level,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": partition_max_bytes}
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    assert body["error_code"] == 0, body
    (topic_response,) = body["responses"]
    (partition_response,) = topic_response["partitions"]
    return partition_response
