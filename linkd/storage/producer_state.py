"""Idempotent/transactional producer state of one partition, and its snapshot files.

Derived from batch headers only. Per producer id: its epoch, the sequence ranges and offsets of its last five
batches (what an idempotent producer may retry), and the first offset of its open transaction, if any.

Sequence rules on the produce path (``validate``), Kafka's:

* epoch lower than the producer's current epoch: ``INVALID_PRODUCER_EPOCH``;
* same epoch, a batch whose sequence range equals one of the last five: a duplicate, the original offsets are
  returned and nothing is appended;
* same epoch, first sequence not last sequence + 1 (wrapping at int32 max): ``OUT_OF_ORDER_SEQUENCE_NUMBER``;
* higher epoch: first sequence must be 0;
* unknown producer id: any sequence is accepted, as Kafka does since 2.5 (KIP-360), because its state may have
  gone with retention or DeleteRecords; refusing would wedge a live producer with ``UNKNOWN_PRODUCER_ID``.

The mirror path (``apply`` without ``validate``) records whatever the source wrote: the source already
validated it, and refusing it would break byte identity.

Snapshot file ``<20-digit offset>.producer-snapshot``: the state after every batch below ``offset``. Our own
binary format, big-endian::

    bytes[4]  magic "LKPS"
    int16     version (1)
    uint32    CRC-32C of everything after this field
    int64     snapshot offset (must equal the file name)
    int64     highest producer id ever seen in the log
    int32     number of producers, then for each:
      int64   producer id
      int16   epoch
      int64   first offset of its open transaction, -1 if none
      int64   last timestamp seen
      int8    number of remembered batches (<= 5), then for each:
        int32 first sequence, int32 last sequence, int64 base offset, int64 last offset, int64 max timestamp

Beside each, ``<20-digit offset>.snapshot`` holds the same state in Apache Kafka's producer snapshot format,
so Kafka's tools (``kafka-dump-log``) and a Kafka broker read it; linkd itself reads only its own file,
which also keeps the four older batches per producer Kafka's format has no room for. Big-endian::

    int16     version (1)
    uint32    CRC-32C of everything after this field
    int32     number of producers, then for each:
      int64 producer id, int16 epoch, int32 last sequence, int64 last offset, int32 offset delta
      (last offset - base offset of its last batch), int64 last timestamp, int32 coordinator epoch (-1),
      int64 first offset of its open transaction (-1 if none)
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol.records import CONTROL_ABORT, RecordBatch, crc32c

from .checkpoint import atomic_write, read_file
from .errors import InvalidProducerEpoch, OutOfOrderSequence
from .txn_index import AbortedTxn, TxnIndex

log = logging.getLogger(__name__)

MAX_REMEMBERED_BATCHES = 5
INT32_MAX = 2**31 - 1
SNAPSHOT_SUFFIX = ".producer-snapshot"
_SNAPSHOT_NAME = re.compile(r"^(\d{20})" + re.escape(SNAPSHOT_SUFFIX) + "$")
_MAGIC = b"LKPS"
_VERSION = 1
_PREFIX = struct.Struct(">4shI")
_HEAD = struct.Struct(">qqi")
_ENTRY = struct.Struct(">qhqqb")
_BATCH = struct.Struct(">iiqqq")
KAFKA_SNAPSHOT_SUFFIX = ".snapshot"
_KAFKA_SNAPSHOT_NAME = re.compile(r"^(\d{20})" + re.escape(KAFKA_SNAPSHOT_SUFFIX) + "$")
_KAFKA_VERSION = 1
_KAFKA_PREFIX = struct.Struct(">hI")
_KAFKA_ENTRY = struct.Struct(">qhiqiqiq")
NO_COORDINATOR_EPOCH = -1


class BatchMetadata(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    timestamp: int


class CompletedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


@dataclass
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=MAX_REMEMBERED_BATCHES))
    txn_first_offset: int = -1
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for meta in self.batches:
            if meta.first_seq == first_seq and meta.last_seq == last_seq:
                return meta
        return None


class ProducerInfo(NamedTuple):
    """One producer as DescribeProducers shows it."""

    producer_id: int
    epoch: int
    last_sequence: int
    last_timestamp: int
    txn_start_offset: int  # first offset of its open transaction, -1 if none


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (last_seq == INT32_MAX and next_seq == 0)


class ProducerStateManager:
    def __init__(self) -> None:
        self.entries: dict[int, ProducerEntry] = {}
        # Open transactions by producer id, kept in first-offset order (they are opened in log order), so
        # the earliest is the first key: the LSO is O(1).
        self.ongoing: dict[int, int] = {}
        self.max_producer_id = -1
        self.dirty = False

    # -- produce path --------------------------------------------------------------------------------

    def validate(self, batch: RecordBatch) -> BatchMetadata | None:
        """Check an incoming produce batch; return the original batch's metadata when it is a duplicate."""
        pid = batch.producer_id
        if pid < 0:
            return None
        entry = self.entries.get(pid)
        if entry is None:
            return None
        if batch.producer_epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"producer {pid} epoch {batch.producer_epoch} is older than the current epoch {entry.epoch}")
        if batch.is_control or batch.base_sequence < 0:
            return None
        if batch.producer_epoch > entry.epoch:
            if batch.base_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {pid} starts epoch {batch.producer_epoch} at sequence {batch.base_sequence}, not 0")
            return None
        duplicate = entry.find_duplicate(batch.base_sequence, batch.last_sequence)
        if duplicate is not None:
            return duplicate
        last_seq = entry.last_seq
        expected_ok = batch.base_sequence == 0 if last_seq < 0 else _in_sequence(last_seq, batch.base_sequence)
        if not expected_ok:
            raise OutOfOrderSequence(
                f"producer {pid} epoch {entry.epoch}: sequence {batch.base_sequence} does not follow {last_seq}")
        return None

    # -- both paths ----------------------------------------------------------------------------------

    def apply(self, batch: RecordBatch, control_type: int | None = None) -> CompletedTxn | None:
        """Record an appended batch (its header must carry its final offsets). Returns the transaction a
        control batch completed, if it had data in this log."""
        pid = batch.producer_id
        if pid < 0:
            return None
        self.dirty = True
        if pid > self.max_producer_id:
            self.max_producer_id = pid
        entry = self.entries.get(pid)
        if entry is None:
            entry = self.entries[pid] = ProducerEntry(pid, batch.producer_epoch)
        elif batch.producer_epoch > entry.epoch:
            entry.epoch = batch.producer_epoch
            entry.batches.clear()
        if batch.max_timestamp > entry.last_timestamp:
            entry.last_timestamp = batch.max_timestamp
        if batch.is_control:
            first = entry.txn_first_offset
            entry.txn_first_offset = -1
            self.ongoing.pop(pid, None)
            if first < 0:
                return None
            return CompletedTxn(pid, first, batch.last_offset, control_type == CONTROL_ABORT)
        if batch.base_sequence >= 0 and batch.producer_epoch == entry.epoch:
            entry.batches.append(
                BatchMetadata(batch.base_sequence, batch.last_sequence, batch.base_offset, batch.last_offset, batch.max_timestamp))
        if batch.is_transactional and entry.txn_first_offset < 0:
            entry.txn_first_offset = batch.base_offset
            self.ongoing[pid] = batch.base_offset
        return None

    def describe(self) -> list[ProducerInfo]:
        """Every producer this state remembers, in producer id order."""
        return [ProducerInfo(e.producer_id, e.epoch, e.last_seq, e.last_timestamp, e.txn_first_offset)
                for _, e in sorted(self.entries.items())]

    def first_unstable_offset(self) -> int | None:
        for first in self.ongoing.values():
            return first
        return None

    # -- snapshots -----------------------------------------------------------------------------------

    def to_bytes(self, offset: int) -> bytes:
        body = bytearray(_HEAD.pack(offset, self.max_producer_id, len(self.entries)))
        for entry in self.entries.values():
            body += _ENTRY.pack(entry.producer_id, entry.epoch, entry.txn_first_offset, entry.last_timestamp, len(entry.batches))
            for meta in entry.batches:
                body += _BATCH.pack(*meta)
        return _PREFIX.pack(_MAGIC, _VERSION, crc32c(body)) + bytes(body)

    def to_kafka_bytes(self) -> bytes:
        """This state as Apache Kafka's ``.snapshot`` file (see the module docstring)."""
        body = bytearray(struct.pack(">i", len(self.entries)))
        for pid, entry in sorted(self.entries.items()):
            last = entry.batches[-1] if entry.batches else None
            body += _KAFKA_ENTRY.pack(pid, entry.epoch, last.last_seq if last else -1, last.last_offset if last else -1,
                                      last.last_offset - last.base_offset if last else 0, entry.last_timestamp,
                                      NO_COORDINATOR_EPOCH, entry.txn_first_offset)
        return _KAFKA_PREFIX.pack(_KAFKA_VERSION, crc32c(body)) + bytes(body)

    @classmethod
    def from_bytes(cls, data: bytes, expected_offset: int) -> ProducerStateManager:
        """Parse a snapshot; raises ValueError when it is damaged or not the one expected."""
        if len(data) < _PREFIX.size + _HEAD.size:
            raise ValueError("snapshot too short")
        magic, version, crc = _PREFIX.unpack_from(data, 0)
        body = memoryview(data)[_PREFIX.size :]
        if magic != _MAGIC or version != _VERSION or crc32c(body) != crc:
            raise ValueError("bad magic, version or CRC")
        offset, max_pid, count = _HEAD.unpack_from(body, 0)
        if offset != expected_offset:
            raise ValueError(f"snapshot says offset {offset}, its name {expected_offset}")
        state = cls()
        state.max_producer_id = max_pid
        pos = _HEAD.size
        ongoing = []
        for _ in range(count):
            pid, epoch, txn_first, last_ts, n = _ENTRY.unpack_from(body, pos)
            pos += _ENTRY.size
            entry = ProducerEntry(pid, epoch, txn_first_offset=txn_first, last_timestamp=last_ts)
            for _b in range(n):
                entry.batches.append(BatchMetadata(*_BATCH.unpack_from(body, pos)))
                pos += _BATCH.size
            state.entries[pid] = entry
            if txn_first >= 0:
                ongoing.append((txn_first, pid))
        if pos != len(body):
            raise ValueError("trailing bytes")
        state.ongoing = {pid: first for first, pid in sorted(ongoing)}
        return state


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{SNAPSHOT_SUFFIX}")


