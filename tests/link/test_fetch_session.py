"""The link's incremental fetch sessions (KIP-227): a model broker keeps the session the way Kafka's does,
and after every answered request it must hold exactly the partitions (and request fields) the link wants;
against Apache Kafka, mirrors stay byte-identical while the link fetches incrementally."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from linkd.link.fetchsession import FetchSession
from protocol.errors import ErrorCode

KEYS = [(t, p) for t in ("a", "b") for p in range(3)]


class ModelBroker:
    """Kafka's side: session id -> (epoch expected next, partition -> request entry)."""

    def __init__(self) -> None:
        self.sessions: dict[int, tuple[int, dict]] = {}
        self.next_id = 1
        self.grants = True

    def handle(self, request: dict) -> tuple[int, int]:
        sid, epoch = request["session_id"], request["session_epoch"]
        sent = {(t["topic"], e["partition"]): e for t in request["topics"] for e in t["partitions"]}
        forgotten = {(f["topic"], p) for f in request["forgotten_topics_data"] for p in f["partitions"]}
        if sid == 0:
            if epoch != 0 or not self.grants:
                return ErrorCode.NONE, 0
            sid, self.next_id = self.next_id, self.next_id + 1
            self.sessions[sid] = (1, dict(sent))
            return ErrorCode.NONE, sid
        if sid not in self.sessions:
            return ErrorCode.FETCH_SESSION_ID_NOT_FOUND, 0
        expected, held = self.sessions[sid]
        if epoch != expected:
            return ErrorCode.INVALID_FETCH_SESSION_EPOCH, 0
        held = {k: v for k, v in held.items() if k not in forgotten}
        held.update(sent)
        self.sessions[sid] = (epoch + 1, held)
        return ErrorCode.NONE, sid

    def held(self, sid: int) -> dict | None:
        return self.sessions[sid][1] if sid in self.sessions else None


entries = st.dictionaries(st.sampled_from(KEYS), st.integers(0, 5).map(lambda o: {"fetch_offset": o, "partition_max_bytes": 100}), min_size=1)


class BrokerRules(RuleBasedStateMachine):
    """The broker's side of both machines below: it may evict a session or stop granting them, and while
    a session holds, it holds what the link last had answered (``self.wanted``)."""

    broker: ModelBroker
    session: FetchSession
    wanted: dict | None

    @rule()
    def broker_evicts_the_session(self) -> None:
        self.broker.sessions.clear()

    @rule(grants=st.booleans())
    def broker_grants_sessions(self, grants: bool) -> None:
        self.broker.grants = grants

    @invariant()
    def the_broker_holds_what_the_link_wants(self) -> None:
        if self.session.session_id and self.wanted is not None:
            held = self.broker.held(self.session.session_id)
            if held is not None:  # evicted: the next request finds out and starts over
                assert held == self.wanted


class SessionMachine(BrokerRules):
    @initialize()
    def start(self) -> None:
        self.broker = ModelBroker()
        self.session = FetchSession()
        self.wanted: dict | None = None
        self.full_requests = 0

    def _with_partition(self, wanted: dict) -> dict:
        return {k: {"partition": k[1], **v} for k, v in wanted.items()}

    @rule(wanted=entries)
    def fetch(self, wanted: dict) -> None:
        wanted = self._with_partition(wanted)
        request = self.session.build(wanted)
        if request["session_id"] == 0:
            self.full_requests += 1
            assert {(t["topic"], e["partition"]) for t in request["topics"] for e in t["partitions"]} == set(wanted)
        code, sid = self.broker.handle(request)
        self.session.answered(code, sid)
        self.wanted = wanted if code == ErrorCode.NONE else None

    @rule(wanted=entries)
    def request_lost(self, wanted: dict) -> None:
        """Sent, maybe applied by the broker, never answered (timeout, connection cut)."""
        request = self.session.build(self._with_partition(wanted))
        if request["session_id"]:
            self.broker.handle(request)
        self.session.reset()
        self.wanted = None



TestFetchSession = SessionMachine.TestCase
TestFetchSession.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)


class PartitionAtATimeMachine(BrokerRules):
    """The same broker, with the link changing one partition at a time (``want`` / ``drop``) between
    requests, as a fetcher does for the few partitions a round touched, and sometimes while a request is
    in flight: after every answer the broker holds exactly what the link wanted when it built it."""

    @initialize()
    def start(self) -> None:
        self.broker = ModelBroker()
        self.session = FetchSession()
        self.model: dict = {}  # what the link wants now
        self.wanted: dict | None = None  # what the broker must hold (the last answered request's)

    @rule(key=st.sampled_from(KEYS), offset=st.integers(0, 5))
    def want(self, key, offset: int) -> None:
        entry = {"partition": key[1], "fetch_offset": offset, "partition_max_bytes": 100}
        self.session.want(key, entry)
        self.model[key] = entry

    @rule(key=st.sampled_from(KEYS))
    def drop(self, key) -> None:
        self.session.drop(key)
        self.model.pop(key, None)

    @rule(key=st.sampled_from(KEYS), offset=st.integers(0, 5), lost=st.booleans(), whole=st.booleans())
    def fetch(self, key, offset: int, lost: bool, whole: bool) -> None:
        if not self.model:
            return
        request = self.session.build(dict(self.model) if whole else None)
        sent = dict(self.model)
        if request["session_id"] == 0:
            assert {(t["topic"], e["partition"]): e for t in request["topics"] for e in t["partitions"]} == sent
        # A change made while the request is in flight belongs to the next one.
        entry = {"partition": key[1], "fetch_offset": offset, "partition_max_bytes": 100}
        self.session.want(key, entry)
        self.model[key] = entry
        if lost:
            if request["session_id"]:
                self.broker.handle(request)
            self.session.reset()
            self.wanted = None
            return
        code, sid = self.broker.handle(request)
        self.session.answered(code, sid)
        self.wanted = sent if code == ErrorCode.NONE else None
        assert self.session.wanted() == self.model



