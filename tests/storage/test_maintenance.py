"""The periodic flush and retention task: a disk error is logged and retried, never fatal to the daemon."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import trio

from linkd.maintenance import run_maintenance
from tests.storage.helpers import batch, open_log


@dataclass
class _Topic:
    name: str
    logs: list = field(default_factory=list)


class _Registry:
    """The one query run_maintenance makes of the daemon's TopicRegistry."""

    def __init__(self, *topics: _Topic) -> None:
        self.topics = list(topics)

    def all(self) -> list[_Topic]:
        return self.topics


def test_a_flush_the_disk_refuses_is_logged_and_tried_again_next_round(tmp_path, monkeypatch, caplog):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2))
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", fsync)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_maintenance(_Registry(_Topic("t", [log])), flush_interval_s=0.01, retention_interval_s=3600, task_status=task_status))
            with trio.fail_after(10):
                while log.recovery_point < log.log_end_offset:  # noqa: ASYNC110 - a worker thread moves it; no event to wait on
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="linkd.maintenance"):
        trio.run(main)
    assert log.recovery_point == 2
    assert [r for r in caplog.records if "periodic flush failed" in r.getMessage() and "No space left" in r.getMessage()]


def test_the_cleaner_compacts_a_compacted_log_in_a_worker_thread_and_leaves_the_others(tmp_path, monkeypatch):
    import threading

    import linkd.maintenance as maintenance
    from linkd.storage.cleaner import CleanerConfig
    from protocol.records import BatchSpec, NewRecord, build_batch

    def fill(log):
        for i in range(20):
            log.append_mirrored(build_batch(BatchSpec(base_offset=i, records=[NewRecord(key=b"k", value=b"v%d" % i)])))

    compacted = open_log(tmp_path / "c", segment_bytes=300, cleanup_policy=("compact",))
    plain = open_log(tmp_path / "d", segment_bytes=300, retention_ms=-1)
    fill(compacted)
    fill(plain)
    plain_size = plain.statistics().size_bytes
    threads = []
    real_clean = maintenance.clean_log

    def clean_log(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_clean(*args, **kwargs)

    monkeypatch.setattr(maintenance, "clean_log", clean_log)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            registry = _Registry(_Topic("c", [compacted]), _Topic("d", [plain]))
            await nursery.start(lambda task_status: run_maintenance(
                registry, flush_interval_s=0.05, retention_interval_s=3600, cleaner=CleanerConfig(backoff_ms=20),
                task_status=task_status))
            with trio.fail_after(20):
                while compacted.statistics().cleaned_up_to is None:  # noqa: ASYNC110 - a worker thread moves it
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert threads and not any(threads), "clean_log ran on the event loop's thread"
    assert compacted.statistics().cleaned_up_to == compacted.segment_base_offsets()[-1]
    assert compacted.statistics().size_bytes < plain.statistics().size_bytes == plain_size
    assert plain.statistics().cleaned_up_to is None


def test_a_retention_pass_hands_only_the_logs_with_a_segment_due_to_a_worker_thread(tmp_path, monkeypatch):
    import linkd.maintenance as maintenance
    from tests.storage.helpers import BASE_TS

    old = open_log(tmp_path / "old", segment_bytes=300, retention_ms=1000)
    quiet = [open_log(tmp_path / f"quiet{i}", segment_bytes=300, retention_ms=10 * 365 * 24 * 3600 * 1000) for i in range(3)]
    for log in (old, *quiet):
        for i in range(10):
            log.append_mirrored(batch(i * 2, 2, ts=BASE_TS + i))
    asked = []
    real_call = maintenance.storage_calls.call

    async def call(plog, fn, *args):
        if fn == plog.apply_retention:
            asked.append(plog)
        return await real_call(plog, fn, *args)

    monkeypatch.setattr(maintenance.storage_calls, "call", call)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            registry = _Registry(_Topic("t", [old, *quiet]))
            await nursery.start(lambda task_status: run_maintenance(registry, flush_interval_s=0.01, retention_interval_s=0.01, task_status=task_status))
            with trio.fail_after(10):
                while old.log_start_offset == 0:  # noqa: ASYNC110 - a worker thread moves it; no event to wait on
                    await trio.sleep(0.01)
                await trio.sleep(0.1)  # a few more passes
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert old.log_start_offset > 0
    assert asked and all(plog is old for plog in asked)
    assert all(log.log_start_offset == 0 for log in quiet)
