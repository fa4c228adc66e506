"""Produce and InitProducerId edge cases: unknown topics (no auto-creation), transactional batches outside
a transaction (refused clearly), control batches, acks=0. Transactions proper: tests/broker/test_transactions.py."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from protocol import messages
from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_control_batch, build_records
from tests.broker.clients import consumer, create_topic, drain, produce, record
from tests.broker.wire import WireConnection, fetch_request, produce_request


def _topic_names(conn: WireConnection) -> set[str]:
    body = conn.request(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
    return {t["name"] for t in body["topics"]}


@pytest.mark.timeout(30)
def test_produce_to_an_unknown_topic_is_refused_and_creates_nothing(linkd, unique_topic):
    with WireConnection(linkd.bootstrap) as conn:
        answer = produce_request(conn, unique_topic, 0, build_records([b"x"]))
        assert answer["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        meta = conn.request(ApiKey.METADATA, 12, {"topics": [{"name": unique_topic}], "allow_auto_topic_creation": True})
        (entry,) = meta["topics"]
        assert entry["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and entry["partitions"] == []
        assert unique_topic not in _topic_names(conn)


@pytest.mark.timeout(30)
def test_produce_to_a_partition_past_the_last_is_unknown(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=2)
    with WireConnection(linkd.bootstrap) as conn:
        assert produce_request(conn, unique_topic, 2, build_records([b"x"]))["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.timeout(30)
def test_confluent_producer_to_an_unknown_topic_fails_the_delivery(linkd, unique_topic):
    errors = []
    producer = Producer({"bootstrap.servers": linkd.bootstrap, "topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 8000})
    producer.produce(unique_topic, b"x", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(20) == 0
    assert [e.code() for e in errors] == [KafkaError.UNKNOWN_TOPIC_OR_PART]
    with WireConnection(linkd.bootstrap) as conn:
        assert unique_topic not in _topic_names(conn)


@pytest.mark.timeout(30)
def test_transactional_batches_outside_a_transaction_or_control_batches_are_refused_and_nothing_is_appended(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    with WireConnection(linkd.bootstrap) as conn:
        body = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": f"tx-{unique_topic}", "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
        assert body["error_code"] == 0
        pid, epoch = body["producer_id"], body["producer_epoch"]
        transactional = build_records([b"t"], producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True)
        # No transactional id in the request, then one whose transaction never added the partition.
        assert produce_request(conn, unique_topic, 0, transactional)["error_code"] == ErrorCode.INVALID_RECORD
        assert produce_request(conn, unique_topic, 0, transactional, transactional_id=f"tx-{unique_topic}")["error_code"] == ErrorCode.INVALID_TXN_STATE
        assert produce_request(conn, unique_topic, 0, transactional, transactional_id="someone-else")["error_code"] == ErrorCode.INVALID_PRODUCER_ID_MAPPING
        control = build_control_batch(1, producer_id=7, producer_epoch=0)
        assert produce_request(conn, unique_topic, 0, control)["error_code"] == ErrorCode.INVALID_RECORD
        assert fetch_request(conn, unique_topic, 0, 0)["high_watermark"] == 0


@pytest.mark.timeout(30)
def test_acks_zero_gets_no_response_but_the_record_is_appended(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    with WireConnection(linkd.bootstrap) as conn:
        frame = messages.encode_request(
            messages.RequestHeader(ApiKey.PRODUCE, 9, 77, "acks0"),
            {"transactional_id": None, "acks": 0, "timeout_ms": 1000, "topic_data": [{"name": unique_topic, "partition_data": [{"index": 0, "records": build_records([b"fire-and-forget"])}]}]},
        )
        conn.send_bytes(frame)
        # The next answer on this connection belongs to the next request: acks=0 produced none.
        deadline = time.monotonic() + 10
        while fetch_request(conn, unique_topic, 0, 0)["high_watermark"] != 1:
            assert time.monotonic() < deadline, "the acks=0 record never appeared"
            time.sleep(0.05)


@pytest.mark.timeout(30)
def test_log_append_time_topics_stamp_batches_with_the_broker_time(linkd, unique_topic):
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    admin.create_topics([NewTopic(unique_topic, 1, 1, config={"message.timestamp.type": "LogAppendTime"})])[unique_topic].result(15)
    before = int(time.time() * 1000)
    with WireConnection(linkd.bootstrap) as conn:
        answer = produce_request(conn, unique_topic, 0, build_records([b"raw"]))
    assert answer["error_code"] == 0 and before <= answer["log_append_time_ms"] <= int(time.time() * 1000)
    produce(linkd.bootstrap, unique_topic, [record(i) for i in range(50)], **{"compression.type": "zstd"})
    after = int(time.time() * 1000)
    c = consumer(linkd.bootstrap)
    c.assign([TopicPartition(unique_topic, 0, 0)])
    msgs = drain([c], 51, timeout=20)[0]
    c.close()
    for m in msgs:
        kind, stamp = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= stamp <= after, m.timestamp()


@pytest.mark.timeout(30)
def test_batch_above_max_message_bytes_is_message_too_large(linkd, unique_topic):
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    admin.create_topics([NewTopic(unique_topic, 1, 1, config={"max.message.bytes": "10000"})])[unique_topic].result(15)
    with WireConnection(linkd.bootstrap) as conn:
        too_big = produce_request(conn, unique_topic, 0, build_records([b"x" * 20_000]))
        assert too_big["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
        assert produce_request(conn, unique_topic, 0, build_records([b"x" * 5_000]))["error_code"] == 0
        assert fetch_request(conn, unique_topic, 0, 0)["high_watermark"] == 1


@pytest.mark.timeout(60)
def test_a_write_the_disk_refuses_is_a_retriable_storage_error_and_keeps_nothing(linkd, unique_topic):
    """RLIMIT_FSIZE makes linkd's writes past 1 MiB fail (EFBIG) as a full disk fails them (ENOSPC)."""
    import os
    import resource

    create_topic(linkd.bootstrap, unique_topic)
    big = [os.urandom(100_000) for _ in range(6)]  # ~600 KB, incompressible
    _soft, hard = resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with WireConnection(linkd.bootstrap) as conn:
            first = produce_request(conn, unique_topic, 0, build_records(big))
            assert (first["error_code"], first["base_offset"]) == (ErrorCode.NONE, 0)
            refused = produce_request(conn, unique_topic, 0, build_records(big))
            assert refused["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR, refused
            assert "Disk error" in refused["error_message"]
            assert ErrorCode.KAFKA_STORAGE_ERROR.retriable
            # The same connection is still served, and the log holds only the first batch.
            assert fetch_request(conn, unique_topic, 0, 0)["high_watermark"] == len(big)
            resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
            retried = produce_request(conn, unique_topic, 0, build_records(big))
            assert (retried["error_code"], retried["base_offset"]) == (ErrorCode.NONE, len(big))
    finally:
        if linkd.process.poll() is None:
            resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE, (hard, hard))


