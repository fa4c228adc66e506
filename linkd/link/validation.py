"""Validating a mirror partition before it is fetched: a small sans-IO machine that asks for what it needs.

Before a partition's first fetch, and again after a reconnection or leader change, the mirror's log end
must still be a prefix of the source's log:

- an empty log (nothing ever mirrored) starts where ``mirror.start.offset.spec`` says: ListOffsets at its
  timestamp, or the latest offset when nothing is that recent; for ``earliest`` from Apache Kafka (which
  answers a fetch below its log start with OFFSET_OUT_OF_RANGE) nothing is asked: the partition fetches
  from 0 at once (``Validated(start_unconfirmed=True)``) and the partition core moves an out-of-range
  answer to the source's start without calling it a gap;
- with OffsetForLeaderEpoch (Apache Kafka) the source says where our last epoch ends there: at or past our
  end is a prefix; before it, the log is cut back to the common prefix (``TruncateTo``);
- without it (Tansu), the source must still hold our last batch with the same CRC. If the source no longer
  has that offset, its retention removed it (nothing to compare: valid) unless its log now ends before
  ours: then it lost data it had served, and the mirror fails with UNEXPECTED_TRUNCATION rather than mix
  two histories at the same offsets.

Use: ``step = Validation(...).start()``; while ``step`` is an ask (``AskOffset``, ``AskEpochEnd``,
``AskBatch``), send it and ``step = validation.receive(answer)``; the last step is an outcome
(``Validated``, ``TruncateTo``, ``Fail``, ``Unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ErrorCode
from protocol.records import split_batches

from .partition import Fail, LogView, TruncateTo, resolve_divergence
from .states import MirrorError
from .wire import EARLIEST, LATEST, EpochEnd, FetchedPartition, ListedOffset


@dataclass(frozen=True)
class AskOffset:
    timestamp: int  # LATEST, EARLIEST or epoch ms


@dataclass(frozen=True)
class AskEpochEnd:
    epoch: int


@dataclass(frozen=True)
class AskBatch:
    offset: int
    max_bytes: int


@dataclass(frozen=True)
class Validated:
    reset_to: int | None = None  # an empty log starts at this offset first (nothing skipped, no gap)
    start_unconfirmed: bool = False  # an empty log fetches from 0 without having asked (see PartitionProgress)


@dataclass(frozen=True)
class Unavailable:
    message: str


Ask = AskOffset | AskEpochEnd | AskBatch
Outcome = Validated | TruncateTo | Fail | Unavailable
Step = Ask | Outcome


def asks_start_offset(start_timestamp: int, epochs_supported: bool) -> bool:
    """Whether an empty log asks the source where to start (ListOffsets) before its first fetch: not at
    ``earliest`` from a source with OffsetForLeaderEpoch (Apache Kafka), which answers a fetch below its log
    start with OFFSET_OUT_OF_RANGE."""
    return not (start_timestamp == EARLIEST and epochs_supported)


class Validation:
    def __init__(self, log: LogView, partition: int, *, epochs_supported: bool, start_timestamp: int) -> None:
        self.log = log
        self.partition = partition
        self.epochs_supported = epochs_supported
        self.start_timestamp = start_timestamp
        self._phase = "new"
        self._earliest = -1

    def start(self) -> Step:
        log = self.log
        if log.log_end_offset == log.log_start_offset == 0:
            if not asks_start_offset(self.start_timestamp, self.epochs_supported):
                return Validated(start_unconfirmed=True)
            self._phase = "start-offset"
            return AskOffset(self.start_timestamp)
        epoch = log.latest_epoch
        if self.epochs_supported and epoch is not None and epoch >= 0:
            self._phase = "epoch"
            return AskEpochEnd(epoch)
        return self._by_crc()

    def _by_crc(self) -> Step:
        last = self.log.batch_header(self.log.log_end_offset - 1)
        if last is None:
            return Validated()
        self._phase = "crc"
        self._last = last
        return AskBatch(last.base_offset, max(last.size, 1024))

    def receive(self, answer: ListedOffset | EpochEnd | FetchedPartition) -> Step:
        phase = self._phase
        if phase in ("start-offset", "start-latest", "range-earliest", "range-latest"):
            if not isinstance(answer, ListedOffset):
                raise TypeError(f"validation in phase {phase} expects a ListedOffset, not {answer!r}")
            if answer.error != ErrorCode.NONE:
                return Unavailable(f"ListOffsets for partition {self.partition} failed with {answer.error.name}")
            if phase == "start-offset" and answer.offset < 0:
                self._phase = "start-latest"
                return AskOffset(LATEST)
            if phase in ("start-offset", "start-latest"):
                return Validated(answer.offset if answer.offset > 0 else None)
            if phase == "range-earliest":
                self._earliest = answer.offset
                self._phase = "range-latest"
                return AskOffset(LATEST)
            if answer.offset < self.log.log_end_offset:
                return Fail(
                    MirrorError.UNEXPECTED_TRUNCATION,
                    f"partition {self.partition}: source log ends at {answer.offset} (starts at {self._earliest}) but the mirror already holds offsets up to {self.log.log_end_offset - 1}; the source lost data it had served",
                )
            return Validated()  # our last batch was removed by source retention: nothing to compare
        if phase == "epoch":
            if not isinstance(answer, EpochEnd):
                raise TypeError(f"validation in phase epoch expects an EpochEnd, not {answer!r}")
            if answer.error == ErrorCode.NONE and answer.end_offset >= 0:
                if answer.leader_epoch == self.log.latest_epoch and answer.end_offset >= self.log.log_end_offset:
                    return Validated()
                return resolve_divergence(self.log, self.partition, answer.leader_epoch, answer.end_offset) or Validated()
            return self._by_crc()
        if phase == "crc":
            if not isinstance(answer, FetchedPartition):
                raise TypeError(f"validation in phase crc expects a FetchedPartition, not {answer!r}")
            if answer.error == ErrorCode.OFFSET_OUT_OF_RANGE:
                self._phase = "range-earliest"
                return AskOffset(EARLIEST)
            if answer.error != ErrorCode.NONE:
                return Unavailable(f"validation fetch for partition {self.partition} failed with {answer.error.name}")
            last = self._last
            theirs = [b for b in split_batches(answer.records or b"").batches if b.base_offset == last.base_offset]
            if theirs and theirs[0].crc == last.crc and theirs[0].last_offset_delta == last.last_offset_delta:
                return Validated()
            return Fail(
                MirrorError.UNEXPECTED_TRUNCATION,
                f"partition {self.partition}: the source no longer holds the mirror's last batch at offset {last.base_offset} with CRC {last.crc:#010x}; its log diverged",
            )
        raise RuntimeError(f"validation received an answer in phase {phase}")
