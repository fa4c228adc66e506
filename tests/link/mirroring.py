"""Shared steps of the cluster-link integration tests: produce, link, wait, compare bytes.

Byte identity is always judged with ``tests.peers.rawclient`` (kafka-python's codec, independent of ours):
the same offsets fetched raw from the source and from linkd must give the same batch bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from linkd.adminclient import AdminClient
from tests.peers import rawclient

# Links in tests notice changes quickly and retry fast; nothing else differs from the defaults.
FAST_LINK = {
    "metadata.max.age.ms": "1000",
    "retry.backoff.ms": "100",
    "retry.backoff.max.ms": "1000",
    "replica.fetch.wait.max.ms": "200",
    "request.timeout.ms": "5000",
}


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; return it, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def admin(daemon) -> AdminClient:
    return AdminClient(daemon.admin_address, timeout=30)


def create_link(client: AdminClient, name: str, bootstrap: str, **configs: str) -> dict:
    return client.create_link(name, {"bootstrap.servers": bootstrap, **FAST_LINK, **configs})


def cli_json(daemon, *args: str, timeout: float = 60.0) -> dict | list:
    """``linkd <args> --json`` against ``daemon``; must succeed."""
    result = daemon.cli(*args, "--json", timeout=timeout)
    assert result.returncode == 0, f"linkd {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)


def produce_confluent(bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]], **config) -> None:
    """``records`` are (partition, key, value); one producer, flushed."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3, **config})
    for partition, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def source_end(bootstrap: str, topic: str, partition: int) -> int:
    """The offset after the last batch the source serves, judged by fetching (Tansu's high watermark can
    lag what it serves), not by ListOffsets."""
    earliest, _latest = rawclient.list_offsets(bootstrap, topic, partition)
    spans = rawclient.whole_batches(rawclient.fetch_raw(bootstrap, topic, partition, earliest))
    return spans[-1][3] + 1 if spans else earliest


def mirror_ends(client: AdminClient, topic: str) -> dict[int, int]:
    return {p["partition"]: p["mirror_log_end_offset"] for p in client.describe_mirror(topic)["partitions"]}


def wait_mirrored(client: AdminClient, topic: str, ends: dict[int, int], timeout: float = 60.0) -> dict:
    """Wait until every partition's mirror log end has reached the source end given."""

    def done():
        described = client.describe_mirror(topic)
        if described["mirror_status"] == "FAILED":
            raise AssertionError(f"mirror {topic} failed: {described['mirror_topic_error']}: {described.get('mirror_topic_error_message')}")
        have = {p["partition"]: p["mirror_log_end_offset"] for p in described["partitions"]}
        return described if all(have.get(p, -1) >= end for p, end in ends.items()) else None

    return wait_for(done, timeout, f"mirror {topic} to reach {ends}")


def assert_bytes_identical(source: str, source_topic: str, dest: str, mirror_topic: str, partition: int, start: int = 0, end: int | None = None) -> bytes:
    """Raw batches over [start, end) from both sides are the same bytes; returns them."""
    theirs = rawclient.fetch_raw(source, source_topic, partition, start, end)
    ours = rawclient.fetch_raw(dest, mirror_topic, partition, start, end)
    assert theirs, f"{source_topic}-{partition}: the source returned nothing from offset {start}"
    if ours != theirs:
        a, b = rawclient.whole_batches(theirs), rawclient.whole_batches(ours)
        raise AssertionError(
            f"{mirror_topic}-{partition}: mirror bytes differ from the source over [{start}, {end}): "
            f"source {len(theirs)} bytes in {len(a)} batches ({a[:1]}..{a[-1:]}), mirror {len(ours)} bytes in {len(b)} batches ({b[:1]}..{b[-1:]})"
        )
    return theirs


def consume_all(bootstrap: str, topic: str, partitions: int, ends: dict[int, int], isolation: str = "read_uncommitted", timeout: float = 60.0) -> list[tuple[int, int, bytes | None, bytes | None, int]]:
    """(partition, offset, key, value, timestamp) of every record a confluent-kafka consumer sees with
    ``assign`` from offset 0 until each partition's position reaches ``ends``."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"verify-{time.monotonic_ns()}", "enable.auto.commit": False, "isolation.level": isolation, "log_level": 3, "enable.partition.eof": True}
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        pending = {p for p in range(partitions) if ends.get(p, 0) > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= ends.get(msg.partition(), 0):
                        pending.discard(msg.partition())
                    continue
                raise AssertionError(f"consumer error on {topic}: {msg.error()}")
            out.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
        assert not pending, f"consumer on {bootstrap} did not reach the end of partitions {sorted(pending)} of {topic}"
    finally:
        consumer.close()
    return sorted(out)