def test_a_busy_partition_does_not_hold_up_the_other_appends_of_a_produce_and_keeps_its_order(tmp_path, monkeypatch):
    """In process, on linkd's own storage: partition 0 of a 3-partition topic has a write of 3 records held
    inside its os.write (an earlier storage call, holding the log's call order). A Produce naming
    partitions 0, 1, 2 appends 1 and 2 while 0 waits (they do not queue behind it), then 0's batch lands
    after the held one; the answer comes once all three are in, each with its own base offset."""
    import trio

    from linkd import storage_calls
    from linkd.broker.context import Broker, BrokerIdentity, RequestContext
    from linkd.broker.produce import produce as handle_produce
    from linkd.controlstore import ControlStore
    from linkd.topics import TopicRegistry
    from tests.storage.helpers import batch
    from tests.storage.test_log_threads import _BlockedWrite

    monkeypatch.setattr("os.fsync", lambda fd: None)
    registry = TopicRegistry(ControlStore(tmp_path / "control.db"), tmp_path / "logs")
    logs = registry.create("t", 3).logs
    ctx = RequestContext(Broker(BrokerIdentity(0, "localhost", 0, "c"), registry, None, None), ApiKey.PRODUCE, 9, 1, "test", "127.0.0.1")  # type: ignore[arg-type]
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 10_000,
            "topic_data": [{"name": "t", "partition_data": [{"index": i, "records": build_records([f"p{i}".encode()])} for i in range(3)]}]}
    blocked = _BlockedWrite(monkeypatch)
    seen_while_held: list[int] = []

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage_calls.call, logs[0], logs[0].append_mirrored, batch(0, 3))
            await trio.to_thread.run_sync(blocked.entered.wait, 10)
            answer: dict = {}

            async def send() -> None:
                answer.update(await handle_produce(ctx, body))

            nursery.start_soon(send)
            try:
                with trio.fail_after(5):
                    while logs[1].log_end_offset == 0 or logs[2].log_end_offset == 0:  # noqa: ASYNC110 - appended in worker threads
                        await trio.sleep(0.01)
                seen_while_held.extend([logs[0].log_end_offset, logs[1].log_end_offset, logs[2].log_end_offset, len(answer)])
            finally:
                blocked.release.set()
        return answer

    answer = trio.run(main)
    assert seen_while_held == [0, 1, 1, 0]  # 1 and 2 appended, 0 still held, no answer yet
    (topic,) = answer["responses"]
    assert [(r["index"], r["error_code"], r["base_offset"]) for r in topic["partition_responses"]] == [(0, 0, 3), (1, 0, 0), (2, 0, 0)]
    assert [plog.log_end_offset for plog in logs] == [4, 1, 1]
    registry.close()


