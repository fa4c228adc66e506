"""The reference Java client (kafka-clients 4.1) against linkd: its default, idempotent producer and its
classic-protocol group consumer (which also validates positions with OffsetForLeaderEpoch)."""

from __future__ import annotations

import pytest

from tests.broker.clients import create_topic, produce, record
from tests.peers.java import java_consume, java_produce

COUNT = 2000


@pytest.mark.timeout(180)
def test_java_idempotent_producer_and_group_consumer(linkd, java_client, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=3)
    produced = java_produce(linkd.bootstrap, unique_topic, COUNT, compression="lz4")
    assert len(set(produced.acks)) == COUNT, "two records were acknowledged at the same offset"
    ends = {p: max(o for q, o in produced.acks if q == p) + 1 for p in range(3)}
    assert sum(ends.values()) == COUNT, "offsets are not dense from 0"

    group = f"g-{unique_topic}"
    consumed = java_consume(linkd.bootstrap, unique_topic, group, COUNT, timeout_ms=60_000)
    assert consumed.consumed == COUNT
    by_position = {(p, o): (k, v) for p, o, k, v, _ts in consumed.records}
    assert len(by_position) == COUNT
    index_at = {ack: i for i, ack in enumerate(produced.acks)}
    for position, (key, value) in by_position.items():
        i = index_at[position]
        assert (key, value) == (f"k{i}", f"v{i}")
    assert consumed.committed == ends

    # A second run of the same group, at read_committed, resumes at the commits and sees only what came
    # after: records a different client (librdkafka, zstd, with headers) produced.
    later_records = [record(i, "later") for i in range(30)]
    later = produce(linkd.bootstrap, unique_topic, later_records, **{"compression.type": "zstd"})
    resumed = java_consume(linkd.bootstrap, unique_topic, group, 30, timeout_ms=60_000, isolation="read_committed")
    assert {(p, o) for p, o, *_ in resumed.records} == set(later)
    sent_at = dict(zip(later, later_records, strict=True))
    for p, o, key, value, ts in resumed.records:
        sent = sent_at[(p, o)]
        assert (key.encode(), value.encode(), ts) == (sent.key, sent.value, sent.timestamp)


@pytest.mark.timeout(240)
def test_java_transactional_producer_commits_aborts_and_sends_offsets(linkd, java_client, unique_topic):
    import json

    from confluent_kafka import Consumer, TopicPartition

    from tests.peers.java import run_java_client

    create_topic(linkd.bootstrap, unique_topic, partitions=1)
    group = f"g-{unique_topic}"
    result = run_java_client("transact", linkd.bootstrap, unique_topic, f"tx-{unique_topic}", group, "9", "20", "3", timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"committed": 6, "aborted": 3}
    consumed = java_consume(linkd.bootstrap, unique_topic, f"r-{unique_topic}", 120, timeout_ms=20_000, isolation="read_committed")
    values = [v for _p, _o, _k, v, _ts in consumed.records]
    assert values == [f"t{n}-{i}" for n in range(9) if n % 3 != 2 for i in range(20)]
    check = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "isolation.level": "read_committed"})
    [committed] = check.committed([TopicPartition(unique_topic, 0)], 10)
    check.close()
    assert committed.offset == 8  # the last committed transaction (n = 7) sent offset n + 1; n = 8 aborted
