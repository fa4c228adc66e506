"""aiokafka against linkd: idempotent producer, group consumer with commits, and its admin client."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.broker.clients import BASE_TIMESTAMP

COUNT = 2000


async def _round_trip(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, compression_type="gzip", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("seq", str(i).encode())], timestamp_ms=BASE_TIMESTAMP + i)
            for i in range(COUNT)
        ]
        placed = {}
        for i, future in enumerate(futures):
            meta = await future
            placed[(meta.partition, meta.offset)] = i
    finally:
        await producer.stop()
    assert len(placed) == COUNT

    group = f"g-{topic}"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = {}
        async with asyncio.timeout(45):
            while len(seen) < COUNT:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        seen[(r.partition, r.offset)] = r
        assert set(seen) == set(placed)
        for position, r in seen.items():
            i = placed[position]
            assert (r.key, r.value, r.timestamp) == (f"k{i}".encode(), f"v{i}".encode(), BASE_TIMESTAMP + i)
            assert list(r.headers) == [("seq", str(i).encode())]
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
        assert sum(committed) == COUNT
    finally:
        await consumer.stop()


@pytest.mark.timeout(90)
def test_aiokafka_idempotent_producer_group_consumer_and_admin(linkd, unique_topic):
    asyncio.run(_round_trip(linkd.bootstrap, unique_topic))
