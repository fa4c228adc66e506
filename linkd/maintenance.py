"""Background upkeep of the partition logs: periodic flush and retention.

Mirrored data is not fsynced per append (it can always be fetched again from the source, and recovery
cuts a torn tail), so a periodic flush bounds how much a crash makes linkd re-fetch and advances the
recovery point that bounds recovery time. fsync runs in a worker thread so the event loop keeps serving;
the log's own lock orders it against appends.
"""

from __future__ import annotations

import logging
import time

import trio

from .storage import LogClosed
from .topics import TopicRegistry

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
RETENTION_INTERVAL_S = 30.0


async def run_maintenance(topics: TopicRegistry, *, flush_interval_s: float = FLUSH_INTERVAL_S, retention_interval_s: float = RETENTION_INTERVAL_S, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    next_retention = trio.current_time() + retention_interval_s
    while True:
        await trio.sleep(flush_interval_s)
        for topic in topics.all():
            for plog in list(topic.logs):
                if plog.recovery_point < plog.log_end_offset:
                    try:
                        await trio.to_thread.run_sync(plog.flush)
                    except LogClosed:
                        pass  # topic deleted meanwhile
                    except OSError as exc:
                        # The recovery point stays where it was and the next round tries again; the
                        # daemon keeps serving (mirrored data can be fetched again, produced data was
                        # acknowledged only after a flush of its own when acks=all).
                        log.error("%s: periodic flush failed: %s", plog.name, exc)
        if trio.current_time() >= next_retention:
            next_retention = trio.current_time() + retention_interval_s
            now_ms = int(time.time() * 1000)
            for topic in topics.all():
                for plog in list(topic.logs):
                    try:
                        deleted = plog.apply_retention(now_ms)
                    except LogClosed:
                        continue
                    except OSError as exc:
                        log.error("%s: retention failed: %s", plog.name, exc)
                        continue
                    if deleted:
                        log.info("%s-%d: retention deleted %d segment(s); log start now %d", topic.name, topic.logs.index(plog), deleted, plog.log_start_offset)
