"""linkd's cleaner keeps exactly what Apache Kafka's keeps, on the same batches.

Kafka is given a topic (``cleanup.policy=delete`` at first) and writes to it: keyed records, tombstones,
committed and aborted transactions, an idempotent producer. Its segment files are copied batch for batch into
a linkd log with the same segment boundaries; then the topic is switched to ``compact`` and Kafka's cleaner
runs. Both cleaned logs must hold the same batches (offsets, record offsets, control markers, producers), and
the same records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from linkd.storage.cleaner import clean_log
from protocol.records import decode_records, split_batches
from tests.storage.helpers import open_log

pytestmark = pytest.mark.kafka


def _kafka_logs(partition_dir: Path) -> list[Path]:
    return sorted(partition_dir.glob("*.log"))


def _shape(data: bytes) -> list[tuple]:
    """What must agree: per batch its offsets, producer, kind and the records kept (not CRCs or horizons)."""
    out = []
    for batch in split_batches(data).batches:
        batch.verify()
        records = decode_records(batch)
        out.append((batch.base_offset, batch.last_offset_delta, batch.producer_id, batch.producer_epoch,
                    batch.base_sequence, batch.is_transactional, batch.is_control,
                    tuple((r.offset, r.key, r.value, r.timestamp) for r in records)))
    return out


def _produce(bootstrap: str, topic: str) -> None:
    plain = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})
    txn = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "transactional.id": f"{topic}-txn"})
    txn.init_transactions(30)
    for round_ in range(6):
        for i in range(12):
            plain.produce(topic, key=b"k%d" % (i % 5), value=b"v%d-%d" % (round_, i) * 3)
        plain.produce(topic, key=b"k%d" % (round_ % 5), value=None)  # a tombstone
        plain.flush(30)
        txn.begin_transaction()
        txn.produce(topic, key=b"t%d" % (round_ % 3), value=b"in-txn-%d" % round_)
        txn.produce(topic, key=b"k1", value=b"txn-k1-%d" % round_)
        txn.flush(30)
        if round_ % 2:
            txn.abort_transaction(30)
        else:
            txn.commit_transaction(30)
        time.sleep(0.25)  # > segment.ms: the next write rolls a segment
    plain.produce(topic, key=b"last", value=b"rolls the active segment")
    plain.flush(30)


def test_linkd_keeps_the_same_batches_and_records_as_kafkas_cleaner(kafka_broker, unique_topic, tmp_path):
    kafka_broker.create_topic(unique_topic, 1, {"cleanup.policy": "delete", "retention.ms": "-1", "segment.ms": "200",
                                                "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "3600000"})
    _produce(kafka_broker.bootstrap, unique_topic)
    partition_dir = kafka_broker.data_dir / f"{unique_topic}-0"
    time.sleep(0.5)
    segments = _kafka_logs(partition_dir)
    assert len(segments) > 3

    log = open_log(tmp_path, cleanup_policy=("compact",), min_cleanable_dirty_ratio=0.01, delete_retention_ms=3_600_000,
                   segment_ms=2**40)
    for i, path in enumerate(segments):
        data = path.read_bytes()
        batches = split_batches(data).batches
        if i:
            log._roll(batches[0].base_offset)  # noqa: SLF001 - Kafka's segment boundaries, exactly
        log.append_mirrored(data)
    before = log.read(0, 1 << 30).to_bytes()

    resource = ConfigResource(ResourceType.TOPIC, unique_topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
    for future in kafka_broker.admin().incremental_alter_configs([resource]).values():
        future.result(30)
    assert clean_log(log) is not None
    ours = _shape(log.read(0, 1 << 30).to_bytes())
    assert ours != _shape(before)

    # Kafka's cleaner looks every log.cleaner.backoff.ms (15 s by default); its swap is done once no
    # .cleaned/.swap file is left and the segment files changed.
    deadline = time.monotonic() + 40
    theirs: list[tuple] = []
    while time.monotonic() < deadline:
        names = [p.name for p in partition_dir.iterdir()]
        if not any(n.endswith((".cleaned", ".swap")) for n in names):
            try:
                theirs = _shape(b"".join(p.read_bytes() for p in _kafka_logs(partition_dir)))
            except FileNotFoundError:
                theirs = []
            if theirs and theirs != _shape(before):
                break
        time.sleep(0.3)
    assert theirs, f"Kafka did not clean within 40 s:\n{kafka_broker.logs(30)}"
    assert ours == theirs
