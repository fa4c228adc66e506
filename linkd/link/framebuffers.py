"""Recycled receive buffers for the link client's large response frames (see ``FrameBuffers``)."""

from __future__ import annotations

# Frames at least this large are read into recycled buffers (see FrameBuffers); smaller ones are cheap.
RECYCLE_MIN_FRAME = 256 * 1024


class FrameBuffers:
    """Recycled receive buffers for large response frames.

    A fetcher reads one multi-megabyte Fetch response after another. Reading each into a new bytearray makes
    the kernel hand out and zero fresh pages every time, which costs as much as the copy from the socket
    itself (3-4x the copy on the VMs we measured). A buffer is reused only when nothing still points into
    it: Python refuses to resize a bytearray while any memoryview of it is alive, so a trial resize tells us
    for certain that the previous response's batches (held by appends in flight, or anywhere else) are
    gone. A buffer still in use is simply left alone and a new one allocated.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self.reused = 0
        self.allocated = 0

    @staticmethod
    def _unused(buffer: bytearray) -> bool:
        try:
            buffer.append(0)  # raises BufferError while a memoryview of it exists
        except BufferError:
            return False
        del buffer[-1]
        return True

    def release(self) -> None:
        """Forget the recycled buffers (each is freed once its last view goes)."""
        self._free.clear()

    def frame(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes, in a recycled buffer when one is free and big enough."""
        for i, buffer in enumerate(self._free):
            if len(buffer) >= size and self._unused(buffer):
                self.reused += 1
                if i:  # most recently fitting first next time
                    self._free.insert(0, self._free.pop(i))
                return memoryview(buffer)[:size]
        self.allocated += 1
        buffer = bytearray(size)
        self._free.insert(0, buffer)
        # Forget the oldest beyond ``keep`` (they are freed once their last view goes).
        del self._free[self.keep :]
        return memoryview(buffer)[:size]
