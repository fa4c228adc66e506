"""A Hypothesis state machine drives one mirror partition's sans-IO core (assignment, validation and the
fetch-answer core) against a model source that grows, elects new leaders, truncates uncleanly, deletes
by retention and answers with errors, partial batches and corrupt blobs. The actions are carried out on a
real PartitionLog as the fetcher would. No sockets.

Properties: the mirror never holds two histories (whenever the core is validated and the source has not
changed leaders since, the mirror's batches are the source's at the same offsets); a Fail is only ever a
divergence the mirror cannot repair; and once the source stops changing, fetching converges to exactly
the source's log."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from linkd.link.assignment import Assigned, plan
from linkd.link.mirror import Mirror
from linkd.link.partition import (
    Append,
    CaughtUp,
    CheckRange,
    Denied,
    Fail,
    FetchAgain,
    PartitionCore,
    RefreshMetadata,
    Revalidate,
    SkipTo,
    TruncateTo,
    fetch_position,
)
from linkd.link.source import SourcePartition, SourceTopic
from linkd.link.states import MirrorError, MirrorState
from linkd.link.validation import AskBatch, AskEpochEnd, AskOffset, Unavailable, Validated, Validation
from linkd.link.wire import EARLIEST, FetchedPartition
from linkd.storage import LogConfig, PartitionLog
from protocol.errors import ErrorCode

from .corehelpers import ModelSource

TOPIC_ID = uuid.uuid4()


class PartitionMachine(RuleBasedStateMachine):
    @initialize(epochs=st.booleans())
    def start(self, epochs: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="linkd-core-")
        self.plog = PartitionLog.open(Path(self.dir) / "m-0", LogConfig(), "m", 0)
        self.source = ModelSource()
        self.source_topic_id = TOPIC_ID
        self.epochs = epochs  # the source answers OffsetForLeaderEpoch (Apache Kafka) or not (Tansu)
        self.mirror = Mirror("m", "l", "s", str(TOPIC_ID), MirrorState.ACTIVE)
        self.core: PartitionCore | None = None
        self.failed: Fail | None = None
        self.leader_changed = False  # since the core last validated
        self.deleted_ranges: list[tuple[int, int]] = []

    def teardown(self) -> None:
        if hasattr(self, "plog"):
            self.plog.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the fetcher's part, carried out here without I/O ---------------------------------------

    def _refresh_metadata(self) -> None:
        st_ = SourceTopic("s", self.source_topic_id, ErrorCode.NONE, {0: SourcePartition(0, 1, self.source.epoch, ErrorCode.NONE)})
        decided = plan(self.mirror, st_, 1, self.plog.log_end_offset > 0, 1 << 20)
        if self.source_topic_id != TOPIC_ID:
            # Another log under the same name: never mixed with the one the mirror holds.
            assert isinstance(decided, Fail) and decided.error == MirrorError.UNEXPECTED_TRUNCATION
            self.failed = decided
            return
        assert isinstance(decided, Assigned) and [p.partition for _b, p in decided.leaders] == [0]
        self.core = PartitionCore(self.mirror.partitions[0], 1 << 20)

    def _validate(self) -> None:
        machine = Validation(self.plog, 0, epochs_supported=self.epochs, start_timestamp=EARLIEST)
        step = machine.start()
        for _ in range(5):
            if isinstance(step, AskOffset):
                step = machine.receive(self.source.list_offset(step.timestamp))
            elif isinstance(step, AskEpochEnd):
                assert self.epochs
                step = machine.receive(self.source.epoch_end(step.epoch))
            elif isinstance(step, AskBatch):
                step = machine.receive(self.source.fetch(step.offset, max_batches=1))
            else:
                break
        assert not isinstance(step, AskOffset | AskEpochEnd | AskBatch | Unavailable), step
        if isinstance(step, Validated):
            if step.reset_to is not None:
                self.plog.reset_to(step.reset_to)
            self.core.validated(truncated=False)
        else:
            self._apply(step)
            if isinstance(step, TruncateTo):
                self.core.validated(truncated=True)
        if self.core.progress.validated:
            self.leader_changed = False

    def _apply(self, action) -> None:
        if isinstance(action, Append):
            self.plog.append_mirrored(action.slice)
            self.core.appended(self.plog, 1)
            self.core.append_ended()
        elif isinstance(action, TruncateTo):
            self.plog.truncate_to(action.offset)
        elif isinstance(action, SkipTo):
            if action.restart_log:
                self.plog.reset_to(action.offset)
        elif isinstance(action, Fail):
            assert action.error == MirrorError.UNEXPECTED_TRUNCATION, action
            self.failed = action

    def _step(self, max_batches: int = 100, partial: bool = False):
        """One round for the partition: refresh, validate or fetch, as the fetcher would."""
        if self.core is None or (self.source_topic_id != TOPIC_ID and self.core.progress.validated is False):
            self._refresh_metadata()
            return None
        if not self.core.progress.validated:
            self._validate()
            return None
        position = fetch_position(self.core.progress, self.plog)
        answer = self.source.fetch(position, self.core.progress.leader_epoch, max_batches, partial)
        action = self.core.on_answer(answer, self.plog, 1)
        if isinstance(action, CheckRange):
            action = self.core.on_range(self.source.start, self.source.end, self.plog)
        if isinstance(action, RefreshMetadata):
            self._refresh_metadata()
            return action
        self._apply(action)
        return action

    # -- rules ------------------------------------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def produce(self, count: int) -> None:
        self.source.produce(count)

    @rule()
    def new_leader(self) -> None:
        self.source.new_leader()
        self.leader_changed = True

    @rule(data=st.data())
    @precondition(lambda self: len(self.source.batches) > 0 and (self.epochs or self.plog.log_end_offset > 0))
    def unclean_election(self, data) -> None:
        self.source.unclean_truncate(data.draw(st.integers(0, len(self.source.batches) - 1)))
        self.leader_changed = True
        if not self.epochs:
            # Without leader epochs a source that lost data is only recognisable as another log (Tansu
            # restarting empty comes back with a new topic id); its offsets alone cannot tell.
            self.source_topic_id = uuid.uuid4()

    @rule(data=st.data())
    @precondition(lambda self: len(self.source.batches) > 0)
    def retention(self, data) -> None:
        self.source.retain_from(data.draw(st.integers(1, len(self.source.batches))))

    @rule(max_batches=st.integers(1, 4), partial=st.booleans())
    @precondition(lambda self: self.failed is None)
    def fetch(self, max_batches: int, partial: bool) -> None:
        action = self._step(max_batches, partial)
        if self.failed is not None:
            return
        assert action is None or isinstance(action, Append | CaughtUp | SkipTo | Fail | Revalidate | RefreshMetadata | FetchAgain | TruncateTo)

    @rule(code=st.sampled_from([ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.TOPIC_AUTHORIZATION_FAILED, ErrorCode.UNKNOWN_SERVER_ERROR]))
    @precondition(lambda self: self.failed is None and self.core is not None and self.core.progress.validated)
    def error_answer(self, code: ErrorCode) -> None:
        before = fetch_position(self.core.progress, self.plog)
        action = self.core.on_answer(FetchedPartition(0, code), self.plog, 1)
        expected = {ErrorCode.NOT_LEADER_OR_FOLLOWER: RefreshMetadata, ErrorCode.TOPIC_AUTHORIZATION_FAILED: Denied, ErrorCode.UNKNOWN_SERVER_ERROR: FetchAgain}
        assert isinstance(action, expected[code])
        assert self.core.progress.validated == (code != ErrorCode.NOT_LEADER_OR_FOLLOWER)
        assert fetch_position(self.core.progress, self.plog) == before

    @rule()
    @precondition(lambda self: self.failed is None and self.core is not None and self.core.progress.validated)
    def corrupt_answer(self) -> None:
        action = self.core.on_answer(FetchedPartition(0, ErrorCode.NONE, self.source.end, self.source.start, b"\0" * 8 + (5).to_bytes(4, "big") + b"\0" * 60), self.plog, 1)
        assert isinstance(action, Fail) and action.error == MirrorError.CORRUPT_BATCH

    @rule()
    @precondition(lambda self: self.failed is None)
    def settle(self) -> None:
        """With the source standing still, fetching converges to exactly the source's log."""
        for _ in range(60):
            action = self._step()
            if self.failed is not None:
                return
            if isinstance(action, CaughtUp):
                break
        else:
            raise AssertionError("fetching did not converge")
        assert fetch_position(self.core.progress, self.plog) == self.source.end
        self._assert_same_history()

    # -- invariants -------------------------------------------------------------------------------

    def _assert_same_history(self) -> None:
        ours = {}
        offset = max(self.plog.log_start_offset, self.source.start)
        while offset < self.plog.log_end_offset:
            header = self.plog.batch_header(offset)
            assert header is not None
            ours[header.base_offset] = header.crc
            offset = header.next_offset
        theirs = {b.base: int.from_bytes(b.data[17:21], "big") for b in self.source.batches if b.base < self.plog.log_end_offset}
        assert {k: v for k, v in theirs.items() if k >= max(self.plog.log_start_offset, self.source.start)} == ours

    @invariant()
    def never_two_histories(self) -> None:
        if self.failed is None and self.core is not None and self.core.progress.validated and not self.leader_changed:
            self._assert_same_history()

    @invariant()
    def position_never_behind_the_log(self) -> None:
        if self.core is not None:
            assert fetch_position(self.core.progress, self.plog) >= self.plog.log_end_offset
            assert self.core.progress.inflight_end == -1


TestPartitionCore = PartitionMachine.TestCase
TestPartitionCore.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
