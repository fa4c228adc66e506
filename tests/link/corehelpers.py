"""A model source partition for the sans-IO link core tests: batches with leader epochs, a log start
(retention), unclean truncation; it answers Fetch, ListOffsets and OffsetForLeaderEpoch the way Apache
Kafka does, as the typed answers of ``linkd.link.wire``. No sockets."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from linkd.link.wire import EARLIEST, LATEST, EpochEnd, FetchedPartition, ListedOffset
from protocol.errors import ErrorCode
from protocol.records import BatchSpec, NewRecord, build_batch

_values = itertools.count()


def batch(base: int, count: int = 1, epoch: int = 0) -> bytes:
    """A batch of ``count`` records at ``base``; every batch built is unique (its CRC differs)."""
    return build_batch(BatchSpec(base_offset=base, partition_leader_epoch=epoch, records=[NewRecord(b"v%d" % next(_values)) for _ in range(count)]))


@dataclass
class SourceBatch:
    base: int
    count: int
    epoch: int
    data: bytes

    @property
    def next_offset(self) -> int:
        return self.base + self.count


@dataclass
class ModelSource:
    batches: list[SourceBatch] = field(default_factory=list)
    start: int = 0
    epoch: int = 0
    empty_end: int = 0  # the log end while no batch is held

    @property
    def end(self) -> int:
        return self.batches[-1].next_offset if self.batches else self.empty_end

    def produce(self, count: int) -> None:
        base = self.end
        self.batches.append(SourceBatch(base, count, self.epoch, batch(base, count, self.epoch)))

    def new_leader(self) -> None:
        self.epoch += 1

    def unclean_truncate(self, keep: int) -> None:
        """An unclean leader election: the new leader lacks the last batches."""
        self.batches = self.batches[:keep]
        if not self.batches:
            self.empty_end = self.start
        self.new_leader()

    def retain_from(self, index: int) -> None:
        """Retention deletes the first ``index`` batches."""
        end = self.end
        self.batches = self.batches[index:]
        self.start = self.batches[0].base if self.batches else end
        self.empty_end = end

    # -- answers ----------------------------------------------------------------------------------

    def fetch(self, offset: int, leader_epoch: int = -1, max_batches: int = 100, partial: bool = False) -> FetchedPartition:
        if leader_epoch >= 0 and leader_epoch < self.epoch:
            return FetchedPartition(0, ErrorCode.FENCED_LEADER_EPOCH)
        if offset < self.start or offset > self.end:
            return FetchedPartition(0, ErrorCode.OFFSET_OUT_OF_RANGE)
        served = [b for b in self.batches if b.next_offset > offset]
        blob = b"".join(b.data for b in served[:max_batches])
        if partial and len(served) > max_batches:
            blob += served[max_batches].data[:30]  # a partial trailing batch, as a size limit leaves
        return FetchedPartition(0, ErrorCode.NONE, self.end, self.start, blob)

    def list_offset(self, timestamp: int) -> ListedOffset:
        if timestamp == EARLIEST:
            return ListedOffset(ErrorCode.NONE, self.start)
        if timestamp == LATEST:
            return ListedOffset(ErrorCode.NONE, self.end)
        return ListedOffset(ErrorCode.NONE, -1)  # no record that recent

    def epoch_end(self, epoch: int) -> EpochEnd:
        """Kafka's OffsetForLeaderEpoch: the largest epoch <= ``epoch`` it knows and where it ends."""
        known = sorted({b.epoch for b in self.batches})
        below = [e for e in known if e <= epoch]
        if not below:
            return EpochEnd(ErrorCode.NONE, -1, -1)
        found = below[-1]
        later = [b.base for b in self.batches if b.epoch > found]
        return EpochEnd(ErrorCode.NONE, found, later[0] if later else self.end)
