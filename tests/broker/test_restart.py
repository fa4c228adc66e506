"""linkd restarted between produce and consume: acknowledged records, offsets and group commits survive,
after a graceful stop and after SIGKILL."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from protocol.messages import ApiKey
from tests.broker.clients import consumer, create_topic, drain, produce, record
from tests.broker.wire import WireConnection

COUNT = 6000


def _read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[tuple[int, int], bytes]:
    c = consumer(bootstrap)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    msgs = drain([c], expected, timeout=30)[0]
    c.close()
    return {(m.partition(), m.offset()): m.key() for m in msgs}


def _init_producer_id(bootstrap: str) -> int:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
    assert body["error_code"] == 0
    return body["producer_id"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_acknowledged_records_offsets_and_group_commits_survive_a_restart(linkd, unique_topic, how):
    create_topic(linkd.bootstrap, unique_topic, partitions=3)
    batch = [record(i) for i in range(COUNT)]
    acks = produce(linkd.bootstrap, unique_topic, batch, acks="all", **{"compression.type": "zstd"})
    expected = {where: rec.key for where, rec in zip(acks, batch, strict=True)}

    group = f"g-{unique_topic}"
    member = consumer(linkd.bootstrap, group)
    member.subscribe([unique_topic])
    first_part = drain([member], COUNT // 2, timeout=30)[0]
    member.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in member.committed([TopicPartition(unique_topic, p) for p in range(3)], timeout=10)}
    member.close()
    pid_before = _init_producer_id(linkd.bootstrap)

    if how == "sigkill":
        linkd.kill()
    else:
        assert linkd.stop() == 0, linkd.logs()
    linkd.start()

    assert _read_all(linkd.bootstrap, unique_topic, 3, COUNT) == expected, "acknowledged records changed across the restart"

    resumed = consumer(linkd.bootstrap, group)
    after = resumed.committed([TopicPartition(unique_topic, p) for p in range(3)], timeout=10)
    assert {tp.partition: tp.offset for tp in after} == committed
    resumed.subscribe([unique_topic])
    # A partition without a commit (negative: none) restarts from the earliest offset.
    rest = drain([resumed], COUNT - sum(max(o, 0) for o in committed.values()), timeout=30)[0]
    resumed.close()
    seen = {(m.partition(), m.offset()) for m in first_part} | {(m.partition(), m.offset()) for m in rest}
    assert seen == set(expected), "the group did not resume exactly at its committed offsets"
    assert all(m.offset() >= committed[m.partition()] for m in rest)

    # New writes continue the offsets, and producer ids are never handed out twice.
    more = produce(linkd.bootstrap, unique_topic, [record(i, "after") for i in range(30)])
    ends = {p: max(o for q, o in acks if q == p) + 1 for p in range(3)}
    assert all(offset >= ends[p] for p, offset in more)
    assert _init_producer_id(linkd.bootstrap) > pid_before
