"""Kafka's own ``kafka.tools.DumpLogSegments`` (from the kafka_2.13 jar) reads cleaned segments cleanly:
every batch valid with ``--deep-iteration``, the offset and time indexes clean with ``--verify-index-only``
and ``--index-sanity-check``, the delete horizon the cleaner stamps visible to Kafka as such."""

from __future__ import annotations

import re
import subprocess

import pytest

from linkd.storage.cleaner import clean_log
from protocol.compression import Compression
from protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchSpec,
    NewRecord,
    build_batch,
    build_control_batch,
    decode_records,
    split_batches,
)
from tests.conftest import peer_unavailable
from tests.peers import PeerUnavailable
from tests.storage.helpers import BASE_TS, log_dir, open_log

pytestmark = pytest.mark.java

CONFIG = dict(segment_bytes=1500, index_interval_bytes=100, cleanup_policy=("compact",), delete_retention_ms=1000,
              min_cleanable_dirty_ratio=0.0)


@pytest.fixture(scope="module")
def dump_log_segments():
    from tests.peers.kafka import ensure_kafka_libs, java_binary

    try:
        libs, java = ensure_kafka_libs(), java_binary()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*",
                "kafka.tools.DumpLogSegments", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result
    return run


class _Writer:
    def __init__(self, log) -> None:
        self.log, self.offset, self.ts, self.seq = log, 0, BASE_TS, {}

    def data(self, pairs, codec=Compression.NONE, pid=-1, transactional=False) -> None:
        self.ts += 5
        seq = self.seq.get(pid, 0) if pid >= 0 else -1
        records = [NewRecord(key=k, value=v, timestamp=self.ts + i, headers=[("h", b"x")]) for i, (k, v) in enumerate(pairs)]
        self.log.append_mirrored(build_batch(BatchSpec(base_offset=self.offset, compression=codec, producer_id=pid,
                                                       producer_epoch=0 if pid >= 0 else -1, base_sequence=seq,
                                                       transactional=transactional, records=records)))
        if pid >= 0:
            self.seq[pid] = seq + len(pairs)
        self.offset += len(pairs) + 1  # a gap after every batch, as compaction upstream leaves them

    def marker(self, kind: int, pid: int) -> None:
        self.ts += 5
        self.log.append_mirrored(build_control_batch(kind, pid, 0, base_offset=self.offset, timestamp=self.ts))
        self.offset += 1


def _files(directory, suffix: str) -> str:
    return ",".join(str(p) for p in sorted(log_dir(directory).glob(f"*{suffix}")))


def _check_with_kafka(dump, directory) -> str:
    deep = dump("--deep-iteration", "--files", _files(directory, ".log"))
    assert "isvalid: false" not in deep.stdout and "invalid bytes" not in deep.stdout, deep.stdout
    assert "Exception" not in deep.stderr, deep.stderr
    verify = dump("--verify-index-only", "--files", _files(directory, ".index") + "," + _files(directory, ".timeindex"))
    for problem in ("Mismatches", "not found", "out of order", "Exception"):
        assert problem not in verify.stdout + verify.stderr, verify.stdout + verify.stderr
    sanity = dump("--index-sanity-check", "--files", _files(directory, ".index") + "," + _files(directory, ".timeindex"))
    assert "Exception" not in sanity.stderr, sanity.stderr
    return deep.stdout


def _our_offsets(log) -> list[int]:
    data = log.read(log.log_start_offset, 1 << 30).to_bytes()
    return [r.offset for b in split_batches(data).batches for r in decode_records(b)]


def test_kafka_dump_log_segments_reads_cleaned_segments(tmp_path, dump_log_segments):
    log = open_log(tmp_path, **CONFIG)
    w = _Writer(log)
    codecs = list(Compression)
    for round_ in range(6):
        codec = codecs[round_ % len(codecs)]
        w.data([(b"k%d" % (i % 5), b"value-%d-%d" % (round_, i)) for i in range(6)], codec=codec)
        w.data([(b"k1", None), (b"gone", b"soon")], codec=codec)  # a tombstone
        w.data([(b"t%d" % round_, b"committed")], pid=7, transactional=True)
        w.marker(CONTROL_COMMIT, 7)
        w.data([(b"k2", b"aborted")], pid=8, transactional=True)
        w.marker(CONTROL_ABORT, 8)
        w.data([(b"idem", b"v%d" % round_)], pid=9)  # an idempotent producer: its last batch must stay
    w.data([(b"roll", b"x")] * 40)  # roll past everything above
    before = _our_offsets(log)

    assert clean_log(log, w.ts, force=True) is not None
    first = _our_offsets(log)
    assert set(first) < set(before)
    log.close()
    stdout = _check_with_kafka(dump_log_segments, tmp_path)
    assert re.search(r"deleteHorizonMs: OptionalLong\[\d+\]", stdout), "no batch was stamped with a delete horizon"
    kafka_offsets = [int(m) for m in re.findall(r"^\| offset: (\d+)", stdout, re.M)]
    assert kafka_offsets == first

    log = open_log(tmp_path, **CONFIG)
    w.log = log
    w.data([(b"k3", b"late")] * 3)
    w.data([(b"roll2", b"x")] * 40)
    assert clean_log(log, w.ts + 10 * CONFIG["delete_retention_ms"], force=True) is not None
    second = _our_offsets(log)
    assert len(second) < len(first) + 43
    log.close()
    stdout = _check_with_kafka(dump_log_segments, tmp_path)
    assert [int(m) for m in re.findall(r"^\| offset: (\d+)", stdout, re.M)] == second
    assert " count: 0 " in stdout  # the idempotent producer's last batch, kept empty


def test_kafka_verifies_the_time_index_of_appended_multi_record_batches(tmp_path, dump_log_segments):
    """The time index names a batch by its last offset, as Kafka's does (it named the base offset, and
    ``--verify-index-only`` reported every multi-record batch as "indexed offset not found")."""
    log = open_log(tmp_path, index_interval_bytes=100)
    for i in range(20):
        records = [NewRecord(key=b"k%d" % j, value=b"v", timestamp=BASE_TS + i * 10 + j) for j in range(3)]
        log.append_mirrored(build_batch(BatchSpec(base_offset=i * 3, records=records)))
    log.close()
    _check_with_kafka(dump_log_segments, tmp_path)
    reopened = open_log(tmp_path, index_interval_bytes=100)
    assert reopened.max_timestamp_offset() == (57, BASE_TS + 192)  # still the batch's base offset
    reopened.close()
