"""``PartitionLog``: one partition's log directory, the API the Kafka listener and the link fetcher use.

Two ways in:

* ``append_mirrored`` takes whole batches with the source's offsets and writes them byte for byte (source
  epoch, producer ids, CRC untouched). Every batch is verified first and offsets must increase and start at or
  after the log end (gaps, e.g. from compaction, are kept). One bad batch rejects the whole call.
* ``append_assigned`` takes one produced batch, checks its producer sequence, and stamps the two header
  fields outside the CRC: base offset (= log end) and partition leader epoch.

Appends do no per-record work: one header parse and one CRC-32C per batch, one write for all the bytes that go
to the same segment. Reads return file ranges for ``os.sendfile``; only batch headers are read to find them.

Threading contract (Kafka's ``LocalLog``: writes under the log's lock, reads from a volatile end offset):

* **Writers** (``append_*``, ``truncate_to``, ``reset_to``, ``advance_log_start``, ``apply_retention``,
  ``update_config``, ``cleaner_snapshot``, ``swap_in_cleaned``, ``mark_cleaned``, ``flush``, ``close``,
  ``abandon``, ``delete``, ``open``) may be called from any thread; they are
  serialised by the log's writer lock, which they hold across their file I/O (a writer may wait for
  another writer). They block, so the event loop calls them through ``linkd.storage_calls``.
* **Readers** (``read``, ``batch_header``, the offset properties, ``offset_for_timestamp``,
  ``max_timestamp_offset``, ``end_offset_for_epoch``, ``epoch_entries``, ``aborted_transactions``,
  ``open_transactions``, ``producer_ids_seen_max``, ``statistics``, ``segment_base_offsets``) never take
  the lock and never wait for a writer: each works from one ``LogView``, an immutable snapshot (segments
  with their sizes and end offsets, log start and end, last stable offset, epoch history) that the writer
  lock publishes whenever its outermost holder leaves it. A reader sees the log as it was before a write
  in progress, or after it, never half of one; it only reads bytes written before its snapshot (pread and
  sendfile of those are safe while an append writes further on).
* A segment leaving the log (truncation, retention, a roll past an empty segment, the log cleaner's swap)
  is unlinked at once (or renamed over, by a swap) but its descriptor stays open for
  ``RETIRED_SEGMENT_GRACE_S``, so a reader still holding an older view reads the old bytes rather than a
  closed or reused descriptor. Code that removes segments must use ``_drop_segment``/``_retire``. A
  ``FileRange`` returned by ``read`` is read (``read_bytes``) and sent (``sendfile``) through a duplicate
  of that descriptor (``FileRange.open_fd``), which its holder keeps as long as it needs; only once the
  segment is closed does it open its path, refusing a file replaced meanwhile (inode check).
* The log cleaner (``cleaner.py``) runs its passes in a worker thread, one per log at a time
  (``cleaner_lock``). ``cleaner_snapshot``, ``swap_in_cleaned`` and ``mark_cleaned`` are its short steps
  under the writer lock; in between it reads inactive segments through duplicates of their descriptors.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.errors import CorruptBatch
from protocol.records import ATTR_CONTROL, HEADER_SIZE, BatchSlice, RecordBatch, Split, set_base_offset_and_epoch, split_batches

from . import checkpoint, swap
from .clean_state import CleanState
from .cleaner import CleanerSnapshot
from .config import INT32_MAX, LogConfig
from .epoch_cache import FILE_NAME as EPOCH_FILE_NAME
from .epoch_cache import EpochHistory, LeaderEpochCache
from .errors import InvalidRecord, LogClosed, OffsetOutOfRange, PolicyViolation
from .index_file import IndexCorrupt
from .producer_state import (
    ProducerInfo,
    ProducerStateManager,
    apply_batch,
    delete_snapshots_after,
    list_both,
    list_snapshots,
    load_latest_snapshot,
    remove_snapshot,
    write_snapshot,
)
from .recovery import recover_segment, replay_producer_state
from .segment import LOG_SUFFIX, LogSegment

log = logging.getLogger(__name__)

RECOVERY_POINT_FILE = "recovery-point"
LOG_START_FILE = "log-start-offset"
CLEAN_SHUTDOWN_FILE = "clean-shutdown"
# A full disk, an exceeded quota, a read-only mount: recovery then serves what it verified, read-only.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
CLEANER_OFFSET_FILE = "cleaner-offset-checkpoint"
_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex|\.txnindex)$")
# How long the descriptor of a segment that left the log stays open for readers holding an older view (a
# read runs in one call, microseconds to milliseconds; this is a wide margin). Its disk space is freed then.
RETIRED_SEGMENT_GRACE_S = 10.0


@dataclass(frozen=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time: int  # always -1: linkd topics use CreateTime (message.timestamp.type=LogAppendTime unsupported)
    duplicate: bool
    bytes: int


@dataclass(frozen=True)
class FileRange:
    path: str
    position: int
    length: int
    # The segment read: its descriptor still reads these bytes for a while after the segment left the log
    # (retention, truncation, a cleaned segment swapped in under the same name).
    segment: LogSegment | None = field(default=None, compare=False, repr=False)
    # The file's inode, checked only when the descriptor is gone and ``path`` must be opened: a cleaned
    # segment swapped in under the same name is another file whose bytes must not be sent. 0: not checked.
    inode: int = 0

    def open_fd(self) -> int:
        """A descriptor of the file this range was read from, for the caller to close: a duplicate of the
        segment's own descriptor while it is open (the old bytes even after a cleaner swap, retention or a
        truncation), else ``path`` opened and checked to be the same file (``inode``). Raises
        ``FileNotFoundError`` when that file is gone or was replaced. Any thread."""
        fd = self.segment.dup_fd() if self.segment is not None else -1
        if fd >= 0:
            return fd
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self.inode and os.fstat(fd).st_ino != self.inode:
            os.close(fd)
            raise FileNotFoundError(f"{self.path} was replaced (log cleaner) after it was read")
        return fd

    def read_bytes(self) -> bytes:
        """The range's bytes (see ``open_fd``). Any thread."""
        fd = self.open_fd()
        try:
            return os.pread(fd, self.length, self.position)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ReadResult:
    ranges: tuple[FileRange, ...]
    next_offset: int  # one past the last offset of the last batch returned; the requested offset when empty

    @property
    def size(self) -> int:
        return sum(r.length for r in self.ranges)

    def to_bytes(self) -> bytes:
        return b"".join(r.read_bytes() for r in self.ranges)


@dataclass(frozen=True, slots=True)
class SegmentView:
    """One segment as a ``LogView`` saw it: readers read its file below ``size`` only."""

    segment: LogSegment
    base_offset: int
    size: int
    next_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int

    @property
    def is_empty(self) -> bool:
        return self.size == 0


@dataclass(frozen=True, slots=True)
class LogView:
    """An immutable snapshot of a log for readers in any thread (see the module docstring)."""

    segments: tuple[SegmentView, ...]
    bases: tuple[int, ...]
    log_start: int
    log_end: int
    last_stable: int
    epochs: EpochHistory
    open_transactions: dict[int, int]  # never mutated once published
    closed: bool
    cleaned_up_to: int | None  # the log cleaner's first dirty offset (None: never cleaned)

    def segment_index(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self.bases, offset) - 1)


_NO_TRANSACTIONS: dict[int, int] = {}


