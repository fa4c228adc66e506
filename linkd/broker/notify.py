"""Wake long-polling Fetch requests when data arrives.

One event for the whole broker, replaced after every notification: a waiter re-checks its own
partitions after waking, so a spurious wake-up costs one re-read, and there is no per-partition
bookkeeping to leak when topics come and go.
"""

from __future__ import annotations

import trio


class AppendNotifier:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        event, self._event = self._event, trio.Event()
        event.set()

    async def wait(self, deadline: float) -> None:
        """Return on the next append, or at ``deadline`` (trio clock)."""
        event = self._event
        with trio.move_on_at(deadline):
            await event.wait()
