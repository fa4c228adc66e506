"""``mirror describe`` says how far the log cleaner compacted a mirror (Apache Kafka as the source): per
partition ``cleaned_up_to`` in ``mirror_lags`` (and its ``partitions`` alias), null for a mirror that was
never cleaned, and a CLEANED UP TO column in the human table once the cleaner ran."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from tests.link.mirroring import admin, create_link, produce_confluent, wait_for, wait_mirrored

pytestmark = pytest.mark.timeout(60)

KEYS = 4
ROUNDS = 8


def _produce_spaced(bootstrap: str, topic: str, count: int) -> None:
    """One record per batch, timestamps a second apart: with segment.ms=100 every batch starts a segment."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1, "log_level": 3})
    base = int(time.time() * 1000) - 600_000
    for i in range(count):
        producer.produce(topic, key=b"key-%d" % (i % KEYS), value=b"round-%d" % (i // KEYS), partition=0, timestamp=base + i * 1000)
        producer.flush(10)
    assert producer.flush(10) == 0


def test_describe_reports_how_far_a_compacted_mirror_was_cleaned(kafka_broker, linkd_factory, unique_topic):
    linkd = linkd_factory(extra_args=["--log-cleaner-backoff-ms", "200"])
    compacted, plain = f"{unique_topic}-c", f"{unique_topic}-p"
    kafka_broker.create_topic(compacted, 1, config={"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"})
    kafka_broker.create_topic(plain, 1)
    _produce_spaced(kafka_broker.bootstrap, compacted, KEYS * ROUNDS)
    produce_confluent(kafka_broker.bootstrap, plain, [(0, b"k", b"v%d" % i) for i in range(10)])

    client = admin(linkd)
    create_link(client, "l", kafka_broker.bootstrap)
    for topic in (compacted, plain):
        client.create_mirror(topic, "l")
    wait_mirrored(client, plain, {0: 10})
    wait_mirrored(client, compacted, {0: KEYS * ROUNDS})

    def cleaned():
        described = client.describe_mirror(compacted)
        [p] = described["mirror_lags"]
        return described if p["cleaned_up_to"] is not None else None

    described = wait_for(cleaned, 20, "the log cleaner to compact the mirror")
    [p] = described["mirror_lags"]
    # The active segment is never cleaned: the cleaner stops above the log start and at or below its end.
    assert 0 < p["cleaned_up_to"] <= p["mirror_log_end_offset"] == KEYS * ROUNDS
    assert described["partitions"][0]["cleaned_up_to"] == p["cleaned_up_to"]

    [q] = client.describe_mirror(plain)["mirror_lags"]
    assert "cleaned_up_to" in q and q["cleaned_up_to"] is None

    table = linkd.cli("mirror", "describe", compacted)
    assert table.returncode == 0, table.stderr
    header, row = [line for line in table.stdout.splitlines() if line.strip().startswith(("PARTITION", "0 "))][:2]
    assert header.rstrip().endswith("CLEANED UP TO")
    # The cleaner keeps going meanwhile (the synced segment.ms rolls the mirror's segments): the table shows
    # a value between the REST answer before it and one after it, never another partition's or a stale one.
    after = client.describe_mirror(compacted)["mirror_lags"][0]["cleaned_up_to"]
    assert p["cleaned_up_to"] <= int(row.split()[-1]) <= after
    plain_table = linkd.cli("mirror", "describe", plain).stdout
    assert "CLEANED UP TO" not in plain_table  # the column shows only once the cleaner ran on the mirror
