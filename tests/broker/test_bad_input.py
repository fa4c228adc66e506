"""Malformed and hostile input on raw sockets. Each gets an error response or a closed connection, the
daemon stays up, and a well-behaved client on another connection keeps producing and consuming."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest

from protocol import messages
from protocol.errors import ErrorCode
from protocol.messages import ApiKey, RequestHeader
from protocol.records import build_records
from tests.broker.clients import create_topic
from tests.broker.wire import WireConnection, api_versions, fetch_request, produce_request, wait_for


class Bystander:
    """Produces a record and reads it back, over and over, on its own connection."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.round_trips = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with WireConnection(self.bootstrap) as conn:
                while not self._stop.is_set():
                    value = f"bystander-{self.round_trips}".encode()
                    answer = produce_request(conn, self.topic, 0, build_records([value]))
                    assert answer["error_code"] == 0, answer
                    fetched = fetch_request(conn, self.topic, 0, answer["base_offset"])
                    assert value in bytes(fetched["records"]), "the bystander could not read back its record"
                    self.round_trips += 1
                    time.sleep(0.01)
        except BaseException as exc:  # reported by check(); the thread must not die silently
            self.failure = exc

    def __enter__(self) -> Bystander:
        self._thread.start()
        wait_for(lambda: self.round_trips >= 3 or self.failure, 20, "bystander started")
        return self

    def check(self) -> None:
        """Assert the bystander is still healthy and keeps making progress now."""
        before = self.round_trips
        wait_for(lambda: self.round_trips >= before + 3 or self.failure, 20, "bystander progress")
        assert self.failure is None, f"the bystander failed: {self.failure!r}"

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def bystander(linkd, unique_topic):
    topic = f"{unique_topic}-bystander"
    create_topic(linkd.bootstrap, topic)
    with Bystander(linkd.bootstrap, topic) as b:
        yield b
        b.check()
    assert linkd.running, linkd.logs()


def _raw_frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id: bytes = b"bad-input") -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_close_the_connection(linkd, bystander, seed):
    rng = random.Random(seed)
    with WireConnection(linkd.bootstrap) as conn:
        if seed % 2:
            body = rng.randbytes(rng.randrange(1, 4096))
            conn.send_bytes(struct.pack(">i", len(body)) + body)  # a plausible size, garbage inside
        else:
            conn.send_bytes(rng.randbytes(4096))
        try:
            data = conn.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if data:
            # Garbage that happens to parse as an ApiVersions request at an unknown version is answered;
            # anything else must be a close.
            (size,) = struct.unpack_from(">i", data)
            assert size == len(data) - 4
    bystander.check()


@pytest.mark.timeout(60)
def test_truncated_frames_close_the_connection(linkd, bystander):
    valid = messages.encode_request(RequestHeader(ApiKey.METADATA, 12, 1, "truncated"), {"topics": None, "allow_auto_topic_creation": False})
    # The frame ends mid-body: the size prefix is honest about the bytes that follow, the body is cut.
    cut_body = valid[4:-3]
    with WireConnection(linkd.bootstrap) as conn:
        conn.send_bytes(struct.pack(">i", len(cut_body)) + cut_body)
        conn.expect_closed()
    # The peer gives up halfway through a frame: the partial frame is dropped with the connection.
    with WireConnection(linkd.bootstrap) as conn:
        conn.send_bytes(valid[: len(valid) // 2])
        conn.sock.shutdown(socket.SHUT_WR)
        conn.expect_closed()
    bystander.check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [2**31 - 1, 200 * 1024 * 1024, -1, 0])
def test_oversized_negative_or_empty_length_prefix_closes_without_buffering(linkd, bystander, size):
    with WireConnection(linkd.bootstrap) as conn:
        started = time.monotonic()
        conn.send_bytes(struct.pack(">i", size) + b"\0" * 64)
        conn.expect_closed(within=5)
        assert time.monotonic() - started < 5
    bystander.check()


@pytest.mark.timeout(60)
def test_unknown_api_key_closes_the_connection(linkd, bystander):
    with WireConnection(linkd.bootstrap) as conn:
        conn.send_bytes(_raw_frame(9999, 0, 5, b"\0" * 8))
        conn.expect_closed()
    with WireConnection(linkd.bootstrap) as conn:
        conn.send_bytes(_raw_frame(-1, 0, 5, b""))
        conn.expect_closed()
    bystander.check()


@pytest.mark.timeout(60)
def test_api_versions_at_an_unknown_version_gets_the_v0_layout_answer_and_the_connection_stays(linkd, bystander):
    advertised = api_versions(linkd.bootstrap)
    with WireConnection(linkd.bootstrap) as conn:
        # Flexible header (v2: tagged fields after the client id) and a body this broker cannot know.
        conn.send_bytes(_raw_frame(ApiKey.API_VERSIONS, 99, 41, b"\x00" + b"\x07future\x02v\x00" + b"\xff" * 5))
        frame = conn.receive_frame()
        correlation_id, body = messages.decode_response(ApiKey.API_VERSIONS, 0, frame)
        assert correlation_id == 41
        assert body["error_code"] == ErrorCode.UNSUPPORTED_VERSION
        assert {a["api_key"]: (a["min_version"], a["max_version"]) for a in body["api_keys"]} == advertised
        # The client now retries at a version we listed, on the same connection.
        again = conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "retry", "client_software_version": "1"})
        assert again["error_code"] == 0
    bystander.check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "api_key,version",
    [(ApiKey.METADATA, 99), (ApiKey.PRODUCE, 2), (ApiKey.FETCH, 3), (ApiKey.LIST_OFFSETS, 0), (ApiKey.OFFSET_COMMIT, 1)],
    ids=["metadata-v99", "produce-v2", "fetch-v3", "list-offsets-v0", "offset-commit-v1"],
)
def test_other_apis_at_unsupported_versions_close_the_connection(linkd, bystander, api_key, version):
    with WireConnection(linkd.bootstrap) as conn:
        conn.send_bytes(_raw_frame(api_key, version, 9, b"\0" * 32))
        conn.expect_closed()
    bystander.check()


