"""Lag an alert can rely on: it keeps growing while a mirror is paused (the link reads the source's end
without fetching), and while the source is down or a blackholing network path eats every request the
offset lag says unknown (null, absent from /metrics) while the time lag keeps growing. describe, list and
/metrics agree, since they share one formula."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from kafka.protocol.producer import ProduceRequest

from protocol.records import build_records
from tests.broker.clients import create_topic
from tests.link.faultproxy import FaultProxy
from tests.link.mirroring import admin, create_link, produce_confluent, wait_for, wait_mirrored
from tests.peers import rawclient

pytestmark = pytest.mark.timeout(90)


def _scrape(daemon) -> str:
    return httpx.get(f"{daemon.admin_url}/metrics", timeout=10).text


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _lag(client, topic: str, partition: int = 0):
    return client.describe_mirror(topic)["mirror_lags"][partition]["lag"]


def test_the_lag_of_a_paused_mirror_grows_with_the_source(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"a%d" % i) for i in range(100)])
    client = admin(linkd)
    create_link(client, "l", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "l")
    wait_mirrored(client, unique_topic, {0: 100})
    client.mirror_action("pause", [unique_topic])

    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"b%d" % i) for i in range(50)])
    wait_for(lambda: _lag(client, unique_topic) == 50, 20, "lag 50 while paused")
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"c%d" % i) for i in range(70)])
    wait_for(lambda: _lag(client, unique_topic) == 120, 20, "lag 120 while paused")

    described = client.describe_mirror(unique_topic)
    assert described["mirror_status"] == "PAUSED"
    assert described["mirror_lags"][0]["source_high_watermark"] == 220
    assert described["mirror_lags"][0]["last_fetch_time_ms"] is not None
    assert described["max_per_partition_mirror_lag"] == 120
    assert client.list_mirrors("l")[0]["max_per_partition_mirror_lag"] == 120
    scraped = _scrape(linkd)
    assert _sample(scraped, "linkd_mirror_partition_lag", topic=unique_topic, partition="0") == 120
    first = _sample(scraped, "linkd_mirror_partition_lag_seconds", topic=unique_topic, partition="0")
    time.sleep(1.2)
    later = _sample(_scrape(linkd), "linkd_mirror_partition_lag_seconds", topic=unique_topic, partition="0")
    assert first > 0 and later > first


def test_while_the_source_is_down_the_lag_is_unknown_and_the_time_lag_grows(kafka_broker_factory, linkd, unique_topic):
    source = kafka_broker_factory()
    source.create_topic(unique_topic, 1)
    produce_confluent(source.bootstrap, unique_topic, [(0, None, b"a%d" % i) for i in range(100)])
    client = admin(linkd)
    create_link(client, "l", source.bootstrap, **{"request.timeout.ms": "2000"})
    client.create_mirror(unique_topic, "l")
    wait_mirrored(client, unique_topic, {0: 100})
    wait_for(lambda: _lag(client, unique_topic) == 0, 10, "lag 0")
    source.kill()

    wait_for(lambda: _lag(client, unique_topic) is None, 30, "the lag to become unknown")
    scraped = _scrape(linkd)
    assert _sample(scraped, "linkd_mirror_partition_lag", topic=unique_topic) is None  # absent, not 0
    first = _sample(scraped, "linkd_mirror_partition_lag_seconds", topic=unique_topic)
    time.sleep(1.2)
    later = _sample(_scrape(linkd), "linkd_mirror_partition_lag_seconds", topic=unique_topic)
    assert first > 0 and later > first + 1
    assert client.describe_mirror(unique_topic)["max_per_partition_mirror_lag"] is None
    listed = linkd.cli("mirror", "list", "--json")
    assert [m["max_per_partition_mirror_lag"] for m in json.loads(listed.stdout)] == [None]
    assert linkd.cli("mirror", "list").stdout.splitlines()[1].rstrip().endswith("unknown")


def _produce_direct(port: int, topic: str, values: list[bytes]) -> None:
    """Produce on a connection to ``port`` itself, not to the (proxied) address the broker advertises."""
    with rawclient.RawConnection("127.0.0.1", port) as conn:
        data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_records(values))
        response = conn.request(ProduceRequest, 9, transactional_id=None, acks=-1, timeout_ms=10_000, topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])])
    assert response.responses[0].partition_responses[0].error_code == 0


def test_through_a_blackholing_path_the_lag_is_unknown_not_zero_and_the_time_lag_grows(linkd_factory, unique_topic):
    source = linkd_factory(start=False)
    proxy = FaultProxy()
    try:
        source.extra_args += ["--advertised-listener", proxy.address]
        source.start()
        proxy.target = ("127.0.0.1", source.port)
        create_topic(source.bootstrap, unique_topic)
        _produce_direct(source.port, unique_topic, [b"a%d" % i for i in range(50)])
        dest = linkd_factory()
        client = admin(dest)
        create_link(client, "via-proxy", proxy.address, **{"request.timeout.ms": "2000"})
        client.create_mirror(unique_topic, "via-proxy")
        wait_mirrored(client, unique_topic, {0: 50})
        wait_for(lambda: _lag(client, unique_topic) == 0, 10, "lag 0")

        proxy.blackhole()
        for round_ in range(4):  # the source keeps growing behind the dead path
            _produce_direct(source.port, unique_topic, [b"r%d-%d" % (round_, i) for i in range(25)])
            time.sleep(0.5)
        wait_for(lambda: _lag(client, unique_topic) is None, 30, "the lag to become unknown")
        first = _sample(_scrape(dest), "linkd_mirror_partition_lag_seconds", topic=unique_topic)
        time.sleep(1.2)
        later = _sample(_scrape(dest), "linkd_mirror_partition_lag_seconds", topic=unique_topic)
        assert first > 0 and later > first + 1
        assert _sample(_scrape(dest), "linkd_mirror_partition_lag", topic=unique_topic) is None

        proxy.restore()
        wait_mirrored(client, unique_topic, {0: 150}, timeout=40)
        wait_for(lambda: _lag(client, unique_topic) == 0, 20, "lag 0 again")
    finally:
        proxy.close()
