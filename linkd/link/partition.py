"""One mirror partition's fetch state: a fetch answer in, one action out (sans-IO).

``PartitionCore`` reads one partition's part of a Fetch answer against the mirror log's positions and
says what to do with it, as exactly one action:

- ``Append(slice)``: these whole batches, past where the log ends, go into the log;
- ``CaughtUp()``: nothing past our position (the answer is evidence of being at the source's end);
- ``TruncateTo(offset)``: the source's log diverged from ours (its diverging epoch); cut back and go on;
- ``CheckRange()``: OFFSET_OUT_OF_RANGE: read the source's earliest and latest offsets, then ``on_range``
  gives ``SkipTo(offset, reason)``, ``Revalidate`` or ``FetchAgain``;
- ``Fail(error, message)``: the mirror fails (a corrupt batch, a divergence before our log start);
- ``Revalidate(reason)``: our log may not be a prefix of the source's: validate before fetching again;
- ``RefreshMetadata(error)``: leadership moved; ``Denied()``: the source refuses Read on the topic;
- ``FetchAgain(reason)``: nothing to do but fetch again (an error to retry, a batch bigger than asked).

The core keeps the partition's in-memory progress (``PartitionProgress``: what the source showed, where
the next fetch starts, whether the log is validated); the fetcher carries the actions out (I/O, storage,
state transitions) before this partition is fetched again. Invariant: the core never proposes an append
that does not start at or past the log end, nor one of a batch that is not whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.errors import CorruptBatch, ErrorCode
from protocol.records import ATTR_TIMESTAMP_LOG_APPEND, BatchSlice, RecordBatch, split_batches

from . import fetchsize
from .mirror import PartitionProgress
from .states import MirrorError
from .wire import FetchedPartition

LEADERSHIP_ERRORS = frozenset({
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.REPLICA_NOT_AVAILABLE,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.UNKNOWN_TOPIC_ID,
    ErrorCode.OFFSET_NOT_AVAILABLE,
})
MAX_PARTITION_FETCH_BYTES = fetchsize.OVERSIZED_MAX


class LogView(Protocol):
    """What the core reads of a mirror partition's log (``PartitionLog`` is one; readers only)."""

    @property
    def log_start_offset(self) -> int: ...
    @property
    def log_end_offset(self) -> int: ...
    @property
    def latest_epoch(self) -> int | None: ...
    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]: ...
    def batch_header(self, offset: int) -> RecordBatch | None: ...


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Append:
    slice: BatchSlice


@dataclass(frozen=True)
class CaughtUp:
    pass


@dataclass(frozen=True)
class TruncateTo:
    offset: int
    epoch: int  # the leader epoch the source diverged at (for the gap record)


@dataclass(frozen=True)
class CheckRange:
    pass


@dataclass(frozen=True)
class SkipTo:
    offset: int
    reason: str
    from_offset: int  # where the hole starts (for the gap record)
    restart_log: bool  # the log is empty: it can start over at ``offset`` (else the skip is a resume point)


@dataclass(frozen=True)
class Fail:
    error: MirrorError
    message: str


@dataclass(frozen=True)
class Revalidate:
    reason: str


@dataclass(frozen=True)
class RefreshMetadata:
    error: ErrorCode


@dataclass(frozen=True)
class Denied:
    pass


@dataclass(frozen=True)
class FetchAgain:
    reason: str


Action = Append | CaughtUp | TruncateTo | CheckRange | SkipTo | Fail | Revalidate | RefreshMetadata | Denied | FetchAgain

SKIP_REASON = "source log start moved past the mirror (retention or DeleteRecords)"


def first_timestamp(batch: RecordBatch) -> int:
    """When the batch's first record was written: its append time for LogAppendTime, else its create time."""
    return batch.max_timestamp if batch.attributes & ATTR_TIMESTAMP_LOG_APPEND else batch.base_timestamp


