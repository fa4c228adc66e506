"""Several fetch connections per source broker (``num.cluster.link.fetchers``): a link spreads a broker's
partitions over N connections with disjoint partition sets, mirrors them byte for byte from Apache Kafka,
and keeps every byte identical while a link update moves partitions between fetchers under load."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.link.mirroring import admin, assert_bytes_identical, create_link, produce_confluent, wait_for, wait_mirrored

PARTITIONS = 6


def _connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on loopback, as the kernel lists them."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def _load(bootstrap: str, topic: str, rounds: int, tag: bytes) -> None:
    records = [(n % PARTITIONS, b"k%d" % n, tag + b"-%d-" % n + os.urandom(200)) for n in range(rounds)]
    produce_confluent(bootstrap, topic, records, **{"compression.type": "lz4", "batch.size": 16384})


def _ends(kafka_broker, topic: str) -> dict[int, int]:
    return {p: kafka_broker.list_offsets(topic, p)[1] for p in range(PARTITIONS)}


@pytest.mark.timeout(150)
def test_three_fetchers_mirror_every_partition_byte_for_byte_over_three_connections(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    port = int(source.rsplit(":", 1)[1])
    kafka_broker.create_topic(unique_topic, partitions=PARTITIONS)
    _load(source, unique_topic, 6000, b"before")
    client = admin(linkd)
    create_link(client, "fetchers", source, **{"num.cluster.link.fetchers": "3"})
    client.create_mirror(unique_topic, "fetchers")
    _load(source, unique_topic, 3000, b"during")
    ends = _ends(kafka_broker, unique_topic)
    wait_mirrored(client, unique_topic, ends, timeout=90)
    for partition in range(PARTITIONS):
        assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])
    # Three fetch connections to the one source broker, plus the link's connection for everything else.
    wait_for(lambda: _connections_to(linkd.process.pid, port) == 4, timeout=10, what="three fetch connections and one for short requests")


@pytest.mark.timeout(180)
def test_changing_the_fetcher_count_under_load_moves_partitions_and_keeps_bytes_identical(kafka_broker, linkd, unique_topic):
    source = kafka_broker.bootstrap
    port = int(source.rsplit(":", 1)[1])
    kafka_broker.create_topic(unique_topic, partitions=PARTITIONS)
    _load(source, unique_topic, 3000, b"before")
    client = admin(linkd)
    create_link(client, "moving", source, **{"num.cluster.link.fetchers": "1"})
    client.create_mirror(unique_topic, "moving")
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_producing() -> None:
        try:
            n = 0
            while not stop.is_set():
                _load(source, unique_topic, 300, b"live%d" % n)
                n += 1
        except BaseException as exc:  # reported by the test, not lost with the thread
            errors.append(exc)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    try:
        wait_for(lambda: _connections_to(linkd.process.pid, port) == 2, timeout=20, what="one fetch connection")
        for count, connections in (("4", 5), ("2", 3), ("5", 6)):
            # Each change moves partitions between fetchers while their appends may be in flight.
            client.alter_link_configs("moving", {"num.cluster.link.fetchers": count}, [])
            wait_for(lambda c=connections: _connections_to(linkd.process.pid, port) == c, timeout=20, what=f"{count} fetch connections")
            time.sleep(1.0)
    finally:
        stop.set()
        producer.join(60)
    assert not errors, errors
    ends = _ends(kafka_broker, unique_topic)
    wait_mirrored(client, unique_topic, ends, timeout=90)
    assert client.describe_mirror(unique_topic)["mirror_status"] == "ACTIVE"
    for partition in range(PARTITIONS):
        assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])
