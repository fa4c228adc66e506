"""Leader-epoch cache and its ``leader-epoch-checkpoint`` file.

The cache maps each leader epoch seen in the log to the first offset written in it. Mirrored batches keep the
source's ``partitionLeaderEpoch``, so this is the source's epoch history, which is what lets consumers holding
source epochs validate their positions (OffsetForLeaderEpoch).

File format (Kafka's, text, written via ``checkpoint.atomic_write``)::

    0                        version
    <n>                      number of entries
    <epoch> <start offset>   n lines, epochs and offsets strictly increasing

The checkpoint is written when the cache changes by truncation and on flush/close; entries for data appended
after the last flush are re-derived from batch headers by recovery.
"""

from __future__ import annotations

import bisect
import logging
import os
from typing import NamedTuple

from .checkpoint import CHECKPOINT_VERSION, atomic_write, read_lines

FILE_NAME = "leader-epoch-checkpoint"
log = logging.getLogger(__name__)


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class EpochHistory(NamedTuple):
    """An immutable copy of the cache, for readers in other threads than the log's writer."""

    epochs: tuple[int, ...]
    starts: tuple[int, ...]

    @property
    def latest_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else -1

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """See ``LeaderEpochCache.end_offset_for``."""
        epochs = self.epochs
        if requested_epoch < 0 or not epochs or requested_epoch > epochs[-1] or requested_epoch < epochs[0]:
            return -1, -1
        if requested_epoch == epochs[-1]:
            return requested_epoch, log_end_offset
        floor = bisect.bisect_right(epochs, requested_epoch) - 1
        return epochs[floor], self.starts[floor + 1]


class LeaderEpochCache:
    """Not thread-safe: the log's writer changes it; readers use ``history()``, an immutable copy."""

    def __init__(self, path: str | os.PathLike[str], entries: list[EpochEntry] | None = None) -> None:
        self.path = os.fspath(path)
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for entry in entries or ():
            self._epochs.append(entry.epoch)
            self._starts.append(entry.start_offset)
        self.dirty = False
        self._history: EpochHistory | None = None
        # The entries the file holds (as loaded or last written): recovery re-derives epochs it mostly
        # had already, and a rewrite of the same file is a create and a rename per partition.
        self._on_disk: tuple[tuple[int, int], ...] | None = tuple(zip(self._epochs, self._starts, strict=True)) if entries else None

    def history(self) -> EpochHistory:
        """The cache as it is now, immutable; the same object until the cache changes."""
        if self._history is None:
            self._history = EpochHistory(tuple(self._epochs), tuple(self._starts))
        return self._history

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[LeaderEpochCache, bool]:
        """Return (cache, ok). ``ok`` is False when a file exists but cannot be trusted; the cache is then
        empty and the caller must rebuild it from the batches."""
        lines = read_lines(path)
        if lines is None:
            return cls(path), not os.path.exists(path)
        entries: list[EpochEntry] = []
        try:
            for line in lines:
                epoch_text, offset_text = line.split(" ")
                entry = EpochEntry(int(epoch_text), int(offset_text))
                if entries and (entry.epoch <= entries[-1].epoch or entry.start_offset < entries[-1].start_offset):
                    raise ValueError("not increasing")
                entries.append(entry)
        except ValueError:
            return cls(path), False
        return cls(path, entries), True

    def entries(self) -> list[EpochEntry]:
        return [EpochEntry(e, s) for e, s in zip(self._epochs, self._starts, strict=True)]

    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1] if self._epochs else -1

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` begins at ``start_offset``. Epochs never go back: a batch with an epoch
        lower than the latest (or -1, pre-KIP-101 data) does not change the history."""
        if epoch < 0 or (self._epochs and epoch <= self._epochs[-1]):
            return
        if self._starts and start_offset < self._starts[-1]:
            log.warning("%s: epoch %d starts at %d, before epoch %d at %d; ignoring", self.path, epoch, start_offset,
                        self._epochs[-1], self._starts[-1])
            return
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self.dirty = True
        self._history = None

    def truncate_from_end(self, end_offset: int) -> None:
        """Forget epochs that start at or after ``end_offset`` (the log was cut there)."""
        keep = bisect.bisect_left(self._starts, end_offset)
        if keep < len(self._starts):
            del self._epochs[keep:], self._starts[keep:]
            self.dirty = True
            self._history = None

    def truncate_from_start(self, start_offset: int) -> None:
        """Drop epochs wholly below the new log start; the one in force at ``start_offset`` now starts there."""
        below = bisect.bisect_right(self._starts, start_offset)
        if below == 0:
            return
        if self._starts[below - 1] == start_offset and below == 1:
            return
        del self._epochs[: below - 1], self._starts[: below - 1]
        self._starts[0] = start_offset
        self.dirty = True
        self._history = None

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest epoch <= requested, start offset of the next higher epoch), or
        (latest epoch, log end) when the requested epoch is the latest. (-1, -1) when the requested epoch is
        unknown: negative, newer than the latest, or older than the earliest we hold. The last case differs from
        Kafka (which answers (requested, earliest start)); clients treat (-1, -1) as "cannot validate, carry
        on", which does not make a consumer reset after retention removed old epochs.

        A listener that advertises an epoch newer than anything in the log answers (advertised, log end) for it
        itself."""
        return self.history().end_offset_for(requested_epoch, log_end_offset)

    def clear(self) -> None:
        if self._epochs:
            self._epochs.clear()
            self._starts.clear()
            self.dirty = True
            self._history = None

    def write(self, sync: bool = True) -> None:
        entries = tuple(zip(self._epochs, self._starts, strict=True))
        if entries == self._on_disk:
            self.dirty = False
            return
        lines = [str(CHECKPOINT_VERSION), str(len(self._epochs))]
        lines += [f"{e} {s}" for e, s in zip(self._epochs, self._starts, strict=True)]
        atomic_write(self.path, ("\n".join(lines) + "\n").encode("ascii"), sync)
        self._on_disk = entries
        self.dirty = False
