"""End to end: a topic created on linkd with CreateTopics and ``cleanup.policy=compact`` is compacted by the
running daemon, and a confluent-kafka consumer then reads exactly the latest value of every key at the offset
the producer was told, with the cleaned-away offsets as gaps."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.broker.clients import Sent, consumer, produce

KEYS = 8
ROUNDS = 12


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes]]:
    c = consumer(bootstrap)
    try:
        _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 15
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.offset(), msg.key(), msg.value()))
        return out
    finally:
        c.close()


def test_a_compacted_topic_on_linkd_serves_the_latest_value_per_key_at_its_offset(linkd_factory, unique_topic):
    linkd = linkd_factory(extra_args=["--log-cleaner-backoff-ms", "200"])
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    configs = {"cleanup.policy": "compact", "segment.bytes": "2048"}
    for future in admin.create_topics([NewTopic(unique_topic, 1, 1, config=configs)], operation_timeout=10).values():
        future.result(15)

    records = [Sent(b"key-%d" % (i % KEYS), b"round-%d-of-key-%d" % (i // KEYS, i % KEYS) + b"." * 40, (), 1_700_000_000_000 + i)
               for i in range(KEYS * ROUNDS)]
    # One record per batch so the data spreads over many small segments.
    acks = produce(linkd.bootstrap, unique_topic, records, **{"linger.ms": 0, "batch.num.messages": 1})
    fillers = [Sent(b"filler-%d" % i, b"f" * 60, (), 1_700_000_100_000 + i) for i in range(40)]
    filler_acks = produce(linkd.bootstrap, unique_topic, fillers, **{"linger.ms": 0, "batch.num.messages": 1})

    latest: dict[bytes, tuple[int, bytes]] = {}
    for rec, (_p, offset) in zip(records, acks, strict=True):
        latest[rec.key] = (offset, rec.value)
    expected = sorted([(offset, key, value) for key, (offset, value) in latest.items()]
                      + [(offset, rec.key, rec.value) for rec, (_p, offset) in zip(fillers, filler_acks, strict=True)])

    deadline = time.monotonic() + 20
    seen = _read_all(linkd.bootstrap, unique_topic)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.3)
        seen = _read_all(linkd.bootstrap, unique_topic)
    assert seen == expected, f"{len(seen)} records read, {len(expected)} expected"
    # The log end did not move: only records below it went.
    c = consumer(linkd.bootstrap)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(unique_topic, 0), timeout=10)
    finally:
        c.close()
    assert (low, high) == (0, filler_acks[-1][1] + 1)


def test_delete_records_on_a_compacted_topic_is_refused_with_policy_violation(linkd, unique_topic):
    from confluent_kafka import KafkaError, KafkaException

    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    for future in admin.create_topics([NewTopic(unique_topic, 1, 1, config={"cleanup.policy": "compact"})],
                                      operation_timeout=10).values():
        future.result(15)
    produce(linkd.bootstrap, unique_topic, [Sent(b"k%d" % i, b"v", (), 1_700_000_000_000 + i) for i in range(5)])
    (future,) = admin.delete_records([TopicPartition(unique_topic, 0, 3)], request_timeout=10).values()
    try:
        future.result(15)
        raise AssertionError("DeleteRecords on a compacted topic was accepted")
    except KafkaException as exc:
        assert exc.args[0].code() == KafkaError.POLICY_VIOLATION