def kafka_snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{KAFKA_SNAPSHOT_SUFFIX}")


def _list(directory: str, pattern: re.Pattern, names: Iterable[str] | None = None) -> list[int]:
    offsets = []
    for name in os.listdir(directory) if names is None else names:
        match = pattern.match(name)
        if match:
            offsets.append(int(match.group(1)))
    return sorted(offsets)


def list_snapshots(directory: str) -> list[int]:
    return _list(directory, _SNAPSHOT_NAME)


def remove_snapshot(directory: str, offset: int) -> None:
    """Both files of the snapshot at ``offset``, Kafka's first (it is written first)."""
    _unlink(kafka_snapshot_path(directory, offset))
    _unlink(snapshot_path(directory, offset))


def list_both(directory: str) -> tuple[list[int], list[int]]:
    """(ours, Kafka's) snapshot offsets, from one listing of ``directory``."""
    names = os.listdir(directory)
    return _list(directory, _SNAPSHOT_NAME, names), _list(directory, _KAFKA_SNAPSHOT_NAME, names)


def write_snapshot(directory: str, offset: int, state: ProducerStateManager, keep: int = 2, sync: bool = True,
                   listed: tuple[list[int], list[int]] | None = None) -> None:
    """``listed``: ``list_both(directory)`` just before, by the same writer (a close lists once, not three
    times per partition)."""
    # Kafka's file first: one of ours never lacks its Kafka twin, and a Kafka file without ours (a crash
    # between the two writes) is removed with the snapshots it sorts among.
    before_ours, before_kafka = list_both(directory) if listed is None else listed
    atomic_write(kafka_snapshot_path(directory, offset), state.to_kafka_bytes(), sync)
    atomic_write(snapshot_path(directory, offset), state.to_bytes(offset), sync)
    state.dirty = False
    ours = sorted(set(before_ours) | {offset})
    kept = set(ours[-keep:])
    for old in set(ours) | set(before_kafka):
        if old not in kept:
            remove_snapshot(directory, old)


