"""Taking turns at copying arrived response bytes on the link's one event loop (``ReadTurn``).

A fetch connection's reader copies from its socket for as long as bytes are there, without a pass
through the scheduler per read (``Connection._read_exactly``). Across a WAN several fetch connections'
multi-megabyte answers arrive at once, and then whichever reader runs first keeps the loop until *every*
answer that keeps arriving is read: a fetcher whose answer is complete can neither send its next Fetch
nor start its appends meanwhile. In one catch-up across 100 ms (issue 17), four 10 MiB answers were
read one after another over 0.78 s, and the fetcher whose answer was whole first sent its next Fetch and
began appending only 0.49 s after it had it; all four rounds went on in lockstep.

So a reader hands the loop back every ``YIELD_BYTES`` it copies, and the readers of one link take turns:
the one copying keeps the turn until its frame is read or its socket runs dry (it lets the turn go before
it waits for the socket, so nobody ever waits for bytes that have not arrived). Answers are still read
whole one after another, first come first served, but between their pieces everything that is not a
reader runs: the fetcher with a whole answer digests it, sends its next Fetch and starts its appends
while the others' answers are still being copied. A single connection (no turn shared) still yields,
so clients served on the same loop are not held up by a large answer either.
"""

from __future__ import annotations

import trio

# A pass through the scheduler costs a few microseconds; copying 1 MiB costs a few hundred.
YIELD_BYTES = 1 << 20


class ReadTurn:
    """Whose turn it is, among the readers sharing this object, to copy arrived bytes (trio's lock is
    first come first served)."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    def reader(self) -> TurnReader:
        return TurnReader(self._lock)


def turn_reader(turn: ReadTurn | None) -> TurnReader:
    """A frame's reader taking ``turn`` (None: a connection that takes turns with nobody, but yields)."""
    return turn.reader() if turn is not None else TurnReader()


class TurnReader:
    """One frame's read loop: ``before_read`` before each non-blocking read, ``copied`` after it,
    ``parking`` before waiting for the socket, ``finish`` (in a ``finally``) when done or failed."""

    __slots__ = ("_lock", "_held", "_unyielded")

    def __init__(self, lock: trio.Lock | None = None) -> None:
        self._lock = lock
        self._held = False
        self._unyielded = 0

    async def before_read(self) -> None:
        if self._lock is not None and not self._held:
            try:
                self._lock.acquire_nowait()  # free: no pass through the scheduler
            except trio.WouldBlock:
                await self._lock.acquire()
            self._held = True

    async def copied(self, count: int) -> None:
        self._unyielded += count
        if self._unyielded >= YIELD_BYTES:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()  # other tasks run; other readers wait for the turn

    def parking(self) -> None:
        self._unyielded = 0  # waiting for the socket goes through the scheduler anyway
        if self._held:
            assert self._lock is not None
            self._lock.release()
            self._held = False

    def finish(self) -> None:
        self.parking()
