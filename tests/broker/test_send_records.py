"""The Kafka listener's sendfile of Fetch ranges over a real loopback TCP connection, across a log cleaner
swap of the segment the ranges were read from: the old bytes are sent through the segment's retained
descriptor; once that is closed, the cleaned file now at the path is refused (the connection breaks and the
client fetches again), never sent in place of the one read."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkd.broker.fetch import SegmentRecords
from linkd.broker.server import _send_records
from linkd.storage.cleaner import clean_log
from protocol.records import BatchSpec, NewRecord, build_batch
from tests.storage.helpers import BASE_TS, open_log

COMPACT = dict(segment_bytes=10_000, cleanup_policy=("compact",), min_cleanable_dirty_ratio=0.0)


def _compacted_log_read_before_a_swap(tmp_path):
    log = open_log(tmp_path, **COMPACT)
    for i in range(6):
        log.append_mirrored(build_batch(BatchSpec(base_offset=i, records=[NewRecord(key=b"k", value=b"v%d" % i, timestamp=BASE_TS)])))
    log._roll(6)  # noqa: SLF001 - a segment boundary here makes offsets 0..5 cleanable
    log.append_mirrored(build_batch(BatchSpec(base_offset=6, records=[NewRecord(key=b"r", value=b"x", timestamp=BASE_TS)])))
    read = log.read(0, 1 << 20)
    old_bytes = read.to_bytes()
    assert clean_log(log, BASE_TS, force=True) is not None
    assert log.read(0, 1 << 20).to_bytes() != old_bytes
    return log, read, old_bytes


async def _send_and_receive(ranges) -> bytes:
    with trio.fail_after(10):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener:
            client = await trio.testing.open_stream_to_socket_listener(listener)
            server = await listener.accept()
            async with client, server:
                try:
                    await _send_records(server, SegmentRecords(ranges))
                finally:
                    await server.aclose()
                data = bytearray()
                while chunk := await client.receive_some(65536):
                    data += chunk
                return bytes(data)


def test_ranges_read_before_a_swap_are_sent_from_the_old_segment(tmp_path):
    log, read, old_bytes = _compacted_log_read_before_a_swap(tmp_path)
    assert trio.run(_send_and_receive, read.ranges) == old_bytes
    log.close()


def test_once_the_old_descriptor_is_closed_the_cleaned_file_is_not_sent(tmp_path, monkeypatch):
    monkeypatch.setattr("linkd.storage.log.RETIRED_SEGMENT_GRACE_S", 0.0)
    log, read, _old = _compacted_log_read_before_a_swap(tmp_path)
    with pytest.raises(trio.BrokenResourceError, match="replaced"):
        trio.run(_send_and_receive, read.ranges)
    log.close()
