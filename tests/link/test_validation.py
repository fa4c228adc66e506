"""Validating a mirror partition (linkd/link/validation.py) against a model source, without sockets: the
machine asks for what it needs and ends in one outcome."""

from __future__ import annotations

import pytest

from linkd.link.partition import Fail, TruncateTo
from linkd.link.states import MirrorError
from linkd.link.validation import AskBatch, AskEpochEnd, AskOffset, Unavailable, Validated, Validation
from linkd.link.wire import EARLIEST, LATEST, EpochEnd, FetchedPartition, ListedOffset
from linkd.storage import LogConfig, PartitionLog
from protocol.errors import ErrorCode

from .corehelpers import ModelSource


@pytest.fixture
def plog(tmp_path):
    log = PartitionLog.open(tmp_path / "m-0", LogConfig(), "m", 0)
    yield log
    log.close()


def run(machine: Validation, source: ModelSource, asked: list | None = None):
    """Answer the machine's asks from ``source`` until it ends; returns the outcome."""
    step = machine.start()
    while isinstance(step, AskOffset | AskEpochEnd | AskBatch):
        if asked is not None:
            asked.append(step)
        if isinstance(step, AskOffset):
            step = machine.receive(source.list_offset(step.timestamp))
        elif isinstance(step, AskEpochEnd):
            step = machine.receive(source.epoch_end(step.epoch))
        else:
            step = machine.receive(source.fetch(step.offset))
    return step


def mirror_of(source: ModelSource, plog, upto: int | None = None) -> None:
    for b in source.batches[:upto]:
        plog.append_mirrored(b.data)


def test_an_empty_log_starts_at_the_start_spec_offset(plog):
    source = ModelSource()
    for _ in range(3):
        source.produce(2)
    asked: list = []
    assert run(Validation(plog, 0, epochs_supported=True, start_timestamp=LATEST), source, asked) == Validated(6)
    assert asked == [AskOffset(LATEST)]


def test_an_empty_log_with_no_record_that_recent_starts_at_the_latest_offset(plog):
    source = ModelSource()
    source.produce(4)
    asked: list = []
    assert run(Validation(plog, 0, epochs_supported=True, start_timestamp=1_700_000_000_000), source, asked) == Validated(4)
    assert asked == [AskOffset(1_700_000_000_000), AskOffset(LATEST)]


def test_an_empty_log_at_earliest_asks_kafka_nothing_and_fetches_from_zero(plog):
    # Apache Kafka (OffsetForLeaderEpoch) answers a fetch below its log start with OFFSET_OUT_OF_RANGE, which
    # the partition core then takes as where the mirror starts: no ListOffsets round trip first.
    asked: list = []
    assert run(Validation(plog, 0, epochs_supported=True, start_timestamp=EARLIEST), ModelSource(), asked) == Validated(None, start_unconfirmed=True)
    assert asked == []
    # Without it (Tansu) the start is asked for, as for any other start spec.
    assert run(Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST), ModelSource(), asked) == Validated(None)
    assert asked == [AskOffset(EARLIEST)]


def test_a_prefix_of_the_source_is_valid_by_epoch(plog):
    source = ModelSource()
    source.produce(3)
    source.new_leader()
    source.produce(2)
    mirror_of(source, plog)
    source.produce(1)
    asked: list = []
    assert run(Validation(plog, 0, epochs_supported=True, start_timestamp=EARLIEST), source, asked) == Validated()
    assert asked == [AskEpochEnd(1)]


def test_a_divergence_by_epoch_truncates_to_the_common_prefix(plog):
    source = ModelSource()
    source.produce(3)
    source.produce(3)
    mirror_of(source, plog)
    source.unclean_truncate(keep=1)  # the new leader lacks our last batch
    source.produce(5)
    assert run(Validation(plog, 0, epochs_supported=True, start_timestamp=EARLIEST), source) == TruncateTo(3, 0)


def test_without_epochs_the_last_batch_is_compared_by_crc(plog):
    source = ModelSource()
    source.produce(2)
    source.produce(2)
    mirror_of(source, plog)
    asked: list = []
    assert run(Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST), source, asked) == Validated()
    assert asked == [AskBatch(2, 1024)]


def test_without_epochs_another_batch_at_our_last_offset_fails_the_mirror(plog):
    source = ModelSource()
    source.produce(2)
    source.produce(2)
    mirror_of(source, plog)
    source.unclean_truncate(keep=1)
    source.produce(2)  # same offsets, other records
    outcome = run(Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST), source)
    assert isinstance(outcome, Fail) and outcome.error == MirrorError.UNEXPECTED_TRUNCATION and "CRC" in outcome.message


def test_without_epochs_a_source_that_lost_what_it_served_fails_the_mirror(plog):
    source = ModelSource()
    source.produce(2)
    source.produce(2)
    mirror_of(source, plog)
    source.unclean_truncate(keep=0)  # ends at 0; we hold up to 3
    asked: list = []
    outcome = run(Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST), source, asked)
    assert isinstance(outcome, Fail) and "lost data it had served" in outcome.message
    assert asked == [AskBatch(2, 1024), AskOffset(EARLIEST), AskOffset(LATEST)]


def test_without_epochs_our_last_batch_removed_by_retention_is_valid(plog):
    source = ModelSource()
    for _ in range(3):
        source.produce(2)
    mirror_of(source, plog, upto=2)
    source.produce(2)
    source.retain_from(3)  # the source no longer holds offsets 2-3
    assert run(Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST), source) == Validated()


def test_an_epoch_answer_without_an_end_falls_back_to_the_crc_check(plog):
    source = ModelSource()
    source.produce(2)
    mirror_of(source, plog)
    machine = Validation(plog, 0, epochs_supported=True, start_timestamp=EARLIEST)
    assert machine.start() == AskEpochEnd(0)
    assert machine.receive(EpochEnd(ErrorCode.UNKNOWN_SERVER_ERROR, -1, -1)) == AskBatch(0, 1024)


def test_a_source_error_on_list_offsets_is_unavailable(plog):
    machine = Validation(plog, 0, epochs_supported=True, start_timestamp=LATEST)
    machine.start()
    assert isinstance(machine.receive(ListedOffset(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), Unavailable)


def test_a_validation_fetch_error_is_unavailable(plog):
    source = ModelSource()
    source.produce(2)
    mirror_of(source, plog)
    machine = Validation(plog, 0, epochs_supported=False, start_timestamp=EARLIEST)
    machine.start()
    assert isinstance(machine.receive(FetchedPartition(0, ErrorCode.NOT_LEADER_OR_FOLLOWER)), Unavailable)


def test_an_answer_of_the_wrong_kind_is_our_bug_not_the_sources(plog):
    machine = Validation(plog, 0, epochs_supported=True, start_timestamp=LATEST)
    machine.start()
    with pytest.raises(TypeError):
        machine.receive(EpochEnd(ErrorCode.NONE, 0, 0))
