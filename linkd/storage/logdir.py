"""Many logs of one log directory opened and closed together, with a few file-system syncs instead of a
dozen fsyncs per partition (Kafka's ``LogManager``: one clean-shutdown marker and one recovery-point and
log-start checkpoint per log directory).

**Close** (``close_logs``), after every writer has stopped:

1. each log's ``close(sync=False)``: segments sealed, index entries, producer snapshot and leader-epoch
   checkpoint written, none fsynced, no marker of its own;
2. ``sync_file_systems``: one ``syncfs(2)`` per file system the logs are on: every byte of step 1, the
   directory entries included, is durable when it returns;
3. each log's ``synced()``: its recovery point moves to its log end and its ``recovery-point`` file is
   written (unsynced: an older one after a crash only means a longer scan);
4. Kafka's three log-directory checkpoints (``checkpoint.py``), one line per partition, unsynced; a second
   ``syncfs``; then Kafka's ``.kafka_cleanshutdown`` marker, written atomically with its fsyncs, last.

A crash before the marker is durable leaves no marker: the next start recovers each log from its own
``recovery-point`` file, which is never newer than what step 2 made durable. If any log fails to close, the
others still get steps 2-3 and no marker is written.

**Open** (``take_clean_shutdown`` before, ``sync_opened`` after the logs open): the marker and the three
checkpoints are read, then removed (marker first, one directory fsync) before any log opens; a log with
a line in them opens as cleanly shut down (``CleanState``) without reading its own marker and offset
files. Logs a crash left are recovered with ``open(sync=False)``: rebuilt indexes and checkpoints written
unsynced, then one ``syncfs`` and each one's ``synced()`` advance their recovery points.

``syncfs`` reports write-back errors since Linux 5.8; where the C library lacks it, ``os.sync()`` (every
file system) stands in. On a file system shared with busy writers it waits for their dirty pages too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import checkpoint
from .clean_state import CleanState
from .log import PartitionLog

log = logging.getLogger(__name__)

Runner = Callable[[Callable[[Any], Any], Iterable[Any]], list]


def _serial(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
    return [fn(item) for item in items]


_libc: Any = None


def _syncfs_function() -> Callable[[int], int] | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _libc = False
    return getattr(_libc, "syncfs", None) if _libc else None


def sync_file_systems(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Make every write so far to the file systems holding ``paths`` durable: one ``syncfs`` per file
    system (``os.sync()`` where there is no ``syncfs``). Raises ``OSError`` when the kernel reports a
    write-back error."""
    by_device: dict[int, str] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            by_device.setdefault(os.stat(path).st_dev, os.fspath(path))
    syncfs = _syncfs_function()
    if syncfs is None:
        os.sync()
        return
    for path in by_device.values():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}", path)
        finally:
            os.close(fd)


def take_clean_shutdown(directory: str | os.PathLike[str]) -> dict[tuple[str, int], CleanState]:
    """The clean state of every partition the last ``close_logs`` of ``directory`` closed, empty when that
    close did not finish (no marker); then the marker and checkpoints are removed durably (marker first),
    so a crash from now on is seen as unclean. Call before opening any log in ``directory``."""
    directory = Path(directory)
    states: dict[tuple[str, int], CleanState] = {}
    if (directory / checkpoint.KAFKA_CLEAN_SHUTDOWN).exists():
        columns = [_read_entries(directory / name) for name in
                   (checkpoint.KAFKA_HIGH_WATERMARKS, checkpoint.KAFKA_RECOVERY_POINTS, checkpoint.KAFKA_LOG_STARTS)]
        ends, recovery_points, starts = columns
        for key, end in ends.items():
            if key in recovery_points and key in starts:
                states[key] = CleanState(end, recovery_points[key], starts[key])
    checkpoint.remove_log_dir_checkpoints(directory)
    return states


def _read_entries(path: Path) -> dict[tuple[str, int], int]:
    entries: dict[tuple[str, int], int] = {}
    for line in checkpoint.read_lines(path) or ():
        parts = line.split(" ")
        if len(parts) != 3:
            return {}  # not a file we wrote: trust none of it
        try:
            key, offset = (parts[0], int(parts[1])), int(parts[2])
        except ValueError:
            return {}
        if offset < 0:
            return {}
        entries[key] = offset
    return entries


def sync_opened(directory: str | os.PathLike[str], logs: Sequence[PartitionLog], run: Runner = _serial) -> None:
    """After ``PartitionLog.open(sync=False)`` of ``logs``: one sync of the file system if any log wrote
    recovery results, then their ``synced()`` (recovery points advanced)."""
    pending = [plog for plog in logs if plog.unsynced]
    if not pending:
        return
    sync_file_systems([directory, *(plog.path for plog in pending)])
    run(PartitionLog.synced, pending)


def close_logs(directory: str | os.PathLike[str], logs: Sequence[PartitionLog], run: Runner = _serial) -> None:
    """Close every log of ``directory`` and mark the directory cleanly shut down (the module docstring's
    four steps). Every log is closed even when some fail; the first failure is raised, with no marker."""

    def close_one(plog: PartitionLog) -> BaseException | None:
        try:
            plog.close(sync=False)
        except BaseException as exc:  # every other log still closes; the first failure is raised below
            return exc
        return None

    failures = run(close_one, logs)
    closed = [plog for plog, failure in zip(logs, failures, strict=True) if failure is None]
    sync_file_systems([directory, *(plog.path for plog in closed)])
    run(PartitionLog.synced, closed)
    errors = [failure for failure in failures if failure is not None]
    if errors:
        raise errors[0]
    entries = sorted((plog.topic, plog.partition, plog.recovery_point, plog.log_start_offset, plog.log_end_offset) for plog in closed)
    try:
        checkpoint.write_log_dir_checkpoints(directory, entries, sync_files=lambda: sync_file_systems([directory]))
    except OSError as exc:
        log.warning("could not write the clean-shutdown checkpoints in %s (the next start recovers every log "
                    "from its recovery point): %s", directory, exc)
