"""Mirroring from Apache Kafka (the reference source): byte identity, offsets, transactions, read-only
mirrors, describe, pause/resume, partition growth and a source log start that moves past the mirror."""

from __future__ import annotations

import os

import pytest

from protocol.errors import ErrorCode
from protocol.records import Compression, build_records, split_batches
from tests.link.mirroring import (
    admin,
    assert_bytes_identical,
    cli_json,
    consume_all,
    create_link,
    mirror_ends,
    produce_confluent,
    wait_for,
    wait_mirrored,
)
from tests.peers import rawclient

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def _produce_kafka_python(bootstrap: str, topic: str, partition: int, codec: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec, linger_ms=5, batch_size=64 * 1024)
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=b"kp-%d" % i, value=value, partition=partition)
        producer.flush(60)
    finally:
        producer.close(10)


@pytest.mark.timeout(150)
def test_every_codec_from_both_clients_is_mirrored_byte_for_byte(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic, partitions=3)
    # Before the mirror exists: every codec from librdkafka, spread over the partitions.
    for i, codec in enumerate(CODECS):
        produce_confluent(source, unique_topic, [(i % 3, b"k%d" % n, b"%s-%d-" % (codec.encode(), n) * 20) for n in range(300)], **{"compression.type": codec})
    # Large batches: 1 MiB batches of 4 KiB records, compressed and not.
    big = [(1, None, os.urandom(2048) + b"x" * 2048) for _ in range(600)]
    produce_confluent(source, unique_topic, big, **{"batch.size": 1_000_000, "linger.ms": 200, "compression.type": "none"})
    produce_confluent(source, unique_topic, big, **{"batch.size": 1_000_000, "linger.ms": 200, "compression.type": "zstd"})

    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")

    # While mirroring runs: kafka-python with each codec it can write, and librdkafka again.
    for i, codec in enumerate(CODECS):  # the test extra installs python-snappy, lz4 and zstandard for kafka-python
        _produce_kafka_python(source, unique_topic, (i + 1) % 3, codec, [b"py-%s-%d" % (codec.encode(), n) * 10 for n in range(200)])
    produce_confluent(source, unique_topic, [(n % 3, None, b"live-%d" % n) for n in range(500)], **{"compression.type": "lz4"})

    ends = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in range(3)}
    wait_mirrored(client, unique_topic, ends, timeout=90)
    codecs_seen = set()
    for partition in range(3):
        data = assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])
        batches = split_batches(data).batches
        assert batches[-1].next_offset == ends[partition]
        codecs_seen |= {b.compression for b in batches}
    assert codecs_seen == {Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD}
    assert mirror_ends(client, unique_topic) == ends
    # And a consumer sees the same (offset, key, value, timestamp) on both sides.
    on_mirror = consume_all(linkd.bootstrap, unique_topic, 3, ends)
    assert len(on_mirror) == sum(ends.values())
    assert on_mirror == consume_all(source, unique_topic, 3, ends)


@pytest.mark.timeout(120)
def test_transactions_mirror_verbatim_and_read_committed_sees_only_commits(kafka_broker, linkd, unique_topic):
    from confluent_kafka import Producer

    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic, partitions=2)
    producer = Producer({"bootstrap.servers": source, "transactional.id": f"tx-{unique_topic}", "log_level": 3, "compression.type": "snappy"})
    producer.init_transactions(30)
    committed = []
    for txn in range(6):
        producer.begin_transaction()
        values = [b"txn%d-%d" % (txn, n) for n in range(25)]
        for n, value in enumerate(values):
            producer.produce(unique_topic, key=b"k%d" % n, value=value, partition=n % 2)
        assert producer.flush(30) == 0  # written to the log before the outcome, so an abort leaves records and a marker
        if txn % 3 == 2:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed += values
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    # More transactions while mirroring runs, one of them aborted.
    for txn in range(6, 9):
        producer.begin_transaction()
        values = [b"txn%d-%d" % (txn, n) for n in range(10)]
        for n, value in enumerate(values):
            producer.produce(unique_topic, value=value, partition=n % 2)
        assert producer.flush(30) == 0
        if txn == 7:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed += values

    ends = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in range(2)}
    wait_mirrored(client, unique_topic, ends)
    for partition in range(2):
        data = assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])
        kinds = {(b.is_control, b.control_type() if b.is_control else None) for b in split_batches(data).batches}
        assert (True, 0) in kinds and (True, 1) in kinds, "both ABORT and COMMIT markers are mirrored"

    on_source = consume_all(source, unique_topic, 2, ends)
    on_mirror = consume_all(linkd.bootstrap, unique_topic, 2, ends)
    assert on_mirror == on_source
    assert len(on_mirror) == 9 * 25 - 3 * 15 and len(on_mirror) == len({(p, o) for p, o, *_ in on_mirror})
    committed_on_mirror = consume_all(linkd.bootstrap, unique_topic, 2, ends, isolation="read_committed")
    assert sorted(v for *_, v, _ in committed_on_mirror) == sorted(committed)
    assert committed_on_mirror == consume_all(source, unique_topic, 2, ends, isolation="read_committed")


