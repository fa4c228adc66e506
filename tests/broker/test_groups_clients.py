"""Consumer groups driven by real clients: members leaving, cooperative rebalancing, static membership,
and a group whose members use different client libraries."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from kafka import KafkaConsumer

from tests.broker.clients import consumer, create_topic, drain, produce, record, wait_assigned

PARTITIONS = 4


def _positions(messages) -> set[tuple[int, int]]:
    return {(m.partition(), m.offset()) for m in messages}


@pytest.mark.timeout(90)
def test_member_leaving_hands_its_partitions_over_at_its_committed_offsets(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=PARTITIONS)
    group = f"g-{unique_topic}"
    # A long session timeout: only a LeaveGroup can make the hand-over fast.
    members = [consumer(linkd.bootstrap, group, **{"session.timeout.ms": 45_000}) for _ in range(2)]
    for m in members:
        m.subscribe([unique_topic])
    wait_assigned(members)
    first = produce(linkd.bootstrap, unique_topic, [record(i) for i in range(1000)])
    got = drain(members, len(first), timeout=30)
    assert _positions(got[0] + got[1]) == set(first)
    for m in members:
        m.commit(asynchronous=False)
    leaving_partitions = {tp.partition for tp in members[1].assignment()}

    left_at = time.monotonic()
    members[1].close()
    survivor = members[0]
    while len(survivor.assignment()) != PARTITIONS:
        assert time.monotonic() - left_at < 15, f"survivor still holds {survivor.assignment()} after the other member left"
        assert not survivor.consume(100, 0.1)
    second = produce(linkd.bootstrap, unique_topic, [record(i, "second") for i in range(1000)])
    later = drain([survivor], len(second), timeout=30)[0]
    assert _positions(later) == set(second), "the survivor re-read records the leaver had committed, or missed some"
    assert leaving_partitions & {m.partition() for m in later}
    survivor.close()


@pytest.mark.timeout(90)
def test_cooperative_sticky_members_split_partitions_and_read_each_record_once(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=PARTITIONS)
    group = f"g-{unique_topic}"
    members = [consumer(linkd.bootstrap, group, **{"partition.assignment.strategy": "cooperative-sticky"}) for _ in range(2)]
    for m in members:
        m.subscribe([unique_topic])
    wait_assigned(members)
    owned = [{tp.partition for tp in m.assignment()} for m in members]
    assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(range(PARTITIONS))
    sent = produce(linkd.bootstrap, unique_topic, [record(i) for i in range(4000)], **{"compression.type": "lz4"})
    got = drain(members, len(sent), timeout=30)
    everything = got[0] + got[1]
    assert len(everything) == len(sent) and _positions(everything) == set(sent)
    for m in members:
        m.close()


@pytest.mark.timeout(90)
def test_static_member_restarting_within_its_session_keeps_its_assignment_and_offsets(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=PARTITIONS)
    group = f"g-{unique_topic}"

    def static(instance: str):
        return consumer(linkd.bootstrap, group, **{"group.instance.id": instance, "session.timeout.ms": 30_000})

    members = [static("alpha"), static("beta")]
    for m in members:
        m.subscribe([unique_topic])
    wait_assigned(members)
    beta_owned = {tp.partition for tp in members[1].assignment()}
    sent = produce(linkd.bootstrap, unique_topic, [record(i) for i in range(800)])
    drain(members, len(sent), timeout=30)
    members[1].commit(asynchronous=False)
    members[1].close()  # a static member leaves no LeaveGroup behind: its place is kept for the session

    restarted = static("beta")
    restarted.subscribe([unique_topic])
    deadline = time.monotonic() + 20
    while not restarted.assignment():
        assert time.monotonic() < deadline, "the restarted static member never got its partitions back"
        assert not restarted.consume(100, 0.1), "the restarted member re-read committed records"
        members[0].consume(100, 0.05)
        assert len(members[0].assignment()) < PARTITIONS, "the absent static member's partitions were reassigned"
    assert {tp.partition for tp in restarted.assignment()} == beta_owned
    more = produce(linkd.bootstrap, unique_topic, [record(i, "more") for i in range(200)])
    got = drain([members[0], restarted], len(more), timeout=30)
    assert _positions(got[0] + got[1]) == set(more)
    restarted.close()
    members[0].close()


@pytest.mark.timeout(90)
def test_confluent_and_kafka_python_members_share_one_group(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=PARTITIONS)
    group = f"g-{unique_topic}"
    rdkafka = consumer(linkd.bootstrap, group, **{"partition.assignment.strategy": "range"})
    rdkafka.subscribe([unique_topic])
    wait_assigned([rdkafka])
    python = KafkaConsumer(unique_topic, bootstrap_servers=linkd.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=10_000, heartbeat_interval_ms=500)
    python_records = []

    def settled() -> bool:
        # Eager rebalancing passes through moments where one side holds nothing: wait for the split.
        python_owned = {tp.partition for tp in python.assignment()}
        rdkafka_owned = {tp.partition for tp in rdkafka.assignment()}
        return bool(python_owned) and bool(rdkafka_owned) and python_owned.isdisjoint(rdkafka_owned) and python_owned | rdkafka_owned == set(range(PARTITIONS))

    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, f"group never rebalanced: {rdkafka.assignment()} / {python.assignment()}"
        for batch in python.poll(timeout_ms=100).values():
            python_records.extend(batch)
        assert not rdkafka.consume(100, 0.05)
    python_owned = {tp.partition for tp in python.assignment()}

    sent = produce(linkd.bootstrap, unique_topic, [record(i) for i in range(2000)])
    rdkafka_records = []
    deadline = time.monotonic() + 30
    while len(python_records) + len(rdkafka_records) < len(sent):
        assert time.monotonic() < deadline, f"{len(python_records)} + {len(rdkafka_records)} of {len(sent)} consumed"
        rdkafka_records.extend(m for m in rdkafka.consume(1000, 0.05) if m.error() is None)
        for batch in python.poll(timeout_ms=50).values():
            python_records.extend(batch)
    positions = [(r.partition, r.offset) for r in python_records] + [(m.partition(), m.offset()) for m in rdkafka_records]
    assert len(positions) == len(sent) and set(positions) == set(sent)
    assert {r.partition for r in python_records} <= python_owned
    python.commit()
    rdkafka.commit(asynchronous=False)
    committed = rdkafka.committed([TopicPartition(unique_topic, p) for p in range(PARTITIONS)], timeout=10)
    assert sum(tp.offset for tp in committed) == len(sent)
    python.close()
    rdkafka.close()
