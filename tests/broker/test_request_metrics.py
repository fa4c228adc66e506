"""Request counts and latency per API key (``linkd_requests_total{api}``, ``linkd_request_duration_seconds{api}``):
the pure bookkeeping, then a real client's Produce and Fetch moving exactly their own series on /metrics."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from linkd.broker.requeststats import BUCKETS, RequestStats, api_key_of
from tests.broker.clients import create_topic


def test_buckets_are_cumulative_and_an_unknown_api_key_is_one_series():
    stats = RequestStats()
    for frame in (b"\x00\x00rest", b"\x00\x00", b"\x7f\xffrest", b"\x04\xd2x", b"\x01"):
        key = api_key_of(frame)
        stats.arrived(key)
        stats.answered(key, 0.003)
    stats.answered(0, BUCKETS[-1] * 2)  # slower than the last bound: +Inf only
    by_api = {api: (arrived, dict(buckets), seconds, answered) for api, arrived, buckets, seconds, answered in stats.snapshot()}
    assert set(by_api) == {"Produce", "unknown"}
    arrived, buckets, seconds, answered = by_api["Produce"]
    assert (arrived, answered) == (2, 3)
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 2 and buckets[repr(BUCKETS[-1])] == 2 and buckets["+Inf"] == 3
    assert seconds == pytest.approx(0.006 + BUCKETS[-1] * 2)
    assert by_api["unknown"][0] == 3  # 0x7fff, 1234 and a frame too short to hold a key


def _scrape(daemon) -> dict[tuple[str, str], float]:
    """(sample name, api) -> value for the request series."""
    text = httpx.get(f"{daemon.admin_url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("linkd_requests", "linkd_request_duration_seconds"):
            for s in family.samples:
                key = s.name if "le" not in s.labels else f"{s.name}{{le={s.labels['le']}}}"
                out[(key, s.labels["api"])] = s.value
    return out


@pytest.mark.timeout(60)
def test_a_real_clients_produce_and_fetch_move_their_own_series(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=1)
    producer = Producer({"bootstrap.servers": linkd.bootstrap, "linger.ms": 0, "log_level": 3})
    producer.produce(unique_topic, b"warm-up")  # metadata settled
    assert producer.flush(30) == 0
    before = _scrape(linkd)
    for i in range(5):
        producer.produce(unique_topic, b"r%d" % i)
        assert producer.flush(30) == 0  # one Produce request per record
    middle = _scrape(linkd)

    def moved(a, b, key, api):
        return b.get((key, api), 0) - a.get((key, api), 0)

    assert moved(before, middle, "linkd_requests_total", "Produce") == 5
    assert moved(before, middle, "linkd_request_duration_seconds_count", "Produce") == 5
    assert moved(before, middle, "linkd_request_duration_seconds_bucket{le=+Inf}", "Produce") == 5
    assert 0 < moved(before, middle, "linkd_request_duration_seconds_sum", "Produce") < 5 * BUCKETS[-1]
    assert moved(before, middle, "linkd_requests_total", "Fetch") == 0

    consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": f"{unique_topic}-g", "enable.auto.commit": False, "log_level": 3, "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(unique_topic, 0, 0)])
    got = []
    try:
        while len(got) < 6:
            msg = consumer.poll(10)
            assert msg is not None, f"consumed only {got}"
            got.append(msg.value())
    finally:
        consumer.close()
    after = _scrape(linkd)
    assert got[1:] == [b"r%d" % i for i in range(5)]
    fetches = moved(middle, after, "linkd_requests_total", "Fetch")
    assert fetches >= 1
    assert moved(middle, after, "linkd_request_duration_seconds_count", "Fetch") >= fetches - 1  # one may still be long-polling
    assert moved(middle, after, "linkd_requests_total", "Produce") == 0
    assert after[("linkd_requests_total", "ApiVersions")] >= 2 and after[("linkd_requests_total", "Metadata")] >= 1
