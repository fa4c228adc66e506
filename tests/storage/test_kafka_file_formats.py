"""linkd's partition directories read with Apache Kafka 4.1's own readers, file by file.

Every segment kind linkd writes — mirrored (the source's batches verbatim: compressed, with offset gaps,
timestamps out of order, COMMIT and ABORT markers, several leader epochs), promoted (an ABORT marker
appended for a transaction left open, at the promotion epoch), produced (offsets and epoch assigned here)
and compacted (after linkd's cleaner ran) — passes ``kafka-dump-log --verify-index-only`` and
``--index-sanity-check``. The producer snapshots (``.snapshot``, Kafka's format), the leader-epoch
checkpoint, the recovery-point and log-start checkpoints and ``partition.metadata`` are read by Kafka's
``ProducerStateManager.readSnapshot``, ``LeaderEpochCheckpointFile``, ``OffsetCheckpointFile`` and
``PartitionMetadataFile`` (tests/peers/kafkatools/KafkaFiles.java) and hold what linkd holds.

And a Kafka 4.1 broker adopts such a directory: a KRaft broker keeps a partition directory whose
``partition.metadata`` names a topic id its cluster metadata has, and CreateTopics cannot choose ids, so the
test creates the topic in Kafka first and gives linkd's topic that id. Kafka, given linkd's partition
directory plus linkd's lines of the log-directory checkpoints and its clean-shutdown marker, loads it
without recovery or index rebuilding, from linkd's producer snapshot, and serves linkd's bytes.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from linkd.controlstore import ControlStore
from linkd.storage.checkpoint import (
    KAFKA_CLEAN_SHUTDOWN,
    KAFKA_HIGH_WATERMARKS,
    KAFKA_LOG_STARTS,
    KAFKA_RECOVERY_POINTS,
    kafka_uuid_text,
    write_partition_metadata,
)
from linkd.storage.cleaner import clean_log
from linkd.topics import TopicRegistry
from protocol.compression import Compression
from protocol.records import CONTROL_ABORT, CONTROL_COMMIT, BatchSpec, NewRecord, build_batch, build_control_batch
from tests.broker.wire import WireConnection
from tests.conftest import peer_unavailable
from tests.peers import PeerUnavailable
from tests.peers.rawclient import fetch_raw
from tests.storage.helpers import BASE_TS, TOPIC, log_dir, open_log

pytestmark = [pytest.mark.java, pytest.mark.timeout(180)]

CONFIG = dict(segment_bytes=1200, index_interval_bytes=100)
COMPACTED = dict(segment_bytes=1500, index_interval_bytes=100, cleanup_policy=("compact",), delete_retention_ms=1000,
                 min_cleanable_dirty_ratio=0.0)
CHECKPOINTS = ("recovery-point", "log-start-offset")
TOPIC_ID = "8e0f1a52-2b7c-4d63-9a1e-5c3b7d9e0f11"
TOPIC_ID_KAFKA_TEXT = "jg8aUit8TWOaHlw7fZ4PEQ"


@pytest.fixture(scope="module")
def tools():
    from tests.peers import kafkatools

    try:
        kafkatools.ensure_compiled()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    return kafkatools


class _Source:
    """Writes batches as a source cluster would have: its offsets, epochs, producers and timestamps."""

    def __init__(self, log) -> None:
        self.log, self.offset, self.ts, self.seq = log, 0, BASE_TS, {}

    def data(self, n: int, *, pid: int = -1, txn: bool = False, epoch: int = 0, codec=Compression.NONE,
             gap: int = 0, ts_step: int = 7, key: bytes | None = None) -> None:
        self.ts += ts_step
        seq = self.seq.get(pid, 0) if pid >= 0 else -1
        records = [NewRecord(key=key or b"k%d" % (i % 4), value=b"v%d-%d" % (self.offset, i) * 6, timestamp=self.ts + (i * 13) % 5)
                   for i in range(n)]
        self.log.append_mirrored(build_batch(BatchSpec(base_offset=self.offset, partition_leader_epoch=epoch, compression=codec,
                                                       producer_id=pid, producer_epoch=0 if pid >= 0 else -1, base_sequence=seq,
                                                       transactional=txn, records=records)))
        if pid >= 0:
            self.seq[pid] = seq + n
        self.offset += n + gap

    def marker(self, kind: int, pid: int, epoch: int = 0) -> None:
        self.ts += 3
        self.log.append_mirrored(build_control_batch(kind, pid, 0, base_offset=self.offset, partition_leader_epoch=epoch, timestamp=self.ts))
        self.offset += 1


def _mirrored_promoted_produced(directory: Path):
    return _fill(open_log(directory, **CONFIG))


def _fill(log):
    """Mirrored batches, then a promotion's ABORT marker, then produced batches (see the module docstring)."""
    src = _Source(log)
    codecs = list(Compression)
    for round_ in range(4):
        src.data(3, pid=5, codec=codecs[round_ % len(codecs)], epoch=round_ // 2)  # idempotent, compressed
        src.data(2, gap=3, ts_step=-40, epoch=round_ // 2)  # offsets left out upstream, an older timestamp
        src.data(2, pid=7, txn=True, epoch=round_ // 2)
        src.marker(CONTROL_COMMIT, 7, epoch=round_ // 2)
        src.data(1, pid=8, txn=True, epoch=round_ // 2)
        src.marker(CONTROL_ABORT, 8, epoch=round_ // 2)
    src.data(2, pid=9, txn=True, epoch=3)  # left open at the source
    # Promotion: linkd aborts what is still open, at the bumped epoch (linkd.link.manager does this).
    log.append_mirrored(build_control_batch(CONTROL_ABORT, 9, 0, base_offset=log.log_end_offset, partition_leader_epoch=4, timestamp=src.ts + 1))
    # Produced after promotion: offsets and epoch assigned by linkd.
    for i in range(8):
        records = [NewRecord(key=b"p", value=b"produced-%d" % i * 8, timestamp=src.ts + 100 + i * 3 + j) for j in range(3)]
        log.append_assigned(build_batch(BatchSpec(producer_id=20, producer_epoch=0, base_sequence=3 * i, records=records)), leader_epoch=4)
        log.append_assigned(build_batch(BatchSpec(records=[NewRecord(value=b"plain-%d" % i, timestamp=src.ts + 90)])), leader_epoch=4)
    return log


def _compacted(directory: Path):
    log = open_log(directory, **COMPACTED)
    src = _Source(log)
    for round_ in range(5):
        src.data(6, codec=list(Compression)[round_ % len(Compression)])
        src.data(1, pid=7, txn=True, key=b"t%d" % round_)
        src.marker(CONTROL_COMMIT, 7)
        src.data(1, pid=8, txn=True)
        src.marker(CONTROL_ABORT, 8)
        src.data(1, pid=9)
    for _ in range(4):
        src.data(10, key=b"roll")
    assert clean_log(log, src.ts, force=True) is not None
    return log


def _expected(log) -> dict:
    return {
        "epochs": [f"epoch {e} {o}" for e, o in log.epoch_entries()],
        "checkpoints": [f"checkpoint recovery-point {TOPIC} 0 {log.log_end_offset}", f"checkpoint log-start-offset {TOPIC} 0 {log.log_start_offset}"],
        "producers": {(p.producer_id, p.epoch, p.last_sequence, p.txn_start_offset) for p in log.producer_states()},
        "end": log.log_end_offset,
    }


def _files(directory: Path, *suffixes: str) -> str:
    return ",".join(str(p) for s in suffixes for p in sorted(directory.glob(f"*{s}")))


@pytest.mark.parametrize("kind", ["mirrored_promoted_produced", "compacted"])
def test_kafkas_readers_accept_every_file_linkd_writes(tools, tmp_path, kind):
    log = (_mirrored_promoted_produced if kind != "compacted" else _compacted)(tmp_path)
    log.flush()
    expected = _expected(log)
    log.close()
    directory = log_dir(tmp_path)
    write_partition_metadata(directory, uuid.UUID(TOPIC_ID))
    assert len(list(directory.glob("*.log"))) >= 3, "the test needs several segments"
    Tool = tools.Tool
    indexes = _files(directory, ".index", ".timeindex")
    deep, verify, sanity, txn, snapshots, files = tools.run_tools([
        Tool("kafka-dump-log", "--deep-iteration", "--files", _files(directory, ".log")),
        Tool("kafka-dump-log", "--verify-index-only", "--files", indexes),
        Tool("kafka-dump-log", "--index-sanity-check", "--files", indexes),
        Tool("kafka-dump-log", "--files", _files(directory, ".txnindex")),
        Tool("kafka-dump-log", "--files", _files(directory, ".snapshot")),
        Tool("kafka-files", str(directory), *CHECKPOINTS),
    ])
    for result in (deep, verify, sanity, txn, snapshots, files):
        assert result.exit_code == 0, f"{result.tool.args[:2]}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
        assert "Exception" not in result.stdout + result.stderr, result.stdout[-3000:] + result.stderr[-3000:]
    assert "isvalid: false" not in deep.stdout and "invalid bytes" not in deep.stdout
    for problem in ("Mismatches", "not found", "out of order", "not the same"):
        assert problem not in verify.stdout, verify.stdout
    assert "passed sanity check" in sanity.stdout and "failed" not in sanity.stdout.lower(), sanity.stdout

    lines = files.lines()
    assert [line for line in lines if line.startswith("epoch ")] == expected["epochs"]
    assert sorted(line for line in lines if line.startswith("checkpoint ")) == sorted(expected["checkpoints"])
    assert [line for line in lines if line.startswith("topic_id ")] == [f"topic_id {TOPIC_ID_KAFKA_TEXT}"]
    newest = f"{expected['end']:020d}.snapshot"
    producers = {tuple(int(x) for x in (f[2], f[3], f[4], f[9])) for f in (line.split() for line in lines) if f[0] == "producer" and f[1] == newest}
    assert producers == expected["producers"] and producers, lines
    assert "producerId:" in snapshots.stdout  # kafka-dump-log reads the same files


def test_directories_without_kafka_snapshots_get_them_at_the_next_flush(tmp_path):
    """Partition directories written before ``.snapshot`` files existed open as before (linkd reads its own
    snapshot) and gain Kafka's file with the next snapshot; stale Kafka files never outlive linkd's."""
    log = _mirrored_promoted_produced(tmp_path)
    log.flush()
    before = log.producer_states()
    log.close()
    directory = log_dir(tmp_path)
    for f in directory.glob("*.snapshot"):
        f.unlink()
    (directory / f"{7:020d}.snapshot").write_bytes(b"stale")  # as if a crash left one between the two writes
    log = open_log(tmp_path, **CONFIG)
    assert log.producer_states() == before
    log.append_assigned(build_batch(BatchSpec(records=[NewRecord(value=b"x", timestamp=BASE_TS)])), leader_epoch=4)
    log.flush()
    ours = sorted(int(p.name[:20]) for p in directory.glob("*.producer-snapshot"))
    kafkas = sorted(int(p.name[:20]) for p in directory.glob("*.snapshot"))
    assert kafkas == [log.log_end_offset] and ours[-1] == log.log_end_offset
    assert re.fullmatch(r"\d{20}\.snapshot", f"{kafkas[0]:020d}.snapshot")
    log.close()


def _merge_checkpoint(kafka_file: Path, linkd_file: Path, partition_dir: str) -> None:
    """Kafka's log-directory checkpoint with its line for ``partition_dir`` replaced by linkd's."""
    topic, _, partition = partition_dir.rpartition("-")
    def entries(path: Path) -> list[str]:
        return path.read_text().splitlines()[2:] if path.exists() else []
    ours = [e for e in entries(linkd_file) if e.split(" ")[:2] == [topic, partition]]
    assert len(ours) == 1, linkd_file.read_text()
    kept = [e for e in entries(kafka_file) if e.split(" ")[:2] != [topic, partition]] + ours
    kafka_file.write_text("\n".join(["0", str(len(kept)), *kept]) + "\n")


@pytest.mark.timeout(240)
def test_a_kafka_broker_adopts_a_linkd_partition_directory_without_recovery(kafka_broker_factory, tmp_path):
    kafka = kafka_broker_factory()
    kafka.create_topic("adopted", 1)
    with WireConnection(kafka.bootstrap) as conn:
        meta = conn.request(3, 12, {"topics": [{"name": "adopted", "topic_id": uuid.UUID(int=0)}], "allow_auto_topic_creation": False})
    topic_id = meta["topics"][0]["topic_id"]
    kafka.stop()

    registry = TopicRegistry(ControlStore(tmp_path / "control.db"), tmp_path / "logs")
    registry.load()
    topic = registry.create("adopted", 1, {"segment.bytes": "1200", "index.interval.bytes": "100"}, topic_id=topic_id)
    plog = _fill(topic.logs[0])
    end = plog.log_end_offset
    served = plog.read(0, 1 << 20).to_bytes()
    registry.close()
    linkd_dir = tmp_path / "logs"
    assert (linkd_dir / KAFKA_CLEAN_SHUTDOWN).exists()

    target = kafka.data_dir / "adopted-0"
    shutil.rmtree(target)
    shutil.copytree(linkd_dir / "adopted-0", target)
    for name in (KAFKA_RECOVERY_POINTS, KAFKA_LOG_STARTS, KAFKA_HIGH_WATERMARKS):
        _merge_checkpoint(kafka.data_dir / name, linkd_dir / name, "adopted-0")
    shutil.copy(linkd_dir / KAFKA_CLEAN_SHUTDOWN, kafka.data_dir / KAFKA_CLEAN_SHUTDOWN)  # linkd's, not Kafka's
    seen = kafka.log_path.stat().st_size
    kafka.start()
    assert kafka.list_offsets("adopted", 0) == (0, end)
    assert fetch_raw(kafka.bootstrap, "adopted", 0, 0, end) == served  # linkd's bytes, served by Kafka

    lines = [line for line in kafka.log_path.read_text()[seen:].splitlines() if "adopted-0" in line]
    text = "\n".join(lines)
    assert f"Completed load of Log(dir={target}" in text and f"logEndOffset={end}" in text, text
    assert f"Loading producer state from snapshot file 'SnapshotFile(offset={end}" in text, text
    assert f"0ms for segment recovery from offset {end}" in text, text  # nothing replayed past linkd's snapshot
    assert f"initial high watermark {end}" in text, text
    for rebuild in ("Recovering unflushed segment", "rebuilding index", "corrupted index", "Deleting", "stray", "Found invalid", "truncat"):
        assert rebuild.lower() not in text.lower().replace("caused truncation of conflicting entries", ""), text
    # Not asserted, metadata and not files: linkd's marker has no broker epoch, so Kafka's controller cannot
    # tell the shutdown was clean and elects the only replica with an "UNCLEAN partition change" (nothing
    # is lost: there is no other replica); and the partition's leader epoch in Kafka's metadata (2) is
    # below the mirrored epochs (3, 4), so Kafka drops those epoch-cache entries when it becomes leader.


def test_registry_writes_kafkas_directory_files_on_close_and_takes_the_marker_back_on_open(tmp_path):
    """Older data directories gain ``partition.metadata`` on open; Kafka's log-directory files exist only
    between a clean close and the next open, so a copy taken while linkd runs (or after a crash) is recovered
    from its segments and never trusts stale offsets."""
    store = ControlStore(tmp_path / "control.db")
    registry = TopicRegistry(store, tmp_path / "logs")
    registry.load()
    topic = registry.create("older", 2)
    topic.logs[1].append_assigned(build_batch(BatchSpec(records=[NewRecord(value=b"x", timestamp=BASE_TS)] * 3)), leader_epoch=0)
    logs = tmp_path / "logs"
    (logs / "older-0" / "partition.metadata").unlink()  # as a directory written before the file existed
    registry.close()
    assert (logs / KAFKA_CLEAN_SHUTDOWN).read_text() == '{"version":0,"brokerEpoch":-1}'
    assert (logs / KAFKA_RECOVERY_POINTS).read_text() == "0\n2\nolder 0 0\nolder 1 3\n"
    assert (logs / KAFKA_HIGH_WATERMARKS).read_text() == "0\n2\nolder 0 0\nolder 1 3\n"
    assert (logs / KAFKA_LOG_STARTS).read_text() == "0\n2\nolder 0 0\nolder 1 0\n"

    reopened = TopicRegistry(store, logs)
    reopened.load()
    for name in (KAFKA_CLEAN_SHUTDOWN, KAFKA_RECOVERY_POINTS, KAFKA_LOG_STARTS, KAFKA_HIGH_WATERMARKS):
        assert not (logs / name).exists(), name
    for p in (0, 1):
        assert (logs / f"older-{p}" / "partition.metadata").read_text() == f"version: 0\ntopic_id: {kafka_uuid_text(topic.topic_id)}\n"
    reopened.close()
