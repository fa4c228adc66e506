"""The event loop's one way into a blocking storage call: a worker thread, in call order per log.

A log's readers (``read``, the offsets, batch headers, epoch and transaction queries) never wait and are
called directly from the loop. Its writers (appends, truncation, ``reset_to``, DeleteRecords, retention,
``update_config``, ``delete``, ``close``) block on the disk, or on the log's writer lock, which a mirror
append in another thread holds across a multi-MB write: on the loop, that would stall every client.

``call`` runs them in trio's worker threads. Calls for one log start in the order they were made (a FIFO
``trio.Lock`` per log), so two Produce requests to one partition are appended in the order they arrived and
a config change or a deletion comes after the appends queued before it; calls for different logs run in
parallel. The thread call is not abandoned on cancellation: a write that started finishes, and its caller
sees its outcome.

``alongside`` is for blocking storage work that is safe next to the log's writers and must not queue
behind them: the periodic ``flush`` (it fsyncs outside the writer lock, and a Produce must not wait for a
fsync it did not ask for), a log cleaner pass (its own lock; only its swap takes the writer lock), a
verification's reads, the making of new partition logs (no other call can name them yet). It runs in a
worker thread too, in no order.

``call_batched`` is ``call`` for many logs at once, in a few worker-thread jobs instead of one per call: a
Produce naming 10,000 partitions, or a failover closing them, paid 10,000 hand-offs to a worker and back
(each a wake-up of two threads; milliseconds apiece on a loaded machine). Its calls keep the per-log order:
a log whose order lock is free is taken without waiting and its calls run in a job, in list order; a log
with a call of its own running or queued has its calls queued behind that through ``call``, once the jobs
are done and their locks released. A batch never waits for a lock while holding another, so batches cannot
deadlock each other or ``call``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import outcome
import trio

from .storage import PartitionLog

T = TypeVar("T")

_order: weakref.WeakKeyDictionary[PartitionLog, trio.Lock] = weakref.WeakKeyDictionary()


def _order_lock(plog: PartitionLog) -> trio.Lock:
    lock = _order.get(plog)
    if lock is None:
        lock = _order[plog] = trio.Lock()
    return lock


async def call(plog: PartitionLog, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` (a blocking method of ``plog``) in a worker thread, after every earlier call for ``plog``."""
    async with _order_lock(plog):
        return await trio.to_thread.run_sync(fn, *args)


async def alongside(fn: Callable[..., T], *args, abandon_on_cancel: bool = False) -> T:
    """``fn(*args)`` in a worker thread, outside every log's call order (see the module docstring for what
    may). ``abandon_on_cancel`` only for work that stops by itself and whose outcome nobody needs (a cleaner
    pass at shutdown)."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel)


def _run_job(job: list[tuple[int, Callable[..., Any], tuple]]) -> list[tuple[int, outcome.Outcome]]:
    """A worker thread's share of a batch: each call in turn, its outcome kept (one failing call does not
    stop the others)."""
    return [(index, outcome.capture(fn, *args)) for index, fn, args in job]


async def call_batched(calls: Sequence[tuple[PartitionLog, Callable[..., T], tuple]], jobs: int = 1) -> list[outcome.Outcome[T]]:
    """Each ``fn(*args)`` of ``calls`` (blocking methods of its log) in at most ``jobs`` worker-thread jobs
    run in parallel, each call after every earlier ``call`` for its log; one log's calls run in list order.
    Returns each call's outcome (``.unwrap()`` gives its value or raises its exception), in list order."""
    by_log: dict[int, list[int]] = {}
    for index, (plog, _, _) in enumerate(calls):
        by_log.setdefault(id(plog), []).append(index)
    results: list[outcome.Outcome[T] | None] = [None] * len(calls)
    held: list[trio.Lock] = []
    free: list[list[int]] = []
    queued: list[list[int]] = []
    try:
        for indexes in by_log.values():
            lock = _order_lock(calls[indexes[0]][0])
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                queued.append(indexes)
                continue
            held.append(lock)
            free.append(indexes)

        async def job(share: list[int]) -> None:
            for index, done in await trio.to_thread.run_sync(_run_job, [(i, calls[i][1], calls[i][2]) for i in share]):
                results[index] = done

        async with trio.open_nursery() as nursery:
            # Whole logs per share (a log's calls stay in one job, in order), shares of about equal size.
            size = -(-sum(map(len, free)) // max(1, jobs))
            share: list[int] = []
            for indexes in free:
                if share and len(share) + len(indexes) > size:
                    nursery.start_soon(job, share)
                    share = []
                share.extend(indexes)
            if share:
                nursery.start_soon(job, share)
    finally:
        for lock in held:
            lock.release()

    # The busy logs only now, holding no lock: waiting for one while holding others could deadlock
    # with another batch holding that one and waiting for ours.
    async def behind(indexes: list[int]) -> None:
        plog = calls[indexes[0]][0]
        for i in indexes:
            results[i] = await call(plog, outcome.capture, calls[i][1], *calls[i][2])

    async with trio.open_nursery() as nursery:
        for indexes in queued:
            nursery.start_soon(behind, indexes)
    return results  # type: ignore[return-value]  # every slot filled: each index is in one job or one queue
