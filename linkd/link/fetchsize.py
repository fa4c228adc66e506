"""How many bytes to ask of one partition per Fetch (pure).

A fetch connection moves at most one response per round trip. With the configured per-partition size
(``replica.fetch.max.bytes``, 1 MiB by default) a partition far behind across a 100 ms WAN moves 1 MiB per
100 ms, whatever the bandwidth. So while a partition is behind and its answers come back full, its size
doubles each round (as TCP's slow start grows its window), or goes at once to what the answer says is
left to fetch (its bytes per offset times the offsets behind), up to its *share* of the response: the
response limit (``replica.fetch.response.max.bytes``) divided by the partitions in the request, so no
partition starves the others of a response. The moment an answer brings the partition to the source's
end (or shows nothing new) it drops back to the configured size: a caught-up link asks exactly what it
asked before, and tail latency and memory are unchanged. Memory stays bounded by configuration: a
response never exceeds the response limit, whatever the partitions ask.

linkd grows sizes only across a WAN (a round trip of 20 ms or more, ``assignment.wide_area``): on a LAN a
round trip costs little and larger responses only cost (on loopback 8 MiB / 64 MiB fetches caught up at
0.7x the speed of 1 MiB / 10 MiB in the WAN harness's 0 ms run of issue 17: 181 against 268 MB/s).

Invariant: the size returned is never below ``floor`` and never above ``max(floor, ceiling)``, except that
a single batch larger than the size (``for_oversized_batch``) may raise it to ``OVERSIZED_MAX``, the
only way past such a batch.
"""

from __future__ import annotations

OVERSIZED_MAX = 64 * 1024 * 1024  # a partition's size may grow this far to get past one very large batch
GROWTH = 2


def share(floor: int, response_max: int, partitions: int) -> int:
    """The most one of ``partitions`` partitions of a request may ask for while catching up: its share of
    the response limit, never less than the configured per-partition size."""
    return max(floor, response_max // max(partitions, 1))


def after_answer(current: int, floor: int, ceiling: int, returned: int, behind: bool, remaining: int = 0) -> int:
    """The next size for a partition asked ``current`` bytes that got ``returned`` bytes of records, and
    is still ``behind`` the source's end after them (False: caught up). ``remaining``: an estimate of the
    bytes still to fetch (``remaining_bytes``); far behind, the size goes straight to what is left rather
    than doubling its way there, a round trip per doubling."""
    if not behind:
        return floor
    top = max(floor, ceiling)
    if returned * 2 >= current:  # the answer was limited by our size, not by what the source holds
        return max(floor, min(max(current * GROWTH, remaining), top))
    return max(floor, min(current, top))


def remaining_bytes(returned: int, offsets_returned: int, offsets_left: int) -> int:
    """What is left to fetch of a partition, in bytes, at the answer's bytes per offset."""
    return returned * offsets_left // offsets_returned if offsets_returned > 0 and offsets_left > 0 else 0


def for_oversized_batch(current: int, floor: int) -> int:
    """The next size after an answer whose first batch did not fit in ``current`` bytes."""
    return min(max(current, floor) * GROWTH, max(OVERSIZED_MAX, floor))
