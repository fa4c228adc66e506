"""Assignment (linkd/link/assignment.py): source metadata in, one plan per mirror out; pure."""

from __future__ import annotations

import uuid

from linkd.link.assignment import (
    LAN_ROUND_TRIP_S,
    WAN_FETCHERS,
    Assigned,
    NoLocalTopic,
    SourceDenied,
    SourceMissing,
    fetcher_count,
    plan,
    spread,
)
from linkd.link.mirror import Mirror, PartitionProgress
from linkd.link.partition import Fail
from linkd.link.source import SourcePartition, SourceTopic
from linkd.link.states import MirrorError, MirrorState
from protocol.errors import ErrorCode

ID = uuid.uuid4()


def mirror(partitions: int = 0) -> Mirror:
    m = Mirror("m", "l", "s", str(ID), MirrorState.ACTIVE)
    plan(m, topic({p: (1, 0) for p in range(partitions)}), partitions, False, 100)
    return m


def topic(leaders: dict[int, tuple[int, int]], topic_id=ID, error=ErrorCode.NONE) -> SourceTopic:
    return SourceTopic("s", topic_id, error, {p: SourcePartition(p, leader, epoch, ErrorCode.NONE) for p, (leader, epoch) in leaders.items()})


def test_partitions_go_to_their_leaders_and_new_ones_get_progress():
    m = Mirror("m", "l", "s", str(ID), MirrorState.ACTIVE)
    decided = plan(m, topic({0: (1, 3), 1: (2, 3)}), 2, False, 100)
    assert isinstance(decided, Assigned) and decided.grow_to is None
    assert [(b, p.partition) for b, p in decided.leaders] == [(1, 0), (2, 1)]
    assert [(p.leader, p.leader_epoch, p.max_bytes) for p in m.partitions] == [(1, 3, 100), (2, 3, 100)]


def test_a_leaderless_partition_is_left_out():
    m = mirror(2)
    decided = plan(m, topic({0: (1, 0), 1: (-1, 1)}), 2, True, 100)
    assert [p.partition for _b, p in decided.leaders] == [0]


def test_a_new_leader_or_epoch_needs_validation_the_same_does_not():
    m = mirror(2)
    for p in m.partitions:
        p.validated = True
    plan(m, topic({0: (1, 0), 1: (1, 1)}), 2, True, 100)
    assert [p.validated for p in m.partitions] == [True, False]


def test_a_source_with_more_partitions_grows_the_mirror():
    m = mirror(1)
    decided = plan(m, topic({0: (1, 0), 1: (1, 0), 2: (2, 0)}), 1, True, 100)
    assert isinstance(decided, Assigned) and decided.grow_to == 3 and len(m.partitions) == 3


def test_a_source_with_fewer_partitions_fails_the_mirror():
    decided = plan(mirror(2), topic({0: (1, 0)}), 2, True, 100)
    assert isinstance(decided, Fail) and decided.error == MirrorError.SOURCE_PARTITIONS_DECREASED


def test_a_recreated_source_topic_fails_a_mirror_holding_data():
    decided = plan(mirror(1), topic({0: (1, 0)}, topic_id=uuid.uuid4()), 1, True, 100)
    assert isinstance(decided, Fail) and decided.error == MirrorError.UNEXPECTED_TRUNCATION


def test_a_recreated_source_topic_on_an_empty_mirror_is_missing_for_now():
    assert plan(mirror(1), topic({0: (1, 0)}, topic_id=uuid.uuid4()), 1, False, 100) == SourceMissing("NONE")


def test_absent_or_erring_metadata_is_missing_and_a_denial_is_denied():
    assert plan(mirror(1), None, 1, True, 100) == SourceMissing("absent")
    assert plan(mirror(1), topic({}, error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), 1, True, 100) == SourceMissing("UNKNOWN_TOPIC_OR_PARTITION")
    assert plan(mirror(1), topic({}, error=ErrorCode.TOPIC_AUTHORIZATION_FAILED), 1, True, 100) == SourceDenied()


def test_a_mirror_without_its_local_topic_gets_nothing():
    assert plan(mirror(1), topic({0: (1, 0)}), None, False, 100) == NoLocalTopic()


def _parts(topic_name: str, partitions: list[int]):
    m = Mirror(topic_name, "l", "s", str(ID), MirrorState.ACTIVE)
    return [(m, PartitionProgress(p)) for p in partitions]


def test_spread_gives_each_fetcher_a_disjoint_even_share_of_a_brokers_partitions():
    parts = _parts("a", list(range(10))) + _parts("b", [1, 3, 5])
    shares = spread(parts, 4)
    seen = [(m.topic, p.partition) for share in shares.values() for m, p in share]
    assert sorted(seen) == sorted((m.topic, p.partition) for m, p in parts)  # each exactly once
    a_counts = sorted(sum(m.topic == "a" for m, _p in share) for share in shares.values())
    assert a_counts == [2, 2, 3, 3]  # round-robin within a topic
    assert set(shares) <= {0, 1, 2, 3}
    one = spread(parts, 1)
    assert list(one) == [0] and len(one[0]) == len(parts)


def test_spread_keeps_a_partitions_fetcher_when_other_topics_come_and_go():
    a = _parts("a", [0, 1, 2, 3])
    before = {p.partition: i for i, share in spread(a, 3).items() for _m, p in share}
    after = {p.partition: i for i, share in spread(a + _parts("z", [0, 1]), 3).items() for m, p in share if m.topic == "a"}
    assert before == after


def test_spread_does_not_put_every_single_partition_topic_on_one_fetcher():
    parts = [item for n in range(40) for item in _parts(f"t{n}", [0])]
    assert len(spread(parts, 4)) == 4


def test_fetcher_count_is_the_configured_one_or_adapts_to_the_round_trip():
    assert fetcher_count(3, 0.0001) == 3 and fetcher_count(1, 0.2) == 1  # set: exactly that
    assert fetcher_count(0, None) == 1  # not measured yet: a LAN
    assert fetcher_count(0, LAN_ROUND_TRIP_S / 2) == 1
    assert fetcher_count(0, 0.1) == WAN_FETCHERS > 1
