"""Recovery on a full file system (a tmpfs this test mounts; root only): the log opens read-only, appends and
flushes raise ENOSPC naming no lost data, and once space returns the deferred writes land and appends resume."""

from __future__ import annotations

import errno
import os

import pytest

from linkd.storage.checkpoint import read_offset_checkpoint
from tests.smallfs import fill, small_tmpfs

from .helpers import batch, log_dir, open_log, segment_files

CONFIG = {"segment_bytes": 2048, "index_interval_bytes": 1}


@pytest.fixture
def small_fs():
    with small_tmpfs("1m", prefix="linkd-fullfs-") as mount:
        yield mount



@pytest.mark.timeout(30)
def test_recovery_on_a_full_disk_serves_read_only_and_resumes_when_space_returns(small_fs, caplog):
    data = small_fs / "data"
    log = open_log(data, **CONFIG)
    blobs = [batch(i * 2, 2) for i in range(40)]
    for blob in blobs:
        log.append_mirrored(blob)
    log.abandon()  # a crash: indexes unwritten, no clean-shutdown marker
    for index in segment_files(data, ".index"):
        index.write_bytes(b"")
    filler = small_fs / "filler"
    fill(filler)
    assert os.statvfs(small_fs).f_bavail == 0

    log = open_log(data, **CONFIG)
    assert "recovery could not write" in caplog.text and str(log_dir(data)) in caplog.text
    assert log.log_end_offset == 80
    assert log.read(37, 1 << 20).to_bytes() == b"".join(blobs[18:])  # offset 37 sits in batch 18 (36..37)
    with pytest.raises(OSError) as refused:
        log.append_mirrored(batch(80, 2))
    assert refused.value.errno == errno.ENOSPC and refused.value.filename
    with pytest.raises(OSError):
        log.flush()
    assert log.log_end_offset == 80

    filler.unlink()
    log.append_mirrored(batch(80, 2))
    assert log.flush() == 82
    assert read_offset_checkpoint(log_dir(data) / "recovery-point") == 82
    assert all(index.stat().st_size > 0 for index in segment_files(data, ".index")[:-1])
    log.close()

    log = open_log(data, **CONFIG)
    assert log.read(0, 1 << 20).to_bytes().startswith(blobs[0])
    assert log.log_end_offset == 82
    log.close()