@pytest.mark.timeout(90)
def test_producing_to_a_mirror_is_refused_and_appends_nothing(kafka_broker, linkd, unique_topic):
    from confluent_kafka import KafkaError, Producer

    kafka_broker.create_topic(unique_topic)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"v%d" % n) for n in range(10)])
    client = admin(linkd)
    create_link(client, "kafka", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 10})

    errors = []
    producer = Producer({"bootstrap.servers": linkd.bootstrap, "log_level": 3, "message.timeout.ms": 10000, "retries": 0, "enable.idempotence": False})
    producer.produce(unique_topic, value=b"intruder", partition=0, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(20)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_REQUEST
    # The broker's message, as Cluster Linking words it (librdkafka drops it from delivery reports).
    with pytest.raises(rawclient.RawClientError) as refused:
        rawclient.produce_raw(linkd.bootstrap, unique_topic, 0, build_records([b"raw intruder"]))
    assert refused.value.error_code == ErrorCode.INVALID_REQUEST
    assert f"Cannot append records to read-only mirror topic '{unique_topic}'" in str(refused.value)
    assert rawclient.list_offsets(linkd.bootstrap, unique_topic, 0) == (0, 10)
    assert_bytes_identical(kafka_broker.bootstrap, unique_topic, linkd.bootstrap, unique_topic, 0)


@pytest.mark.timeout(90)
def test_cli_describe_json_carries_the_contract_fields(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, partitions=2)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(n % 2, None, b"d%d" % n) for n in range(40)])
    created = cli_json(linkd, "link", "create", "src", "--bootstrap-server", kafka_broker.bootstrap, "--config", "metadata.max.age.ms=1000")
    assert created["link_name"] == "src" and created["link_state"] == "ACTIVE"
    mirror = cli_json(linkd, "mirror", "create", "copy", "--link", "src", "--source-topic", unique_topic, "--wait", "--wait-timeout", "60")
    assert mirror["mirror_status"] == "ACTIVE"

    described = cli_json(linkd, "mirror", "describe", "copy")
    assert described["mirror_topic_name"] == "copy"
    assert described["link_name"] == "src"
    assert described["source_topic_name"] == unique_topic
    assert described["mirror_status"] == "ACTIVE"
    assert described["mirror_topic_error"] == "NO_ERROR"
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    for p in described["partitions"]:
        assert set(p) >= {"partition", "mirror_log_end_offset", "last_source_fetch_offset", "source_high_watermark", "lag"}
        assert p["mirror_log_end_offset"] == p["source_high_watermark"] == p["last_source_fetch_offset"] == 20
        assert p["lag"] == 0
    for partition in range(2):
        assert_bytes_identical(kafka_broker.bootstrap, unique_topic, linkd.bootstrap, "copy", partition)
    listed = cli_json(linkd, "mirror", "list", "--link", "src")
    assert [m["mirror_topic_name"] for m in listed] == ["copy"]


@pytest.mark.timeout(120)
def test_create_errors_exit_nonzero_with_one_line_and_change_nothing(kafka_broker, linkd, unique_topic):
    from tests.peers import free_port

    kafka_broker.create_topic(unique_topic)
    cli_json(linkd, "link", "create", "good", "--bootstrap-server", kafka_broker.bootstrap)
    cli_json(linkd, "mirror", "create", unique_topic, "--link", "good")

    def state():
        links = [(k["link_name"], k["bootstrap_servers"], k["configs"], k["topic_names"]) for k in cli_json(linkd, "link", "list")]
        mirrors = [(m["mirror_topic_name"], m["link_name"], m["source_topic_name"], m["mirror_status"]) for m in cli_json(linkd, "mirror", "list")]
        topics = sorted(t.name for t in rawclient.metadata(linkd.bootstrap).topics)
        return links, mirrors, topics

    before = state()
    unreachable = f"127.0.0.1:{free_port()}"
    cases = [
        (("link", "create", "bad1", "--bootstrap-server", kafka_broker.bootstrap, "--config", "no.such.key=1"), "no.such.key"),
        (("link", "create", "bad2", "--bootstrap-server", unreachable), unreachable),
        (("mirror", "create", "m-missing", "--link", "good", "--source-topic", "no-such-topic-anywhere"), "no-such-topic-anywhere"),
        (("mirror", "create", unique_topic, "--link", "good"), unique_topic),
        (("mirror", "create", "other", "--link", "no-such-link", "--source-topic", unique_topic), "no-such-link"),
    ]
    for argv, named in cases:
        result = linkd.cli(*argv, "--json")
        assert result.returncode != 0, f"{argv} succeeded: {result.stdout}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], f"{argv}: stderr {result.stderr!r}"
        assert "Traceback" not in result.stderr
        assert state() == before, f"{argv} changed something"
    # The unreachable source is accepted when validation is turned off, on purpose.
    created = cli_json(linkd, "link", "create", "later", "--bootstrap-server", unreachable, "--no-validate")
    assert created["link_name"] == "later"


