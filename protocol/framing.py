"""Cutting a byte stream into Kafka frames (a 4-byte big-endian size, then that many bytes).

Received chunks are kept as they came, in a deque, not appended to one growing bytearray: appending and
then slicing off the front is quadratic for a 64 MB Fetch response arriving in 64 KB pieces. A frame
that lies within one chunk is returned as a zero-copy memoryview of it; a frame spread over several
chunks is copied exactly once, into a buffer of its final size.

The size is vetted as soon as its four bytes are in: a negative size or one above ``max_frame_size``
raises ``FrameTooLarge`` before anything of that size is buffered or allocated.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from .errors import FrameTooLarge

_PREFIX = 4


class FrameReader:
    def __init__(self, max_frame_size: int = 100 * 1024 * 1024) -> None:
        self.max_frame_size = max_frame_size
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._next_size: int | None = None  # size of the frame being waited for, once its prefix is in

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a frame (for backpressure/statistics)."""
        return self._buffered

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer; our views must not change under us
        self._chunks.append(memoryview(data))
        self._buffered += len(data)
        self._check_prefix()

    def frames(self) -> Iterator[memoryview | bytes]:
        """Every complete frame buffered so far, in order, without its size prefix."""
        while True:
            size = self._check_prefix()
            if size is None or self._buffered < _PREFIX + size:
                return
            self._take(_PREFIX)
            self._next_size = None
            yield self._take(size)

    def _check_prefix(self) -> int | None:
        if self._next_size is not None:
            return self._next_size
        if self._buffered < _PREFIX:
            return None
        head = self._peek(_PREFIX)
        size = int.from_bytes(head, "big", signed=True)
        if size < 0 or size > self.max_frame_size:
            raise FrameTooLarge(f"frame size {size} is outside 0..{self.max_frame_size}")
        self._next_size = size
        return size

    def _peek(self, count: int) -> bytes:
        out = bytearray()
        for chunk in self._chunks:
            out += chunk[: count - len(out)]
            if len(out) >= count:
                break
        return bytes(out)

    def _take(self, count: int) -> memoryview:
        if count == 0:
            return memoryview(b"")
        first = self._chunks[0]
        if len(first) >= count:
            piece = first[:count]
            if len(first) == count:
                self._chunks.popleft()
            else:
                self._chunks[0] = first[count:]
            self._buffered -= count
            return piece
        joined = bytearray(count)
        filled = 0
        while filled < count:
            chunk = self._chunks[0]
            want = count - filled
            if len(chunk) <= want:
                joined[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
                self._chunks.popleft()
            else:
                joined[filled:count] = chunk[:want]
                self._chunks[0] = chunk[want:]
                filled = count
        self._buffered -= count
        return memoryview(joined)