def partial_first_timestamp(rest: memoryview) -> int:
    """The first timestamp of a partial batch at the start of ``rest`` (what a size limit left of the next
    batch), when its header got that far (-1 otherwise)."""
    if len(rest) < 43:  # attributes at 21, baseTimestamp at 27, maxTimestamp at 35
        return -1
    attributes = int.from_bytes(rest[21:23], "big")
    at = 35 if attributes & ATTR_TIMESTAMP_LOG_APPEND else 27
    return int.from_bytes(rest[at : at + 8], "big", signed=True)


def fetch_position(progress: PartitionProgress, log: LogView) -> int:
    """The next offset to fetch: the log end, past it after a skip, or where the append in flight ends."""
    return max(log.log_end_offset, progress.skip_to, progress.inflight_end)


def resolve_divergence(log: LogView, partition: int, epoch: int, end_offset: int) -> TruncateTo | Fail | None:
    """The source says its log at leader ``epoch`` ends at ``end_offset``: cut ours back to the common
    prefix (None: ours is already a prefix), or fail when that lies before what we still hold."""
    ours_epoch, ours_end = log.end_offset_for_epoch(epoch)
    target = min(end_offset, ours_end) if ours_epoch == epoch else end_offset
    target = min(target, log.log_end_offset)
    if target < log.log_start_offset:
        return Fail(MirrorError.UNEXPECTED_TRUNCATION, f"partition {partition}: source diverged at offset {target}, before the mirror's log start {log.log_start_offset}")
    if target < log.log_end_offset:
        return TruncateTo(target, epoch)
    return None