def delete_snapshots_after(directory: str, offset: int) -> None:
    """Snapshots beyond a truncation point describe batches that no longer exist."""
    for snap in set(list_snapshots(directory)) | set(_list(directory, _KAFKA_SNAPSHOT_NAME)):
        if snap > offset:
            remove_snapshot(directory, snap)


def load_latest_snapshot(directory: str, max_offset: int, names: Iterable[str] | None = None) -> tuple[int, ProducerStateManager] | None:
    """The newest readable snapshot at or below ``max_offset``; damaged or too-new ones are deleted.
    ``names``: the directory's listing, when the caller has just made one."""
    for snap in reversed(_list(directory, _SNAPSHOT_NAME, names)):
        path = snapshot_path(directory, snap)
        if snap > max_offset:
            remove_snapshot(directory, snap)
            continue
        try:
            return snap, ProducerStateManager.from_bytes(read_file(path), snap)
        except (ValueError, struct.error, OSError) as exc:
            log.warning("ignoring producer snapshot %s: %s", path, exc)
            remove_snapshot(directory, snap)
    return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def apply_batch(state: ProducerStateManager, txn_index: TxnIndex, batch: RecordBatch, control_type: int | None,
                index_aborts: bool = True) -> None:
    """Record an appended batch in ``state``; an ABORT marker that completes a transaction is also written
    to the txn index of the segment holding the marker."""
    completed = state.apply(batch, control_type)
    if completed is not None and completed.aborted and index_aborts:
        lso = state.first_unstable_offset()
        txn_index.append(AbortedTxn(completed.producer_id, completed.first_offset, completed.last_offset,
                                    completed.last_offset + 1 if lso is None else lso))
