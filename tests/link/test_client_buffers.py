"""The link client's recycled receive buffers: a buffer is reused only when nothing points into it any
more, so recycling can never change the bytes a mirror appends."""

from __future__ import annotations

import os

import pytest
import trio
from confluent_kafka import Producer

from linkd.link.client import Connection
from linkd.link.framebuffers import RECYCLE_MIN_FRAME, FrameBuffers
from protocol.messages import ApiKey
from protocol.records import split_batches
from tests.peers import rawclient


def test_a_buffer_is_reused_once_its_views_are_gone():
    buffers = FrameBuffers()
    first = buffers.frame(1000)
    first[:3] = b"abc"
    first_id = id(first.obj)
    del first
    second = buffers.frame(800)
    assert id(second.obj) == first_id and len(second) == 800
    assert (buffers.allocated, buffers.reused) == (1, 1)


def test_a_buffer_with_a_live_view_is_never_handed_out_again():
    buffers = FrameBuffers()
    held = buffers.frame(1000)[10:20]  # a slice, as a decoded record set is
    held[:] = b"0123456789"
    other = buffers.frame(1000)
    other[:] = b"x" * 1000
    assert bytes(held) == b"0123456789"
    assert other.obj is not held.obj
    assert buffers.allocated == 2


def test_a_buffer_too_small_is_not_reused_and_only_keep_buffers_are_remembered():
    buffers = FrameBuffers(keep=2)
    for size in (100, 200, 300):
        view = buffers.frame(size)
        del view
    assert buffers.allocated == 3 and buffers.reused == 0
    assert len(buffers.frame(250)) == 250  # the 300-byte buffer, still remembered
    assert buffers.reused == 1
    assert buffers.allocated == 3
    view = buffers.frame(100)
    assert buffers.reused == 2 and len(view.obj) >= 100
    del view


def _produce_incompressible(bootstrap: str, topic: str, count: int, size: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 200_000, "log_level": 3})
    errors: list[str] = []
    for _ in range(count):
        producer.produce(topic, os.urandom(size), partition=0, on_delivery=lambda err, _msg: err and errors.append(str(err)))
    assert producer.flush(30) == 0
    assert not errors, errors


def _fetch_body(topic: str, offset: int, max_bytes: int) -> dict:
    partition = {"partition": 0, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": max_bytes}
    return {
        "replica_id": -1, "max_wait_ms": 100, "min_bytes": 1, "max_bytes": max_bytes, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [partition]}], "forgotten_topics_data": [], "rack_id": "",
    }


@pytest.mark.timeout(120)
def test_fetching_a_topic_through_recycled_buffers_gives_the_brokers_bytes(kafka_broker, unique_topic):
    """Fetch ~6 MB from Apache Kafka in ~1 MiB responses, keeping every other response's records alive
    for a while as appends in flight do: the bytes must equal a plain fetch's, and buffers must be reused."""
    kafka_broker.create_topic(unique_topic, 1)
    _produce_incompressible(kafka_broker.bootstrap, unique_topic, 600, 10_000)
    expected = rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, 0, 0, 600)
    host, port = rawclient.parse_bootstrap(kafka_broker.bootstrap)

    async def fetch_all() -> tuple[bytes, FrameBuffers]:
        conn = await Connection.open(host, port)
        try:
            got = bytearray()
            offset, pending = 0, None
            while offset < 600:
                response = await conn.request(ApiKey.FETCH, _fetch_body(unique_topic, offset, 1 << 20), version=12)
                records = response["responses"][0]["partitions"][0]["records"]
                split = split_batches(records)
                for batch in split.batches:
                    batch.verify()
                offset = split.batches[-1].next_offset
                # Every response is big enough to come through a recycled buffer, but the last: it holds
                # whatever was left, which can be a few small batches (the producer's batching varies).
                assert len(records) >= RECYCLE_MIN_FRAME or offset >= 600, (len(records), offset)
                # As a link appends a round's batches while the next response streams in: the previous
                # round's view is read only now, after the next frame was received (into another buffer).
                if pending is not None:
                    got += pending
                pending = records[: split.consumed]
                del response, records, split
            got += pending
            del pending
            return bytes(got), conn.buffers
        finally:
            await conn.aclose()

    got, buffers = trio.run(fetch_all)
    assert got == expected
    assert buffers.reused >= 2, (buffers.allocated, buffers.reused)
    assert buffers.allocated >= 2  # a held view forced a second buffer


def test_released_buffers_are_not_reused_so_a_caught_up_connection_holds_none():
    buffers = FrameBuffers()
    view = buffers.frame(RECYCLE_MIN_FRAME * 4)
    del view
    buffers.release()
    buffers.frame(RECYCLE_MIN_FRAME)
    assert (buffers.allocated, buffers.reused) == (2, 0)
