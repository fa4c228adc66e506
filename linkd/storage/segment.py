"""One log segment: ``<20-digit base offset>.log`` plus its three indexes.

The ``.log`` file is a plain concatenation of v2 record batches exactly as received (mirror path) or as
assigned (produce path): Kafka's segment format, readable by ``kafka-dump-log``. The base offset in the file
name is at or below the first batch's base offset; every offset in the segment is within int32 of it, because
the indexes store offsets relative to it.

The segment trusts its bytes; verifying them is the caller's job on append and ``recovery``'s on open.
Reads go through ``os.pread`` on one descriptor opened with O_APPEND, so bytes written are immediately
visible to readers and to ``os.sendfile`` of a duplicate of it (``dup_fd``).

Threading (as Kafka's ``LogSegment``): a segment is not thread-safe for writers. Every method that changes
it (``append``, ``index_batch``, ``truncate_to_position``, ``reset_indexes``, ``seal``, ``flush``, ``close``,
``delete``, ``load_indexes``) must be called by one writer at a time; ``PartitionLog`` serialises them under
its writer lock. The reading methods (``header_at``, ``read_at``, ``iter_headers``, ``find_batch``,
``read_extent``, and ``dup_fd``, which is safe against a concurrent ``close`` too) may run in any thread concurrently with one writer, *given the bounds of a snapshot*
(``end`` / ``size`` / ``next_offset`` as published by ``PartitionLog``): they then only touch bytes that
were written before the snapshot and index entries that name them. Called without bounds they read the
live fields, which is only safe from the writer itself. The indexes make that possible: entries are
appended so that a concurrent lookup never sees half of one (see ``OffsetIndex.append``), and a cut
replaces the index arrays instead of shrinking the ones a reader may hold.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

from protocol.records import HEADER_SIZE, LOG_OVERHEAD, RecordBatch

from .index_file import IndexCorrupt
from .offset_index import OffsetIndex
from .time_index import TimeIndex
from .txn_index import TxnIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
ALL_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def _write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    if len(parts) == 1:
        view = memoryview(parts[0])
        while view:
            view = view[os.write(fd, view) :]
        return
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


class LogSegment:
    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int, *, create: bool) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = os.path.join(directory, file_name(base_offset, LOG_SUFFIX))
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(self.log_path, flags, 0o644)
        self._fd_lock = threading.Lock()
        stat = os.fstat(self.fd)
        self.size = stat.st_size
        self.inode = stat.st_ino  # names this file in FileRange once its descriptor is closed: a cleaned segment reuses the path
        self.offset_index = OffsetIndex(os.path.join(directory, file_name(base_offset, INDEX_SUFFIX)), base_offset)
        self.time_index = TimeIndex(os.path.join(directory, file_name(base_offset, TIME_INDEX_SUFFIX)), base_offset)
        self.txn_index = TxnIndex(os.path.join(directory, file_name(base_offset, TXN_INDEX_SUFFIX)))
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.bytes_since_index = 0
        self.dirty = create
        self._first_batch_timestamp: int | None = None
        if create:
            for index in (self.offset_index, self.time_index, self.txn_index):
                index.file.replace_all(b"")

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    # -- loading -------------------------------------------------------------------------------------

    def load_indexes(self) -> None:
        """Load and sanity-check the indexes after a clean shutdown, and find the segment's end from the
        last indexed batch. Raises ``IndexCorrupt`` when anything disagrees; the caller then recovers."""
        self.offset_index.load(self.size)  # each raises IndexCorrupt for a missing file where one must exist
        self.time_index.load(missing_ok=self.size == 0)
        self.txn_index.load()
        self._scan_tail(check_first_entry=True)

    def _scan_tail(self, check_first_entry: bool = False) -> None:
        entry = self.offset_index.last_entry()
        position = entry[1] if entry else 0
        self.next_offset = self.base_offset
        time_entry = self.time_index.last_entry()
        self.max_timestamp, self.offset_of_max_timestamp = time_entry if time_entry else (-1, self.base_offset)
        first = True
        for pos, header in self.iter_headers(position):
            if first and entry and check_first_entry and header.last_offset != entry[0]:
                raise IndexCorrupt(f"{self.offset_index.file.path}: last entry says offset {entry[0]} at {pos}, "
                                   f"the batch there ends at {header.last_offset}")
            first = False
            if header.base_offset < self.base_offset:
                raise IndexCorrupt(f"{self.log_path}: batch at {pos} has offset {header.base_offset} below the base")
            self._note_batch(header, pos)
            position = pos + header.size
        if position != self.size:
            raise IndexCorrupt(f"{self.log_path}: batches end at byte {position}, the file at {self.size}")
        self.bytes_since_index = self.size - (entry[1] if entry else 0)

    # -- appending -----------------------------------------------------------------------------------

    def append(self, parts: Sequence[bytes | bytearray | memoryview], batches: Sequence[RecordBatch]) -> None:
        """Write ``parts`` (exactly the bytes of ``batches``, in order) and index the batches. Writer only.
        ``size`` and ``next_offset`` move only after the bytes are in the file."""
        start = self.size
        try:
            _write_all(self.fd, parts)
        except BaseException:
            os.ftruncate(self.fd, start)  # never leave half a batch behind a failed write
            raise
        # index_batch inlined: this loop runs once per appended batch and dominates small-batch appends.
        position = start
        interval = self.index_interval_bytes
        since = self.bytes_since_index
        max_ts, max_ts_offset = self.max_timestamp, self.offset_of_max_timestamp
        offset_index, time_index = self.offset_index, self.time_index
        for batch in batches:
            ts = batch.max_timestamp
            if ts > max_ts:
                max_ts, max_ts_offset = ts, batch.base_offset + batch.last_offset_delta
            if position == 0:
                self._first_batch_timestamp = ts
            if since > interval:
                offset_index.append(batch.base_offset + batch.last_offset_delta, position)
                time_index.maybe_append(max_ts, max_ts_offset)
                since = 0
            size = batch.batch_length + LOG_OVERHEAD
            since += size
            position += size
        last = batches[-1]
        self.next_offset = last.base_offset + last.last_offset_delta + 1
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, max_ts_offset
        self.bytes_since_index = since
        self.size = position
        self.dirty = True

    def index_batch(self, batch: RecordBatch, position: int) -> None:
        self._note_batch(batch, position)
        if self.bytes_since_index > self.index_interval_bytes:
            self.offset_index.append(batch.last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_index = 0
        self.bytes_since_index += batch.size

    def _note_batch(self, batch: RecordBatch, position: int) -> None:
        if batch.max_timestamp > self.max_timestamp:
            self.max_timestamp = batch.max_timestamp
            self.offset_of_max_timestamp = batch.last_offset
        if position == 0:
            self._first_batch_timestamp = batch.max_timestamp
        self.next_offset = batch.next_offset

    @property
    def first_batch_timestamp(self) -> int | None:
        """Max-timestamp of the first batch: what segment.ms rolls are measured from (as in Kafka)."""
        if self._first_batch_timestamp is None and self.size:
            header = self.header_at(0)
            self._first_batch_timestamp = header.max_timestamp if header else None
        return self._first_batch_timestamp

    # -- reading -------------------------------------------------------------------------------------

    def read_at(self, position: int, length: int) -> bytes:
        """Any thread, for bytes below a snapshot's size."""
        return os.pread(self.fd, length, position)

    def header_at(self, position: int) -> RecordBatch | None:
        """The batch header at ``position`` (a batch boundary). Any thread."""
        data = os.pread(self.fd, HEADER_SIZE, position)
        if len(data) < HEADER_SIZE:
            return None
        header = RecordBatch(memoryview(data))
        if header.size < HEADER_SIZE:
            raise IndexCorrupt(f"{self.log_path}: batch at {position} has impossible length {header.batch_length}")
        return header

    def iter_headers(self, position: int = 0, end: int | None = None) -> Iterator[tuple[int, RecordBatch]]:
        """Headers of the whole batches from ``position`` (a batch boundary) to ``end`` (a snapshot's size;
        the file's current end for the writer). Any thread with ``end``."""
        end = self.size if end is None else end
        while position < end:
            header = self.header_at(position)
            if header is None or position + header.size > end:
                return
            yield position, header
            position += header.size

    def find_batch(self, offset: int, end: int | None = None) -> tuple[int, RecordBatch] | None:
        """The first batch whose last offset is >= ``offset`` (the one holding it, or the next after a gap),
        among the bytes below ``end``. Any thread with ``end``."""
        for position, header in self.iter_headers(self.offset_index.position_at_or_before(offset), end):
            if header.last_offset >= offset:
                return position, header
        return None

    def read_extent(
        self, position: int, first: RecordBatch, max_bytes: int, upper_bound: int | None, at_least_one: bool,
        size: int | None = None, next_offset: int | None = None,
    ) -> tuple[int, int]:
        """(end position, next offset) of the run of whole batches starting with ``first`` at ``position``
        that fits in ``max_bytes`` and ends below ``upper_bound``. The first batch is taken even if larger
        than ``max_bytes`` when ``at_least_one``. An empty run returns (position, first.base_offset).
        ``size`` and ``next_offset``: the segment as a snapshot saw it (any thread); the live values when
        omitted (writer only)."""
        size = self.size if size is None else size
        seg_next = self.next_offset if next_offset is None else next_offset
        if upper_bound is not None and first.last_offset >= upper_bound:
            return position, first.base_offset
        limit = position + max_bytes
        if (upper_bound is None or upper_bound >= seg_next) and size <= limit:
            return size, seg_next
        if first.size > max_bytes:
            return (position + first.size, first.next_offset) if at_least_one else (position, first.base_offset)
        end, next_offset = position + first.size, first.next_offset
        # Bounded by the snapshot's end offset, an index entry a concurrent append just added is never used.
        jump = self.offset_index.safe_position_before(limit, seg_next if upper_bound is None else min(upper_bound, seg_next))
        if jump is not None and jump > end:
            end = jump
        for pos, header in self.iter_headers(end, size):
            if pos + header.size > limit or (upper_bound is not None and header.last_offset >= upper_bound):
                break
            end, next_offset = pos + header.size, header.next_offset
        return end, next_offset

    # -- cutting -------------------------------------------------------------------------------------

    def truncate_to_position(self, position: int) -> int:
        """Cut the file at ``position`` (a batch boundary) and fix the indexes; return the bytes removed."""
        removed = self.size - position
        if removed <= 0:
            return 0
        os.ftruncate(self.fd, position)
        self.size = position
        self.dirty = True
        self._first_batch_timestamp = None
        self.offset_index.truncate_to_position(position)
        entry = self.offset_index.last_entry()
        next_offset = self.base_offset
        for _pos, header in self.iter_headers(entry[1] if entry else 0):
            next_offset = header.next_offset
        self.time_index.truncate_from_offset(next_offset)
        self.txn_index.truncate_from_offset(next_offset)
        self._scan_tail()
        return removed

    def reset_indexes(self) -> None:
        """Forget the offset and time indexes before recovery re-adds every batch."""
        self.offset_index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.bytes_since_index = 0
        self._first_batch_timestamp = None

    # -- durability and lifetime ---------------------------------------------------------------------

    def seal(self) -> None:
        """The segment stops being active (roll, close): make the time index's last entry its maximum."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.file.write_pending()

    def flush(self, sync: bool = True) -> None:
        """Write the pending index entries and fsync the four files. ``sync=False``: write only and count them
        clean; the caller syncs the whole file system (``logdir``) before relying on them."""
        if self.dirty:
            if sync:
                os.fsync(self.fd)
            self.dirty = False
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.file.fsync(sync)

    def mark_unsynced(self) -> None:
        """The last ``flush(sync=False)`` was not followed by a sync after all: the next flush fsyncs all four files."""
        self.dirty = True
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.file.mark_unsynced()

    def dup_fd(self) -> int:
        """A duplicate of the segment file's descriptor for the caller to close, or -1 once the segment is
        closed. Any thread: ``close`` and this take the segment's descriptor lock, so the number duplicated
        is never one ``close`` just gave back (which another open may already have reused for another file).
        The duplicate reads this file for as long as the caller keeps it, even after the segment is closed
        and its files unlinked or replaced."""
        with self._fd_lock:
            return os.dup(self.fd) if self.fd >= 0 else -1

    def close(self) -> None:
        with self._fd_lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def delete(self) -> None:
        self.close()
        self.delete_files()

    def delete_files(self) -> None:
        """Unlink the files; the open descriptor still reads the bytes until ``close``."""
        for path in self.paths():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def paths(self) -> list[str]:
        return [self.log_path, self.offset_index.file.path, self.time_index.file.path, self.txn_index.file.path]

    def last_modified_ms(self) -> int:
        return int(os.fstat(self.fd).st_mtime * 1000)

    def __repr__(self) -> str:
        return f"LogSegment(base={self.base_offset}, size={self.size}, next={self.next_offset})"