@pytest.mark.timeout(60)
def test_produce_with_a_corrupt_batch_is_corrupt_message_and_appends_nothing(linkd, bystander, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    good = build_records([b"a", b"b", b"c"])
    with WireConnection(linkd.bootstrap) as conn:
        assert produce_request(conn, unique_topic, 0, good)["error_code"] == 0
        flipped = bytearray(good)
        flipped[-1] ^= 0xFF  # last record byte: covered by the CRC
        answer = produce_request(conn, unique_topic, 0, bytes(flipped))
        assert answer["error_code"] == ErrorCode.CORRUPT_MESSAGE, answer
        truncated = produce_request(conn, unique_topic, 0, good[:-5])
        assert truncated["error_code"] in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD), truncated
        bad_length = bytearray(good)
        struct.pack_into(">i", bad_length, 8, 10**6)  # batchLength far beyond the data
        answer = produce_request(conn, unique_topic, 0, bytes(bad_length))
        assert answer["error_code"] in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD), answer
        two_batches = produce_request(conn, unique_topic, 0, good + good)
        assert two_batches["error_code"] == ErrorCode.INVALID_RECORD
        fetched = fetch_request(conn, unique_topic, 0, 0)
        assert fetched["high_watermark"] == 3, "a refused batch changed the log"
        # The connection that sent them is still usable.
        assert produce_request(conn, unique_topic, 0, good)["base_offset"] == 3
    bystander.check()


@pytest.mark.timeout(60)
def test_many_connections_dropped_mid_request_leave_the_daemon_serving(linkd, bystander):
    frame = messages.encode_request(RequestHeader(ApiKey.METADATA, 12, 1, "dropper"), {"topics": None, "allow_auto_topic_creation": False})
    for i in range(50):
        sock = socket.create_connection(("127.0.0.1", linkd.port), timeout=5)
        sock.sendall(frame[: 5 + i % (len(frame) - 5)])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        sock.close()
    bystander.check()
    assert api_versions(linkd.bootstrap)


@pytest.mark.parametrize("version", [10, 11, 12, 13])
def test_metadata_naming_a_topic_by_neither_name_nor_id_answers_invalid_topic_at_every_version(linkd, version):
    import uuid

    with WireConnection(linkd.bootstrap) as conn:
        body = conn.request(ApiKey.METADATA, version, {"topics": [{"topic_id": uuid.UUID(int=0), "name": None}], "allow_auto_topic_creation": False})
        (topic,) = body["topics"]
        assert topic["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})["error_code"] == 0


@pytest.mark.parametrize("version", [10, 11, 12, 13])
def test_metadata_by_an_unknown_topic_id_answers_unknown_topic_id_at_every_version(linkd, version):
    # The topic name in a Metadata answer is nullable only from v12: v10/v11 answer an empty name (the
    # daemon used to fail encoding the answer and close the connection).
    import uuid

    with WireConnection(linkd.bootstrap) as conn:
        body = conn.request(ApiKey.METADATA, version, {"topics": [{"topic_id": uuid.uuid4(), "name": None}], "allow_auto_topic_creation": False})
        (topic,) = body["topics"]
        assert topic["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID
        assert topic["name"] == ("" if version < 12 else None)
        assert conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})["error_code"] == 0
