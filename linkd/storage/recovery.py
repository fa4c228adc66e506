"""Recovery after an unclean shutdown: verify segment bytes, cut the tail at the first bad byte, rebuild the
derived data (offset and time indexes, leader epochs, producer and transaction state).

What is cut is always logged with partition, offset and byte counts: recovery never truncates silently.
A segment is scanned in 1 MiB reads; each batch is verified exactly as on append (magic 2, length, CRC-32C,
offsets increasing and not below the segment's base offset). The first batch that fails, or a torn batch at
the end, marks the cut; every later segment is dropped, because offsets after a hole cannot be trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from protocol.errors import CorruptBatch
from protocol.records import HEADER_SIZE, LOG_OVERHEAD, RecordBatch

from .config import INT32_MAX
from .producer_state import ProducerStateManager, apply_batch
from .segment import LogSegment

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20


def scan_segment(segment: LogSegment, on_batch: Callable[[RecordBatch, int], None]) -> tuple[int, str | None]:
    """Verify the segment's batches from byte 0, calling ``on_batch(batch, position)`` for each good one.
    Returns (end of the last good batch, why the scan stopped early or None)."""
    position = 0
    expected_min = segment.base_offset
    size = segment.size
    while position < size:
        data = segment.read_at(position, min(READ_CHUNK, size - position))
        view = memoryview(data)
        consumed = 0
        while len(view) - consumed >= LOG_OVERHEAD:
            batch_length = int.from_bytes(view[consumed + 8 : consumed + 12], "big", signed=True)
            batch_size = batch_length + LOG_OVERHEAD
            if batch_length < HEADER_SIZE - LOG_OVERHEAD:
                return position + consumed, f"impossible batch length {batch_length}"
            if consumed + batch_size > len(view):
                if consumed == 0 and position + batch_size <= size:
                    view = memoryview(segment.read_at(position, batch_size))  # one batch bigger than a chunk
                    continue
                break
            batch = RecordBatch(view[consumed : consumed + batch_size])
            try:
                batch.verify()
            except CorruptBatch as exc:
                return position + consumed, f"{exc.reason}: {exc}"
            # baseOffset is outside the CRC; these checks catch the damage to it that matters most.
            if batch.base_offset < expected_min:
                return position + consumed, f"offset {batch.base_offset} is below {expected_min}"
            if batch.last_offset - segment.base_offset > INT32_MAX:
                return position + consumed, f"offset {batch.base_offset} is out of the segment's range"
            on_batch(batch, position + consumed)
            expected_min = batch.next_offset
            consumed += batch_size
        if consumed == 0:
            return position, f"torn batch: {size - position} bytes left at the end"
        position += consumed
    return position, None


def recover_segment(segment: LogSegment, on_batch: Callable[[RecordBatch, int], None], partition: str) -> int:
    """Rebuild the segment's indexes from a verified scan and cut it after the last good batch. Returns
    the bytes cut."""
    segment.reset_indexes()

    def index_and_forward(batch: RecordBatch, position: int) -> None:
        segment.index_batch(batch, position)
        on_batch(batch, position)

    valid_end, reason = scan_segment(segment, index_and_forward)
    cut = segment.size - valid_end
    if cut:
        log.warning(
            "%s: recovery cut %d bytes from segment %s at byte %d (offsets from %d on): %s",
            partition, cut, segment.log_path, valid_end, segment.next_offset, reason,
        )
        segment.truncate_to_position(valid_end)
    else:
        segment.dirty = True  # the rebuilt indexes are unsynced; the log is made durable by the caller
    # The time index's last entry names the segment's maximum, as ``seal()`` (roll, close) leaves it: a
    # rolled segment's file has it already, so the rebuild matches it and is not rewritten. In the active
    # segment it is one entry more, as valid as any (entries only need to increase).
    if segment.max_timestamp >= 0:
        segment.time_index.maybe_append(segment.max_timestamp, segment.offset_of_max_timestamp)
    return cut


def replay_producer_state(segments: Sequence[LogSegment], state: ProducerStateManager, from_offset: int,
                          index_aborts_from: int) -> int:
    """Apply every batch at or after ``from_offset`` to ``state``; ABORT markers at or after
    ``index_aborts_from`` are added to their segment's txn index. Returns the number of batches read."""
    replayed = 0
    for segment in segments:
        if segment.is_empty or segment.next_offset <= from_offset:
            continue
        found = segment.find_batch(from_offset)
        if found is None:
            continue
        for position, header in segment.iter_headers(found[0]):
            replayed += 1
            if header.producer_id < 0:
                continue
            control_type = None
            if header.is_control:
                try:
                    control_type = RecordBatch(memoryview(segment.read_at(position, header.size))).control_type()
                except CorruptBatch:
                    control_type = None
            apply_batch(state, segment.txn_index, header, control_type, header.last_offset >= index_aborts_from)
    return replayed
