"""Fetch long poll: a waiting Fetch answers as soon as data arrives, and otherwise waits out max_wait_ms.

These are behavioural checks with generous margins (max_wait 5 s, record expected well under 2 s), not
latency benchmarks.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import TopicPartition

from protocol.records import build_records
from tests.broker.clients import consumer, create_topic, produce, record
from tests.broker.wire import WireConnection, fetch_request, produce_request

MAX_WAIT_MS = 5000
PRODUCE_AFTER_S = 0.2


def _produce_later(bootstrap: str, topic: str, delay: float, records: bytes, done: list) -> threading.Thread:
    def run():
        time.sleep(delay)
        with WireConnection(bootstrap) as conn:
            done.append((time.monotonic(), produce_request(conn, topic, 0, records)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_waiting_fetch_returns_a_record_produced_200ms_later_without_waiting_for_max_wait(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    done: list = []
    with WireConnection(linkd.bootstrap) as conn:
        started = time.monotonic()
        writer = _produce_later(linkd.bootstrap, unique_topic, PRODUCE_AFTER_S, build_records([b"late"]), done)
        fetched = fetch_request(conn, unique_topic, 0, 0, max_wait_ms=MAX_WAIT_MS)
        elapsed = time.monotonic() - started
    writer.join(10)
    assert done and done[0][1]["error_code"] == 0, done
    assert fetched["error_code"] == 0 and fetched["records"], "the long poll returned without the record"
    assert fetched["high_watermark"] == 1
    assert elapsed >= PRODUCE_AFTER_S * 0.5, f"answered after {elapsed:.3f}s, before the record existed"
    assert elapsed < 2.0, f"answered after {elapsed:.3f}s: the append did not wake the waiting fetch (max_wait {MAX_WAIT_MS} ms)"


@pytest.mark.timeout(30)
def test_fetch_with_nothing_to_return_waits_out_max_wait_even_when_other_partitions_get_data(linkd, unique_topic):
    quiet, busy = f"{unique_topic}-quiet", f"{unique_topic}-busy"
    create_topic(linkd.bootstrap, quiet)
    create_topic(linkd.bootstrap, busy)
    stop = threading.Event()

    def keep_producing():
        with WireConnection(linkd.bootstrap) as conn:
            while not stop.is_set():
                produce_request(conn, busy, 0, build_records([b"noise"]))
                time.sleep(0.05)

    noise = threading.Thread(target=keep_producing, daemon=True)
    noise.start()
    try:
        with WireConnection(linkd.bootstrap) as conn:
            started = time.monotonic()
            fetched = fetch_request(conn, quiet, 0, 0, max_wait_ms=1500)
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        noise.join(10)
    assert fetched["error_code"] == 0 and not fetched["records"]
    assert 1.3 <= elapsed < 4.0, f"an empty fetch with max_wait 1500 ms returned after {elapsed:.3f}s"


@pytest.mark.timeout(60)
def test_confluent_consumer_receives_a_new_record_well_before_fetch_wait_max(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    c = consumer(linkd.bootstrap, **{"fetch.wait.max.ms": MAX_WAIT_MS, "fetch.error.backoff.ms": 10})
    c.assign([TopicPartition(unique_topic, 0, 0)])
    settle_until = time.monotonic() + 1.5  # let the consumer reach its steady state: a parked long poll
    while time.monotonic() < settle_until:
        assert not c.consume(10, 0.1)
    produce(linkd.bootstrap, unique_topic, [record(0)])
    produced_at = time.monotonic()
    deadline = produced_at + 10
    msgs = []
    while not msgs and time.monotonic() < deadline:
        msgs = c.consume(10, 0.05)
    latency = time.monotonic() - produced_at
    c.close()
    assert msgs and msgs[0].error() is None and msgs[0].key() == record(0).key
    assert latency < 2.0, f"record reached the consumer {latency:.3f}s after it was acknowledged (fetch.wait.max.ms {MAX_WAIT_MS})"
