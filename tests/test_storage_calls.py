"""Blocking storage calls from the event loop run in worker threads (linkd/storage_calls.py).

A writer is held inside its ``os.write`` (as in tests/storage/test_log_threads.py) while it holds the log's
writer lock; a topic config change, a topic deletion and a retention pass, each of which needs that lock,
must then wait in a worker thread while the event loop keeps running, and complete once the write ends.
"""

from __future__ import annotations

import os
import threading

import pytest
import trio

from linkd.controlstore import ControlStore
from linkd.maintenance import run_maintenance
from linkd.topics import TopicError, TopicRegistry
from protocol.errors import ErrorCode
from tests.storage.helpers import batch, open_log
from tests.storage.test_log_threads import _BlockedWrite

# The loop must never go this long without running a task while a write holds the lock; the held write
# is released after RELEASE_AFTER_S, so code that blocks the loop on the lock shows a gap at least that long.
MAX_LOOP_GAP_S = 0.5
RELEASE_AFTER_S = 1.5


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)


def _hold_a_write(plog, monkeypatch) -> tuple[_BlockedWrite, threading.Thread]:
    """An append to ``plog`` in another thread, stopped inside its write (holding the writer lock) until
    ``RELEASE_AFTER_S`` from now."""
    blocked = _BlockedWrite(monkeypatch)
    writer = threading.Thread(target=plog.append_mirrored, args=(batch(plog.log_end_offset, 3),), daemon=True)
    writer.start()
    assert blocked.entered.wait(10), "the append never reached its write"
    threading.Timer(RELEASE_AFTER_S, blocked.release.set).start()
    return blocked, writer


class _LoopWatch:
    """Ticks every 10 ms until ``done``; ``longest`` is the longest time between two ticks (the last one
    taken after ``done`` is set, so a stall just before it counts)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.longest = 0.0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        last = trio.current_time()
        task_status.started()
        while True:
            await trio.sleep(0.01)
            now = trio.current_time()
            self.longest, last = max(self.longest, now - last), now
            if self.done.is_set():
                return


def _registry(tmp_path) -> TopicRegistry:
    return TopicRegistry(ControlStore(tmp_path / "control.db"), tmp_path / "logs")


def test_a_topic_config_change_waits_for_a_write_in_a_worker_thread_while_the_loop_serves(tmp_path, monkeypatch):
    registry = _registry(tmp_path)
    topic = registry.create("t", 1)
    plog = topic.logs[0]
    _blocked, writer = _hold_a_write(plog, monkeypatch)

    async def main() -> float:
        watch = _LoopWatch()
        async with trio.open_nursery() as nursery:
            await nursery.start(watch.run)
            with trio.fail_after(10):
                await registry.set_configs("t", {"retention.ms": "12345"})
            watch.done.set()
        return watch.longest

    gap = trio.run(main)
    writer.join(10)
    assert gap < MAX_LOOP_GAP_S, f"the event loop stood still for {gap:.2f} s behind the write"
    assert plog.config.retention_ms == 12345
    assert plog.log_end_offset == 3  # the held append landed, with the old config or the new one


def test_a_deleted_topic_keeps_its_name_until_its_directories_are_gone_and_the_loop_serves_meanwhile(tmp_path, monkeypatch):
    registry = _registry(tmp_path)
    plog = registry.create("t", 1).logs[0]
    _blocked, writer = _hold_a_write(plog, monkeypatch)

    async def main() -> tuple[float, TopicError | None]:
        watch = _LoopWatch()
        refused: TopicError | None = None

        async def delete() -> None:
            with trio.fail_after(10):
                await registry.delete("t")
            watch.done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(watch.run)
            nursery.start_soon(delete)
            await trio.sleep(0.2)  # the deletion is waiting for the held write
            try:
                await registry.create_async("t", 1)
            except TopicError as exc:
                refused = exc
        return watch.longest, refused

    gap, refused = trio.run(main)
    writer.join(10)
    assert gap < MAX_LOOP_GAP_S, f"the event loop stood still for {gap:.2f} s behind the write"
    assert refused is not None and refused.error_code == ErrorCode.TOPIC_ALREADY_EXISTS
    assert "marked for deletion" in refused.message
    assert not os.path.exists(plog.path)
    again = registry.create("t", 1)  # once the directories are gone the name is free, and the topic is new
    assert again.logs[0].log_end_offset == 0


class _Topic:
    def __init__(self, name: str, logs: list) -> None:
        self.name, self.logs = name, logs


class _Registry:
    def __init__(self, *topics: _Topic) -> None:
        self.topics = list(topics)

    def all(self) -> list[_Topic]:
        return self.topics


def test_retention_waits_for_a_write_in_a_worker_thread_while_the_loop_serves(tmp_path, monkeypatch):
    plog = open_log(tmp_path / "r", segment_bytes=200, retention_bytes=0)
    for _ in range(4):
        plog.append_mirrored(batch(plog.log_end_offset, 3))
    assert len(plog.segment_base_offsets()) > 2
    monkeypatch.setattr(plog, "flush", lambda: 0)  # the periodic flush would wait first; this is about retention
    _blocked, writer = _hold_a_write(plog, monkeypatch)

    async def main() -> float:
        watch = _LoopWatch()
        async with trio.open_nursery() as nursery:
            await nursery.start(watch.run)
            await nursery.start(lambda task_status: run_maintenance(_Registry(_Topic("r", [plog])), flush_interval_s=0.05,
                                                                    retention_interval_s=0.05, task_status=task_status))
            with trio.fail_after(10):
                while plog.log_start_offset == 0:  # noqa: ASYNC110 - retention moves it in a worker thread
                    await trio.sleep(0.01)
            watch.done.set()
            await trio.sleep(0.02)  # the watch's last tick
            nursery.cancel_scope.cancel()
        return watch.longest

    gap = trio.run(main)
    writer.join(10)
    assert gap < MAX_LOOP_GAP_S, f"the event loop stood still for {gap:.2f} s behind the write"
    assert plog.log_start_offset > 0


def test_a_batch_of_calls_for_many_logs_runs_in_its_few_worker_jobs_each_log_in_call_order(tmp_path, monkeypatch):
    """``call_batched``: 300 logs, two appends each, in at most 4 worker-thread jobs (not 600 hand-offs);
    each log's two appends land in list order; a call that fails (a closed log) fails alone."""
    from linkd import storage_calls
    from linkd.storage import LogClosed

    registry = _registry(tmp_path)
    logs = registry.create("many", 300).logs
    closed = registry.create("gone", 1).logs[0]
    closed.close()
    jobs: list[int] = []
    real_run_sync = trio.to_thread.run_sync

    async def counting_run_sync(fn, *args, **kwargs):
        jobs.append(len(args[0]) if args and isinstance(args[0], list) else 1)
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
    calls = [(plog, plog.append_mirrored, (batch(0, 2),)) for plog in logs]
    calls += [(closed, closed.append_mirrored, (batch(0, 1),))]
    calls += [(plog, plog.append_mirrored, (batch(2, 3),)) for plog in logs]
    outcomes = trio.run(storage_calls.call_batched, calls, 4)
    assert len(jobs) <= 4 and sum(jobs) == len(calls)
    with pytest.raises(LogClosed):
        outcomes[300].unwrap()
    for plog in logs:
        assert plog.log_end_offset == 5
        assert (plog.batch_header(0).base_offset, plog.batch_header(2).base_offset) == (0, 2)
    assert all(o.unwrap() is not None for i, o in enumerate(outcomes) if i != 300)
    registry.close()
