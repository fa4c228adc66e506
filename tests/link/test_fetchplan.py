"""A fetcher's request entries kept between rounds (``FetchPlan``): whatever happened to which partitions,
as long as the fetcher touches each partition something happened to, the session wants exactly what a
round computing every entry afresh would ask for, and an idle round computes no entry at all."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from linkd.link.fetchplan import FetchPlan
from linkd.link.fetchsession import FetchSession
from linkd.link.mirror import Mirror, PartitionProgress
from linkd.link.partition import fetch_position
from linkd.link.states import MirrorState
from linkd.link.wire import fetch_partition


@dataclass
class FakeLog:
    log_end_offset: int = 0
    log_start_offset: int = 0


@dataclass
class FakeTopic:
    logs: list[FakeLog] = field(default_factory=list)


def mirror(name: str, partitions: int) -> Mirror:
    m = Mirror(name, "link", f"src-{name}", None, MirrorState.ACTIVE)
    m.partitions = [PartitionProgress(p, validated=True, max_bytes=100, leader=1, leader_epoch=0) for p in range(partitions)]
    return m


def from_scratch(parts, topics) -> dict:
    out = {}
    for m, p in parts:
        local = topics.get(m.topic)
        if p.validated and local is not None:
            out[(m.source_topic, p.partition)] = fetch_partition(p.partition, fetch_position(p, local.logs[p.partition]), p.max_bytes, p.leader_epoch)
    return out


class PlanMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.mirrors = [mirror(n, 3) for n in ("a", "b", "c")]
        self.topics = {m.topic: FakeTopic([FakeLog() for _ in m.partitions]) for m in self.mirrors}
        self.assigned = [(m, p) for m in self.mirrors for p in m.partitions]
        self.session = FetchSession()
        self.plan = FetchPlan(self.session)
        self.plan.update(list(self.assigned), self.topics, lambda p: p.max_bytes)

    def _pick(self, i: int):
        return self.assigned[i % len(self.assigned)] if self.assigned else None

    @rule(i=st.integers(0, 20), by=st.integers(1, 5))
    def append_lands(self, i: int, by: int) -> None:
        item = self._pick(i)
        if item is not None:
            self.topics[item[0].topic].logs[item[1].partition].log_end_offset += by
            self.plan.touch(item[1])

    @rule(i=st.integers(0, 20), end=st.integers(0, 50))
    def append_in_flight_or_ended(self, i: int, end: int) -> None:
        item = self._pick(i)
        if item is not None:
            item[1].inflight_end = end if item[1].inflight_end < 0 else -1
            self.plan.touch(item[1])

    @rule(i=st.integers(0, 20), size=st.integers(1, 1000))
    def answer_changes_the_size(self, i: int, size: int) -> None:
        item = self._pick(i)
        if item is not None:
            item[1].max_bytes = size
            self.plan.touch(item[1])

    @rule(i=st.integers(0, 20))
    def validation_flips(self, i: int) -> None:
        item = self._pick(i)
        if item is not None:
            item[1].validated = not item[1].validated
            self.plan.touch(item[1])

    @rule(i=st.integers(0, 20))
    def partition_leaves_or_comes_back(self, i: int) -> None:
        everything = [(m, p) for m in self.mirrors for p in m.partitions]
        item = everything[i % len(everything)]
        if item in self.assigned:
            self.assigned.remove(item)
        else:
            self.assigned.append(item)  # a list of new identity: the plan sees the set change

    @rule(i=st.integers(0, 2))
    def mirror_recreated(self, i: int) -> None:
        """Deleted and created again under the same name: new progress records, the same keys."""
        old = self.mirrors[i]
        new = self.mirrors[i] = mirror(old.topic, 3)
        self.topics[new.topic] = FakeTopic([FakeLog() for _ in new.partitions])
        self.assigned = [item for item in self.assigned if item[0] is not old] + [(new, p) for p in new.partitions]

    @rule(epoch=st.integers(1, 5))
    def assignment_refreshed(self, epoch: int) -> None:
        for _m, p in self.assigned:
            p.leader_epoch = epoch
        self.plan.touch_all()

    @rule()
    def round(self) -> None:
        self.plan.update(list(self.assigned), self.topics, lambda p: p.max_bytes)
        assert self.session.wanted() == from_scratch(self.assigned, self.topics)
        assert set(self.plan.by_key) == set(self.session.wanted())

    @invariant()
    def entries_are_never_stale_after_a_round(self) -> None:
        self.round()


TestFetchPlan = PlanMachine.TestCase
TestFetchPlan.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def test_an_idle_round_computes_no_entry():
    m = mirror("quiet", 1000)
    topics = {"quiet": FakeTopic([FakeLog(5) for _ in m.partitions])}
    parts = [(m, p) for p in m.partitions]
    plan = FetchPlan(FetchSession())
    asked = []
    plan.update(list(parts), topics, lambda p: asked.append(p) or p.max_bytes)
    assert len(asked) == 1000
    asked.clear()
    plan.update(list(parts), topics, lambda p: asked.append(p) or p.max_bytes)
    assert asked == []
    plan.touch(m.partitions[7])
    plan.update(list(parts), topics, lambda p: asked.append(p) or p.max_bytes)
    assert asked == [m.partitions[7]]
