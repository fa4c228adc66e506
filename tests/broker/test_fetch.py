"""Fetch byte limits on raw sockets: KIP-74's first-batch rule, partition_max_bytes, max_bytes, and
out-of-range offsets. (read_committed with aborted transactions is covered by the storage tests: linkd
has no transactional producers to create them here.)"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka.admin import AdminClient

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records, split_batches
from tests.broker.clients import create_topic
from tests.broker.wire import WireConnection, api_versions, fetch_request, produce_request


def _batch(tag: str, size: int) -> bytes:
    return build_records([tag.encode() * (size // len(tag))])


def _whole_batches(records) -> list[bytes]:
    data = bytes(records or b"")
    split = split_batches(data)
    assert split.consumed == len(data), "linkd sent a partial batch"
    return [bytes(b.buffer[: b.size]) for b in split.batches]


@pytest.fixture
def conn(linkd):
    with WireConnection(linkd.bootstrap) as c:
        yield c


def _appended(conn, topic: str, partition: int, batches: list[bytes]) -> list[bytes]:
    """Produce each batch; return them as the log stores them (base offset assigned)."""
    for b in batches:
        assert produce_request(conn, topic, partition, b)["error_code"] == 0
    fetched = fetch_request(conn, topic, partition, 0, partition_max_bytes=1 << 24)
    return _whole_batches(fetched["records"])


@pytest.mark.timeout(30)
def test_first_batch_larger_than_every_limit_is_returned_whole(linkd, conn, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    stored = _appended(conn, unique_topic, 0, [_batch("big", 20_000), _batch("next", 100)])
    fetched = fetch_request(conn, unique_topic, 0, 0, max_bytes=100, partition_max_bytes=100)
    assert fetched["error_code"] == 0
    assert _whole_batches(fetched["records"]) == stored[:1]


@pytest.mark.timeout(30)
def test_partition_max_bytes_stops_before_the_batch_that_does_not_fit(linkd, conn, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    stored = _appended(conn, unique_topic, 0, [_batch(f"b{i}", 1000) for i in range(5)])
    size = len(stored[0])
    limit = 2 * size + size // 2
    fetched = fetch_request(conn, unique_topic, 0, 0, partition_max_bytes=limit)
    got = _whole_batches(fetched["records"])
    assert got == stored[:2]
    # From the middle of a batch, the whole batch holding the offset comes first.
    middle = fetch_request(conn, unique_topic, 0, 3, partition_max_bytes=size)
    assert _whole_batches(middle["records"]) == stored[3:4]


@pytest.mark.timeout(30)
def test_max_bytes_across_partitions_only_the_first_partition_may_exceed_it(linkd, conn, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=2)
    first = _appended(conn, unique_topic, 0, [_batch("p0", 5000)])
    _appended(conn, unique_topic, 1, [_batch("p1", 5000)])
    body = conn.request(
        ApiKey.FETCH,
        12,
        {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": 1000,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": unique_topic,
                    "partitions": [
                        {"partition": p, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}
                        for p in (0, 1)
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    (topic,) = body["responses"]
    by_partition = {p["partition_index"]: p for p in topic["partitions"]}
    assert _whole_batches(by_partition[0]["records"]) == first
    assert _whole_batches(by_partition[1]["records"]) == []
    assert by_partition[1]["error_code"] == 0 and by_partition[1]["high_watermark"] == 1


@pytest.mark.timeout(30)
def test_fetch_beyond_the_log_end_is_offset_out_of_range(linkd, conn, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    _appended(conn, unique_topic, 0, [_batch("x", 100)])
    fetched = fetch_request(conn, unique_topic, 0, 50)
    assert fetched["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
    at_end = fetch_request(conn, unique_topic, 0, 1)
    assert at_end["error_code"] == 0 and not at_end["records"] and at_end["high_watermark"] == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", [12, 16])
def test_topic_deleted_under_a_waiting_fetch_is_reported_promptly_on_an_open_connection(linkd, conn, unique_topic, version):
    create_topic(linkd.bootstrap, unique_topic)
    meta = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": unique_topic}], "allow_auto_topic_creation": False})
    topic_id = meta["topics"][0]["topic_id"]
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    deleter = threading.Timer(0.3, lambda: admin.delete_topics([unique_topic])[unique_topic].result(10))
    deleter.start()
    started = time.monotonic()
    body = conn.request(
        ApiKey.FETCH,
        version,
        {
            "replica_id": -1,
            "replica_state": {"replica_id": -1, "replica_epoch": -1},
            "max_wait_ms": 5000,
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": unique_topic, "topic_id": topic_id, "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
        },
    )
    elapsed = time.monotonic() - started
    deleter.join(10)
    (partition,) = body["responses"][0]["partitions"]
    expected = ErrorCode.UNKNOWN_TOPIC_ID if version >= 13 else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert partition["error_code"] == expected
    assert elapsed < 3, f"the deletion was reported after {elapsed:.2f}s"
    assert conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})["error_code"] == 0
    assert api_versions(linkd.bootstrap)
