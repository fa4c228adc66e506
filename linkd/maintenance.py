"""Background upkeep of the partition logs: periodic flush, retention, and the log cleaner.

Mirrored data is not fsynced per append (it can always be fetched again from the source, and recovery
cuts a torn tail), so a periodic flush bounds how much a crash makes linkd re-fetch and advances the
recovery point that bounds recovery time. Every blocking call here runs in a worker thread through
``storage_calls``, so the event loop keeps serving: the flush ``alongside`` the log's writers (it fsyncs
outside the writer lock, and a Produce must not queue behind it), retention in the log's call order (it
deletes segments under the writer lock, which a multi-MB mirror append may hold).

The log cleaner (``storage/cleaner.py``) compacts every partition whose ``cleanup.policy`` holds
"compact" — local topics, promoted topics and mirrors alike (on a mirror it thins linkd's own copy; offsets
do not change). It runs as its own task so a long pass never delays a flush, one partition at a time, the
dirtiest first, each pass in a worker thread: readers and appends go on while it reads and writes, and only
the swap of a cleaned segment takes the log's lock. When no log needs cleaning it sleeps
``log.cleaner.backoff.ms``.
"""

from __future__ import annotations

import logging
import threading
import time

import trio

from . import storage_calls
from .storage import LogClosed
from .storage.cleaner import CleanerConfig, CleanerStopped, clean_log, plan
from .topics import TopicRegistry

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
RETENTION_INTERVAL_S = 30.0
FLUSH_PARALLELISM = 16


async def run_maintenance(topics: TopicRegistry, *, flush_interval_s: float = FLUSH_INTERVAL_S,
                          retention_interval_s: float = RETENTION_INTERVAL_S, cleaner: CleanerConfig | None = None,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(run_cleaner, topics, cleaner or CleanerConfig())
        task_status.started()
        await _flush_and_retention(topics, flush_interval_s, retention_interval_s)


async def _flush_some(todo: list) -> None:
    """Flush logs taken from ``todo`` one after another until it is empty (one of FLUSH_PARALLELISM)."""
    while todo:
        await _flush_one(todo.pop())


async def _flush_one(plog) -> None:
    try:
        await storage_calls.alongside(plog.flush)
    except LogClosed:
        pass  # topic deleted meanwhile
    except OSError as exc:
        # The recovery point stays where it was and the next round tries again; the daemon keeps serving
        # (mirrored data can be fetched again, produced data was acknowledged only after a flush of its
        # own when acks=all).
        log.error("%s: periodic flush failed: %s", plog.name, exc)


async def _flush_and_retention(topics: TopicRegistry, flush_interval_s: float, retention_interval_s: float) -> None:
    next_retention = trio.current_time() + retention_interval_s
    # Logs with unflushed appends are flushed FLUSH_PARALLELISM at once: after thousands of partitions
    # took appends (a catch-up), one fsync after another would take a minute per round. That many tasks
    # share the list, rather than a task per log queueing on a limiter (10,000 of them, every second).
    while True:
        await trio.sleep(flush_interval_s)
        todo = [plog for topic in topics.all() for plog in list(topic.logs) if plog.recovery_point < plog.log_end_offset]
        todo.reverse()  # popped from the end: flushed in the registry's order
        async with trio.open_nursery() as nursery:
            for _ in range(min(FLUSH_PARALLELISM, len(todo))):
                nursery.start_soon(_flush_some, todo)
        if trio.current_time() >= next_retention:
            next_retention = trio.current_time() + retention_interval_s
            now_ms = int(time.time() * 1000)
            for topic in topics.all():
                for plog in list(topic.logs):
                    # Only a log with a segment due goes to a worker thread: at 10,000 partitions a hand-off
                    # each was seconds of the event loop every pass, most of an idle daemon's CPU then.
                    if not plog.retention_due(now_ms):
                        continue
                    try:
                        deleted = await storage_calls.call(plog, plog.apply_retention, now_ms)
                    except LogClosed:
                        continue
                    except OSError as exc:
                        log.error("%s: retention failed: %s", plog.name, exc)
                        continue
                    if deleted:
                        log.info("%s-%d: retention deleted %d segment(s); log start now %d", topic.name, topic.logs.index(plog), deleted, plog.log_start_offset)


def _cleanable(logs: list, now_ms: int) -> list:
    """Of ``logs``, the compacted ones that need a pass now, the dirtiest first (Kafka's order)."""
    candidates = []
    for plog in logs:
        snap = plog.cleaner_snapshot()
        found = plan(snap, now_ms) if snap is not None else None
        if found is not None and (found.must_clean_now or found.dirty_ratio > snap.config.min_cleanable_dirty_ratio):
            candidates.append((not found.must_clean_now, -found.dirty_ratio, plog))
    candidates.sort(key=lambda c: c[:2])
    return [plog for _must, _ratio, plog in candidates]


async def run_cleaner(topics: TopicRegistry, config: CleanerConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Clean the compacted logs that need it, one pass at a time, in a worker thread."""
    task_status.started()
    failed_until: dict[str, float] = {}
    while True:
        cleaned = False
        compacted = [plog for topic in topics.all() for plog in list(topic.logs) if plog.config.compact]
        todo = await storage_calls.alongside(_cleanable, compacted, int(time.time() * 1000)) if compacted else []
        for plog in todo:
            if failed_until.get(plog.name, 0.0) > trio.current_time():
                continue
            stop = threading.Event()
            try:
                # Abandoned on cancel (shutdown) rather than waited for: ``stop`` ends the pass at its next
                # batch, and a log closed meanwhile refuses the swap.
                stats = await storage_calls.alongside(_clean_one, plog, config, stop, abandon_on_cancel=True)
            except (LogClosed, CleanerStopped):
                continue
            except Exception as exc:  # a bad segment or a disk error: this log waits, the others go on
                if plog.view.closed:
                    continue  # closed or deleted under the pass (its directory may be gone): nothing to report
                log.error("%s: log cleaner failed, retrying in %.0f s: %s", plog.name, 10 * config.backoff_ms / 1000,
                          exc, exc_info=not isinstance(exc, OSError))
                failed_until[plog.name] = trio.current_time() + 10 * config.backoff_ms / 1000
                continue
            finally:
                stop.set()
            cleaned = cleaned or stats is not None
        if not cleaned:
            await trio.sleep(config.backoff_ms / 1000)
        else:
            await trio.lowlevel.checkpoint()


def _clean_one(plog, config: CleanerConfig, stop: threading.Event):
    return clean_log(plog, None, config, stop=stop)
