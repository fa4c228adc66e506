"""The event loop's one way into a blocking ``PartitionLog`` call: a worker thread, in call order per log.

A log's readers (``read``, the offsets, batch headers, epoch and transaction queries) never wait and are
called directly from the loop. Its writers (appends, truncation, ``reset_to``, DeleteRecords, retention,
``flush``) block on the disk, and on the log's writer lock, which a mirror append in another thread holds
across a multi-MB write: on the loop, that would stall every client. ``call`` runs them in trio's worker
threads. Calls for one log start in the order they were made (a FIFO ``trio.Lock`` per log), so two
Produce requests to one partition are appended in the order they arrived; calls for different logs run in
parallel. The thread call is not abandoned on cancellation: a write that started finishes, and its caller
sees its outcome.
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
