"""Small helpers over real client libraries (confluent-kafka) shared by the broker tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BASE_TIMESTAMP = 1_700_000_000_000


@dataclass(frozen=True)
class Sent:
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10).values():
        future.result(15)


def record(i: int, tag: str = "r") -> Sent:
    """A record whose key, value, headers and timestamp all derive from ``i``, so a reader can check each."""
    key = f"{tag}-k{i}".encode()
    value = (f"{tag}-v{i}-" + "x" * (i % 97)).encode()
    headers = (("seq", str(i).encode()), ("tag", tag.encode()))
    return Sent(key, value, headers, BASE_TIMESTAMP + i)


def produce(bootstrap: str, topic: str, records: list[Sent], timeout: float = 60.0, **config) -> list[tuple[int, int]]:
    """Produce with an (idempotent by default) confluent producer; return (partition, offset) per record."""
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "acks": "all", **config}
    producer = Producer(conf)
    acks: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def on_delivery(index):
        def callback(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                acks[index] = (msg.partition(), msg.offset())

        return callback

    for i, rec in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=rec.key, value=rec.value, headers=list(rec.headers), timestamp=rec.timestamp, on_delivery=on_delivery(i))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0 and not errors, f"{left} records undelivered, errors: {errors[:5]}"
    assert all(a is not None for a in acks)
    return acks  # type: ignore[return-value]


def consumer(bootstrap: str, group: str | None = None, **config) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        **config,
    }
    if group is not None:
        conf["group.id"] = group
    else:
        conf["group.id"] = "unused-assign-only"
    return Consumer(conf)


def drain(consumers: list[Consumer], expected: int, timeout: float) -> dict[int, list]:
    """Poll every consumer in turn until ``expected`` messages in total; return messages per consumer index."""
    got: dict[int, list] = {i: [] for i in range(len(consumers))}
    deadline = time.monotonic() + timeout
    total = 0
    while total < expected:
        assert time.monotonic() < deadline, f"only {total} of {expected} records consumed within {timeout}s"
        for i, c in enumerate(consumers):
            for msg in c.consume(2000, 0.1):
                if msg.error():
                    raise KafkaException(msg.error())
                got[i].append(msg)
                total += 1
    return got


def wait_assigned(consumers: list[Consumer], timeout: float = 30.0) -> None:
    """Poll until every member of the group holds a non-empty assignment (the rebalance is done)."""
    deadline = time.monotonic() + timeout
    while not all(c.assignment() for c in consumers):
        assert time.monotonic() < deadline, f"group never settled: {[c.assignment() for c in consumers]}"
        for c in consumers:
            msgs = c.consume(100, 0.1)
            assert not msgs, "records arrived before the test produced any"
