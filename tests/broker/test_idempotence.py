"""Idempotent produce on raw requests: a retried batch is acknowledged at its original offset and not
appended again (also after SIGKILL and restart), and a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER."""

from __future__ import annotations

import pytest

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.clients import create_topic
from tests.broker.wire import WireConnection, fetch_request, produce_request


def _init_producer(conn: WireConnection) -> tuple[int, int]:
    body = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
    assert body["error_code"] == 0
    return body["producer_id"], body["producer_epoch"]


@pytest.mark.timeout(60)
def test_retried_batches_are_deduplicated_across_a_crash_and_gaps_are_refused(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    with WireConnection(linkd.bootstrap) as conn:
        pid, epoch = _init_producer(conn)
        first = build_records([b"a", b"b"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        second = build_records([b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=2)
        assert produce_request(conn, unique_topic, 0, first)["base_offset"] == 0
        assert produce_request(conn, unique_topic, 0, second)["base_offset"] == 2
        retry = produce_request(conn, unique_topic, 0, first)
        assert (retry["error_code"], retry["base_offset"]) == (0, 0), "a retried batch must be acknowledged where it was first written"
        gap = produce_request(conn, unique_topic, 0, build_records([b"x"], producer_id=pid, producer_epoch=epoch, base_sequence=9))
        assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert fetch_request(conn, unique_topic, 0, 0)["high_watermark"] == 3

    linkd.kill()
    linkd.start()
    with WireConnection(linkd.bootstrap) as conn:
        retry = produce_request(conn, unique_topic, 0, second)
        assert (retry["error_code"], retry["base_offset"]) == (0, 2), "producer state was lost in the crash"
        third = produce_request(conn, unique_topic, 0, build_records([b"d"], producer_id=pid, producer_epoch=epoch, base_sequence=3))
        assert (third["error_code"], third["base_offset"]) == (0, 3)
        assert fetch_request(conn, unique_topic, 0, 0)["high_watermark"] == 4
        assert _init_producer(conn)[0] != pid
