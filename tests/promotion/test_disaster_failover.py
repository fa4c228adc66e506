"""Disaster: the source dies mid-mirroring. failover makes the topic writable and reports what may be
lost; promote on another mirror in the same state fails cleanly and leaves it a mirror."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Producer

from tests.peers.rawclient import fetch_raw

from .helpers import cli_json, create_topic, mirror, produce, wait_for

pytestmark = pytest.mark.timeout(240)


def test_failover_after_source_death_reports_loss_and_promote_fails_cleanly(kafka_broker_factory, linkd):
    source = kafka_broker_factory()
    source.create_topic("orders", 2)
    source.create_topic("payments", 2)
    produce(source.bootstrap, "orders", 2000, 2, prefix="o")
    produce(source.bootstrap, "payments", 1000, 2, prefix="p")
    mirror(linkd, "dc1", source.bootstrap, ["orders", "payments"], extra_config=["retry.backoff.max.ms=500"])
    source.kill()
    wait_for(lambda: cli_json(linkd, "mirror", "describe", "payments")[0]["mirror_status"] == "SOURCE_UNAVAILABLE", 30, "mirror notices the dead source")

    results, completed = cli_json(linkd, "mirror", "failover", "orders")
    [r] = results
    assert completed.returncode == 0
    assert r["error_code"] == 0 and r["mirror_status"] == "STOPPED"
    assert [p["partition"] for p in r["stop_offsets"]] == [0, 1]
    for p in r["stop_offsets"]:
        assert p["mirror_end_offset"] == 1000
        assert p["last_source_offset_seen"] == 1000
        assert p["possible_data_loss_records"] == 0
    # Writable now, offsets continuing.
    delivered = produce(linkd.bootstrap, "orders", 4, 2, prefix="after")
    assert sorted(o for _p, o in delivered) == [1000, 1000, 1001, 1001]

    results, completed = cli_json(linkd, "mirror", "promote", "payments", "--timeout", "5", expect_ok=False)
    assert completed.returncode != 0
    assert "payments" in completed.stderr and "source" in completed.stderr
    assert results[0]["error_code"] != 0
    described, _ = cli_json(linkd, "mirror", "describe", "payments")
    assert described["mirror_status"] in ("SOURCE_UNAVAILABLE", "ACTIVE")
    producer = Producer({"bootstrap.servers": linkd.bootstrap, "enable.idempotence": False, "retries": 0, "message.timeout.ms": 5000})
    errors = []
    producer.produce("payments", b"x", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_REQUEST, errors


def test_failover_reports_unreplicated_tail_as_possible_loss(linkd_factory):
    source = linkd_factory()
    dest = linkd_factory()
    create_topic(source.bootstrap, "t")
    produce(source.bootstrap, "t", 500, 1)
    mirror(dest, "l", source.bootstrap, ["t"])
    cli_json(dest, "mirror", "pause", "t")
    produce(source.bootstrap, "t", 200, 1, prefix="tail")
    cli_json(dest, "mirror", "resume", "t")
    cli_json(dest, "mirror", "pause", "t")
    # The mirror has seen the source's high watermark grow but may not hold it all; make sure it has seen it.
    wait_for(lambda: cli_json(dest, "mirror", "describe", "t")[0]["partitions"][0]["source_high_watermark"] == 700, 20, "source HW observed")
    source.kill()
    results, _ = cli_json(dest, "mirror", "failover", "t")
    stop = results[0]["stop_offsets"][0]
    assert stop["last_source_offset_seen"] == 700
    assert stop["possible_data_loss_records"] == 700 - stop["mirror_end_offset"]
    assert fetch_raw(dest.bootstrap, "t", 0, 0, stop["mirror_end_offset"])  # what was mirrored is still served


def test_failover_is_idempotent(linkd_factory):
    source = linkd_factory()
    dest = linkd_factory()
    create_topic(source.bootstrap, "t")
    produce(source.bootstrap, "t", 50, 1)
    mirror(dest, "l", source.bootstrap, ["t"])
    first, _ = cli_json(dest, "mirror", "failover", "t")
    second, _ = cli_json(dest, "mirror", "failover", "t")
    assert first[0]["stop_offsets"] == second[0]["stop_offsets"]
    assert second[0]["mirror_status"] == "STOPPED"
