"""The real-peer harness itself: brokers come up, serve, survive what they should, and the clients work."""

from __future__ import annotations

import pytest

from tests.peers import rawclient
from tests.peers.java import java_consume, java_produce


def _produce_confluent(bootstrap: str, topic: str, values: list[bytes], partition: int = 0, **config) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3, **config})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


@pytest.mark.timeout(120)
def test_kafka_broker_serves_produced_records_raw(kafka_broker, unique_topic):
    kafka_broker.create_topic(unique_topic, partitions=2)
    _produce_confluent(kafka_broker.bootstrap, unique_topic, [b"a%d" % i for i in range(25)], partition=1)
    assert rawclient.list_offsets(kafka_broker.bootstrap, unique_topic, 1) == (0, 25)
    assert rawclient.list_offsets(kafka_broker.bootstrap, unique_topic, 0) == (0, 0)
    raw = rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, 1, 0, 25)
    spans = rawclient.whole_batches(raw)
    assert spans[0][2] == 0 and spans[-1][3] == 24
    assert sum(end - begin for begin, end, _, _ in spans) == len(raw)


@pytest.mark.timeout(120)
def test_fetch_raw_stops_at_end_offset_and_loops_over_small_fetches(kafka_broker, unique_topic):
    kafka_broker.create_topic(unique_topic)
    for _chunk in range(5):  # five flushes: at least five batches
        _produce_confluent(kafka_broker.bootstrap, unique_topic, [b"x" * 200] * 10)
    # max_bytes below one batch: the broker still returns one whole batch per Fetch, so this loops.
    everything = rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, 0, 0, max_bytes=64)
    assert rawclient.whole_batches(everything)[-1][3] == 49
    part = rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, 0, 10, 30)
    spans = rawclient.whole_batches(part)
    assert spans[0][2] <= 10 and spans[-1][3] >= 29 and spans[-1][2] < 30
    assert part in everything


@pytest.mark.timeout(120)
def test_kafka_delete_records_moves_log_start(kafka_broker, unique_topic):
    kafka_broker.create_topic(unique_topic)
    _produce_confluent(kafka_broker.bootstrap, unique_topic, [b"v"] * 10)
    kafka_broker.delete_records(unique_topic, 0, 4)
    assert kafka_broker.list_offsets(unique_topic, 0) == (4, 10)


@pytest.mark.timeout(240)
def test_private_kafka_broker_keeps_data_across_restart_and_kill(kafka_broker_factory):
    broker = kafka_broker_factory()
    broker.create_topic("durable")
    _produce_confluent(broker.bootstrap, "durable", [b"d%d" % i for i in range(20)])
    before = rawclient.fetch_raw(broker.bootstrap, "durable", 0, 0)
    address = broker.bootstrap
    broker.restart()
    assert broker.bootstrap == address
    assert rawclient.fetch_raw(broker.bootstrap, "durable", 0, 0) == before
    broker.kill()
    broker.start()
    # acks=all on one node is acknowledged once in the page cache, which a SIGKILL of the JVM keeps.
    assert rawclient.fetch_raw(broker.bootstrap, "durable", 0, 0) == before


@pytest.mark.timeout(60)
def test_tansu_serves_produced_records_raw(tansu_broker, unique_topic):
    tansu_broker.create_topic(unique_topic)
    _produce_confluent(tansu_broker.bootstrap, unique_topic, [b"t%d" % i for i in range(30)])
    raw = rawclient.fetch_raw(tansu_broker.bootstrap, unique_topic, 0, 0)
    spans = rawclient.whole_batches(raw)
    assert spans[0][2] == 0 and spans[-1][3] == 29


@pytest.mark.tansu
@pytest.mark.timeout(60)
def test_tansu_restart_comes_back_empty():
    from tests.peers.tansu import TansuBroker

    with TansuBroker() as broker:
        broker.create_topic("gone")
        _produce_confluent(broker.bootstrap, "gone", [b"x"] * 3)
        broker.restart()
        meta = rawclient.metadata(broker.bootstrap)
        assert "gone" not in {t.name for t in meta.topics}


@pytest.mark.timeout(180)
def test_java_client_produces_idempotently_and_consumes_in_a_group(kafka_broker, java_client, unique_topic):
    kafka_broker.create_topic(unique_topic, partitions=2)
    produced = java_produce(kafka_broker.bootstrap, unique_topic, 200, compression="lz4")
    assert len(produced.acks) == 200
    assert produced.summary["sent"] == 200
    consumed = java_consume(kafka_broker.bootstrap, unique_topic, f"g-{unique_topic}", 200, timeout_ms=60_000)
    assert consumed.consumed == 200
    assert sorted((p, o) for p, o, *_ in consumed.records) == sorted(produced.acks)
    assert {v for *_, v, _ts in consumed.records} == {f"v{i}" for i in range(200)}
    ends = {p: hi for p, (_lo, hi) in ((p, kafka_broker.list_offsets(unique_topic, p)) for p in (0, 1))}
    assert consumed.committed == ends
    # The producer was idempotent: every batch carries a producer id and sequence numbers.
    from protocol.records import split_batches

    for partition in (0, 1):
        for batch in split_batches(rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, partition, 0)).batches:
            assert batch.producer_id >= 0 and batch.base_sequence >= 0 and batch.compression == 3


@pytest.mark.timeout(60)
def test_linkd_fixture_answers_metadata_and_comes_back_after_kill(linkd):
    assert {b.port for b in rawclient.metadata(linkd.bootstrap).brokers} == {linkd.port}
    linkd.kill()
    linkd.start()  # same ports, same data directory
    assert rawclient.metadata(linkd.bootstrap).brokers
    assert linkd.stop() == 0, linkd.logs()


@pytest.mark.timeout(60)
def test_linkd_factory_runs_independent_daemons(linkd_factory):
    first, second = linkd_factory(), linkd_factory()
    assert first.bootstrap != second.bootstrap and first.data_dir != second.data_dir
    assert rawclient.metadata(first.bootstrap).brokers and rawclient.metadata(second.bootstrap).brokers


@pytest.mark.timeout(30)
def test_missing_maven_is_reported_as_unavailable(tmp_path, monkeypatch):
    from tests.peers import PeerUnavailable
    from tests.peers.kafka import ensure_kafka_libs

    monkeypatch.setenv("LINKD_PEERS_CACHE", str(tmp_path))  # nothing resolved here
    monkeypatch.setenv("PATH", str(tmp_path))  # and no mvn to resolve it with
    with pytest.raises(PeerUnavailable, match="Maven"):
        ensure_kafka_libs()


@pytest.mark.timeout(30)
def test_unavailable_peer_skips_locally_and_fails_under_ci(monkeypatch):
    from tests.conftest import peer_unavailable

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        peer_unavailable("no JDK")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no JDK"):
        peer_unavailable("no JDK")
