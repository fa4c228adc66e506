"""A file of fixed-size entries that only grows at the end or is cut, shared by the three segment indexes.

New entries are kept in memory and written on ``write_pending()`` (flush, roll, close): indexes are derived
data that recovery rebuilds, so appending them to the file on every batch would buy nothing.

A rebuild (``rebuild()``, recovery) is kept in memory too until ``write_pending()``, which then overwrites
the file in place, and only where it differs: a crash restart mostly rebuilds what the file holds already,
and truncating and rewriting each segment's index files (freeing and allocating their blocks) was a fifth
of a 10,000-partition crash restart. Until then the file keeps its old entries; the recovery point has not
moved past the segment, so a crash meanwhile rebuilds it again.
"""

from __future__ import annotations

import contextlib
import os

from .checkpoint import read_file


class IndexCorrupt(Exception):
    """An index file that fails its sanity check; the segment's indexes are rebuilt from the log."""


class IndexFile:
    def __init__(self, path: str, entry_size: int) -> None:
        self.path = path
        self.entry_size = entry_size
        self._pending = bytearray()
        self._written_entries = 0
        self._dirty = False  # written but not fsynced
        self._rebuilding = False  # ``_pending`` is the whole file's new content (``rebuild``)

    def read_existing(self, missing_ok: bool = True) -> bytes:
        """The file's bytes (b"" when missing and ``missing_ok``). Raises IndexCorrupt when not a whole
        number of entries, or missing otherwise (one open tells both: no separate existence check)."""
        try:
            data = read_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise IndexCorrupt(f"{self.path} is missing") from None
            return b""
        if len(data) % self.entry_size:
            raise IndexCorrupt(f"{self.path}: {len(data)} bytes is not a multiple of {self.entry_size}")
        self._written_entries = len(data) // self.entry_size
        return data

    def add(self, entry: bytes) -> None:
        self._pending += entry

    def rebuild(self) -> None:
        """Start the file's content afresh: entries added from now on replace it at ``write_pending()``."""
        self._pending.clear()
        self._written_entries = 0
        self._rebuilding = True

    def write_pending(self) -> None:
        if self._rebuilding:
            self._write_rebuilt()
            return
        if not self._pending:
            return
        try:
            with open(self.path, "ab") as f:
                f.write(self._pending)
        except OSError as exc:
            # A full disk may take part of the entries: cut them off, so a retry appends them exactly once.
            with contextlib.suppress(OSError), open(self.path, "r+b") as f:
                f.truncate(self._written_entries * self.entry_size)
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, self.path) from exc
            raise
        self._written_entries += len(self._pending) // self.entry_size
        self._pending.clear()
        self._dirty = True

    def _write_rebuilt(self) -> None:
        """Make the file hold exactly ``_pending``: read it, and write (in place, from the first differing
        entry) and cut only what differs. On failure the rebuild stays pending, whole, for a retry."""
        data = bytes(self._pending)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            old = os.pread(fd, max(os.fstat(fd).st_size, len(data)), 0)
            if old != data:
                same, common, step = 0, min(len(old), len(data)), 4096
                while same + step <= common and old[same : same + step] == data[same : same + step]:
                    same += step
                while same < common and old[same] == data[same]:
                    same += 1
                same -= same % self.entry_size
                view = memoryview(data)
                position = same
                while position < len(data):
                    position += os.pwrite(fd, view[position:], position)
                if len(old) > len(data):
                    os.ftruncate(fd, len(data))
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, self.path) from exc
            raise
        finally:
            os.close(fd)
        self._rebuilding = False
        self._written_entries = len(data) // self.entry_size
        self._pending.clear()
        self._dirty = True  # unchanged bytes may still be a killed process's unsynced page cache

    def fsync(self, sync: bool = True) -> None:
        """Write pending entries and fsync them; ``sync=False``: write only, the caller syncs the file system."""
        self.write_pending()
        if self._dirty and not sync:
            self._dirty = False
        elif self._dirty:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._dirty = False

    def mark_unsynced(self) -> None:
        if os.path.exists(self.path):
            self._dirty = True

    def truncate_entries(self, keep: int) -> None:
        """Keep the first ``keep`` entries (file plus pending)."""
        if keep >= self._written_entries or self._rebuilding:
            del self._pending[(keep - self._written_entries) * self.entry_size :]
            return
        self._pending.clear()
        with open(self.path, "r+b") as f:
            f.truncate(keep * self.entry_size)
        self._written_entries = keep
        self._dirty = True

    def replace_all(self, data: bytes) -> None:
        """Rewrite the whole file (index rebuild)."""
        with open(self.path, "wb") as f:
            f.write(data)
        self._rebuilding = False
        self._pending.clear()
        self._written_entries = len(data) // self.entry_size
        self._dirty = True

    def create_empty(self) -> None:
        if not os.path.exists(self.path):
            open(self.path, "ab").close()
            self._dirty = True

    def delete(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
