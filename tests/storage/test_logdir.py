"""``linkd.storage.logdir``: many logs closed with a few file-system syncs and one log-directory marker,
reopened without reading their own checkpoints; a close cut short at any step, a crash after the open,
and a directory a linkd before this change closed (per-partition markers) all reopen without loss."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from linkd.storage import LogConfig, PartitionLog, checkpoint, logdir

from .helpers import batch

PARTITIONS = 4


def _open_all(directory: Path, clean=None) -> list[PartitionLog]:
    clean = logdir.take_clean_shutdown(directory) if clean is None else clean
    logs = [PartitionLog.open(directory / f"t-{p}", LogConfig(segment_bytes=600), "t", p, clean=clean.get(("t", p)), sync=False)
            for p in range(PARTITIONS)]
    logdir.sync_opened(directory, logs)
    return logs


def _fill(logs: list[PartitionLog], rounds: int) -> dict[int, bytes]:
    for plog in logs:
        for _ in range(rounds):
            plog.append_mirrored(batch(plog.log_end_offset, 3, epoch=1 + plog.partition))
    return {plog.partition: plog.read(0, 1 << 20).to_bytes() for plog in logs}


def _assert_same(logs: list[PartitionLog], contents: dict[int, bytes]) -> None:
    for plog in logs:
        assert plog.read(0, 1 << 20).to_bytes() == contents[plog.partition]
        assert plog.epoch_entries()[-1][0] == 1 + plog.partition


def test_a_clean_close_of_many_logs_syncs_twice_and_the_reopen_reads_no_per_partition_checkpoint(tmp_path, monkeypatch, caplog):
    logs = _open_all(tmp_path)
    contents = _fill(logs, 5)
    syncs = []
    real_sync = logdir.sync_file_systems
    monkeypatch.setattr(logdir, "sync_file_systems", lambda paths: (syncs.append(1), real_sync(paths)))
    fsyncs = []
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    logdir.close_logs(tmp_path, logs)
    assert len(syncs) == 2
    assert len(fsyncs) == 2  # the marker's file and directory; nothing per partition
    for p in range(PARTITIONS):
        assert not (tmp_path / f"t-{p}" / "clean-shutdown").exists()
        assert checkpoint.read_offset_checkpoint(tmp_path / f"t-{p}" / "recovery-point") == logs[p].log_end_offset
        # The log directory's checkpoints stand for these: a reopen must not read them.
        (tmp_path / f"t-{p}" / "recovery-point").write_text("garbage")
    monkeypatch.undo()
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        reopened = _open_all(tmp_path)
    assert "no clean shutdown" not in caplog.text
    assert not (tmp_path / checkpoint.KAFKA_CLEAN_SHUTDOWN).exists()  # taken: a crash from now on is unclean
    _assert_same(reopened, contents)
    for plog in reopened:
        plog.abandon()


@pytest.mark.parametrize("crash_at", ["first sync", "second sync", "marker"])
def test_a_close_cut_short_at_any_step_reopens_by_recovery_without_loss(tmp_path, monkeypatch, crash_at, caplog):
    """The process dies in the first sync (nothing durable yet), the second (recovery points written, the
    checkpoints not yet), or writing the marker: each reopen recovers every log and loses nothing."""
    logs = _open_all(tmp_path)
    contents = _fill(logs, 4)

    class Crash(Exception):
        pass

    syncs = []
    real_sync, real_write = logdir.sync_file_systems, checkpoint.atomic_write

    def sync(paths):
        syncs.append(1)
        if crash_at == ("first sync", "second sync")[min(len(syncs), 2) - 1]:
            raise Crash
        real_sync(paths)

    def write(path, data, sync=True):
        if crash_at == "marker" and Path(path).name == checkpoint.KAFKA_CLEAN_SHUTDOWN:
            raise Crash
        real_write(path, data, sync)

    monkeypatch.setattr(logdir, "sync_file_systems", sync)
    monkeypatch.setattr(checkpoint, "atomic_write", write)
    with pytest.raises(Crash):
        logdir.close_logs(tmp_path, logs)
    monkeypatch.undo()
    assert not (tmp_path / checkpoint.KAFKA_CLEAN_SHUTDOWN).exists()
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        reopened = _open_all(tmp_path)
    assert caplog.text.count("no clean shutdown") == PARTITIONS
    _assert_same(reopened, contents)
    for plog in reopened:
        plog.abandon()


def test_recovery_after_a_crash_advances_the_recovery_points_after_the_sync_and_keeps_the_lower_files(tmp_path, monkeypatch):
    """A crash restart moves each recovery point to its log end once the sync made the logs durable, and
    leaves the recovery-point files, which hold a lower offset (here none: "from the first segment"), as
    they are: a file per partition rewritten was a fifth of a 10,000-partition crash restart. A second
    crash re-verifies from the lower point and loses nothing; the next clean close writes the files."""
    logs = _open_all(tmp_path)
    contents = _fill(logs, 6)
    for plog in logs:
        assert plog.recovery_point == 0
        plog.abandon()  # SIGKILL: nothing flushed
    order = []
    real_sync, real_write = logdir.sync_file_systems, checkpoint.write_offset_checkpoint
    monkeypatch.setattr(logdir, "sync_file_systems", lambda paths: (order.append("sync"), real_sync(paths)))
    monkeypatch.setattr(checkpoint, "write_offset_checkpoint", lambda path, *a, **k: (order.append(Path(path).name), real_write(path, *a, **k)))
    reopened = _open_all(tmp_path)
    assert order == ["sync"]  # one sync, and no recovery-point file rewritten
    for plog in reopened:
        assert plog.recovery_point == plog.log_end_offset
        assert checkpoint.read_offset_checkpoint(Path(plog.path) / "recovery-point") is None
    _assert_same(reopened, contents)
    for plog in reopened:
        plog.abandon()
    monkeypatch.undo()
    again = _open_all(tmp_path)
    _assert_same(again, contents)
    logdir.close_logs(tmp_path, again)
    for plog in again:
        assert checkpoint.read_offset_checkpoint(Path(plog.path) / "recovery-point") == plog.log_end_offset


def test_a_recovery_that_cuts_below_the_recovery_point_file_rewrites_it_synced_before_the_logs_serve(tmp_path, monkeypatch):
    """A flipped byte in flushed data: recovery cuts below what the recovery-point file vouches for, so
    the file is lowered (and fsynced, though the open asked for no fsyncs): kept, it would let the next
    crash skip verifying the appends that follow the cut."""
    logs = _open_all(tmp_path)
    _fill(logs, 3)
    for plog in logs:
        plog.flush()
        plog.abandon()
    damaged = Path(logs[0].path)
    first = damaged / f"{0:020d}.log"
    data = bytearray(first.read_bytes())
    data[40] ^= 0x01  # under the first batch's CRC
    first.write_bytes(bytes(data))
    written = []
    real_write = checkpoint.write_offset_checkpoint
    def write(path, topic, partition, offset, sync=True):
        written.append((Path(path).parent.name, Path(path).name, (topic, partition, offset, sync)))
        real_write(path, topic, partition, offset, sync)

    monkeypatch.setattr(checkpoint, "write_offset_checkpoint", write)
    reopened = _open_all(tmp_path)
    cut = reopened[0]
    assert cut.log_end_offset == 0 and cut.recovery_point == 0
    assert written == [("t-0", "recovery-point", ("t", 0, 0, True))]  # lowered, synced; the others untouched
    assert checkpoint.read_offset_checkpoint(damaged / "recovery-point") == 0
    for plog in reopened[1:]:
        assert checkpoint.read_offset_checkpoint(Path(plog.path) / "recovery-point") == plog.log_end_offset == 9
    for plog in reopened:
        plog.abandon()


def test_a_directory_closed_by_the_per_partition_markers_of_earlier_linkd_opens_clean_and_a_later_crash_is_seen(tmp_path, caplog):
    # What TopicRegistry.close wrote before logdir: each log's close() with its own marker, then Kafka's files.
    logs = _open_all(tmp_path)
    contents = _fill(logs, 3)
    for plog in logs:
        plog.close()
    checkpoint.write_log_dir_checkpoints(tmp_path, sorted((p.topic, p.partition, p.recovery_point, p.log_start_offset, p.log_end_offset) for p in logs))
    old = tmp_path.parent / "old-copy"
    shutil.copytree(tmp_path, old)
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        reopened = _open_all(tmp_path)
    assert "no clean shutdown" not in caplog.text
    _assert_same(reopened, contents)
    assert not list(tmp_path.rglob("clean-shutdown"))  # taken: no stale marker outlives this start
    for plog in reopened:
        plog.abandon()  # crash
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        again = _open_all(tmp_path)
    assert caplog.text.count("no clean shutdown") == PARTITIONS
    _assert_same(again, contents)
    for plog in again:
        plog.abandon()
    # Without Kafka's files (a copy cut short), the per-partition markers alone still open it cleanly.
    for name in (checkpoint.KAFKA_CLEAN_SHUTDOWN, checkpoint.KAFKA_RECOVERY_POINTS):
        (old / name).unlink()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="linkd.storage"):
        from_old = _open_all(old)
    assert "no clean shutdown" not in caplog.text
    _assert_same(from_old, contents)
    for plog in from_old:
        plog.abandon()


def test_a_registry_closes_and_recovers_its_partitions_with_a_few_fsyncs_whatever_their_number(tmp_path, monkeypatch):
    """The daemon's path (``TopicRegistry.close``/``load``): before ``logdir`` each partition's close cost
    about ten fsyncs and each recovery more; now the count does not grow with the partitions."""
    from linkd.controlstore import ControlStore
    from linkd.topics import TopicRegistry

    partitions = 20
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))

    def registry():
        store = ControlStore(tmp_path / "control.db")
        return store, TopicRegistry(store, tmp_path / "logs")

    store, topics = registry()
    topics.load()
    topics.create("many", partitions, {})
    for plog in topics.get("many").logs:
        plog.append_mirrored(batch(0, 3, epoch=2))
    fsyncs.clear()
    topics.close()
    store.close()
    assert len(fsyncs) <= 3, len(fsyncs)  # the marker's file and directory

    store, topics = registry()
    topics.load()
    for plog in topics.get("many").logs:
        plog.append_mirrored(batch(3, 3, epoch=3))
        plog.abandon()  # SIGKILL
    store.close()
    fsyncs.clear()
    store, topics = registry()
    topics.load()
    assert len(fsyncs) <= 3, len(fsyncs)
    for plog in topics.get("many").logs:
        assert plog.log_end_offset == 6 and plog.recovery_point == 6
        assert [e[0] for e in plog.epoch_entries()] == [2, 3]
    topics.close()
    store.close()
