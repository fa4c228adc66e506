"""Crash-safe replacement of a run of segments by one cleaned segment (the log cleaner's swap).

Files, for a cleaned segment with base offset B replacing the old segments whose base offsets lie in
[B, E) (E: the base offset of the first segment after the group)::

    <B>.log.cleaned  <B>.index.cleaned  <B>.timeindex.cleaned  <B>.txnindex.cleaned
        being written by the cleaner; incomplete until renamed. Deleted on open (roll back).
    <B>.swap-range
        two decimal numbers "B E", written atomically (temp file, fsync, rename) before any ``.swap`` exists:
        which old segments the cleaned one replaces.
    <B>.log.swap  <B>.index.swap  <B>.timeindex.swap  <B>.txnindex.swap
        the cleaned files, complete and fsynced. The indexes are renamed first, the ``.log`` last: the
        appearance of ``<B>.log.swap`` (with no ``<B>.*.cleaned`` left) is the commit point.

Steps of ``commit`` then ``complete``:

1. fsync the ``.cleaned`` files (the cleaner did), write ``<B>.swap-range``;
2. rename each ``.cleaned`` to ``.swap``, the ``.log`` last; fsync the directory. **Committed.**
3. delete the old segments with base offsets in (B, E), then rename each ``.swap`` over its final name
   (indexes first, ``.log`` last: ``os.replace`` swaps B's old file for the new one atomically); fsync the
   directory; delete ``<B>.swap-range``.

``recover`` on open, before segments are listed: for every B with a ``.cleaned`` file, the swap did not
commit: delete B's ``.cleaned`` and ``.swap`` files and its range file, leaving the old segments. For every
B with ``<B>.log.swap`` and no ``.cleaned``, the swap committed: redo step 3. (Index ``.swap`` files without a
``.log.swap`` or ``.cleaned`` cannot come from these steps and are removed.) Either way the log holds the old segments or the cleaned one for the whole range, never a mix.
If the range file is missing or unreadable after a commit (not written by this code), E falls back to the
cleaned segment's own next offset, which is what Kafka's recovery assumes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

from protocol.records import split_batches

from .checkpoint import atomic_write, fsync_dir
from .segment import ALL_SUFFIXES, LOG_SUFFIX, file_name

log = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
RANGE_SUFFIX = ".swap-range"
# The .log goes last when renaming so that its new name marks the step as done.
_RENAME_ORDER = tuple(s for s in ALL_SUFFIXES if s != LOG_SUFFIX) + (LOG_SUFFIX,)
_TRANSIENT = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex|\.txnindex)(\.cleaned|\.swap)$")
_RANGE = re.compile(r"^(\d{20})" + re.escape(RANGE_SUFFIX) + "$")


def cleaned_path(directory: str, base_offset: int, suffix: str) -> str:
    return os.path.join(directory, file_name(base_offset, suffix) + CLEANED_SUFFIX)


def _swap_path(directory: str, base_offset: int, suffix: str) -> str:
    return os.path.join(directory, file_name(base_offset, suffix) + SWAP_SUFFIX)


def _range_path(directory: str, base_offset: int) -> str:
    return os.path.join(directory, file_name(base_offset, RANGE_SUFFIX))


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def discard_cleaned(directory: str, base_offset: int) -> None:
    """Remove a cleaned segment that will not be swapped in (the log changed meanwhile, or an error)."""
    for suffix in ALL_SUFFIXES:
        _unlink(cleaned_path(directory, base_offset, suffix))


def commit(directory: str, base_offset: int, group_end: int) -> None:
    """Steps 1-2: after this returns, a crash recovers to the cleaned segment."""
    atomic_write(_range_path(directory, base_offset), f"{base_offset} {group_end}\n".encode("ascii"))
    for suffix in _RENAME_ORDER:
        os.rename(cleaned_path(directory, base_offset, suffix), _swap_path(directory, base_offset, suffix))
    fsync_dir(directory)


def complete(directory: str, base_offset: int, old_bases: Iterable[int]) -> None:
    """Step 3: delete the replaced segments and give the cleaned one its final names."""
    for old in old_bases:
        if old != base_offset:
            for suffix in ALL_SUFFIXES:
                _unlink(os.path.join(directory, file_name(old, suffix)))
    for suffix in _RENAME_ORDER:
        swap = _swap_path(directory, base_offset, suffix)
        if os.path.exists(swap):
            os.replace(swap, os.path.join(directory, file_name(base_offset, suffix)))
    fsync_dir(directory)
    _unlink(_range_path(directory, base_offset))


def _read_range(directory: str, base_offset: int) -> int | None:
    try:
        with open(_range_path(directory, base_offset), "rb") as f:
            parts = f.read().decode("ascii").split()
        if len(parts) == 2 and int(parts[0]) == base_offset and int(parts[1]) > base_offset:
            return int(parts[1])
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return None


def _next_offset_of(path: str, base_offset: int) -> int:
    """One past the last whole batch in a log file (its base offset when it holds none)."""
    with open(path, "rb") as f:
        data = f.read()
    batches = split_batches(data).batches
    return batches[-1].next_offset if batches else base_offset


def is_swap_file(name: str) -> bool:
    """Whether ``name`` is one of the files an interrupted swap leaves (``recover`` has work to do)."""
    return name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX, RANGE_SUFFIX))


def recover(directory: str, partition: str) -> list[int]:
    """Finish or roll back every interrupted swap in ``directory`` (see the module docstring). Returns the
    base offsets of the segments swapped in, whose indexes the caller should not trust blindly."""
    names = os.listdir(directory)
    cleaned: set[int] = set()
    swapped: dict[int, set[str]] = {}
    ranges: set[int] = set()
    for name in names:
        match = _TRANSIENT.match(name)
        if match:
            base = int(match.group(1))
            if match.group(3) == CLEANED_SUFFIX:
                cleaned.add(base)
            else:
                swapped.setdefault(base, set()).add(match.group(2))
            continue
        match = _RANGE.match(name)
        if match:
            ranges.add(int(match.group(1)))
    for base in sorted(cleaned):
        log.warning("%s: rolling back the interrupted swap of cleaned segment %d (it had not committed)", partition, base)
        discard_cleaned(directory, base)
        for suffix in ALL_SUFFIXES:
            _unlink(_swap_path(directory, base, suffix))
        _unlink(_range_path(directory, base))
    finished = []
    for base, suffixes in sorted(swapped.items()):
        if base in cleaned:
            continue
        if LOG_SUFFIX in suffixes:
            end = _read_range(directory, base)
            if end is None:
                end = _next_offset_of(_swap_path(directory, base, LOG_SUFFIX), base)
                log.warning("%s: swap range of cleaned segment %d unreadable; assuming it ends at %d", partition, base, end)
            old = []
            for name in os.listdir(directory):
                if name.endswith(LOG_SUFFIX) and name[:20].isdigit() and len(name) == 20 + len(LOG_SUFFIX):
                    offset = int(name[:20])
                    if base < offset < end:
                        old.append(offset)
            log.warning("%s: completing the interrupted swap of cleaned segment %d (replacing segments %s)",
                        partition, base, [base, *sorted(old)])
        else:
            # Cannot come from commit/complete (the .log is renamed last both times): stray files, dropped.
            log.warning("%s: removing index swap files of segment %d without their log", partition, base)
            for suffix in ALL_SUFFIXES:
                _unlink(_swap_path(directory, base, suffix))
            _unlink(_range_path(directory, base))
            continue
        complete(directory, base, old)
        finished.append(base)
    for base in sorted(ranges - cleaned - set(swapped)):
        _unlink(_range_path(directory, base))  # its swap finished; only the last unlink was missing
    return finished
