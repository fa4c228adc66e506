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
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

import trio

from .storage import PartitionLog

T = TypeVar("T")

_order: weakref.WeakKeyDictionary[PartitionLog, trio.Lock] = weakref.WeakKeyDictionary()


async def call(plog: PartitionLog, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` (a blocking method of ``plog``) in a worker thread, after every earlier call for ``plog``."""
    lock = _order.get(plog)
    if lock is None:
        lock = _order[plog] = trio.Lock()
    async with lock:
        return await trio.to_thread.run_sync(fn, *args)


async def alongside(fn: Callable[..., T], *args, abandon_on_cancel: bool = False) -> T:
    """``fn(*args)`` in a worker thread, outside every log's call order (see the module docstring for what
    may). ``abandon_on_cancel`` only for work that stops by itself and whose outcome nobody needs (a cleaner
    pass at shutdown)."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel)
