"""The log cleaner: compaction of ``cleanup.policy=compact`` partitions, with Kafka's rules.

Theory of operation. A compacted log has a *clean* head (already compacted, below the *first dirty offset*,
kept in ``cleaner-offset-checkpoint``) and a *dirty* tail. A pass:

1. picks the cleanable range ``[first dirty, first uncleanable)``: never the active segment, never at or
   past the last stable offset (an open transaction may still abort), never a segment whose newest record is
   younger than ``min.compaction.lag.ms``. It runs when the dirty share of the log's bytes exceeds
   ``min.cleanable.dirty.ratio`` or a dirty segment is older than ``max.compaction.lag.ms``;
2. builds a map key -> latest offset over that range, skipping control batches and aborted transactional
   batches. The map's memory is bounded (``CleanerConfig.dedupe_buffer_size``); when it fills, the pass
   covers only up to the last whole batch mapped, and the next pass goes on from there;
3. rewrites every non-active segment below the map's end, in groups of consecutive segments whose sizes
   add up to at most ``segment.bytes`` (small cleaned segments merge), one cleaned segment per group:

   - a record is kept if its key's latest offset is its own (or its key is not in the map);
   - a tombstone (null value) is kept until ``delete.retention.ms`` after the pass that first kept it: that
     pass stamps its batch with a *delete horizon* (attribute bit 6, the horizon in ``baseTimestamp``,
     record timestamps unchanged), a later pass past the horizon drops it (Kafka's KIP-534 scheme);
   - data of aborted transactions is dropped; a COMMIT/ABORT marker is kept while data of its transaction
     remains in the log (seen in this pass), then stamped with a delete horizon, then dropped;
   - the batch holding a live producer's last sequence (or its last marker) is kept, emptied of records if
     need be, so idempotent producers and fencing keep working, as Kafka does;
   - a record without a key is kept (Kafka refuses those on produce; linkd does not check, so it keeps
     them rather than lose data);
   - a batch whose records all stay is copied byte for byte; otherwise it is rebuilt: same base offset,
     ``lastOffsetDelta``, producer id/epoch/base sequence, leader epoch, transactional/control/timestamp
     attributes and codec, the surviving records with their offset deltas (so offsets keep their gaps),
     a new CRC-32C;
4. swaps each cleaned segment in (``swap.py``: ``.cleaned`` -> ``.swap`` -> final names, crash-safe), then
   records the map's end as the new first dirty offset (``cleaned_up_to``).

Readers are never blocked while a pass reads and writes; only the snapshot (briefly) and the swap take the
log's writer lock. The pass reads each inactive segment through a duplicate of its own descriptor, below the
snapshot's size, so concurrent appends (to the active segment) and swaps cannot change what it reads. The
swap checks, under that lock, that the segments it read are still the log's with those sizes and that the
log was not truncated since the snapshot (retention, truncation or a delete meanwhile make it give up and
retry later); the replaced segments leave through the log's retirement path, so readers on older views go
on reading their descriptors. One pass per log runs at a time (``PartitionLog.cleaner_lock``): a second
one returns at once.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.compression import Compression, compress, decompress
from protocol.errors import CorruptBatch
from protocol.records import (
    ATTR_CONTROL,
    ATTR_DELETE_HORIZON,
    ATTR_TIMESTAMP_LOG_APPEND,
    ATTR_TRANSACTIONAL,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    RecordBatch,
    crc32c,
    decode_varint,
    encode_varint,
    split_batches,
)

from . import swap
from .config import INT32_MAX
from .offset_index import OffsetIndex
from .segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX
from .time_index import TimeIndex
from .txn_index import AbortedTxn, TxnIndex

if TYPE_CHECKING:
    from .config import LogConfig
    from .log import PartitionLog
    from .segment import LogSegment

log = logging.getLogger(__name__)

_AFTER_CRC = struct.Struct(">hiqqqhii")
_BEFORE_CRC = struct.Struct(">qiibI")
# Estimated CPython cost of one key-map entry besides the stored key's bytes: the dict slot and index
# (~45 bytes at the dict's load), the bytes object's header (33) and the offset int (28-32).
MAP_ENTRY_OVERHEAD = 112
_LONG_KEY = 32  # keys longer than this are stored as a 128-bit BLAKE2b digest (an int, never equal to bytes)


class CleanerStopped(Exception):
    """The pass was asked to stop (daemon shutdown); nothing of it was swapped in after the request."""


@dataclass(frozen=True)
class CleanerConfig:
    """Daemon-wide cleaner settings (Kafka's broker configs of the same meaning)."""

    dedupe_buffer_size: int = 128 * 1024 * 1024  # log.cleaner.dedupe.buffer.size: memory for the key map
    io_buffer_size: int = 4 * 1024 * 1024  # how much of a segment is read at a time
    backoff_ms: int = 15_000  # log.cleaner.backoff.ms: sleep when no log needs cleaning

    def __post_init__(self) -> None:
        if self.dedupe_buffer_size < 1024:
            raise ValueError("log.cleaner.dedupe.buffer.size must be at least 1024 bytes")
        if self.io_buffer_size < HEADER_SIZE:
            raise ValueError("the cleaner's I/O buffer must hold a batch header")
        if self.backoff_ms < 0:
            raise ValueError("log.cleaner.backoff.ms must be >= 0")


@dataclass
class CleanStats:
    """What one pass did, for logs, the benchmark and tests."""

    first_dirty: int
    end_offset: int  # the new first dirty offset ("cleaned up to")
    bytes_read: int = 0  # segment bytes read to build the map and to rewrite segments
    bytes_in: int = 0  # size of the segments rewritten
    bytes_out: int = 0  # size of the cleaned segments
    records_read: int = 0
    records_kept: int = 0
    segments_in: int = 0
    segments_out: int = 0
    map_full: bool = False
    seconds: float = 0.0


class OffsetMap:
    """Key -> latest offset, with a memory budget. ``put`` returns False (and stores nothing) once full."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.used = 0
        self.latest_offset = -1
        self._map: dict[bytes | int, int] = {}

    @staticmethod
    def _slot(key: bytes) -> bytes | int:
        if len(key) <= _LONG_KEY:
            return key
        return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")

    def put(self, key: bytes, offset: int) -> bool:
        slot = key if len(key) <= _LONG_KEY else self._slot(key)
        entries = self._map
        if slot not in entries:
            cost = MAP_ENTRY_OVERHEAD + (len(key) if slot is key else 16)
            if self.used + cost > self.memory_bytes:
                return False
            self.used += cost
        entries[slot] = offset
        return True

    def get(self, key: bytes) -> int:
        return self._map.get(key if len(key) <= _LONG_KEY else self._slot(key), -1)

    def __len__(self) -> int:
        return len(self._map)


# ---------------------------------------------------------------------------------------------------
# Reading segment files and records


def _iter_file_batches(fd: int, size: int, chunk: int, start: int = 0) -> Iterator[tuple[int, RecordBatch]]:
    """(position, batch) of the whole batches of a segment file from ``start`` (a batch boundary)."""
    position = start
    while position < size:
        data = os.pread(fd, min(chunk, size - position), position)
        if not data:
            return
        split = split_batches(data)
        if not split.batches:
            length = int.from_bytes(data[8:12], "big", signed=True) + LOG_OVERHEAD if len(data) >= 12 else 0
            if len(data) < 12 or position + length > size:
                return  # a torn tail; recovery deals with those, the cleaner just stops
            split = split_batches(os.pread(fd, length, position))  # one batch bigger than a chunk
            if not split.batches:
                return
        for batch in split.batches:
            yield position, batch
            position += batch.size


# One parsed record: (offset delta, timestamp, key or None, is a tombstone, start, end), where
# payload[start:end] are its key, value and headers exactly as written.
_Record = tuple[int, int, "bytes | None", bool, int, int]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint; the one- and two-byte forms (nearly all of them in a record) inline."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    b2 = data[pos + 1]
    if b2 < 0x80:
        z = (b & 0x7F) | (b2 << 7)
        return (z >> 1) ^ -(z & 1), pos + 2
    return decode_varint(data, pos)


def _records(batch: RecordBatch) -> tuple[bytes, list[_Record]]:
    """The batch's (decompressed) records payload and its records, parsed only as far as the cleaner needs."""
    if batch.compression:
        payload = decompress(batch.compression, batch.buffer[HEADER_SIZE : batch.size])
    else:
        payload = bytes(batch.buffer[HEADER_SIZE : batch.size])
    out: list[_Record] = []
    pos = 0
    base_ts = batch.base_timestamp
    size = len(payload)
    try:
        for _ in range(batch.record_count):
            length, pos = _varint(payload, pos)
            end = pos + length
            if length < 0 or end > size:
                raise CorruptBatch(f"record length {length} runs past its batch", "BAD_RECORD", batch.base_offset)
            ts_delta, p = _varint(payload, pos + 1)  # after the attributes byte
            offset_delta, p = _varint(payload, p)
            tail = p
            key_len, p = _varint(payload, p)
            if key_len >= 0:
                key = payload[p : p + key_len]
                p += key_len
            else:
                key = None
            out.append((offset_delta, base_ts + ts_delta, key, payload[p] == 1, tail, end))  # value length -1
            pos = end
    except IndexError:
        raise CorruptBatch(f"batch at offset {batch.base_offset} has a truncated record", "BAD_RECORD", batch.base_offset) from None
    return payload, out


def _build_batch(batch: RecordBatch, payload: bytes, records: Sequence[_Record], delete_horizon: int | None) -> bytes:
    """``batch`` with only ``records``: same offsets, producer fields, attributes and codec; new CRC."""
    attributes = batch.attributes & ~ATTR_DELETE_HORIZON
    base_ts = records[0][1]
    if delete_horizon is not None:
        attributes |= ATTR_DELETE_HORIZON
        base_ts = delete_horizon
    if batch.attributes & ATTR_TIMESTAMP_LOG_APPEND:
        max_ts = batch.max_timestamp
    else:
        max_ts = max(r[1] for r in records)
    parts = []
    for offset_delta, timestamp, _key, _tombstone, start, end in records:
        inner = b"\x00" + encode_varint(timestamp - base_ts) + encode_varint(offset_delta) + payload[start:end]
        parts.append(encode_varint(len(inner)))
        parts.append(inner)
    body = b"".join(parts)
    if batch.compression:
        # _records() already decompressed this payload, so the codec is a known one.
        body = compress(Compression(batch.compression), body)
    after_crc = _AFTER_CRC.pack(attributes, batch.last_offset_delta, base_ts, max_ts, batch.producer_id,
                                batch.producer_epoch, batch.base_sequence, len(records)) + body
    return _BEFORE_CRC.pack(batch.base_offset, len(after_crc) + 9, batch.partition_leader_epoch, MAGIC,
                            crc32c(after_crc)) + after_crc


def _empty_batch(batch: RecordBatch) -> bytes:
    """A header with no records, keeping the offsets and producer fields (Kafka's ``writeEmptyHeader``)."""
    attributes = batch.attributes & (ATTR_TIMESTAMP_LOG_APPEND | ATTR_TRANSACTIONAL | ATTR_CONTROL)
    after_crc = _AFTER_CRC.pack(attributes, batch.last_offset_delta, batch.max_timestamp, batch.max_timestamp,
                                batch.producer_id, batch.producer_epoch, batch.base_sequence, 0)
    return _BEFORE_CRC.pack(batch.base_offset, len(after_crc) + 9, batch.partition_leader_epoch, MAGIC,
                            crc32c(after_crc)) + after_crc


def _delete_horizon(batch: RecordBatch) -> int | None:
    return batch.base_timestamp if batch.attributes & ATTR_DELETE_HORIZON else None


def _control_type(batch: RecordBatch) -> int | None:
    try:
        return batch.control_type()
    except CorruptBatch:
        return None


# ---------------------------------------------------------------------------------------------------
# Transactions


class _Aborted:
    """Aborted transactions of the log, from its txn indexes: (producer id, first offset .. marker)."""

    def __init__(self, entries: Sequence[AbortedTxn]) -> None:
        self.by_marker = {e.last_offset: e for e in entries}
        self._firsts: dict[int, list[int]] = {}
        self._lasts: dict[int, list[int]] = {}
        for e in sorted(entries, key=lambda e: e.first_offset):
            self._firsts.setdefault(e.producer_id, []).append(e.first_offset)
            self._lasts.setdefault(e.producer_id, []).append(e.last_offset)

    def holds(self, producer_id: int, offset: int) -> bool:
        firsts = self._firsts.get(producer_id)
        if not firsts:
            return False
        i = bisect.bisect_right(firsts, offset) - 1
        return i >= 0 and offset <= self._lasts[producer_id][i]


@dataclass
class _TxnTracker:
    """Which transactions still have data in this pass, to know when their markers may go."""

    aborted: _Aborted
    committed_with_data: set[int] = field(default_factory=set)
    aborted_with_data: set[int] = field(default_factory=set)

    def data_batch_is_aborted(self, batch: RecordBatch) -> bool:
        if not batch.is_transactional or batch.producer_id < 0:
            return False
        if self.aborted.holds(batch.producer_id, batch.base_offset):
            self.aborted_with_data.add(batch.producer_id)
            return True
        self.committed_with_data.add(batch.producer_id)
        return False

    def marker_may_go(self, batch: RecordBatch, kind: int | None) -> bool:
        """No data of the marker's transaction was seen: the marker can be stamped, then dropped."""
        if kind == CONTROL_COMMIT:
            had = batch.producer_id in self.committed_with_data
            self.committed_with_data.discard(batch.producer_id)
            return not had
        if kind == CONTROL_ABORT:
            had = batch.producer_id in self.aborted_with_data
            self.aborted_with_data.discard(batch.producer_id)
            return not had
        return False


# ---------------------------------------------------------------------------------------------------
# The pass


@dataclass(frozen=True)
class CleanerSnapshot:
    """What a pass needs of the log, taken under its lock in one go (``PartitionLog.cleaner_snapshot``)."""

    config: LogConfig
    path: str
    segments: tuple[LogSegment, ...]  # every segment, the active one last
    sizes: tuple[int, ...]
    next_offsets: dict[int, int]  # by base offset
    max_timestamps: dict[int, int]
    first_timestamps: tuple[int | None, ...]  # of the inactive segments
    log_start: int
    log_end: int
    last_stable_offset: int
    cleaned_up_to: int | None
    producer_last: dict[int, tuple[int | None, int]]  # producer id -> (last data offset or None, epoch)
    aborted: tuple[AbortedTxn, ...]
    cuts: int | None = None  # the log's truncation count: a swap after another truncation is refused


@dataclass(frozen=True)
class CleanablePlan:
    first_dirty: int
    first_uncleanable: int
    dirty_ratio: float
    must_clean_now: bool  # a dirty segment is older than max.compaction.lag.ms
    clean_bytes: int
    dirty_bytes: int


def plan(snap: CleanerSnapshot, now_ms: int) -> CleanablePlan | None:
    """The range a pass would clean, or None when the log is not compacted or has no cleanable bytes."""
    config = snap.config
    if not config.compact or len(snap.segments) < 2:
        return None
    first_dirty = snap.cleaned_up_to
    if first_dirty is None or not snap.log_start <= first_dirty <= snap.log_end:
        first_dirty = snap.log_start
    active = snap.segments[-1]
    uncleanable = min(snap.last_stable_offset, active.base_offset)
    inactive = list(zip(snap.segments[:-1], snap.sizes[:-1], snap.first_timestamps, strict=True))
    dirty_segments = [(s, size, ts) for s, size, ts in inactive if snap.next_offsets[s.base_offset] > first_dirty]
    if config.min_compaction_lag_ms > 0:
        for segment, _size, _ts in dirty_segments:
            if snap.max_timestamps[segment.base_offset] > now_ms - config.min_compaction_lag_ms:
                uncleanable = min(uncleanable, segment.base_offset)
                break
    uncleanable = max(first_dirty, uncleanable)
    clean_bytes = sum(size for s, size, _ts in inactive if snap.next_offsets[s.base_offset] <= first_dirty)
    dirty_bytes = sum(size for s, size, _ts in dirty_segments if s.base_offset < uncleanable)
    if dirty_bytes == 0 or uncleanable <= first_dirty:
        return None
    must = False
    if config.max_compaction_lag_ms < 2**63 - 1:
        stamps = [ts for s, _size, ts in dirty_segments if s.base_offset < uncleanable and ts is not None and ts > 0]
        must = bool(stamps) and min(stamps) < now_ms - config.max_compaction_lag_ms
    ratio = dirty_bytes / (clean_bytes + dirty_bytes)
    return CleanablePlan(first_dirty, uncleanable, ratio, must, clean_bytes, dirty_bytes)


def clean_log(plog: PartitionLog, now_ms: int | None = None, config: CleanerConfig | None = None, *,
              force: bool = False, stop: threading.Event | None = None) -> CleanStats | None:
    """One cleaning pass over ``plog`` if it needs one (or ``force``: any cleanable bytes at all). Runs in a
    worker thread; returns None when there was nothing to do or the log changed under the pass. Raises
    ``CleanerStopped`` soon after ``stop`` is set (groups swapped in before then stay)."""
    config = config or CleanerConfig()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not plog.cleaner_lock.acquire(blocking=False):
        return None  # another pass is cleaning this log (their .cleaned files would share names)
    try:
        return _clean_log(plog, now_ms, config, force, stop)
    finally:
        plog.cleaner_lock.release()


def _clean_log(plog: PartitionLog, now_ms: int, config: CleanerConfig, force: bool,
               stop: threading.Event | None) -> CleanStats | None:
    snap = plog.cleaner_snapshot()
    if snap is None:
        return None
    cleanable = plan(snap, now_ms)
    if cleanable is None:
        return None
    if not force and not cleanable.must_clean_now and cleanable.dirty_ratio <= snap.config.min_cleanable_dirty_ratio:
        return None
    started = time.monotonic()
    stats = CleanStats(cleanable.first_dirty, cleanable.first_dirty)
    fds = _SegmentFiles()
    try:
        aborted = _Aborted(snap.aborted)
        offset_map = OffsetMap(config.dedupe_buffer_size)
        try:
            end = _build_offset_map(snap, cleanable, fds, offset_map, aborted, config, stats, stop)
        except _SegmentGone:
            return None  # retention or a truncation got there first
        if end <= cleanable.first_dirty:
            log.error("%s: the cleaner's key map (log.cleaner.dedupe.buffer.size=%d) cannot hold the keys of the "
                      "batch at offset %d; not cleaning", plog.name, config.dedupe_buffer_size, cleanable.first_dirty)
            return None
        stats.end_offset = end
        to_clean = [(s, size) for s, size in zip(snap.segments[:-1], snap.sizes[:-1], strict=True) if s.base_offset < end]
        tracker = _TxnTracker(aborted)
        groups = _group(to_clean, snap)
        for i, group in enumerate(groups):
            group_end = groups[i + 1][0][0].base_offset if i + 1 < len(groups) else snap.segments[len(to_clean)].base_offset
            try:
                swapped = _clean_group(plog, snap, group, group_end, fds, offset_map, tracker, end, now_ms, config, stats, stop)
            except _SegmentGone:
                swapped = False
            if not swapped:
                log.info("%s: the log changed during cleaning; the pass stops at segment %d", plog.name, group[0][0].base_offset)
                return None
        plog.mark_cleaned(end, snap.cuts)
    finally:
        fds.close_all()
    stats.seconds = time.monotonic() - started
    log.info("%s: cleaned offsets %d..%d: %d segment(s) of %d bytes -> %d segment(s) of %d bytes, %d of %d records "
             "kept, %.2f s", plog.name, snap.log_start, end - 1, stats.segments_in, stats.bytes_in, stats.segments_out,
             stats.bytes_out, stats.records_kept, stats.records_read, stats.seconds)
    return stats


class _SegmentGone(Exception):
    """A segment of the snapshot was deleted or replaced before the pass could open it."""


class _SegmentFiles:
    """The pass's own read descriptors of segment files, one at a time: duplicates of each snapshot
    segment's descriptor (``LogSegment.dup_fd``), so the pass reads exactly the file the snapshot named,
    for as long as it needs, even if retention, a truncation or another swap removes or replaces it
    meanwhile (the swap then refuses the pass). A segment already closed is gone for the pass."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def open(self, segment: LogSegment) -> int:
        fd = self._fds.get(id(segment))
        if fd is None:
            fd = segment.dup_fd()
            if fd < 0:
                raise _SegmentGone(segment.log_path)
            self._fds[id(segment)] = fd
        return fd

    def release(self, segment: LogSegment) -> None:
        fd = self._fds.pop(id(segment), None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _build_offset_map(snap: CleanerSnapshot, cleanable: CleanablePlan, fds: _SegmentFiles, offset_map: OffsetMap,
                      aborted: _Aborted, config: CleanerConfig, stats: CleanStats, stop: threading.Event | None) -> int:
    """Map the dirty range; return one past the last offset mapped (where the pass ends)."""
    start, upper = cleanable.first_dirty, cleanable.first_uncleanable
    latest = start - 1
    for segment, size in zip(snap.segments[:-1], snap.sizes[:-1], strict=True):
        if segment.base_offset >= upper:
            break
        if snap.next_offsets[segment.base_offset] <= start:
            continue
        fd = fds.open(segment)
        for _position, batch in _iter_file_batches(fd, size, config.io_buffer_size):
            if batch.last_offset < start:
                continue
            if batch.base_offset >= upper:
                return latest + 1
            if stop is not None and stop.is_set():
                raise CleanerStopped(snap.path)
            stats.bytes_read += batch.size
            if not batch.is_control and not (batch.is_transactional and batch.producer_id >= 0
                                              and aborted.holds(batch.producer_id, batch.base_offset)):
                base = batch.base_offset
                put = offset_map.put
                for offset_delta, _ts, key, _tombstone, _start, _end in _records(batch)[1]:
                    offset = base + offset_delta
                    if key is not None and offset >= start and not put(key, offset):
                        stats.map_full = True
                        return latest + 1
            latest = batch.last_offset
            offset_map.latest_offset = latest
        fds.release(segment)
    return min(latest + 1, upper)


def _group(segments: list[tuple[LogSegment, int]], snap: CleanerSnapshot) -> list[list[tuple[LogSegment, int]]]:
    """Consecutive segments whose sizes add up to at most segment.bytes and whose offsets fit one segment."""
    groups: list[list[tuple[LogSegment, int]]] = []
    for segment, size in segments:
        if groups:
            group = groups[-1]
            total = sum(s for _seg, s in group)
            fits_offsets = snap.next_offsets[segment.base_offset] - 1 - group[0][0].base_offset <= INT32_MAX
            if total + size <= snap.config.segment_bytes and fits_offsets:
                group.append((segment, size))
                continue
        groups.append([(segment, size)])
    return groups


class _CleanedWriter:
    """Writes ``<base>.*.cleaned``: the batches, and their three indexes built as ``LogSegment.append`` does."""

    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int) -> None:
        self.directory, self.base_offset, self.interval = directory, base_offset, index_interval_bytes
        swap.discard_cleaned(directory, base_offset)
        self.fd = os.open(swap.cleaned_path(directory, base_offset, LOG_SUFFIX),
                          os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.offset_index = OffsetIndex(swap.cleaned_path(directory, base_offset, INDEX_SUFFIX), base_offset)
        self.time_index = TimeIndex(swap.cleaned_path(directory, base_offset, TIME_INDEX_SUFFIX), base_offset)
        self.txn_index = TxnIndex(swap.cleaned_path(directory, base_offset, TXN_INDEX_SUFFIX))
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.file.create_empty()
        self.size = 0
        self.since_index = 0
        self.max_ts, self.max_ts_offset = -1, base_offset
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0

    def add(self, data: bytes | memoryview, header: RecordBatch) -> None:
        if header.max_timestamp > self.max_ts:
            self.max_ts, self.max_ts_offset = header.max_timestamp, header.last_offset
        if self.since_index > self.interval:
            self.offset_index.append(header.last_offset, self.size)
            self.time_index.maybe_append(self.max_ts, self.max_ts_offset)
            self.since_index = 0
        self.since_index += len(data)
        self.size += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= 1 << 20:
            self._write()

    def _write(self) -> None:
        view = memoryview(b"".join(self._pending))
        while view:
            view = view[os.write(self.fd, view) :]
        self._pending, self._pending_bytes = [], 0

    def finish(self) -> None:
        """Write, seal (last time-index entry = the maximum) and fsync everything."""
        self._write()
        if self.max_ts >= 0:
            self.time_index.maybe_append(self.max_ts, self.max_ts_offset)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.file.fsync()

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        swap.discard_cleaned(self.directory, self.base_offset)


def _clean_group(plog: PartitionLog, snap: CleanerSnapshot, group: list[tuple[LogSegment, int]], group_end: int,
                 fds: _SegmentFiles, offset_map: OffsetMap, tracker: _TxnTracker, end: int, now_ms: int,
                 config: CleanerConfig, stats: CleanStats, stop: threading.Event | None) -> bool:
    base = group[0][0].base_offset
    writer = _CleanedWriter(plog.path, base, snap.config.index_interval_bytes)
    try:
        for segment, size in group:
            stats.bytes_in += size
            stats.bytes_read += size
            for _position, batch in _iter_file_batches(fds.open(segment), size, config.io_buffer_size):
                if stop is not None and stop.is_set():
                    raise CleanerStopped(snap.path)
                out = _filter_batch(batch, snap, offset_map, tracker, end, now_ms, stats)
                if out is None:
                    continue
                data, header = out
                writer.add(data, header)
                if header.is_control and header.last_offset in tracker.aborted.by_marker:
                    writer.txn_index.append(tracker.aborted.by_marker[header.last_offset])
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    finally:
        for segment, _size in group:
            fds.release(segment)
    swapped = plog.swap_in_cleaned([s for s, _size in group], [size for _s, size in group], base, group_end, snap.cuts)
    if not swapped:
        swap.discard_cleaned(plog.path, base)
        return False
    stats.segments_in += len(group)
    stats.segments_out += 1
    stats.bytes_out += writer.size
    return True


def _filter_batch(batch: RecordBatch, snap: CleanerSnapshot, offset_map: OffsetMap, tracker: _TxnTracker, end: int,
                  now_ms: int, stats: CleanStats) -> tuple[bytes | memoryview, RecordBatch] | None:
    """The batch as the cleaned segment holds it (bytes and header), or None to drop it."""
    stats.records_read += batch.record_count
    pid = batch.producer_id
    last_of_producer = False
    if pid >= 0 and pid in snap.producer_last:
        last_data_offset, epoch = snap.producer_last[pid]
        if last_data_offset is not None:
            last_of_producer = batch.last_offset == last_data_offset
        else:
            last_of_producer = batch.is_control and batch.producer_epoch == epoch
    horizon = _delete_horizon(batch)
    delete_retention = snap.config.delete_retention_ms

    if batch.is_control:
        if pid < 0:
            stats.records_kept += batch.record_count
            return batch.buffer[: batch.size], batch
        may_go = tracker.marker_may_go(batch, _control_type(batch))
        if batch.base_offset >= end:
            may_go = False  # beyond this pass's map: left as it is
        if may_go and horizon is not None and horizon <= now_ms:
            if last_of_producer:
                return _as_batch(_empty_batch(batch))
            return None
        if may_go and horizon is None:
            stats.records_kept += batch.record_count
            return _as_batch(_build_batch(batch, *_records(batch), now_ms + delete_retention))
        stats.records_kept += batch.record_count
        return batch.buffer[: batch.size], batch

    if tracker.data_batch_is_aborted(batch):
        return _as_batch(_empty_batch(batch)) if last_of_producer else None
    if batch.base_offset >= end:
        stats.records_kept += batch.record_count
        return batch.buffer[: batch.size], batch

    payload, records = _records(batch)
    base = batch.base_offset
    kept = []
    tombstone_kept = False
    latest_of = offset_map.get
    for record in records:
        key = record[2]
        if key is not None:
            if base + record[0] < latest_of(key):
                continue  # a later record has this key
            if record[3]:
                if horizon is not None and now_ms >= horizon:
                    continue  # a tombstone past its delete horizon
                tombstone_kept = True
        kept.append(record)
    stats.records_kept += len(kept)
    needs_horizon = tombstone_kept and horizon is None
    if len(kept) == len(records) and not needs_horizon:
        return batch.buffer[: batch.size], batch
    if not kept:
        return _as_batch(_empty_batch(batch)) if last_of_producer else None
    return _as_batch(_build_batch(batch, payload, kept, now_ms + delete_retention if needs_horizon else horizon))


def _as_batch(data: bytes) -> tuple[bytes, RecordBatch]:
    return data, RecordBatch(memoryview(data))

