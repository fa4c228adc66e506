"""Faults on the link: a source that stops, connections cut mid-stream, a source that comes back empty,
linkd killed mid-mirroring, and a source that serves a corrupt batch. After each, the mirror either holds
exactly the source's bytes (nothing lost, nothing twice) or stops with a typed error, never in between."""

from __future__ import annotations

import time

import pytest

from protocol.records import build_records, split_batches
from tests.link.fakesource import FakeSource, flip_crc
from tests.link.faultproxy import FaultProxy
from tests.link.mirroring import (
    admin,
    assert_bytes_identical,
    consume_all,
    create_link,
    produce_confluent,
    source_end,
    wait_for,
    wait_mirrored,
)
from tests.peers import rawclient


def _status(client, topic: str) -> dict:
    return client.describe_mirror(topic)


def _wait_status(client, topic: str, status: str, timeout: float, error: str | None = None) -> dict:
    def reached():
        d = client.describe_mirror(topic)
        return d if d["mirror_status"] == status and (error is None or d["mirror_topic_error"] == error) else None

    return wait_for(reached, timeout, f"mirror {topic} to be {status}" + (f" with {error}" if error else ""))


@pytest.mark.timeout(180)
def test_kafka_source_stopped_for_ten_seconds_then_mirroring_resumes_exactly(kafka_broker_factory, linkd):
    broker = kafka_broker_factory()
    source = broker.bootstrap
    topic = broker.create_topic("orders", partitions=2)
    produce_confluent(source, topic, [(n % 2, b"k%d" % n, b"before-%d" % n) for n in range(400)], **{"compression.type": "gzip"})
    client = admin(linkd)
    create_link(client, "kafka", source)
    client.create_mirror(topic, "kafka")
    produce_confluent(source, topic, [(n % 2, None, b"during-%d" % n) for n in range(200)])
    wait_mirrored(client, topic, {0: 300, 1: 300})

    broker.stop()
    stopped_at = time.monotonic()
    described = _wait_status(client, topic, "SOURCE_UNAVAILABLE", 10)
    assert described["mirror_topic_error"] == "NO_ERROR"
    assert client.describe_link("kafka")["link_state"] == "UNAVAILABLE"
    time.sleep(max(0.0, 10 - (time.monotonic() - stopped_at)))
    assert _status(client, topic)["mirror_status"] == "SOURCE_UNAVAILABLE"
    assert rawclient.list_offsets(linkd.bootstrap, topic, 0) == (0, 300)  # the mirror serves what it has

    broker.start()
    assert broker.bootstrap == source
    produce_confluent(source, topic, [(n % 2, None, b"after-%d" % n) for n in range(300)], **{"compression.type": "zstd"})
    ends = {p: broker.list_offsets(topic, p)[1] for p in range(2)}
    assert ends == {0: 450, 1: 450}
    described = wait_mirrored(client, topic, ends, timeout=60)
    _wait_status(client, topic, "ACTIVE", 20)
    for partition in range(2):
        assert_bytes_identical(source, topic, linkd.bootstrap, topic, partition, 0, ends[partition])
    records = consume_all(linkd.bootstrap, topic, 2, ends)
    assert len(records) == 900 and len({(p, o) for p, o, *_ in records}) == 900
    assert records == consume_all(source, topic, 2, ends)


