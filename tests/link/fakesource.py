"""A tiny fake Kafka source that misbehaves on purpose: it serves batches a test hands it, verbatim, even
ones with a flipped CRC that no real broker would ever return.

Built on our sans-IO codec (``protocol.messages``), one thread per connection. It answers what a link
asks of a source: ApiVersions, Metadata, ListOffsets, Fetch and OffsetForLeaderEpoch, for one topic with
one partition led by itself (node 1); ``also_serves`` names more topics that serve the same partition.
Metadata answers can be held back (``hold_metadata`` / ``release_metadata``) to stretch a link's metadata
refresh so a test can act while it is in flight.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

from protocol import messages
from protocol.errors import ErrorCode
from protocol.framing import FrameReader
from protocol.messages import ApiKey
from protocol.records import split_batches
from tests.peers import LOOPBACK, free_port

VERSIONS = {
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.METADATA: (1, 12),
    ApiKey.LIST_OFFSETS: (1, 7),
    ApiKey.FETCH: (4, 12),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: (2, 4),
}
CRC_POSITION = 17  # baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8


def flip_crc(batch: bytes) -> bytes:
    """The same batch with every bit of its CRC inverted: the payload is intact, the checksum is not."""
    (crc,) = struct.unpack_from(">I", batch, CRC_POSITION)
    out = bytearray(batch)
    struct.pack_into(">I", out, CRC_POSITION, crc ^ 0xFFFFFFFF)
    return bytes(out)


class FakeSource:
    def __init__(self, topic: str, leader_epoch: int = 0, also_serves: tuple[str, ...] = ()) -> None:
        self.topic = topic
        self.names = (topic, *also_serves)
        self._metadata_open = threading.Event()
        self._metadata_open.set()
        self.metadata_held = threading.Event()  # set once a Metadata request waits behind hold_metadata()
        self.topic_ids = {name: uuid.uuid4() for name in self.names}
        self.topic_id = self.topic_ids[topic]
        self.leader_epoch = leader_epoch
        self.port = free_port()
        self.fetches = 0
        self.metadata_requests = 0
        self.unfetchable = 0  # offsets claimed in the high watermark beyond what Fetch returns (a lagging mirror)
        self.metadata_partition_error = 0  # the error code Metadata gives the partition (any int16, known or not)
        self._answer_before_hold = 0
        self._batches: list[bytes] = []
        self._lock = threading.Lock()
        self._closed = False
        self._listener = socket.create_server((LOOPBACK, self.port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name=f"fakesource-{self.port}", daemon=True)
        self._thread.start()

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def serve(self, batch: bytes) -> None:
        """Append ``batch`` (whole, with its base offset already set) to what Fetch returns."""
        with self._lock:
            self._batches.append(bytes(batch))

    def hold_metadata(self, after: int = 0) -> None:
        """Metadata requests from now on (after answering ``after`` more) wait, their connection's later
        requests too, until released."""
        with self._lock:
            self._answer_before_hold = after
        self.metadata_held.clear()
        self._metadata_open.clear()

    def release_metadata(self) -> None:
        self._metadata_open.set()

    @property
    def end_offset(self) -> int:
        with self._lock:
            return self._end()

    def _end(self) -> int:
        if not self._batches:
            return 0
        (batch,) = split_batches(self._batches[-1]).batches
        return batch.next_offset

    # -- serving ----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        reader = FrameReader()
        with conn:
            while not self._closed:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                reader.feed(data)
                for frame in reader.frames():
                    conn.sendall(self._answer(bytes(frame)))

    def _answer(self, frame: bytes) -> bytes:
        try:
            request = messages.decode_request(frame)
        except Exception:
            # Too new an ApiVersions (or anything we do not know): the v0 fallback with our ranges.
            correlation_id = messages.peek_correlation_id(frame)
            return messages.encode_api_versions_fallback(correlation_id, [(k, lo, hi) for k, (lo, hi) in VERSIONS.items()])
        header, body = request.header, request.body
        handler = {
            ApiKey.API_VERSIONS: self._api_versions,
            ApiKey.METADATA: self._metadata,
            ApiKey.LIST_OFFSETS: self._list_offsets,
            ApiKey.FETCH: self._fetch,
            ApiKey.OFFSET_FOR_LEADER_EPOCH: self._offset_for_leader_epoch,
        }.get(header.api_key)
        lo, hi = VERSIONS.get(header.api_key, (0, -1))
        if handler is None or not lo <= header.api_version <= hi:
            if header.api_key == ApiKey.API_VERSIONS:
                return messages.encode_api_versions_fallback(header.correlation_id, [(k, lo, hi) for k, (lo, hi) in VERSIONS.items()])
            raise RuntimeError(f"fake source got an unexpected request {header}")
        return messages.encode_response(header.api_key, header.api_version, header.correlation_id, handler(body))

    def _api_versions(self, body: dict) -> dict:
        return {
            "error_code": ErrorCode.NONE,
            "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(VERSIONS.items())],
            "throttle_time_ms": 0,
            "supported_features": [],
            "finalized_features_epoch": -1,
            "finalized_features": [],
        }

    def _metadata(self, body: dict) -> dict:
        with self._lock:
            self.metadata_requests += 1
            answer_now = self._answer_before_hold > 0
            self._answer_before_hold = max(self._answer_before_hold - 1, 0)
        if not answer_now and not self._metadata_open.is_set():
            self.metadata_held.set()
            self._metadata_open.wait(30)
        wanted = body.get("topics")
        topics = []
        for name in list(self.names) if wanted is None else [t["name"] for t in wanted]:
            if name not in self.names:
                topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name, "topic_id": uuid.UUID(int=0), "is_internal": False, "partitions": [], "topic_authorized_operations": -2147483648})
                continue
            topics.append(
                {
                    "error_code": ErrorCode.NONE,
                    "name": name,
                    "topic_id": self.topic_ids[name],
                    "is_internal": False,
                    "partitions": [
                        {
                            "error_code": self.metadata_partition_error,
                            "partition_index": 0,
                            "leader_id": 1,
                            "leader_epoch": self.leader_epoch,
                            "replica_nodes": [1],
                            "isr_nodes": [1],
                            "offline_replicas": [],
                        }
                    ],
                    "topic_authorized_operations": -2147483648,
                }
            )
        return {
            "throttle_time_ms": 0,
            "brokers": [{"node_id": 1, "host": LOOPBACK, "port": self.port, "rack": None}],
            "cluster_id": "fake-source",
            "controller_id": 1,
            "topics": topics,
            "cluster_authorized_operations": -2147483648,
        }

    def _list_offsets(self, body: dict) -> dict:
        topics = []
        for t in body["topics"]:
            parts = []
            for p in t["partitions"]:
                offset = 0 if p["timestamp"] == -2 else self.end_offset
                parts.append({"partition_index": p["partition_index"], "error_code": ErrorCode.NONE, "old_style_offsets": [], "timestamp": -1, "offset": offset, "leader_epoch": self.leader_epoch})
            topics.append({"name": t["name"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}

    def _offset_for_leader_epoch(self, body: dict) -> dict:
        topics = []
        for t in body["topics"]:
            parts = [{"error_code": ErrorCode.NONE, "partition": p["partition"], "leader_epoch": self.leader_epoch, "end_offset": self.end_offset} for p in t["partitions"]]
            topics.append({"topic": t["topic"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}

    def _fetch(self, body: dict) -> dict:
        self.fetches += 1
        deadline = time.monotonic() + min(body.get("max_wait_ms", 0), 200) / 1000
        responses = []
        for t in body["topics"]:
            parts = []
            for p in t["partitions"]:
                offset = p["fetch_offset"]
                while True:
                    with self._lock:
                        end = self._end()
                        blob = b"".join(b for b in self._batches if split_batches(b).batches[0].next_offset > offset)
                    if blob or time.monotonic() >= deadline:
                        break
                    time.sleep(0.02)
                code = ErrorCode.OFFSET_OUT_OF_RANGE if offset > end else ErrorCode.NONE
                parts.append(
                    {
                        "partition_index": p["partition"],
                        "error_code": code,
                        "high_watermark": end + self.unfetchable,
                        "last_stable_offset": end + self.unfetchable,
                        "log_start_offset": 0,
                        "aborted_transactions": [],
                        "preferred_read_replica": -1,
                        "records": blob if code == ErrorCode.NONE else None,
                    }
                )
            responses.append({"topic": t["topic"], "partitions": parts})
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "session_id": 0, "responses": responses}

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._thread.join(2)

    def __enter__(self) -> FakeSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