TestPartitionAtATime = PartitionAtATimeMachine.TestCase
TestPartitionAtATime.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)


def test_an_unchanged_partition_is_not_sent_again_and_a_dropped_one_is_forgotten():
    session = FetchSession()
    a0, a1 = {"partition": 0, "fetch_offset": 5}, {"partition": 1, "fetch_offset": 7}
    first = session.build({("a", 0): a0, ("a", 1): a1})
    assert (first["session_id"], first["session_epoch"]) == (0, 0) and len(first["topics"][0]["partitions"]) == 2
    session.answered(ErrorCode.NONE, 42)
    second = session.build({("a", 0): {**a0, "fetch_offset": 9}})
    assert (second["session_id"], second["session_epoch"]) == (42, 1)
    assert second["topics"] == [{"topic": "a", "partitions": [{"partition": 0, "fetch_offset": 9}]}]
    assert second["forgotten_topics_data"] == [{"topic": "a", "partitions": [1]}]
    session.answered(ErrorCode.INVALID_FETCH_SESSION_EPOCH, 0)
    third = session.build({("a", 0): {**a0, "fetch_offset": 9}})
    assert (third["session_id"], third["session_epoch"]) == (0, 0)  # starts over, in full


def test_mirrors_fetched_in_a_session_from_apache_kafka_stay_byte_identical(kafka_broker, linkd, unique_topic):
    from tests.link.mirroring import admin, assert_bytes_identical, create_link, produce_confluent, wait_for, wait_mirrored

    quiet, busy = f"{unique_topic}-quiet", f"{unique_topic}-busy"
    kafka_broker.create_topic(quiet, partitions=8)
    kafka_broker.create_topic(busy, partitions=2)
    produce_confluent(kafka_broker.bootstrap, quiet, [(p, None, b"q-%d" % p) for p in range(8)])
    client = admin(linkd)
    create_link(client, "sess", kafka_broker.bootstrap)
    client.create_mirror(quiet, "sess")
    client.create_mirror(busy, "sess")
    for round_ in range(6):  # the busy topic changes every round; the quiet one only twice
        produce_confluent(kafka_broker.bootstrap, busy, [(i % 2, None, b"b-%d-%d" % (round_, i)) for i in range(50)])
        if round_ == 2:
            client.mirror_action("pause", [quiet])  # its partitions leave the session...
            produce_confluent(kafka_broker.bootstrap, quiet, [(p, None, b"late-%d" % p) for p in range(0, 8, 3)])
        if round_ == 4:
            client.mirror_action("resume", [quiet])  # ...and come back
        ends = {p: kafka_broker.list_offsets(busy, p)[1] for p in range(2)}
        wait_mirrored(client, busy, ends, timeout=30)
    quiet_ends = {p: kafka_broker.list_offsets(quiet, p)[1] for p in range(8)}
    wait_mirrored(client, quiet, quiet_ends, timeout=30)
    stats = wait_for(lambda: (s := client.describe_link("sess")["statistics"])["incremental_fetch_requests"] > 0 and s, 10, "incremental fetches")
    assert stats["incremental_fetch_requests"] < stats["fetch_requests"]
    for topic, ends in ((busy, {p: kafka_broker.list_offsets(busy, p)[1] for p in range(2)}), (quiet, quiet_ends)):
        for partition, end in ends.items():
            assert_bytes_identical(kafka_broker.bootstrap, topic, linkd.bootstrap, topic, partition, 0, end)


def test_a_session_says_which_partitions_it_holds_and_when_it_was_last_answered():
    """Partitions an answer in the session leaves out are unchanged at the source (KIP-227): the link
    records their source end as seen then, instead of reading 10,000 idle partitions' ends every few seconds."""
    session = FetchSession()
    wanted = {("a", 0): {"partition": 0, "fetch_offset": 5}, ("a", 1): {"partition": 1, "fetch_offset": 7}}
    session.build(wanted)
    assert not session.holds(("a", 0)) and session.answered_ms == 0
    session.answered(ErrorCode.NONE, 42, now_ms=1_000)
    assert session.holds(("a", 0)) and session.holds(("a", 1)) and not session.holds(("b", 0))
    assert session.answered_ms == 1_000
    session.build({("a", 0): wanted[("a", 0)]})  # a-1 forgotten
    session.answered(ErrorCode.NONE, 42, now_ms=2_000)
    assert session.holds(("a", 0)) and not session.holds(("a", 1)) and session.answered_ms == 2_000
    session.build({("a", 0): wanted[("a", 0)]})
    session.answered(ErrorCode.FETCH_SESSION_ID_NOT_FOUND, 0, now_ms=3_000)  # session over: it holds nothing
    assert not session.holds(("a", 0)) and session.answered_ms == 0