@pytest.mark.timeout(120)
def test_connections_cut_between_linkd_and_its_source_lose_and_duplicate_nothing(linkd_factory, unique_topic):
    # The source is a linkd whose advertised address is the proxy, so every connection the link opens,
    # bootstrap and partition leader alike, goes through the proxy.
    source = linkd_factory(start=False)
    proxy = FaultProxy()
    try:
        source.extra_args += ["--advertised-listener", proxy.address]
        source.start()
        proxy.target = ("127.0.0.1", source.port)
        from confluent_kafka.admin import AdminClient, NewTopic

        source_admin = AdminClient({"bootstrap.servers": source.bootstrap, "log_level": 3})
        source_admin.create_topics([NewTopic(unique_topic, 2, 1)])[unique_topic].result(30)
        dest = linkd_factory()
        client = admin(dest)
        create_link(client, "via-proxy", proxy.address)
        client.create_mirror(unique_topic, "via-proxy")

        produced = cut = 0
        for round_ in range(6):
            produce_confluent(source.bootstrap, unique_topic, [(n % 2, b"r%d" % round_, b"round-%d-%d" % (round_, n) * 30) for n in range(150)])
            produced += 150
            # Once the link is connected again, cut it wherever it is: mid-fetch, mid-response, idle.
            wait_for(lambda: proxy.open_connections > 0, 15, "the link to reconnect through the proxy")
            time.sleep(0.1 * round_)
            cut += proxy.cut()
        assert cut >= 6
        proxy.block()
        _wait_status(client, unique_topic, "SOURCE_UNAVAILABLE", 15)
        proxy.unblock()
        ends = {p: source_end(source.bootstrap, unique_topic, p) for p in range(2)}
        assert sum(ends.values()) == produced
        wait_mirrored(client, unique_topic, ends, timeout=60)
        _wait_status(client, unique_topic, "ACTIVE", 20)
        assert proxy.accepted > 3  # the link really reconnected through the proxy
        for partition in range(2):
            assert_bytes_identical(source.bootstrap, unique_topic, dest.bootstrap, unique_topic, partition, 0, ends[partition])
    finally:
        proxy.close()


@pytest.mark.timeout(90)
def test_tansu_source_restarting_empty_fails_the_mirror_instead_of_mixing_histories(linkd, unique_topic):
    from tests.conftest import peer_unavailable
    from tests.peers import PeerUnavailable
    from tests.peers.tansu import TansuBroker

    try:
        tansu = TansuBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    with tansu:
        tansu.create_topic(unique_topic)
        produce_confluent(tansu.bootstrap, unique_topic, [(0, None, b"old-%d" % n) for n in range(60)])
        end = source_end(tansu.bootstrap, unique_topic, 0)
        client = admin(linkd)
        create_link(client, "tansu", tansu.bootstrap)
        client.create_mirror(unique_topic, "tansu")
        wait_mirrored(client, unique_topic, {0: end})
        mirrored = rawclient.fetch_raw(linkd.bootstrap, unique_topic, 0, 0)

        tansu.restart()  # in-memory storage: it comes back without the topic and its data
        tansu.create_topic(unique_topic)
        produce_confluent(tansu.bootstrap, unique_topic, [(0, None, b"new-%d" % n) for n in range(100)])
        described = _wait_status(client, unique_topic, "FAILED", 30, "UNEXPECTED_TRUNCATION")
        assert described["mirror_topic_error_message"]
        # Nothing of the new history was appended at the old offsets or after them.
        assert described["partitions"][0]["mirror_log_end_offset"] == end
        assert rawclient.fetch_raw(linkd.bootstrap, unique_topic, 0, 0) == mirrored


@pytest.mark.timeout(150)
def test_linkd_killed_mid_mirroring_resumes_from_its_own_log_end(kafka_broker, linkd_factory, unique_topic):
    source = kafka_broker.bootstrap
    kafka_broker.create_topic(unique_topic, partitions=2)
    produce_confluent(source, unique_topic, [(n % 2, b"%d" % n, b"payload-%06d-" % n * 8) for n in range(30000)], **{"batch.size": 16384})
    ends = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in range(2)}
    dest = linkd_factory()
    client = admin(dest)
    # Small fetches: mirroring takes many rounds, so the kill lands in the middle of it.
    create_link(client, "kafka", source, **{"replica.fetch.max.bytes": "4096", "replica.fetch.response.max.bytes": "8192"})
    client.create_mirror(unique_topic, "kafka")
    mirrored = wait_for(lambda: sum(p["mirror_log_end_offset"] for p in client.describe_mirror(unique_topic)["partitions"]) or None, 60, "mirroring under way", interval=0.02)
    dest.kill()
    assert mirrored < sum(ends.values()), "mirroring finished before the kill"
    dest.start()
    client = admin(dest)
    assert client.describe_mirror(unique_topic)["mirror_status"] == "ACTIVE"
    wait_mirrored(client, unique_topic, ends, timeout=90)
    for partition in range(2):
        assert_bytes_identical(source, unique_topic, dest.bootstrap, unique_topic, partition, 0, ends[partition])