class _WriterLock:
    """The log's writer lock: re-entrant, and publishing a fresh ``LogView`` each time its outermost holder
    leaves it, so no write can forget to (and readers never see a half-made change)."""

    __slots__ = ("_lock", "_depth", "_publish")

    def __init__(self, publish) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._publish = publish

    def __enter__(self) -> _WriterLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._depth == 1:
                try:
                    self._publish()
                except Exception:
                    if exc_type is None:
                        raise
                    log.exception("publishing the log's state after a failed write failed too")  # keep the first error
        finally:
            self._depth -= 1
            self._lock.release()


@dataclass(frozen=True)
class LogStatistics:
    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    last_stable_offset: int
    recovery_point: int
    size_bytes: int
    segment_count: int
    latest_epoch: int
    producer_count: int
    open_transaction_count: int
    cleaned_up_to: int | None = None  # log cleaner: offsets below it are compacted; None = never cleaned


class PartitionLog:
    def __init__(self, path: str, config: LogConfig, topic: str, partition: int) -> None:
        self.path = path
        self.config = config
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"
        self._lock = _WriterLock(self._publish)
        self._retired: list[tuple[float, LogSegment]] = []  # (close after, segment) that left the log
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._log_start = 0
        self._log_end = 0
        self._recovery_point = 0
        self._epochs = LeaderEpochCache(os.path.join(path, EPOCH_FILE_NAME))
        self._producers = ProducerStateManager()
        self._dir_dirty = False
        self._parent_dirty = False  # this partition's own directory entry is not yet durable
        self._unflushed_records = 0
        self._last_flush_ms = _now_ms()
        self._last_checkpoint_ms = 0
        self._closed = False
        self._cleaned_up_to: int | None = None
        self._deferred_writes: OSError | None = None  # recovery's writes that a full disk refused
        self._offset_files: dict[str, int] = {}  # recovery-point / log-start checkpoint -> the offset it holds
        self._synced_target: int | None = None  # an unsynced flush covered this far; ``synced()`` moves the recovery point
        # Set by a crash recovery for its own flush: the recovery-point file is left as it is when it holds an
        # offset at or below the new recovery point (``_write_recovery_point_file``).
        self._keep_lower_recovery_file = False
        self._listing: list[str] | None = None  # the directory as open() listed it, until the producer state is loaded
        self.recovered = False  # open() re-verified segments (a crash, or a damaged index): ``TopicRegistry.load`` counts them
        # Held by a cleaning pass for its whole run: one pass per log at a time (their .cleaned files share names).
        self.cleaner_lock = threading.Lock()
        self._cuts = 0  # truncations and resets so far: a cleaning pass started before one swaps nothing in
        self._view = LogView((), (), 0, 0, 0, EpochHistory((), ()), _NO_TRANSACTIONS, False, None)

    def _publish(self) -> None:
        """Make the state the writer left the current ``LogView`` (writer lock held). A segment's view is
        reused while it is unchanged, so an append makes one new ``SegmentView``."""
        old = self._view.segments
        views = []
        for i, segment in enumerate(self._segments):
            view = old[i] if i < len(old) else None
            if view is None or view.segment is not segment or view.size != segment.size or view.next_offset != segment.next_offset:
                view = SegmentView(segment, segment.base_offset, segment.size, segment.next_offset, segment.max_timestamp,
                                   segment.offset_of_max_timestamp)
            views.append(view)
        ongoing = self._producers.ongoing
        self._view = LogView(
            tuple(views), tuple(self._bases), self._log_start, self._log_end, self._last_stable_offset(),
            self._epochs.history(), dict(ongoing) if ongoing else _NO_TRANSACTIONS, self._closed,
            self._cleaned_up_to,
        )
        if self._retired:
            self._close_retired(time.monotonic())

    def _last_stable_offset(self) -> int:
        first_open = self._producers.first_unstable_offset()
        if first_open is None:
            return self._log_end
        return min(max(first_open, self._log_start), self._log_end)

    def _retire(self, segment: LogSegment, unlink: bool = True) -> None:
        """``segment`` has left the log: unlink its files now (``unlink=False``: they are gone or another
        segment's already, as after a cleaner swap), close its descriptor after the grace period."""
        if unlink:
            segment.delete_files()
        self._retired.append((time.monotonic() + RETIRED_SEGMENT_GRACE_S, segment))

    def _close_retired(self, now: float) -> None:
        while self._retired and (self._closed or self._retired[0][0] <= now):
            self._retired.pop(0)[1].close()

    @property
    def view(self) -> LogView:
        """The current snapshot. Any thread."""
        return self._view

    # ------------------------------------------------------------------------------------------------
    # Opening and recovery

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: LogConfig, topic: str, partition: int, *,
             clean: CleanState | None = None, sync: bool = True) -> PartitionLog:
        """Open (creating if needed) the log in ``path``; recover it when the last shutdown was not clean.
        Blocking (recovery reads whole segments).

        ``clean``: this partition's line of the log directory's clean-shutdown checkpoints (``logdir``), which
        stand for its own marker and offset checkpoints (not read then). ``sync=False``: what recovery
        writes (rebuilt indexes, checkpoints) is written without fsyncs and the recovery point stays where
        it was until the caller has synced the file system and called ``synced()`` (``logdir.open_logs``)."""
        self = cls(os.fspath(path), config, topic, partition)
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            names = []
        if not names:
            os.makedirs(self.path, exist_ok=True)
        with self._lock:
            if not names:
                self._create_fresh()
            else:
                self._load(names, clean, sync)
        return self

    def _create_fresh(self) -> None:
        """A new partition: nothing to recover and no checkpoint worth writing yet. Absent checkpoints read as
        "log start = first segment's base, recover from it", which is exactly this empty log, so a crash
        before the first flush loses nothing (``_roll`` writes the log start once a first batch past 0 renames
        the only segment); that flush makes the segment files' directory entries durable (``_dir_dirty``)
        and the partition directory's own entry too (``_parent_dirty``): a directory lost in a crash before
        then reopens as the same empty log. No fsync at all keeps a mirror or topic create (one partition
        directory each) off the disk's critical path."""
        self._create_segment(0)
        self._parent_dirty = True

    def _load(self, names: list[str], clean: CleanState | None, sync: bool) -> None:
        # One listing of the directory tells which of the small files exist: opening absent ones (temp
        # files, the cleaner's checkpoint, a swap in progress) is most of a clean open's system calls.
        present = set(names)
        if any(name.endswith(checkpoint.TMP_SUFFIX) for name in names):
            for name in checkpoint.remove_temp_files(self.path):
                log.warning("%s: removed half-written file %s", self.name, name)
            names = os.listdir(self.path)
        if any(swap.is_swap_file(name) for name in names):
            swap.recover(self.path, self.name)  # before listing segments: a cleaner swap may be half done
            names = os.listdir(self.path)
        present = set(names)
        self._listing = names  # what this open saw; ``_load_producer_state`` uses it for the snapshots
        if CLEANER_OFFSET_FILE in present:
            self._cleaned_up_to = checkpoint.read_offset_checkpoint(os.path.join(self.path, CLEANER_OFFSET_FILE))
        # A marker of its own: the last close was a single log's (``close()``) or linkd's before 0.x (the
        # log directory's checkpoints then say the same); taken (removed) either way.
        clean_end = checkpoint.take_clean_shutdown(os.path.join(self.path, CLEAN_SHUTDOWN_FILE)) if CLEAN_SHUTDOWN_FILE in present else None
        if clean is not None:
            # The log directory's checkpoints were written after this partition's own files, from the same
            # offsets, and only once every log had closed: they stand for its marker and offset files.
            clean_end = clean.log_end if clean_end is None else clean_end
            start_checkpoint: int | None = clean.log_start
            recovery_checkpoint: int | None = clean.recovery_point
        else:
            start_checkpoint = checkpoint.read_offset_checkpoint(os.path.join(self.path, LOG_START_FILE)) if LOG_START_FILE in present else None
            recovery_checkpoint = checkpoint.read_offset_checkpoint(os.path.join(self.path, RECOVERY_POINT_FILE)) if RECOVERY_POINT_FILE in present else None
        for name, found in ((LOG_START_FILE, start_checkpoint), (RECOVERY_POINT_FILE, recovery_checkpoint)):
            if found is not None:
                self._offset_files[name] = found
        self._epochs, epochs_ok = LeaderEpochCache.load(os.path.join(self.path, EPOCH_FILE_NAME))
        if not epochs_ok:
            log.warning("%s: leader-epoch checkpoint unreadable; rebuilding it from the whole log", self.name)

        bases = self._list_segment_files(names)
        self._segments = [LogSegment(self.path, base, self.config.index_interval_bytes, create=False) for base in bases]
        self._bases = list(bases)
        if start_checkpoint is None and self._segments:
            start_checkpoint = self._segments[0].base_offset
        self._log_start = start_checkpoint or 0
        # A crash during retention can leave segments that the log start already moved past.
        while len(self._segments) > 1 and self._segments[1].base_offset <= self._log_start:
            self._drop_segment(0, "below the log start offset")
        if not self._segments:
            self._create_segment(self._log_start)
            self._write_offset_file(LOG_START_FILE, self._log_start)

        to_recover = self._segments_to_recover(clean_end, recovery_checkpoint, epochs_ok)
        recovered = self.recovered = bool(to_recover)
        if to_recover:
            self._recover(min(to_recover))
        self._log_end = self._compute_log_end()
        if clean_end is not None and not recovered and clean_end != self._log_end:
            log.warning("%s: clean-shutdown marker says log end %d, segments end at %d", self.name, clean_end, self._log_end)
        self._epochs.truncate_from_end(self._log_end)
        self._epochs.truncate_from_start(self._log_start)
        self._load_producer_state()
        # Recovered segments have rebuilt, unsynced indexes: flushing from the first of them persists them.
        first_recovered = self._segments[min(min(to_recover), len(self._segments) - 1)].base_offset if recovered else None
        self._recovery_point = self._log_end if first_recovered is None else min(first_recovered, self._log_end)
        if recovered or self._epochs.dirty:
            recovery_point = self._recovery_point
            self._keep_lower_recovery_file = recovered
            try:
                # A many-log open (sync=False) writes no producer snapshot: the one it loaded, replayed
                # to the log end, is what the next open would load and replay again, and the recovery
                # point does not depend on it. The next periodic checkpoint writes one.
                self._flush(force_checkpoint=True, sync=sync, snapshot=sync)
            except OSError as exc:
                if not sync:  # nothing of it was synced, whatever the flags say now: the retry syncs it all
                    self._synced_target = None
                    for segment in self._segments[self._segment_index(recovery_point) :]:
                        segment.mark_unsynced()
                    self._dir_dirty = self._parent_dirty = True
                if exc.errno not in NO_SPACE_ERRNOS:
                    raise
                self._recovery_point = recovery_point  # nothing past it is known durable (indexes included)
                # What is on disk is verified and indexed in memory: serve it read-only rather than not at
                # all; the next append retries these writes first (``_retry_deferred_writes``).
                self._deferred_writes = exc
                log.error("%s: recovery could not write %s: %s (%s free on that file system); serving the "
                          "partition read-only (appends answer KAFKA_STORAGE_ERROR) until space returns",
                          self.name, exc.filename or self.path, exc.strerror, _free_space(self.path))

    def _retry_deferred_writes(self) -> None:
        """Before an append: persist what recovery could not write (rebuilt indexes, checkpoints) on a full
        disk. Raises the ``OSError`` again while the disk is still full, so the append is refused."""
        if self._deferred_writes is None:
            return
        self._flush(force_checkpoint=True)
        self._deferred_writes = None
        log.info("%s: deferred recovery writes done; the partition accepts appends again", self.name)

    def _list_segment_files(self, names: list[str]) -> list[int]:
        logs, others = set(), []
        for name in names:
            match = _SEGMENT_FILE.match(name)
            if not match:
                continue
            if match.group(2) == LOG_SUFFIX:
                logs.add(int(match.group(1)))
            else:
                others.append((int(match.group(1)), name))
        for base, name in others:
            if base not in logs:
                log.warning("%s: removing %s, its segment is gone", self.name, name)
                os.unlink(os.path.join(self.path, name))
        return sorted(logs)

    def _segments_to_recover(self, clean_end: int | None, recovery_checkpoint: int | None, epochs_ok: bool) -> list[int]:
        if not epochs_ok:
            return list(range(len(self._segments)))
        first_unsafe = len(self._segments)
        if clean_end is None:
            point = recovery_checkpoint if recovery_checkpoint is not None else -1
            first_unsafe = max(0, bisect.bisect_right(self._bases, point) - 1)
            # Debug, not info: after a crash every partition says it; ``TopicRegistry.load`` logs one summary.
            log.debug("%s: no clean shutdown; recovering from offset %d (segment %d of %d)", self.name,
                     max(point, self._segments[0].base_offset), first_unsafe + 1, len(self._segments))
        bad = []
        for i, segment in enumerate(self._segments[:first_unsafe]):
            try:
                segment.load_indexes()
            except IndexCorrupt as exc:
                log.warning("%s: rebuilding indexes of segment %d: %s", self.name, segment.base_offset, exc)
                bad.append(i)
        return bad + list(range(first_unsafe, len(self._segments)))

    def _recover(self, first: int) -> None:
        """Re-verify segments from ``first`` on; the first one with a bad tail drops all after it."""
        self._epochs.truncate_from_end(self._segments[first].base_offset)

        def note_epoch(batch: RecordBatch, _position: int) -> None:
            self._epochs.assign(batch.partition_leader_epoch, batch.base_offset)

        i = first
        while i < len(self._segments):
            segment = self._segments[i]
            cut = recover_segment(segment, note_epoch, self.name)
            if cut and i + 1 < len(self._segments):
                while len(self._segments) > i + 1:
                    self._drop_segment(i + 1, f"it follows the corruption cut at offset {segment.next_offset}")
            try:
                segment.txn_index.load()
            except IndexCorrupt as exc:
                log.warning("%s: %s; rebuilding transaction state from the log start", self.name, exc)
                segment.txn_index.reset()
                self._txn_index_lost = True
            i += 1

    _txn_index_lost = False

    def _load_producer_state(self) -> None:
        listing, self._listing = self._listing, None
        if self._txn_index_lost:
            for snap in list_snapshots(self.path):
                remove_snapshot(self.path, snap)
            listing = None
        # Snapshots are written and removed only by this log's writer: the open's listing still holds.
        loaded = load_latest_snapshot(self.path, self._log_end, listing)
        if loaded is None:
            start, state = self._log_start, ProducerStateManager()
        else:
            start, state = loaded
        for segment in self._segments:
            if self._txn_index_lost:
                segment.txn_index.reset()
            else:
                segment.txn_index.truncate_from_offset(start)
        replayed = replay_producer_state(self._segments, state, start, start)
        if replayed:
            log.debug("%s: rebuilt producer state from offset %d (%d batches)", self.name, start, replayed)
        self._producers = state
        self._txn_index_lost = False

    # ------------------------------------------------------------------------------------------------
    # Segments

    def _create_segment(self, base_offset: int) -> LogSegment:
        segment = LogSegment(self.path, base_offset, self.config.index_interval_bytes, create=True)
        self._segments.append(segment)
        self._bases.append(base_offset)
        self._dir_dirty = True
        return segment

    def _drop_segment(self, index: int, why: str) -> None:
        segment = self._segments.pop(index)
        del self._bases[index]
        log.warning("%s: deleting segment %d (%d bytes): %s", self.name, segment.base_offset, segment.size, why)
        self._retire(segment)
        self._dir_dirty = True

    def _roll(self, base_offset: int) -> LogSegment:
        active = self._segments[-1]
        if active.is_empty:
            # An empty segment may sit below a gap the next batch jumps over; recreate it at that batch.
            if active.base_offset == base_offset:
                return active
            self._segments.pop()
            self._bases.pop()
            self._retire(active)
            if not self._segments and base_offset != self._log_start:
                # The segment whose name told the log start is gone: from now on the checkpoint tells it.
                self._write_offset_file(LOG_START_FILE, self._log_start)
        else:
            active.seal()
        return self._create_segment(base_offset)

    def _needs_roll(self, segment: LogSegment, pending: int, first_ts: int | None, batch: RecordBatch) -> bool:
        if segment.size + pending == 0:
            return segment.base_offset != batch.base_offset
        if segment.size + pending + batch.size > self.config.segment_bytes:
            return True
        if batch.last_offset - segment.base_offset > INT32_MAX:
            return True
        return first_ts is not None and batch.max_timestamp - first_ts > self.config.max_segment_ms

    def _compute_log_end(self) -> int:
        for segment in reversed(self._segments):
            if not segment.is_empty:
                return max(segment.next_offset, self._log_start)
        return self._log_start

    def _segment_index(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    # ------------------------------------------------------------------------------------------------
    # Appending

    def append_mirrored(self, data: bytes | bytearray | memoryview | BatchSlice, batches: Sequence[RecordBatch] | None = None) -> AppendResult:
        """Append whole batches exactly as the source wrote them. A partial batch at the end of ``data``
        (a Fetch response may end with one) is not appended; ``bytes`` says how much was. Raises
        ``CorruptBatch`` and writes nothing if any batch fails verification. ``batches``: ``data`` already
        cut by ``split_batches`` (the caller's, to save a second pass), exactly its whole batches in order;
        or ``data`` a ``BatchSlice``, which carries both.
        Writer: any thread, one at a time under the writer lock held across the write; readers meanwhile
        see the log without these batches, then with all of them."""
        with self._lock:
            self._check_open()
            self._retry_deferred_writes()
            if isinstance(data, BatchSlice):
                # Cut by Split.tail from one blob: the bytes are exactly the batches', nothing to check.
                view, split = data.data, Split(data.batches, len(data.data))
            elif batches is None:
                view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
                split = split_batches(view)
            else:
                view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
                split = Split(list(batches), sum(b.size for b in batches))
                last_start = split.consumed - batches[-1].size if batches else 0
                if batches and (split.consumed > len(view) or view[:8] != batches[0].buffer[:8] or view[last_start : last_start + 8] != batches[-1].buffer[:8]):
                    raise ValueError("append_mirrored: the batches given are not the data's")
            batches = split.batches
            if not batches:
                return AppendResult(self._log_end, self._log_end - 1, -1, False, 0)
            expected = self._log_end
            control_types: dict[int, int | None] = {}
            max_ts = -1
            for i, batch in enumerate(batches):
                batch.verify()
                if batch.base_offset < expected:
                    raise CorruptBatch(
                        f"{self.name}: batch at offset {batch.base_offset} is below the expected offset {expected}",
                        "NON_MONOTONIC_OFFSETS", batch.base_offset)
                expected = batch.base_offset + batch.last_offset_delta + 1
                if batch.max_timestamp > max_ts:
                    max_ts = batch.max_timestamp
                if batch.attributes & ATTR_CONTROL and batch.producer_id >= 0:
                    control_types[i] = batch.control_type()

            segment = self._segments[-1]
            total = split.consumed
            first_ts = segment.first_batch_timestamp
            if (segment.size and segment.size + total <= self.config.segment_bytes
                    and expected - 1 - segment.base_offset <= INT32_MAX
                    and (first_ts is None or max_ts - first_ts <= self.config.max_segment_ms)):
                # Nothing in this call rolls the segment: skip the per-batch roll checks.
                self._write_group(segment, view, 0, total, batches, 0, len(batches), control_types)
                self._after_append(batches, None)
                return AppendResult(batches[0].base_offset, expected - 1, -1, False, total)
            group_start = 0
            group_bytes = 0
            first_ts = segment.first_batch_timestamp
            start_byte = 0
            for i, batch in enumerate(batches):
                if self._needs_roll(segment, group_bytes, first_ts, batch):
                    if group_bytes:
                        self._write_group(segment, view, start_byte, group_bytes, batches, group_start, i, control_types)
                    segment = self._roll(batch.base_offset)
                    start_byte += group_bytes
                    group_start, group_bytes, first_ts = i, 0, None
                if first_ts is None:
                    first_ts = batch.max_timestamp
                group_bytes += batch.size
            self._write_group(segment, view, start_byte, group_bytes, batches, group_start, len(batches), control_types)
            total = start_byte + group_bytes
            self._after_append(batches, None)
            return AppendResult(batches[0].base_offset, batches[-1].last_offset, -1, False, total)

    def _write_group(self, segment: LogSegment, view: memoryview, start: int, length: int,
                     batches: Sequence[RecordBatch], first: int, end: int, control_types: dict[int, int | None]) -> None:
        group = batches[first:end]
        segment.append([view[start : start + length]], group)
        epochs, producers = self._epochs, self._producers
        for i, batch in enumerate(group, first):
            if batch.partition_leader_epoch > epochs.latest_epoch:
                epochs.assign(batch.partition_leader_epoch, batch.base_offset)
            if batch.producer_id >= 0:
                apply_batch(producers, segment.txn_index, batch, control_types.get(i))
        self._log_end = group[-1].next_offset

    def append_assigned(self, batch: bytes | bytearray | memoryview, leader_epoch: int, now_ms: int | None = None) -> AppendResult:
        """Append one produced batch at the log end, stamped with ``leader_epoch``. Returns the original
        offsets with ``duplicate=True`` for a retried idempotent batch. Raises ``CorruptBatch``,
        ``InvalidRecord`` (not exactly one batch), ``OutOfOrderSequence`` or ``InvalidProducerEpoch``.
        Writer: any thread, under the writer lock; blocking (a write, an fsync when flush.messages/ms say)."""
        with self._lock:
            self._check_open()
            self._retry_deferred_writes()
            view = memoryview(batch).cast("B") if not isinstance(batch, bytes) else memoryview(batch)
            split = split_batches(view)
            if len(split.batches) != 1 or split.consumed != len(view):
                raise InvalidRecord(f"{self.name}: a produce request must carry exactly one whole record batch")
            incoming = split.batches[0]
            incoming.verify()
            duplicate = self._producers.validate(incoming)
            if duplicate is not None:
                return AppendResult(duplicate.base_offset, duplicate.last_offset, -1, True, 0)
            control_type = incoming.control_type() if incoming.is_control else None

            base_offset = self._log_end
            header = bytearray(view[:HEADER_SIZE])
            set_base_offset_and_epoch(header, base_offset, leader_epoch)
            stamped = RecordBatch(memoryview(header))
            segment = self._segments[-1]
            if self._needs_roll(segment, 0, segment.first_batch_timestamp, stamped):
                segment = self._roll(base_offset)
            segment.append([header, view[HEADER_SIZE:]], [stamped])
            self._epochs.assign(leader_epoch, base_offset)
            apply_batch(self._producers, segment.txn_index, stamped, control_type)
            self._log_end = stamped.next_offset
            self._after_append((stamped,), now_ms)
            return AppendResult(base_offset, stamped.last_offset, -1, False, stamped.size)

    def _after_append(self, batches: Sequence[RecordBatch], now_ms: int | None) -> None:
        config = self.config
        if config.flush_messages is not None:
            self._unflushed_records += sum(b.record_count for b in batches)
            if self._unflushed_records >= config.flush_messages:
                self._flush()
                return
        if config.flush_ms is not None:
            now = _now_ms() if now_ms is None else now_ms
            if now - self._last_flush_ms >= config.flush_ms:
                self._flush()

    # ------------------------------------------------------------------------------------------------
    # Reading

    def read(self, offset: int, max_bytes: int, upper_bound: int | None = None) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (but at least one batch), all
        ending below ``upper_bound`` (high watermark or LSO) when given. Reader: any thread, never waits
        for a write; raises ``LogClosed`` and ``OffsetOutOfRange``."""
        view = self._view
        if view.closed:
            raise LogClosed(f"{self.name}: log is closed")
        if offset < view.log_start or offset > view.log_end:
            raise OffsetOutOfRange(f"{self.name}: offset {offset} is outside [{view.log_start}, {view.log_end}]")
        limit = view.log_end if upper_bound is None else min(upper_bound, view.log_end)
        ranges: list[FileRange] = []
        next_offset = offset
        budget = max(max_bytes, 0)
        position_offset = offset
        for seg in view.segments[view.segment_index(offset) :]:
            if position_offset >= limit:
                break
            found = seg.segment.find_batch(position_offset, seg.size)
            if found is None:
                continue
            position, first = found
            end, seg_next = seg.segment.read_extent(position, first, budget, limit, not ranges, seg.size, seg.next_offset)
            if end > position:
                ranges.append(FileRange(seg.segment.log_path, position, end - position, seg.segment, seg.segment.inode))
                budget -= end - position
                next_offset = seg_next
            if end < seg.size or budget <= 0:
                break
            position_offset = seg.next_offset
        return ReadResult(tuple(ranges), next_offset)

    # ------------------------------------------------------------------------------------------------
    # Offsets and queries

    def batch_header(self, offset: int) -> RecordBatch | None:
        """Header of the batch holding ``offset`` (61 bytes read, no payload), or None if none holds it.
        Reader: any thread; raises ``LogClosed``."""
        view = self._view
        if view.closed:
            raise LogClosed(f"{self.name}: log is closed")
        if not view.log_start <= offset < view.log_end:
            return None
        seg = view.segments[view.segment_index(offset)]
        found = seg.segment.find_batch(offset, seg.size)
        if found is None or found[1].base_offset > offset:
            return None
        return found[1]

    # The offsets: readers, any thread, from the current view (after a write returns, its effect).

    @property
    def log_start_offset(self) -> int:
        return self._view.log_start

    @property
    def log_end_offset(self) -> int:
        return self._view.log_end

    @property
    def high_watermark(self) -> int:
        return self._view.log_end  # single replica: everything appended is committed

    @property
    def last_stable_offset(self) -> int:
        return self._view.last_stable

    @property
    def latest_epoch(self) -> int:
        return self._view.epochs.latest_epoch

    @property
    def recovery_point(self) -> int:
        """Everything below it is on disk. Any thread (an int written by the flushing writer)."""
        return self._recovery_point

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """ListOffsets by time, batch-granular: the first batch whose max timestamp is >= ``timestamp``
        gives (its base offset, its base timestamp if that already is >= ``timestamp`` else its max
        timestamp). The base offset is at or before the first matching record, so a consumer seeking there
        misses nothing. None when no batch qualifies. Reader: any thread."""
        view = self._view
        for seg in view.segments:
            if seg.is_empty or seg.max_timestamp < timestamp or seg.next_offset <= view.log_start:
                continue
            segment = seg.segment
            start = max(segment.time_index.search_start(timestamp), view.log_start)
            found = segment.find_batch(start, seg.size)
            if found is None:
                continue
            for _pos, header in segment.iter_headers(found[0], seg.size):
                if header.max_timestamp >= timestamp:
                    ts = header.base_timestamp if header.base_timestamp >= timestamp else header.max_timestamp
                    return max(header.base_offset, view.log_start), ts
        return None

    def max_timestamp_offset(self) -> tuple[int, int]:
        """(offset, timestamp) of the batch with the largest max timestamp (its base offset; the earliest
        such batch on ties), or (-1, -1) for an empty log. Reader: any thread."""
        view = self._view
        best, best_seg = (-1, -1), None
        for seg in view.segments:
            if not seg.is_empty and seg.next_offset > view.log_start and seg.max_timestamp > best[1]:
                best, best_seg = (seg.offset_of_max_timestamp, seg.max_timestamp), seg
        if best_seg is not None:
            # The time index names the batch by its last offset (Kafka's layout); answer its base offset.
            found = best_seg.segment.find_batch(best[0], best_seg.size)
            base = found[1].base_offset if found is not None else best[0]
            best = (max(base, view.log_start), best[1])
        return best

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch; see ``LeaderEpochCache.end_offset_for``. Reader: any thread."""
        view = self._view
        return view.epochs.end_offset_for(epoch, view.log_end)

    def epoch_entries(self) -> list[tuple[int, int]]:
        """(epoch, start offset) pairs. Reader: any thread."""
        history = self._view.epochs
        return list(zip(history.epochs, history.starts, strict=True))

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions with data in [start_offset, end_offset).
        Reader: any thread. An index entry appended after the view is for a marker above the view's last
        stable offset, whose transaction started at or above it too: a caller bounded by the view's LSO
        never gets it."""
        view = self._view
        result = []
        for seg in view.segments[view.segment_index(start_offset) :]:
            complete = False
            for entry in seg.segment.txn_index.entries:
                if entry.last_offset >= start_offset and entry.first_offset < end_offset:
                    result.append((entry.producer_id, entry.first_offset))
                # No transaction still open when this marker was written starts below end_offset.
                complete = complete or entry.last_stable_offset >= end_offset
            if complete:
                break
        return result

    def open_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of each open transaction. Reader: any thread."""
        return dict(self._view.open_transactions)

    def producer_states(self) -> list[ProducerInfo]:
        """The producers this log remembers (DescribeProducers). Takes the writer lock for a consistent copy:
        call it through ``storage_calls``."""
        with self._lock:
            return self._producers.describe()

    def producer_ids_seen_max(self) -> int:
        """Highest producer id ever written to this log (-1 if none): the floor for ids linkd hands out.
        Reader: any thread (an int the writer only raises)."""
        return self._producers.max_producer_id

    # ------------------------------------------------------------------------------------------------
    # Cutting

    def truncate_to(self, offset: int, reason: str = "requested") -> int:
        """Remove every batch holding an offset >= ``offset`` (a batch straddling it goes whole). Durable on
        return. Returns the bytes removed. Writer: any thread, under the writer lock; blocking (fsyncs)."""
        with self._lock:
            self._check_open()
            if offset >= self._log_end:
                return 0
            self._cuts += 1
            old_end = self._log_end
            if offset < self._log_start:
                removed = self._truncate_fully(offset)
            else:
                removed = 0
                index = self._segment_index(offset)
                while len(self._segments) > index + 1:
                    removed += self._segments[-1].size
                    self._drop_segment(len(self._segments) - 1, f"truncating to {offset}")
                segment = self._segments[index]
                found = segment.find_batch(offset)
                if found is not None:
                    removed += segment.truncate_to_position(found[0])
                self._log_end = self._compute_log_end()
            log.warning("%s: truncated to offset %d (%s): removed offsets %d..%d, %d bytes; log end now %d",
                        self.name, offset, reason, self._log_end, old_end - 1, removed, self._log_end)
            self._epochs.truncate_from_end(self._log_end)
            delete_snapshots_after(self.path, self._log_end)
            self._producers = self._rebuilt_producer_state(self._log_end)
            self._recovery_point = min(self._recovery_point, self._log_end)
            self._lower_cleaned_up_to(self._log_end)
            self._flush(force_checkpoint=True)
            return removed

    def reset_to(self, offset: int) -> None:
        """Empty the log and start it at ``offset`` (a mirror starting mid-way into its source). Writer: any
        thread, under the writer lock; blocking (fsyncs)."""
        with self._lock:
            self._check_open()
            self._cuts += 1
            self._truncate_fully(offset)
            self._producers = ProducerStateManager()
            self._lower_cleaned_up_to(None)
            self._flush(force_checkpoint=True)

    def _truncate_fully(self, offset: int) -> int:
        removed = sum(s.size for s in self._segments)
        while self._segments:
            self._drop_segment(0, f"log restarts at offset {offset}")
        self._create_segment(offset)
        self._log_start = self._log_end = self._recovery_point = offset
        self._epochs.clear()
        delete_snapshots_after(self.path, -1)
        self._write_offset_file(LOG_START_FILE, offset)
        return removed

    def _rebuilt_producer_state(self, end_offset: int) -> ProducerStateManager:
        loaded = load_latest_snapshot(self.path, end_offset)
        start, state = loaded if loaded is not None else (self._log_start, ProducerStateManager())
        replay_producer_state(self._segments, state, start, end_offset)
        return state

    def advance_log_start(self, offset: int) -> int:
        """DeleteRecords: make ``offset`` the first readable offset and delete segments wholly below it.
        Returns the new log start offset. Refused (``PolicyViolation``) unless cleanup.policy holds "delete",
        as Kafka refuses it. Writer: any thread, under the writer lock; blocking (checkpoint and directory
        fsyncs)."""
        with self._lock:
            self._check_open()
            if not self.config.delete:
                raise PolicyViolation(f"Records of partition {self.name} can not be deleted due to the configured "
                                      f"policy (cleanup.policy={','.join(self.config.cleanup_policy)})")
            if offset > self._log_end:
                raise OffsetOutOfRange(f"{self.name}: cannot move the log start to {offset}, past the high "
                                       f"watermark {self._log_end}")
            if offset <= self._log_start:
                return self._log_start
            self._log_start = offset
            self._delete_segments_below_start("DeleteRecords")
            return self._log_start

    def _delete_segments_below_start(self, why: str) -> None:
        active = self._segments[-1]
        if not active.is_empty and active.next_offset <= self._log_start:
            self._roll(self._log_end)
        # Checkpoint first: after a crash, segments below the recorded start are deleted on open.
        self._write_offset_file(LOG_START_FILE, self._log_start)
        while len(self._segments) > 1 and (self._segments[0].next_offset <= self._log_start or self._segments[0].is_empty
                                           or self._segments[1].base_offset <= self._log_start):
            self._drop_segment(0, f"{why}: below the log start offset {self._log_start}")
        self._epochs.truncate_from_start(self._log_start)
        if self._epochs.dirty:
            self._epochs.write()
        checkpoint.fsync_dir(self.path)
        self._dir_dirty = False
        self._sync_parent()

    def _sync_parent(self) -> None:
        if self._parent_dirty:
            checkpoint.fsync_dir(os.path.dirname(self.path))
            self._parent_dirty = False

    def update_config(self, config: LogConfig) -> None:
        """Use ``config`` from now on without reopening (Kafka's ``LocalLog.updateConfig``): later appends,
        rolls, flushes and retention passes read it. Segments already written keep their index interval
        until the next roll. Writer: any thread, under the writer lock (no I/O; it waits for a write in
        progress), so a write runs wholly with the old config or the new one; leaving the lock publishes a
        view as every writer does (none of the view depends on the config today). Readers read ``config``
        as one immutable object, the old or the new."""
        with self._lock:
            self.config = config

    def retention_due(self, now_ms: int) -> bool:
        """Whether ``apply_retention(now_ms)`` may delete a segment: False only when it certainly would not
        (no ``delete`` policy, the oldest segment too new and the log within retention.bytes), so a
        retention pass hands only these logs to a worker thread, not 10,000 idle ones every pass.
        Reader: any thread, no lock, no I/O (the published view; a segment whose newest timestamp the view
        does not know counts as due, and ``apply_retention`` asks the file)."""
        config = self.config
        if not config.delete:
            return False
        segments = self._view.segments
        if not segments:
            return False
        if config.retention_ms >= 0:
            first = segments[0]
            if first.is_empty:
                if len(segments) > 1:
                    return True  # an empty segment the cleaner left, not the active one
            elif first.max_timestamp < 0 or now_ms - first.max_timestamp > config.retention_ms:
                return True
        if config.retention_bytes >= 0 and len(segments) > 1:
            if sum(s.size for s in segments) - config.retention_bytes >= segments[0].size:
                return True
        return False

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole old segments beyond retention.ms / retention.bytes, moving the log start. Returns
        the number of segments deleted. Only when cleanup.policy holds "delete": a compacted topic keeps its
        old segments (the cleaner thins them instead). Writer: any thread, under the writer lock; blocking."""
        with self._lock:
            self._check_open()
            if not self.config.delete:
                return 0
            segments = self._segments
            by_time = 0
            if self.config.retention_ms >= 0:
                for segment in segments:
                    if segment.is_empty:
                        if segment is not segments[-1]:
                            by_time += 1  # an empty segment the cleaner left: no data to keep
                            continue
                        break
                    newest = segment.max_timestamp if segment.max_timestamp >= 0 else segment.last_modified_ms()
                    if now_ms - newest <= self.config.retention_ms:
                        break
                    by_time += 1
            by_size = 0
            if self.config.retention_bytes >= 0:
                excess = sum(s.size for s in segments) - self.config.retention_bytes
                for segment in segments[:-1]:
                    if excess - segment.size < 0:
                        break
                    excess -= segment.size
                    by_size += 1
            count = max(by_time, by_size)
            if count == 0:
                return 0
            if count >= len(segments):
                self._roll(self._log_end)
            new_start = max(self._log_start, self._segments[count].base_offset)
            log.info("%s: retention deletes %d segment(s); log start %d -> %d", self.name, count, self._log_start, new_start)
            self._log_start = new_start
            self._delete_segments_below_start("retention")
            return count

    # ------------------------------------------------------------------------------------------------
    # Log cleaner (cleaner.py does the work in a worker thread; these are its short locked steps)

    def cleaner_snapshot(self) -> CleanerSnapshot | None:
        """The segments and state a cleaning pass reads, or None if the log is closed. Any thread: takes
        the writer lock briefly (no I/O) for the producer state, which the published view does not hold.
        The pass then reads the inactive segments below these sizes through their own descriptors
        (``LogSegment.dup_fd``), which appends (to the active segment only) never touch."""
        with self._lock:
            if self._closed:
                return None
            segments = tuple(self._segments)
            return CleanerSnapshot(
                config=self.config,
                path=self.path,
                segments=segments,
                sizes=tuple(s.size for s in segments),
                next_offsets={s.base_offset: s.next_offset for s in segments},
                max_timestamps={s.base_offset: s.max_timestamp for s in segments},
                first_timestamps=tuple(s.first_batch_timestamp for s in segments[:-1]),
                log_start=self._log_start,
                log_end=self._log_end,
                last_stable_offset=self._last_stable_offset(),
                cleaned_up_to=self._cleaned_up_to,
                producer_last={pid: (e.batches[-1].last_offset if e.batches else None, e.epoch)
                               for pid, e in self._producers.entries.items()},
                aborted=tuple(entry for s in segments for entry in s.txn_index.entries),
                cuts=self._cuts,
            )

    def swap_in_cleaned(self, old: Sequence[LogSegment], old_sizes: Sequence[int], base_offset: int, group_end: int,
                        cuts: int | None = None) -> bool:
        """Replace the run of segments ``old`` (as the cleaner read them) by the cleaned segment written as
        ``<base_offset>.*.cleaned`` (see swap.py). False, with nothing changed, if ``old`` is no longer a run
        of inactive segments of this log with those sizes, or (``cuts``: the snapshot's) if the log was
        truncated since: a segment cut in place and refilled to the same size holds other batches.

        Writer: any thread, under the writer lock (the renames and directory fsyncs of the swap). Readers
        are never closed under: the replaced segments leave through ``_retire``, their files already
        unlinked or renamed over, their descriptors open for ``RETIRED_SEGMENT_GRACE_S``, so a reader on an
        older view (or a ``FileRange`` being sent) reads the old bytes; leaving the lock publishes the view
        with the cleaned segment."""
        with self._lock:
            if self._closed or not old or (cuts is not None and cuts != self._cuts):
                return False
            try:
                first = next(i for i, s in enumerate(self._segments) if s is old[0])
            except StopIteration:
                return False
            current = self._segments[first : first + len(old)]
            if (first + len(old) >= len(self._segments) or any(a is not b for a, b in zip(current, old, strict=True))
                    or [s.size for s in current] != list(old_sizes)):
                return False
            swap.commit(self.path, base_offset, group_end)
            # Old descriptors stay open (and valid: unlinked files keep their bytes) until the new segment
            # is in place, so a failure below leaves this log serving the old data; reopen completes it.
            swap.complete(self.path, base_offset, [s.base_offset for s in old])
            segment = LogSegment(self.path, base_offset, self.config.index_interval_bytes, create=False)
            try:
                segment.load_indexes()
            except IndexCorrupt as exc:
                log.warning("%s: rebuilding indexes of cleaned segment %d: %s", self.name, base_offset, exc)
                recover_segment(segment, lambda _batch, _position: None, self.name)
                segment.flush()
            self._segments[first : first + len(old)] = [segment]
            self._bases[first : first + len(old)] = [base_offset]
            for s in old:
                self._retire(s, unlink=False)  # swap.complete removed or replaced their files
            return True

    def mark_cleaned(self, offset: int, cuts: int | None = None) -> None:
        """The cleaner compacted everything below ``offset``: the next pass maps from there. Ignored if the
        log was truncated since the pass's snapshot (``cuts``), which may have lowered it already. Writer:
        any thread, under the writer lock (a checkpoint write)."""
        with self._lock:
            if self._closed or (cuts is not None and cuts != self._cuts):
                return
            self._cleaned_up_to = offset
            checkpoint.write_offset_checkpoint(os.path.join(self.path, CLEANER_OFFSET_FILE), self.topic,
                                               self.partition, offset)

    def _lower_cleaned_up_to(self, end: int | None) -> None:
        if self._cleaned_up_to is not None and (end is None or self._cleaned_up_to > end):
            self._cleaned_up_to = end
            path = os.path.join(self.path, CLEANER_OFFSET_FILE)
            if end is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                checkpoint.write_offset_checkpoint(path, self.topic, self.partition, end)

    # ------------------------------------------------------------------------------------------------
    # Durability and lifetime

    def flush(self, checkpoints: bool = True) -> int:
        """fsync everything appended and advance the recovery point; returns the flushed offset.
        ``checkpoints=False``: never (re)write the checkpoint files here, even when they are due (a
        failover making thousands of logs durable needs their data on disk, not their derived files).

        The fsyncs run outside the log's lock, so appends (and the event loop calling them) are not held up
        by a slow disk while another thread flushes. A segment's dirty mark is cleared before its fsync, so
        an append that lands during the fsync marks it dirty again for the next flush. Writer: any thread;
        blocking (fsync), so never on the event loop."""
        with self._lock:
            self._check_open()
            self._retry_deferred_writes()
            target = self._log_end
            fds = []
            for segment in self._segments[self._segment_index(self._recovery_point) :]:
                if segment.dirty:
                    segment.dirty = False
                    fds.append(os.dup(segment.fd))  # a duplicate survives a concurrent roll/close
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            parent_dirty, self._parent_dirty = self._parent_dirty, False
        try:
            for fd in fds:
                os.fsync(fd)
            if dir_dirty:
                checkpoint.fsync_dir(self.path)
            if parent_dirty:
                checkpoint.fsync_dir(os.path.dirname(self.path))
        except BaseException:
            with self._lock:  # not durable after all: the next flush must try every one of them again
                if not self._closed:
                    for segment in self._segments[self._segment_index(self._recovery_point) :]:
                        segment.dirty = True
                    self._dir_dirty = self._dir_dirty or dir_dirty
                    self._parent_dirty = self._parent_dirty or parent_dirty
            raise
        finally:
            for fd in fds:
                os.close(fd)
        with self._lock:
            self._check_open()
            # A truncation meanwhile may have cut below what we flushed.
            self._recovery_point = max(self._recovery_point, min(target, self._log_end))
            self._unflushed_records = 0
            now = _now_ms()
            self._last_flush_ms = now
            if checkpoints and now - self._last_checkpoint_ms >= self.config.checkpoint_interval_ms:
                for segment in self._segments[self._segment_index(self._recovery_point) :]:
                    segment.flush()  # indexes: derived data, persisted with the checkpoints
                self._write_checkpoints()
                self._last_checkpoint_ms = now
            return self._recovery_point

    def _flush(self, force_checkpoint: bool = False, sync: bool = True, snapshot: bool = True) -> int:
        """Make everything appended durable and advance the recovery point (writer lock held).

        ``sync=False`` writes the same files without a single fsync and leaves the recovery point (and its
        checkpoint) where it was: the caller syncs the whole file system, then calls ``synced()``, which
        advances it. So the recovery-point checkpoint is never written before the bytes it vouches for are
        durable, whichever way a log is flushed."""
        for segment in self._segments[self._segment_index(self._recovery_point) :]:
            segment.flush(sync)
        if self._dir_dirty:
            if sync:
                checkpoint.fsync_dir(self.path)
            self._dir_dirty = False
        if sync:
            self._sync_parent()
            self._recovery_point = self._log_end
        else:
            self._parent_dirty = False
            self._synced_target = self._log_end
        self._unflushed_records = 0
        now = _now_ms()
        self._last_flush_ms = now
        if force_checkpoint or now - self._last_checkpoint_ms >= self.config.checkpoint_interval_ms:
            self._write_checkpoints(sync, snapshot)
            self._last_checkpoint_ms = now if snapshot else self._last_checkpoint_ms
        return self._log_end

    def synced(self) -> int:
        """The caller has synced the file system since an unsynced flush (``open(sync=False)``,
        ``close(sync=False)``): advance the recovery point to what that flush covered and write its
        checkpoint, itself without fsync (an older one on disk after a crash only means a longer scan; a torn
        one reads as absent: recovery from the log start). Returns the recovery point. Writer: any thread,
        also after ``close(sync=False)``; blocking."""
        with self._lock:
            target, self._synced_target = self._synced_target, None
            if target is not None and self._deferred_writes is None:
                self._recovery_point = max(self._recovery_point, min(target, self._log_end))
                self._write_recovery_point_file(sync=False)
            return self._recovery_point

    def _write_recovery_point_file(self, sync: bool) -> None:
        """Record the recovery point (durable already) in its checkpoint file. After a crash recovery's own
        flush, a file holding an offset at or below it (or none: "recover from the first segment") is left
        as it is: a recovery point lower than the truth only means the next crash re-verifies more, and
        rewriting one file per partition (a create and a rename each) was a fifth of a 10,000-partition
        crash restart. A file above it (recovery cut below what it vouched for) is always rewritten, before
        any append. Later checkpoints (periodic flush, close) write it as usual. Writer lock held."""
        keep_lower, self._keep_lower_recovery_file = self._keep_lower_recovery_file, False
        on_disk = self._offset_files.get(RECOVERY_POINT_FILE)  # None: absent or unreadable, read as the log's first offset
        if keep_lower and (on_disk is None or on_disk <= self._recovery_point):
            return
        # Lowered (a recovery cut into what the file vouched for): synced whatever the caller asked, so a
        # power loss cannot bring back the higher one once appends go past the cut.
        lowering = on_disk is not None and on_disk > self._recovery_point
        self._write_offset_file(RECOVERY_POINT_FILE, self._recovery_point, sync or lowering)

    def _write_offset_file(self, name: str, offset: int, sync: bool = True) -> None:
        """Write the recovery-point or log-start checkpoint unless it holds ``offset`` already (as written
        or read here): each write is two fsyncs, and an idle partition's close rewrote both unchanged, which
        made stopping 10,000 partitions take minutes. Writer lock held."""
        if self._offset_files.get(name) == offset:
            return
        checkpoint.write_offset_checkpoint(os.path.join(self.path, name), self.topic, self.partition, offset, sync)
        self._offset_files[name] = offset

    def _write_checkpoints(self, sync: bool = True, snapshot: bool = True) -> None:
        listed = list_both(self.path) if snapshot else None
        if listed is not None and (not listed[0] or listed[0][-1] != self._log_end):
            write_snapshot(self.path, self._log_end, self._producers, sync=sync, listed=listed)
        if self._epochs.dirty:
            self._epochs.write(sync)
        if sync:
            self._write_recovery_point_file(sync=True)
        # else ``synced()`` writes it, once the caller's sync made these files and the data durable

    @property
    def unsynced(self) -> bool:
        """An unsynced flush waits for the caller's file-system sync and ``synced()``. Any thread."""
        return self._synced_target is not None

    def close(self, sync: bool = True) -> None:
        """Flush, write every checkpoint and the clean-shutdown marker. The log cannot be used afterwards.
        Writer, blocking. Readers must not be running in other threads: descriptors close.

        ``sync=False`` (``logdir.close_logs``, many logs at once): every file is written without fsync and
        no marker of its own is written; the caller syncs the file system, calls ``synced()`` (the recovery
        point), syncs again and writes the log directory's one marker for all of them. The log-start
        checkpoint written here unsynced only restates what is durable already: every move of the log start
        (retention, DeleteRecords, a reset) wrote it with its fsyncs when it happened."""
        with self._lock:
            if self._closed:
                return
            self._segments[-1].seal()
            self._flush(force_checkpoint=True, sync=sync)
            self._write_offset_file(LOG_START_FILE, self._log_start, sync)
            if sync:
                checkpoint.write_clean_shutdown(os.path.join(self.path, CLEAN_SHUTDOWN_FILE), self._log_end)
            for segment in self._segments:
                segment.close()
            self._closed = True

    def abandon(self) -> None:
        """Drop the file descriptors without flushing or marking a clean shutdown (tests simulate crashes).
        Writer."""
        with self._lock:
            for segment in self._segments:
                segment.close()
            self._closed = True

    def delete(self) -> None:
        """Remove the partition's directory and everything in it. Writer, blocking; as ``close`` for readers."""
        with self._lock:
            for segment in self._segments:
                segment.close()
            self._closed = True
            shutil.rmtree(self.path, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"{self.name}: log is closed")

    def statistics(self) -> LogStatistics:
        """Reader: any thread, from one view."""
        view = self._view
        return LogStatistics(
            topic=self.topic,
            partition=self.partition,
            log_start_offset=view.log_start,
            log_end_offset=view.log_end,
            high_watermark=view.log_end,
            last_stable_offset=view.last_stable,
            recovery_point=self._recovery_point,
            size_bytes=sum(s.size for s in view.segments),
            segment_count=len(view.segments),
            latest_epoch=view.epochs.latest_epoch,
            producer_count=len(self._producers.entries),
            open_transaction_count=len(view.open_transactions),
            cleaned_up_to=view.cleaned_up_to,
        )

    def segment_base_offsets(self) -> list[int]:
        """Reader: any thread."""
        return list(self._view.bases)

    def __repr__(self) -> str:
        return f"PartitionLog({self.name!r}, start={self._log_start}, end={self._log_end}, segments={len(self._segments)})"


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["AppendResult", "FileRange", "LogStatistics", "PartitionLog", "ReadResult"]


def _free_space(path: str) -> str:
    """Bytes an unprivileged writer may still use under ``path``, for a disk-full message."""
    try:
        st = os.statvfs(path)
    except OSError:
        return "unknown bytes"
    return f"{st.f_bavail * st.f_frsize} bytes"
