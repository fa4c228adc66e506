"""linkd's long-lived state and CPython's cyclic garbage collector.

A daemon with 10,000 partitions holds millions of objects that live as long as their partition does (logs,
segments, their views, mirror progress). CPython's full (oldest-generation) collection walks every one of
them, with the event loop stopped: 0.45 s to 1.1 s each at 10,000 partitions on the benchmark machine. It
runs whenever the objects that survived into the oldest generation since the last one reach a quarter of
it, and a failover of every mirror (a report per partition) and the first Produce to every partition (its
decoded request and answer) build that many: a failover and its first Produce paid for two or three of them.

``settle`` freezes what is alive now (``gc.freeze``): later collections walk only what was made after it.
Frozen objects are still freed by reference counting the moment nothing refers to them; only a reference
cycle among them is not collected until ``thaw``. So ``settle`` is called where a large amount of state has
just been built and is going to stay (the daemon's start, and around a failover or promotion, which is also
where a pause costs the most), not per request, and ``thaw`` where long-lived state is dropped (a topic
deleted), so that the next full collection can free the cycles of what was deleted.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def settle(why: str) -> None:
    """Take every object alive now out of the collector's generations (see the module docstring)."""
    gc.freeze()
    log.debug("gc: %d objects frozen (%s)", gc.get_freeze_count(), why)


def thaw(why: str) -> None:
    """Give the frozen objects back to the oldest generation: the next full collection walks them again
    and frees the reference cycles of state that was dropped."""
    gc.unfreeze()
    log.debug("gc: objects unfrozen (%s)", why)
