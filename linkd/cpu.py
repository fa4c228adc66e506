"""CPU-heavy pure work (PBKDF2 for a PLAIN login) off the event loop, at most a few at a time.

``hashlib.pbkdf2_hmac`` releases the GIL, so a worker thread keeps the loop serving other connections
while a login is checked (4096 iterations of SHA-512 take 5-20 ms). The limiter bounds the threads: a
client guessing passwords in a loop queues behind it instead of taking every core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")
_LIMIT = trio.CapacityLimiter(2)


async def run(fn: Callable[..., T], *args) -> T:
    return await trio.to_thread.run_sync(fn, *args, limiter=_LIMIT)
