"""Aborted-transaction index of one segment (``<base offset>.txnindex``), Kafka's layout.

One 34-byte entry per transaction whose ABORT marker lies in this segment, in marker order, big-endian::

    int16  version            0
    int64  producer id
    int64  first offset       first offset of the aborted transaction (may be in an earlier segment)
    int64  last offset        offset of the ABORT marker
    int64  last stable offset the partition's LSO right after the marker was appended

A read_committed Fetch needs the (producer id, first offset) of every aborted transaction overlapping the
fetched range. The file always exists (maybe empty) so that a missing one is detectably lost.
"""

from __future__ import annotations

import bisect
import struct
from typing import NamedTuple

from .index_file import IndexCorrupt, IndexFile

ENTRY_SIZE = 34
_ENTRY = struct.Struct(">hqqqq")
VERSION = 0


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


class TxnIndex:
    def __init__(self, path: str) -> None:
        self.file = IndexFile(path, ENTRY_SIZE)
        self.entries: list[AbortedTxn] = []

    def load(self) -> None:
        data = self.file.read_existing(missing_ok=False)  # always exists (maybe empty): missing means lost
        entries: list[AbortedTxn] = []
        for i, (version, pid, first, last, lso) in enumerate(_ENTRY.iter_unpack(data)):
            if version != VERSION or first > last or (entries and last <= entries[-1].last_offset):
                raise IndexCorrupt(f"{self.file.path}: entry {i} is invalid")
            entries.append(AbortedTxn(pid, first, last, lso))
        self.entries = entries

    def append(self, entry: AbortedTxn) -> None:
        self.entries.append(entry)
        self.file.add(_ENTRY.pack(VERSION, *entry))

    def truncate_from_offset(self, offset: int) -> None:
        """Drop entries whose marker is at or after ``offset``."""
        keep = bisect.bisect_left([e.last_offset for e in self.entries], offset)
        self.entries = self.entries[:keep]  # a new list: a reader in another thread may be iterating the old one
        self.file.truncate_entries(keep)

    def reset(self) -> None:
        self.entries = []
        self.file.replace_all(b"")
