"""confluent-kafka (librdkafka) against linkd: idempotent produce with every codec, group consumption,
committed offsets, isolation levels, and the AdminClient."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic, OffsetSpec

from tests.broker.clients import BASE_TIMESTAMP, Sent, consumer, create_topic, drain, produce, record, wait_assigned

CODECS = ("zstd", "lz4", "gzip", "snappy")
PER_CODEC = 20_000


def _check_contents(messages, sent_by_key: dict[bytes, Sent]) -> None:
    for msg in messages:
        sent = sent_by_key[msg.key()]
        assert msg.value() == sent.value
        assert tuple(msg.headers() or ()) == sent.headers
        assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, sent.timestamp)


@pytest.mark.timeout(120)
def test_two_member_group_reads_every_codec_exactly_once_and_a_restarted_member_resumes(linkd, unique_topic):
    bootstrap = linkd.bootstrap
    create_topic(bootstrap, unique_topic, partitions=3)
    group = f"g-{unique_topic}"
    members = [consumer(bootstrap, group, **{"client.id": f"member-{i}"}) for i in range(2)]
    for m in members:
        m.subscribe([unique_topic])
    wait_assigned(members)
    assignments = [{tp.partition for tp in m.assignment()} for m in members]
    assert assignments[0].isdisjoint(assignments[1]) and assignments[0] | assignments[1] == {0, 1, 2}

    sent: dict[bytes, Sent] = {}
    acked: dict[tuple[int, int], bytes] = {}
    for codec in CODECS:
        batch = [record(i, codec) for i in range(PER_CODEC)]
        for rec, where in zip(batch, produce(bootstrap, unique_topic, batch, **{"compression.type": codec}), strict=True):
            sent[rec.key] = rec
            acked[where] = rec.key
    assert len(acked) == len(CODECS) * PER_CODEC, "two acknowledged records share an offset"

    got = drain(members, len(sent), timeout=60)
    for i, msgs in got.items():
        assert msgs, f"member {i} received nothing"
        assert {m.partition() for m in msgs} <= assignments[i]
    everything = got[0] + got[1]
    positions = {(m.partition(), m.offset()): m.key() for m in everything}
    assert len(positions) == len(everything) == len(sent), "a record was delivered twice"
    assert positions == acked, "records were read at offsets other than those acknowledged"
    _check_contents(everything, sent)

    for m in members:
        m.commit(asynchronous=False)
    ends = {p: max(o for (q, o) in acked if q == p) + 1 for p in range(3)}
    committed = members[0].committed([TopicPartition(unique_topic, p) for p in range(3)], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == ends
    for m in members:
        m.close()

    # Nothing new is delivered to a restarted member except what was produced after the commit.
    later = [record(i, "later") for i in range(300)]
    produce(bootstrap, unique_topic, later)
    restarted = consumer(bootstrap, group)
    restarted.subscribe([unique_topic])
    resumed = drain([restarted], len(later), timeout=30)[0]
    assert sorted(m.key() for m in resumed) == sorted(r.key for r in later)
    assert all(m.offset() >= ends[m.partition()] for m in resumed)
    assert not restarted.consume(100, 1.0), "records before the committed offsets were delivered again"
    restarted.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_assigned_consumer_reads_everything_at_either_isolation_level(linkd, unique_topic, isolation):
    create_topic(linkd.bootstrap, unique_topic, partitions=2)
    batch = [record(i) for i in range(2000)]
    acks = produce(linkd.bootstrap, unique_topic, batch, **{"compression.type": "lz4"})
    c = consumer(linkd.bootstrap, **{"isolation.level": isolation})
    c.assign([TopicPartition(unique_topic, p, 0) for p in range(2)])
    msgs = drain([c], len(batch), timeout=30)[0]
    assert sorted((m.partition(), m.offset()) for m in msgs) == sorted(acks)
    _check_contents(msgs, {r.key: r for r in batch})
    low, high = c.get_watermark_offsets(TopicPartition(unique_topic, 0), timeout=10)
    assert (low, high) == (0, sum(1 for p, _ in acks if p == 0))
    c.close()


@pytest.mark.timeout(90)
def test_admin_client_manages_topics_groups_configs_and_partitions(linkd, unique_topic):
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    for future in admin.create_topics([NewTopic(unique_topic, 3, 1, config={"retention.ms": "3600000"})]).values():
        future.result(15)
    with pytest.raises(KafkaException) as exists:
        admin.create_topics([NewTopic(unique_topic, 3, 1)])[unique_topic].result(15)
    assert exists.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    described = admin.describe_topics(TopicCollection([unique_topic]))[unique_topic].result(15)
    assert [p.id for p in described.partitions] == [0, 1, 2]
    assert all(p.leader is not None and p.leader.id == 1 for p in described.partitions)

    resource = ConfigResource(ConfigResource.Type.TOPIC, unique_topic)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"

    # A group with committed offsets, then list/describe it while a member is live.
    produce(linkd.bootstrap, unique_topic, [record(i) for i in range(30)])
    group = f"g-{unique_topic}"
    member = consumer(linkd.bootstrap, group, **{"client.id": "described-member"})
    member.subscribe([unique_topic])
    drain([member], 30, timeout=30)
    member.commit(asynchronous=False)
    listed = admin.list_consumer_groups().result(15)
    assert group in {g.group_id for g in listed.valid}
    description = admin.describe_consumer_groups([group])[group].result(15)
    assert description.state == ConsumerGroupState.STABLE
    assert [m.client_id for m in description.members] == ["described-member"]
    assigned = {tp.partition for tp in description.members[0].assignment.topic_partitions}
    assert assigned == {0, 1, 2}
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    assert sum(tp.offset for tp in offsets.topic_partitions) == 30

    # A live group cannot be deleted; an empty one can, and its offsets go with it.
    with pytest.raises(KafkaException) as live:
        admin.delete_consumer_groups([group])[group].result(15)
    assert live.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    member.close()
    admin.delete_consumer_groups([group])[group].result(15)
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(15).valid}

    for future in admin.create_partitions([NewPartitions(unique_topic, 5)]).values():
        future.result(15)
    assert len(admin.describe_topics(TopicCollection([unique_topic]))[unique_topic].result(15).partitions) == 5
    produce(linkd.bootstrap, unique_topic, [record(i) for i in range(100)], partitioner="murmur2_random")
    latest = admin.list_offsets({TopicPartition(unique_topic, p): OffsetSpec.latest() for p in range(5)}, isolation_level=IsolationLevel.READ_COMMITTED)
    assert sum(f.result(15).offset for f in latest.values()) == 130

    admin.delete_topics([unique_topic])[unique_topic].result(15)
    time.sleep(0.2)
    assert unique_topic not in admin.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as gone:
        admin.delete_topics([unique_topic])[unique_topic].result(15)
    assert gone.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.timeout(60)
def test_offsets_for_times_and_max_timestamp_name_the_record_not_its_batch(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=1)
    batch = [record(i) for i in range(500)]
    peak = Sent(b"peak", b"peak", (), BASE_TIMESTAMP + 10_000)
    batch[250] = peak  # the newest timestamp sits mid-batch
    produce(linkd.bootstrap, unique_topic, batch, **{"compression.type": "zstd", "linger.ms": 200})
    tp = TopicPartition(unique_topic, 0)
    c = consumer(linkd.bootstrap)
    by_time = c.offsets_for_times([TopicPartition(unique_topic, 0, BASE_TIMESTAMP + 200)], timeout=10)
    assert by_time[0].offset == 200
    after_peak = c.offsets_for_times([TopicPartition(unique_topic, 0, BASE_TIMESTAMP + 300)], timeout=10)
    assert after_peak[0].offset == 250, "the first record whose timestamp is at or after the target"
    past_the_end = c.offsets_for_times([TopicPartition(unique_topic, 0, BASE_TIMESTAMP + 20_000)], timeout=10)
    assert past_the_end[0].offset == -1
    c.close()
    admin = AdminClient({"bootstrap.servers": linkd.bootstrap})
    newest = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(15)
    assert (newest.offset, newest.timestamp) == (250, peak.timestamp)