@pytest.mark.timeout(60)
def test_corrupt_batch_from_the_source_fails_the_mirror_and_writes_none_of_it(linkd):
    with FakeSource("fake") as fake:
        good = build_records([b"good-%d" % n for n in range(5)], base_offset=0)
        fake.serve(good)
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap)
        client.create_mirror("fake", "fake")
        wait_mirrored(client, "fake", {0: 5})
        assert rawclient.fetch_raw(linkd.bootstrap, "fake", 0, 0) == good

        fake.serve(flip_crc(build_records([b"bad-%d" % n for n in range(5)], base_offset=5)))
        described = _wait_status(client, "fake", "FAILED", 20, "CORRUPT_BATCH")
        assert "partition 0" in described["mirror_topic_error_message"]
        assert described["partitions"][0]["mirror_log_end_offset"] == 5
        assert rawclient.list_offsets(linkd.bootstrap, "fake", 0) == (0, 5)
        assert rawclient.fetch_raw(linkd.bootstrap, "fake", 0, 0) == good
        # A failed mirror stops fetching.
        fetches = fake.fetches
        time.sleep(1.5)
        assert fake.fetches == fetches
        assert [b.base_offset for b in split_batches(rawclient.fetch_raw(linkd.bootstrap, "fake", 0, 0)).batches] == [0]


@pytest.mark.timeout(180)
def test_a_disk_that_refuses_writes_pauses_the_mirror_and_it_resumes_exactly_once_writes_work(kafka_broker, linkd, unique_topic):
    """The file-size limit (RLIMIT_FSIZE) makes linkd's writes past 2 MiB fail with EFBIG, as a full disk
    fails them with ENOSPC: the daemon keeps serving, and once the limit is lifted the mirror completes."""
    import resource

    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    limit = 2 << 20
    records = [(0, b"k%d" % i, random_bytes(1000, seed=i)) for i in range(5000)]  # ~5 MB, incompressible
    kafka_broker.create_topic(unique_topic, partitions=1)
    produce_confluent(kafka_broker.bootstrap, unique_topic, records, **{"compression.type": "none"})
    end = kafka_broker.list_offsets(unique_topic, 0)[1]
    _soft, hard = resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE, (limit, hard))

    client = admin(linkd)
    create_link(client, "disk", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "disk")

    def refused() -> bool:
        assert linkd.process.poll() is None, f"linkd exited on the refused write:\n{linkd.log_path.read_text()[-3000:]}"
        return "could not append" in linkd.log_path.read_text()

    wait_for(refused, 60, "linkd to log the refused append")
    stuck = _status(client, unique_topic)["partitions"][0]["mirror_log_end_offset"]
    assert 0 < stuck < end and _status(client, unique_topic)["mirror_status"] == "ACTIVE"
    assert "EFBIG" in linkd.log_path.read_text() or "File too large" in linkd.log_path.read_text()
    # What the mirror holds meanwhile is the source's prefix, and the daemon serves other clients.
    assert_bytes_identical(kafka_broker.bootstrap, unique_topic, linkd.bootstrap, unique_topic, 0, 0, stuck)
    local = f"{unique_topic}-local"
    topics = AdminClient({"bootstrap.servers": linkd.bootstrap, "log_level": 3})
    for future in topics.create_topics([NewTopic(local, 1)]).values():
        future.result(30)
    produce_confluent(linkd.bootstrap, local, [(0, b"k", b"still serving")])
    consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": "bystander", "auto.offset.reset": "earliest", "log_level": 3})
    consumer.subscribe([local])
    try:
        got = wait_for(lambda: (m := consumer.poll(0.5)) is not None and not m.error() and m.value(), 30, "the bystander's record")
    finally:
        consumer.close()
    assert got == b"still serving"

    resource.prlimit(linkd.process.pid, resource.RLIMIT_FSIZE, (hard, hard))  # space freed
    wait_mirrored(client, unique_topic, {0: end}, timeout=60)
    assert_bytes_identical(kafka_broker.bootstrap, unique_topic, linkd.bootstrap, unique_topic, 0, 0, end)
    assert linkd.process.poll() is None


def random_bytes(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)
