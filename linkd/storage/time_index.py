"""Sparse time index of one segment (``<base offset>.timeindex``), Kafka's layout.

Each 12-byte entry, big-endian::

    int64  timestamp         largest batch max-timestamp seen in the segment so far
    int32  relative offset   last offset of the batch that carried it, minus the segment's base offset
                             (Kafka's "shallow offset of max timestamp"; ``kafka-dump-log`` checks it)

Entries are added together with offset-index entries, only when the timestamp grew, plus a final one when the
segment is sealed or closed, so the last entry is the segment's largest timestamp. Both fields never decrease.
For a target T, every batch before the last entry with timestamp < T has max-timestamp < T, so a search for
"first batch with max-timestamp >= T" may start at that entry's offset.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from .index_file import IndexCorrupt, IndexFile

ENTRY_SIZE = 12
_ENTRY = struct.Struct(">qi")


class TimeIndex:
    def __init__(self, path: str, base_offset: int) -> None:
        self.base_offset = base_offset
        self.file = IndexFile(path, ENTRY_SIZE)
        self._timestamps = array("q")
        self._relative = array("i")

    def load(self, missing_ok: bool = True) -> None:
        data = self.file.read_existing(missing_ok)
        timestamps, relative = array("q"), array("i")
        for i, (ts, rel) in enumerate(_ENTRY.iter_unpack(data)):
            if rel < 0 or (i and (ts < timestamps[-1] or rel < relative[-1])):
                raise IndexCorrupt(f"{self.file.path}: entry {i} ({ts}, {rel}) is out of order")
            timestamps.append(ts)
            relative.append(rel)
        self._timestamps, self._relative = timestamps, relative

    def __len__(self) -> int:
        return len(self._timestamps)

    def last_entry(self) -> tuple[int, int] | None:
        if not self._timestamps:
            return None
        return self._timestamps[-1], self._relative[-1] + self.base_offset

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return
        relative = offset - self.base_offset
        # Offset first: a reader in another thread that finds an entry by time always finds its offset.
        self._relative.append(relative)
        self._timestamps.append(timestamp)
        self.file.add(_ENTRY.pack(timestamp, relative))

    def search_start(self, timestamp: int) -> int:
        """An offset from which to scan for the first batch with max-timestamp >= ``timestamp``."""
        i = bisect.bisect_left(self._timestamps, timestamp) - 1
        return self._relative[i] + self.base_offset if i >= 0 else self.base_offset

    def truncate_from_offset(self, offset: int) -> None:
        keep = bisect.bisect_left(self._relative, offset - self.base_offset)
        # New arrays, not shrunk ones: a lookup in another thread may be between its bisect and its index.
        self._timestamps, self._relative = self._timestamps[:keep], self._relative[:keep]
        self.file.truncate_entries(keep)

    def reset(self) -> None:
        """Forget every entry (recovery re-adds them); the file is rewritten at the next flush."""
        self._timestamps, self._relative = array("q"), array("i")
        self.file.rebuild()
