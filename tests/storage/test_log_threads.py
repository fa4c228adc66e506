"""PartitionLog's threading contract: readers work from a published snapshot and never wait for a writer.

A writer is held inside its ``os.write`` (the segment's write helper is wrapped to block on an event), and
readers in another thread must answer at once, with the log as it was before that append.
"""

from __future__ import annotations

import threading
import time

import pytest

from linkd.storage import OffsetOutOfRange
from linkd.storage import segment as segment_module
from protocol.records import split_batches
from tests.storage.helpers import BASE_TS, batch, open_log

READER_DEADLINE_S = 2.0


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


class _BlockedWrite:
    """Wraps the segment's write helper: the next write signals ``entered`` and waits for ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._real = segment_module._write_all
        monkeypatch.setattr(segment_module, "_write_all", self)

    def __call__(self, fd, parts) -> None:
        if not self.entered.is_set():
            self.entered.set()
            if not self.release.wait(30):
                raise TimeoutError("the test never released the write")
        self._real(fd, parts)


def _in_thread(fn, deadline: float = READER_DEADLINE_S):
    """Run ``fn`` in a thread; its result, or an assertion failure if it is still waiting at ``deadline``."""
    out: dict = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} waited for the writer"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_readers_answer_from_the_snapshot_while_an_append_is_inside_its_write(tmp_path, monkeypatch):
    log = open_log(tmp_path, segment_bytes=1 << 30)
    first = batch(0, 3, epoch=2, ts=BASE_TS)
    log.append_mirrored(first)
    blocked = _BlockedWrite(monkeypatch)
    big = b"".join(batch(3 + 5 * i, 5, epoch=3, ts=BASE_TS + 1000, value_size=2000) for i in range(40))
    writer = threading.Thread(target=log.append_mirrored, args=(big,), daemon=True)
    writer.start()
    try:
        assert blocked.entered.wait(10), "the append never reached its write"
        started = time.monotonic()
        assert _in_thread(lambda: log.read(0, 1 << 20).to_bytes()) == first
        assert _in_thread(lambda: (log.log_end_offset, log.high_watermark, log.last_stable_offset)) == (3, 3, 3)
        assert _in_thread(lambda: log.batch_header(1).base_offset) == 0
        assert _in_thread(lambda: log.batch_header(3)) is None
        assert _in_thread(lambda: log.end_offset_for_epoch(2)) == (2, 3)
        assert _in_thread(lambda: log.latest_epoch) == 2
        assert _in_thread(lambda: log.offset_for_timestamp(BASE_TS + 1000)) is None
        assert _in_thread(lambda: log.max_timestamp_offset()) == (0, BASE_TS + 2)
        assert _in_thread(lambda: log.aborted_transactions(0, 3)) == []
        assert _in_thread(lambda: log.statistics().log_end_offset) == 3
        assert _in_thread(log.segment_base_offsets) == [0]
        assert time.monotonic() - started < READER_DEADLINE_S
    finally:
        blocked.release.set()
        writer.join(10)
    assert not writer.is_alive()
    # Once the write returned, readers see all of it.
    assert log.log_end_offset == 3 + 5 * 40
    assert log.read(0, 1 << 30).to_bytes() == first + big
    assert log.latest_epoch == 3


def test_a_reader_racing_appends_rolls_and_retention_only_sees_whole_batches_in_order(tmp_path):
    """A writer thread appends (rolling small segments) and moves the log start while a reader thread
    reads from the start over and over: every answer is whole CRC-valid batches, contiguous, inside the
    offsets of some published state."""
    log = open_log(tmp_path, segment_bytes=4096)
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def write() -> None:
        offset = 0
        try:
            while not stop.is_set() and offset < 20_000:
                log.append_mirrored(b"".join(batch(offset + 4 * i, 4, value_size=50) for i in range(5)))
                offset += 20
                if offset % 400 == 0:
                    log.advance_log_start(offset - 200)
        except Exception as exc:  # reported below
            problems.append(f"writer: {exc!r}")
        finally:
            stop.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.monotonic() + 3.0
    while not stop.is_set() and time.monotonic() < deadline:
        start = log.log_start_offset
        try:
            read = log.read(start, 1 << 16)
        except OffsetOutOfRange:
            continue  # retention moved the start between the two calls
        if not read.ranges:
            continue
        data = read.to_bytes()
        split = split_batches(data)
        if split.consumed != len(data):
            problems.append(f"read from {start}: {len(data) - split.consumed} bytes of a partial batch")
        expected = split.batches[0].base_offset if split.batches else start
        if split.batches and not expected <= start < split.batches[0].next_offset:
            problems.append(f"read from {start} began with the batch at {expected}")
        for b in split.batches:
            b.verify()
            if b.base_offset != expected:
                problems.append(f"read from {start}: batch at {b.base_offset}, expected {expected}")
            expected = b.next_offset
        if split.batches and read.next_offset != expected:
            problems.append(f"read from {start}: next_offset {read.next_offset}, batches end at {expected}")
        reads += 1
    stop.set()
    writer.join(10)
    assert not problems, problems[:5]
    assert reads > 10