@pytest.mark.timeout(120)
def test_paused_mirror_does_not_fetch_and_resume_catches_up(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic)
    produce_confluent(source, unique_topic, [(0, None, b"a%d" % n) for n in range(50)])
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 50})

    paused = cli_json(linkd, "mirror", "pause", unique_topic)
    assert paused[0]["mirror_status"] == "PAUSED"
    fetches = client.describe_link("kafka")["statistics"]["fetch_requests"]
    produce_confluent(source, unique_topic, [(0, None, b"b%d" % n) for n in range(70)])
    import time

    time.sleep(3)  # well past metadata refreshes and fetch waits
    described = client.describe_mirror(unique_topic)
    assert described["mirror_status"] == "PAUSED"
    assert described["partitions"][0]["mirror_log_end_offset"] == 50
    assert rawclient.list_offsets(linkd.bootstrap, unique_topic, 0) == (0, 50)
    assert client.describe_link("kafka")["statistics"]["fetch_requests"] <= fetches + 1  # one may have been in flight

    resumed = cli_json(linkd, "mirror", "resume", unique_topic)
    assert resumed[0]["mirror_status"] == "ACTIVE"
    wait_mirrored(client, unique_topic, {0: 120})
    assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, 0, 0, 120)


@pytest.mark.timeout(120)
def test_source_partition_increase_grows_the_mirror(kafka_broker, linkd, unique_topic):
    from confluent_kafka.admin import NewPartitions

    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic, partitions=1)
    produce_confluent(source, unique_topic, [(0, None, b"p%d" % n) for n in range(20)])
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 20})

    kafka_broker.admin().create_partitions([NewPartitions(unique_topic, 3)])[unique_topic].result(30)
    wait_for(lambda: all(kafka_broker._partition_ready(unique_topic, p) for p in range(3)), 30, "new source partitions")
    produce_confluent(source, unique_topic, [(n % 3, None, b"q%d" % n) for n in range(60)])
    ends = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in range(3)}
    described = wait_mirrored(client, unique_topic, ends)
    assert len(described["partitions"]) == 3
    meta = rawclient.metadata(linkd.bootstrap)
    assert {len(t.partitions) for t in meta.topics if t.name == unique_topic} == {3}
    for partition in range(3):
        assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])


@pytest.mark.timeout(120)
def test_source_log_start_past_the_mirror_end_is_skipped_and_recorded_as_a_gap(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic)
    # One small batch per produce call so DeleteRecords cuts between batches.
    for n in range(10):
        produce_confluent(source, unique_topic, [(0, None, b"first-%d" % n)])
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(unique_topic, "kafka")
    wait_mirrored(client, unique_topic, {0: 10})
    client.mirror_action("pause", [unique_topic])
    for n in range(20):
        produce_confluent(source, unique_topic, [(0, None, b"second-%d" % n)])
    # Everything the mirror has not fetched yet is deleted: its next offset (10) is below the source start.
    assert kafka_broker.delete_records(unique_topic, 0, 30) == 30
    client.mirror_action("resume", [unique_topic])

    def gap_seen():
        d = client.describe_mirror(unique_topic)
        return d if d["gaps"] and d["partitions"][0]["last_source_fetch_offset"] == 30 else None

    described = wait_for(gap_seen, 30, "the skipped range in describe")
    assert described["mirror_status"] == "ACTIVE"
    assert [(g["partition"], g["from_offset"], g["to_offset"]) for g in described["gaps"]] == [(0, 10, 30)]
    assert described["partitions"][0]["mirror_log_end_offset"] == 10  # the mirror keeps what it has

    # A restart resumes past the gap instead of fetching the deleted range again (and recording it twice).
    linkd.restart()
    client = admin(linkd)
    wait_for(lambda: client.describe_mirror(unique_topic)["partitions"][0]["last_source_fetch_offset"] == 30, 30, "fetching to resume at 30")
    for n in range(5):
        produce_confluent(source, unique_topic, [(0, None, b"third-%d" % n)])
    described = wait_mirrored(client, unique_topic, {0: 35})
    assert len(described["gaps"]) == 1
    assert described["partitions"][0]["lag"] == 0
    # The mirror holds the source's bytes on both sides of the hole, and nothing in it.
    assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, 0, 30, 35)
    held = [(b.base_offset, b.next_offset) for b in split_batches(rawclient.fetch_raw(linkd.bootstrap, unique_topic, 0, 0)).batches]
    assert [o for base, nxt in held for o in range(base, nxt)] == [*range(10), *range(30, 35)]
