"""Small files that must be replaced atomically: offset checkpoints and the clean-shutdown marker.

Every write goes to ``<name>.tmp``, is fsynced, renamed over ``<name>`` and the directory is fsynced, so a
reader sees either the old or the new file, never a mix. A ``.tmp`` left behind by a crash is deleted on open;
a file that does not parse is treated as absent (the caller falls back to a slower but safe path).

Offset checkpoint (``recovery-point``, ``log-start-offset``), Kafka's text checkpoint layout for one
partition::

    0                      version
    1                      number of entries
    <topic> <partition> <offset>

Partition metadata (``partition.metadata``), Kafka's, naming the topic id a partition directory belongs to
(Kafka's uuid text: URL-safe base64 of the 16 bytes, no padding)::

    version: 0
    topic_id: <topic id>

Kafka's log-directory files, in the directory holding the partition directories, written when every log
there has been closed cleanly (``write_log_dir_checkpoints``) so a Kafka broker given a copy of the
directory loads it without recovery: ``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint``
and ``replication-offset-checkpoint`` (the offset checkpoint layout above, one line per partition; linkd
is the only replica, so its high watermark is the log end), then ``.kafka_cleanshutdown``
(``{"version":0,"brokerEpoch":-1}``: no broker epoch). linkd reads them too, at its next start
(``logdir.take_clean_shutdown``): a partition with a line in all three opens as cleanly shut down without
reading its own files; it removes them (the marker first) before opening any log.

Clean-shutdown marker (``clean-shutdown``), written last by a single log's ``close()`` and removed first by
``open()`` (a daemon closes its logs together, ``logdir.close_logs``, and writes the log directory's marker
above instead)::

    0                      version
    <log end offset>       what the log ended at; a mismatch on open means "not clean after all"
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"
PARTITION_METADATA_FILE = "partition.metadata"
KAFKA_RECOVERY_POINTS = "recovery-point-offset-checkpoint"
KAFKA_LOG_STARTS = "log-start-offset-checkpoint"
KAFKA_HIGH_WATERMARKS = "replication-offset-checkpoint"
KAFKA_CLEAN_SHUTDOWN = ".kafka_cleanshutdown"
CHECKPOINT_VERSION = 0


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, sync: bool = True) -> None:
    """Replace ``path`` by ``data`` (temp file, fsync, rename, fsync directory). ``sync=False`` skips both
    fsyncs: only for a caller that syncs the whole file system afterwards (``logdir``) and whose reader
    copes with the old file, or none, after a crash before that sync."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # A full disk must not also leak the half-written temp file, and the error names the file it hit.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(tmp)) from exc
        raise
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The whole file in four system calls (open, fstat, read, close): ``open()``'s buffered reader adds an
    ioctl, a second fstat and a read at the end, and a start reads several small files per partition.
    Raises ``FileNotFoundError`` (and any other ``OSError``) as ``open`` does."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        parts = []
        while size > 0:
            chunk = os.read(fd, size)
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def remove_temp_files(directory: str | os.PathLike[str]) -> list[str]:
    """Delete half-written checkpoints a crash left behind; return their names for the log."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name.endswith(TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def read_lines(path: str | os.PathLike[str]) -> list[str] | None:
    """The non-empty lines of a text checkpoint whose version and count lines agree, else None."""
    try:
        text = read_file(path).decode("ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if not text.endswith("\n"):
        return None  # torn write (cannot happen with atomic_write, but a copied file might be cut)
    lines = text.split("\n")[:-1]
    if len(lines) < 2 or lines[0] != str(CHECKPOINT_VERSION):
        return None
    try:
        count = int(lines[1])
    except ValueError:
        return None
    if count != len(lines) - 2:
        return None
    return lines[2:]


def write_offset_checkpoint(path: str | os.PathLike[str], topic: str, partition: int, offset: int, sync: bool = True) -> None:
    atomic_write(path, f"{CHECKPOINT_VERSION}\n1\n{topic} {partition} {offset}\n".encode("ascii"), sync)


def read_offset_checkpoint(path: str | os.PathLike[str]) -> int | None:
    lines = read_lines(path)
    if not lines or len(lines) != 1:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    try:
        offset = int(parts[2])
        int(parts[1])
    except ValueError:
        return None
    return offset if offset >= 0 else None


def _offsets_text(entries: list[tuple[str, int, int]]) -> bytes:
    lines = [str(CHECKPOINT_VERSION), str(len(entries))] + [f"{t} {p} {o}" for t, p, o in entries]
    return ("\n".join(lines) + "\n").encode()


def write_log_dir_checkpoints(directory: str | os.PathLike[str], partitions: list[tuple[str, int, int, int, int]],
                              sync_files: Callable[[], None] | None = None) -> None:
    """Kafka's log-directory checkpoints for ``(topic, partition, recovery point, log start, high watermark)``
    of every partition, then Kafka's clean-shutdown marker. Only after every log was closed cleanly.
    ``sync_files``: the three checkpoints are written unsynced and made durable by it (one file-system
    sync) before the marker; without it each is fsynced as it is written."""
    directory = Path(directory)
    sync = sync_files is None
    atomic_write(directory / KAFKA_RECOVERY_POINTS, _offsets_text([(t, p, r) for t, p, r, _s, _h in partitions]), sync)
    atomic_write(directory / KAFKA_LOG_STARTS, _offsets_text([(t, p, s) for t, p, _r, s, _h in partitions]), sync)
    atomic_write(directory / KAFKA_HIGH_WATERMARKS, _offsets_text([(t, p, h) for t, p, _r, _s, h in partitions]), sync)
    if sync_files is not None:
        sync_files()
    atomic_write(directory / KAFKA_CLEAN_SHUTDOWN, b'{"version":0,"brokerEpoch":-1}')


def remove_log_dir_checkpoints(directory: str | os.PathLike[str]) -> None:
    """Before any log opens: from now on a copy of the directory is not a cleanly shut down one, and its
    offsets would go stale (a truncation could leave a recovery point past the log end), so Kafka's
    log-directory files go, the marker first; Kafka recovers a copy that has none from its segments."""
    removed = False
    for name in (KAFKA_CLEAN_SHUTDOWN, KAFKA_RECOVERY_POINTS, KAFKA_LOG_STARTS, KAFKA_HIGH_WATERMARKS):
        try:
            os.unlink(Path(directory) / name)
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        fsync_dir(directory)


def kafka_uuid_text(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).decode("ascii").rstrip("=")


def write_partition_metadata(directory: str | os.PathLike[str], topic_id: uuid.UUID) -> None:
    """Record ``topic_id`` in the partition directory unless it already says so.

    Written whole (temp file, rename) but not fsynced: linkd keeps topic ids in its control store and never
    reads this file, which is for Kafka's tools; a crash that loses it is repaired at the next start, which
    rewrites any that is missing or not whole. Two fsyncs per partition made creating a 10-partition mirror
    cost 20 of them. A file of the right size is taken as written (one ``stat``, where reading it back was
    an open, two reads and a close per partition at every start): a partition directory only ever holds
    its own topic's id (``TopicRegistry`` removes a stale directory before it creates a partition in it)."""
    path = os.path.join(directory, PARTITION_METADATA_FILE)
    data = f"version: 0\ntopic_id: {kafka_uuid_text(topic_id)}\n".encode("ascii")
    try:
        if os.stat(path).st_size == len(data):
            return
    except FileNotFoundError:
        pass
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_clean_shutdown(path: str | os.PathLike[str], log_end_offset: int) -> None:
    atomic_write(path, f"{CHECKPOINT_VERSION}\n{log_end_offset}\n".encode("ascii"))


def take_clean_shutdown(path: str | os.PathLike[str]) -> int | None:
    """Read and durably remove the marker, so a crash from now on is seen as unclean. Returns the log end
    offset it recorded, or None when the last shutdown was not clean."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        text = ""
    os.unlink(path)
    fsync_dir(path.parent)
    lines = text.split("\n")
    if len(lines) != 3 or lines[0] != str(CHECKPOINT_VERSION) or lines[2] != "":
        return None
    try:
        return int(lines[1])
    except ValueError:
        return None
