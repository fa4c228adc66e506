"""Shared steps for the promotion tests: produce, consume, mirror through the CLI, wait."""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer, Producer

from tests.peers import wait_until


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(15)


def produce(bootstrap: str, topic: str, count: int, partitions: int, prefix: str = "r", **config) -> list[tuple[int, int]]:
    """Produce ``count`` keyed records round-robin over partitions; return (partition, offset) per record."""
    delivered: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, **config})
    for i in range(count):
        producer.produce(topic, key=f"{prefix}-{i}".encode(), value=f"value-{prefix}-{i}".encode(), partition=i % partitions, on_delivery=on_delivery)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return delivered


def consume(bootstrap: str, topic: str, group: str, count: int, timeout: float = 60.0, **config) -> list:
    """Consume exactly ``count`` records with a subscribing group member, commit synchronously, close."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False, **config})
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        # Commit exactly what was read, per partition.
        if out:
            from confluent_kafka import TopicPartition

            last: dict[int, int] = {}
            for p, o, _k, _v in out:
                last[p] = max(last.get(p, -1), o)
            consumer.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False)
    finally:
        consumer.close()
    return out


def cli_json(daemon, *args: str, expect_ok: bool = True, timeout: float = 120.0):
    result = daemon.cli(*args, "--json", timeout=timeout)
    if expect_ok:
        assert result.returncode == 0, f"linkd {' '.join(args)} failed: {result.stderr}\n{daemon.logs()}"
    return (json.loads(result.stdout) if result.stdout.strip() else None), result


def mirror(daemon, link: str, bootstrap: str, topics: list[str], extra_config: list[str] = ()) -> None:
    args = ["link", "create", link, "--bootstrap-server", bootstrap]
    for c in extra_config:
        args += ["--config", c]
    cli_json(daemon, *args)
    for topic in topics:
        cli_json(daemon, "mirror", "create", topic, "--link", link, "--wait", "--wait-timeout", "60")


def wait_for(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout, interval=0.1, what=what)
