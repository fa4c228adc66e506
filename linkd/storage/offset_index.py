"""Sparse offset index of one segment (``<base offset>.index``), Kafka's layout.

Each 8-byte entry, big-endian::

    int32  relative offset   last offset of a batch minus the segment's base offset
    int32  position          byte position of that batch in the ``.log`` file

An entry is added for a batch once more than ``index.interval.bytes`` bytes were appended since the previous
entry, so a lookup reads at most about that many bytes of batch headers. Entries are strictly increasing in
both fields. Keying by the batch's *last* offset (as Kafka does) means the largest entry <= a target names a
batch at or before the one holding the target; the scan forward from there finds the holding batch.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array

from .index_file import IndexCorrupt, IndexFile

ENTRY_SIZE = 8
_ENTRY = struct.Struct(">ii")


def _from_big_endian(data: bytes, typecode: str) -> array:
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


class OffsetIndex:
    def __init__(self, path: str, base_offset: int) -> None:
        self.base_offset = base_offset
        self.file = IndexFile(path, ENTRY_SIZE)
        self._relative = array("i")
        self._positions = array("i")

    def load(self, segment_size: int) -> None:
        """Read and sanity-check the file. Raises IndexCorrupt (also when it is missing and the segment is not empty)."""
        data = self.file.read_existing(missing_ok=segment_size == 0)
        pairs = _from_big_endian(data, "i")
        relative, positions = pairs[0::2], pairs[1::2]
        for i in range(len(relative)):
            if relative[i] < 0 or positions[i] < 0 or positions[i] >= segment_size:
                raise IndexCorrupt(f"{self.file.path}: entry {i} ({relative[i]}, {positions[i]}) outside the segment")
            if i and (relative[i] <= relative[i - 1] or positions[i] <= positions[i - 1]):
                raise IndexCorrupt(f"{self.file.path}: entry {i} is not increasing")
        self._relative, self._positions = relative, positions

    def __len__(self) -> int:
        return len(self._relative)

    def append(self, last_offset: int, position: int) -> None:
        relative = last_offset - self.base_offset
        # Position first: a reader in another thread that finds an entry by offset always finds its position.
        self._positions.append(position)
        self._relative.append(relative)
        self.file.add(_ENTRY.pack(relative, position))

    def last_entry(self) -> tuple[int, int] | None:
        if not self._relative:
            return None
        return self._relative[-1] + self.base_offset, self._positions[-1]

    def position_at_or_before(self, offset: int) -> int:
        """Position of a batch boundary from which a forward scan finds the batch holding ``offset``."""
        i = bisect.bisect_right(self._relative, offset - self.base_offset) - 1
        return self._positions[i] if i >= 0 else 0

    def safe_position_before(self, limit: int, below_offset: int | None) -> int | None:
        """Position of an indexed batch that surely ends at or before ``limit`` and below ``below_offset``:
        the entry before the last one that starts at or before ``limit``. A reader may jump there instead of
        walking every header from its start."""
        i = bisect.bisect_right(self._positions, limit) - 1
        if below_offset is not None:
            i = min(i, bisect.bisect_left(self._relative, below_offset - self.base_offset) - 1)
        if i < 1:
            return None
        return self._positions[i - 1]

    def truncate_to_position(self, position: int) -> None:
        keep = bisect.bisect_left(self._positions, position)
        # New arrays, not shrunk ones: a lookup in another thread may be between its bisect and its index.
        self._relative, self._positions = self._relative[:keep], self._positions[:keep]
        self.file.truncate_entries(keep)

    def reset(self) -> None:
        """Forget every entry (recovery re-adds them); the file is rewritten at the next flush."""
        self._relative, self._positions = array("i"), array("i")
        self.file.rebuild()