@pytest.mark.timeout(60)
def test_one_produce_to_hundreds_of_partitions_answers_each_partition_for_itself_in_order(linkd, unique_topic):
    """A Produce naming 300 partitions (appended in several worker jobs) with acks=all, from an idempotent
    producer: each partition's answer is its own (a sequence gap refused on every third partition, the
    others appended), a retry of the same request is answered from the producer state with the same
    offsets, and each partition holds its batches in the order sent."""
    partitions = 300
    create_topic(linkd.bootstrap, unique_topic, partitions=partitions)

    def body(sequence_of):
        return {"transactional_id": None, "acks": -1, "timeout_ms": 30_000, "topic_data": [{"name": unique_topic, "partition_data": [
            {"index": i, "records": build_records([f"{i}-{sequence_of(i)}".encode()], producer_id=pid, producer_epoch=0, base_sequence=sequence_of(i))}
            for i in range(partitions)]}]}

    def answers(reply):
        (topic,) = reply["responses"]
        return [(r["index"], r["error_code"], r["base_offset"]) for r in topic["partition_responses"]]

    with WireConnection(linkd.bootstrap, timeout=30) as conn:
        init = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
        pid = init["producer_id"]
        first = answers(conn.request(ApiKey.PRODUCE, 9, body(lambda i: 0)))
        assert first == [(i, 0, 0) for i in range(partitions)]
        gap = answers(conn.request(ApiKey.PRODUCE, 9, body(lambda i: 5 if i % 3 == 0 else 1)))
        assert gap == [(i, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1) if i % 3 == 0 else (i, 0, 1) for i in range(partitions)]
        retried = answers(conn.request(ApiKey.PRODUCE, 9, body(lambda i: 5 if i % 3 == 0 else 1)))
        assert retried == gap  # the appended ones are duplicates now: same offsets, nothing written twice
        for i in (0, 1, 2, 149, 299):
            fetched = fetch_request(conn, unique_topic, i, 0)
            assert fetched["high_watermark"] == (1 if i % 3 == 0 else 2)