class PartitionCore:
    """The decisions for one mirror partition; ``progress`` is shared with the status readers."""

    def __init__(self, progress: PartitionProgress, fetch_max_bytes: int, grow_to: int = 0) -> None:
        self.progress = progress
        self.fetch_max_bytes = fetch_max_bytes  # replica.fetch.max.bytes: the size when caught up
        self.grow_to = grow_to  # the most it asks while far behind (``fetchsize.share``); 0: never grows

    def request_max_bytes(self) -> int:
        """What the next Fetch asks of this partition (see ``fetchsize``). Before its first answer (a new
        mirror, a restart) how far behind it is is unknown: it asks its share at once, which costs a
        caught-up partition nothing (the source answers with what it has) and saves a far-behind one the
        round trip it would spend asking for little."""
        asked = self.progress.max_bytes or self.fetch_max_bytes
        return asked if self.progress.source_end_seen_ms else max(asked, self.grow_to)

    def on_answer(self, answer: FetchedPartition, log: LogView, now_ms: int) -> Action:
        """Digest this partition's part of a Fetch answer, asked at ``fetch_position``."""
        p = self.progress
        code = answer.error
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            return CheckRange()
        if code in LEADERSHIP_ERRORS:
            p.validated = False  # a new leader may hold a different history
            return RefreshMetadata(code)
        if code == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
            return Denied()
        if code != ErrorCode.NONE:
            return FetchAgain(f"source fetch error {code.name}")
        p.source_high_watermark = answer.high_watermark
        p.source_log_start = answer.log_start_offset
        p.last_fetch_ms = p.source_end_seen_ms = now_ms
        position = fetch_position(p, log)
        if position >= p.source_high_watermark:
            p.caught_up_ms = now_ms
        if answer.diverging is not None:
            epoch, end_offset = answer.diverging
            outcome = resolve_divergence(log, p.partition, epoch, end_offset)
            if isinstance(outcome, Fail):
                return outcome
            self.validated(truncated=outcome is not None)
            return outcome or FetchAgain("the source's diverging epoch ends past our log")
        records = answer.records
        if not records:
            p.last_source_fetch_offset = position
            if position >= p.source_high_watermark:
                p.unmirrored_ts = -1  # nothing the source holds is missing here
                p.max_bytes = self.fetch_max_bytes
            return CaughtUp()
        try:
            split = split_batches(records)
        except CorruptBatch as exc:
            return Fail(MirrorError.CORRUPT_BATCH, f"partition {p.partition}: {exc}")
        first = next((i for i, b in enumerate(split.batches) if b.next_offset > position), None)
        if first is None:
            if split.consumed < len(records) and not split.batches:
                # One batch larger than our per-partition limit: ask for more next time (bounded).
                p.max_bytes = fetchsize.for_oversized_batch(p.max_bytes, self.fetch_max_bytes)
                return FetchAgain("a batch is larger than the partition's fetch size")
            return FetchAgain("nothing past our position")
        if split.batches[first].base_offset < log.log_end_offset:
            # The source's batch boundaries disagree with ours: our log is not a prefix of the source's.
            # (After a skip the batch holding the new source start may begin before it, but never before
            # our log end, which is all an append needs.)
            p.validated = False
            return Revalidate(f"the source's batch at {split.batches[first].base_offset} starts inside our log (end {log.log_end_offset})")
        sliced = split.tail(records, first)
        p.inflight_end = sliced.next_offset
        left = p.source_high_watermark - sliced.next_offset
        remaining = fetchsize.remaining_bytes(len(sliced.data), sliced.next_offset - sliced.batches[0].base_offset, left)
        p.max_bytes = fetchsize.after_answer(self.request_max_bytes(), self.fetch_max_bytes, self.grow_to, len(records), left > 0, remaining)
        p.unmirrored_ts = first_timestamp(sliced.batches[0])
        p.next_unmirrored_ts = partial_first_timestamp(memoryview(records)[split.consumed :])
        return Append(sliced)

    def on_range(self, earliest: int, latest: int, log: LogView) -> SkipTo | Revalidate | FetchAgain:
        """After OFFSET_OUT_OF_RANGE: the source holds [earliest, latest)."""
        p = self.progress
        ours = fetch_position(p, log)
        if ours < earliest:
            restart = log.log_end_offset == log.log_start_offset
            p.last_source_fetch_offset = earliest
            if restart and p.start_unconfirmed:
                # A new mirror fetched from 0 before learning where the source's log starts: it starts
                # there, and nothing was lost (from_offset == offset: no gap).
                p.start_unconfirmed = False
                return SkipTo(earliest, "the source's log starts there", earliest, True)
            # Retention or DeleteRecords on the source moved past us: continue at its start, remember the hole.
            p.skip_to = -1 if restart else earliest
            return SkipTo(earliest, SKIP_REASON, ours if restart else log.log_end_offset, restart)
        if ours > latest:
            p.validated = False  # the source lost data: let validation decide
            return Revalidate(f"our position {ours} is past the source's end {latest}")
        return FetchAgain(f"OFFSET_OUT_OF_RANGE at {ours} within [{earliest}, {latest}]")

    def validated(self, truncated: bool, start_unconfirmed: bool = False) -> None:
        """Validation ended with the log a prefix of the source's (after cutting it back, ``truncated``);
        ``start_unconfirmed``: an empty log fetches from 0 without having asked where the source starts."""
        if truncated:
            self.progress.skip_to = -1
        self.progress.validated = True
        self.progress.start_unconfirmed = start_unconfirmed

    def appended(self, log: LogView, now_ms: int) -> None:
        """An append this core proposed landed."""
        p = self.progress
        p.last_source_fetch_offset = log.log_end_offset
        if log.log_end_offset >= p.source_high_watermark:
            p.caught_up_ms = now_ms
            p.unmirrored_ts = -1
        else:
            p.unmirrored_ts = p.next_unmirrored_ts  # the batch after it, if the answer showed its header
        p.next_unmirrored_ts = -1
        p.skip_to = -1
        p.start_unconfirmed = False

    def append_ended(self) -> None:
        """The append in flight ended, landed or not: the next fetch starts from the log again."""
        self.progress.inflight_end = -1
