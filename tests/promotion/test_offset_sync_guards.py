"""Consumer offset sync never overwrites a group that is live on linkd, never stores an offset above
the mirror's high watermark, and syncs only the groups the filters include."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from .helpers import cli_json, create_topic, mirror, produce, wait_for

pytestmark = pytest.mark.timeout(180)

FILTERS = '{"groupFilters": [{"name": "sync-", "patternType": "PREFIXED", "filterType": "INCLUDE"}, {"name": "sync-excluded", "patternType": "LITERAL", "filterType": "EXCLUDE"}]}'


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def _status(daemon) -> dict:
    return cli_json(daemon, "link", "describe", "l")[0]["consumer_offset_sync"]


def test_sync_respects_filters_live_members_and_high_watermark(linkd_factory):
    source = linkd_factory()
    dest = linkd_factory()
    create_topic(source.bootstrap, "t", 1)
    produce(source.bootstrap, "t", 100, 1)
    mirror(dest, "l", source.bootstrap, ["t"], extra_config=["consumer.offset.sync.enable=true", "consumer.offset.sync.ms=200", f"consumer.offset.group.filters={FILTERS}"])

    _commit(source.bootstrap, "sync-plain", "t", 40)
    _commit(source.bootstrap, "sync-excluded", "t", 41)
    _commit(source.bootstrap, "other", "t", 42)
    wait_for(lambda: _committed(dest.bootstrap, "sync-plain", "t") == 40, 20, "included group synced")
    time.sleep(0.6)  # a few more sync rounds
    assert _committed(dest.bootstrap, "sync-excluded", "t") < 0
    assert _committed(dest.bootstrap, "other", "t") < 0

    # Clamped: the source group is ahead of what the (paused) mirror holds.
    cli_json(dest, "mirror", "pause", "t")
    produce(source.bootstrap, "t", 50, 1, prefix="more")
    _commit(source.bootstrap, "sync-ahead", "t", 150)
    wait_for(lambda: _committed(dest.bootstrap, "sync-ahead", "t") == 100, 20, "offset clamped to the mirror's high watermark")
    assert _status(dest)["offsets_clamped"] >= 1
    cli_json(dest, "mirror", "resume", "t")

    # Live on linkd: a member of sync-live consumes here; the source's commits must not overwrite it.
    live = Consumer({"bootstrap.servers": dest.bootstrap, "group.id": "sync-live", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    live.subscribe(["t"])
    try:
        deadline = time.monotonic() + 20
        while not live.assignment() and time.monotonic() < deadline:
            live.poll(0.2)
        assert live.assignment()
        live.commit(offsets=[TopicPartition("t", 0, 7)], asynchronous=False)
        _commit(source.bootstrap, "sync-live", "t", 90)
        wait_for(lambda: _status(dest)["groups_skipped_live"] >= 1, 20, "live group skipped")
        for _ in range(5):
            live.poll(0.2)
        assert live.committed([TopicPartition("t", 0)], timeout=10)[0].offset == 7
    finally:
        live.close()
