"""The failover loss report against Apache Kafka: per partition the stop offset, the source end offset last
seen (and its age) and ``records_possibly_lost``, which is the truth (compared with the source's end read
independently) or null when linkd cannot know it, never a made-up 0. After the source returns, describe
lists exactly the offsets the mirror never got."""

from __future__ import annotations

import json
import time

import pytest

from linkd.link.checkpoints import SOURCE_END_CHECKPOINT_S
from tests.link.mirroring import produce_confluent, source_end, wait_for
from tests.peers.rawclient import fetch_raw

from .helpers import cli_json, mirror, produce

pytestmark = pytest.mark.timeout(120)

FAST = ["metadata.max.age.ms=1000", "retry.backoff.ms=100", "retry.backoff.max.ms=500", "replica.fetch.wait.max.ms=200", "request.timeout.ms=3000"]


def _failover(linkd, topic: str) -> dict:
    [result], completed = cli_json(linkd, "mirror", "failover", topic)
    assert completed.returncode == 0 and result["error_code"] == 0 and result["mirror_status"] == "STOPPED", result
    return result


def _describe(linkd, topic: str) -> dict:
    return cli_json(linkd, "mirror", "describe", topic)[0]


def _seen_source_end(linkd, topic: str, ends: dict[int, int]) -> bool:
    return {p["partition"]: p["source_high_watermark"] for p in _describe(linkd, topic)["mirror_lags"]} == ends


def test_failover_of_a_paused_mirror_with_the_source_up_reports_exactly_what_the_source_holds_more(kafka_broker, linkd, unique_topic, tmp_path):
    kafka_broker.create_topic(unique_topic, 2)
    produce(kafka_broker.bootstrap, unique_topic, 300, 2)
    mirror(linkd, "dc1", kafka_broker.bootstrap, [unique_topic], extra_config=FAST)
    cli_json(linkd, "mirror", "pause", unique_topic)
    produce(kafka_broker.bootstrap, unique_topic, 200, 2, prefix="tail")
    truth = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in (0, 1)}
    assert truth == {0: 250, 1: 250}

    result = _failover(linkd, unique_topic)

    for p in result["stop_offsets"]:
        assert p["stop_offset"] == 150
        assert p["source_end_offset"] == truth[p["partition"]]
        assert p["source_end_offset_seen_since_restart"] is True
        assert p["records_possibly_lost"] == truth[p["partition"]] - p["stop_offset"] == 100
        assert 0 <= p["source_end_offset_age_ms"] < 10_000
    assert result["records_possibly_lost"] == 200
    # The source is up: reconciliation records the exact range the mirror never got.
    described = wait_for(lambda: (d := _describe(linkd, unique_topic))["lost_offsets"] and d, 20, "reconciliation")
    assert [(x["partition"], x["from"], x["to"], x["offsets"]) for x in described["lost_offsets"]] == [(0, 150, 250, 100), (1, 150, 250, 100)]

    # lost-records fetches exactly those records: raw, the source's own batch bytes ...
    raw = tmp_path / "lost-0.bin"
    done = linkd.cli("mirror", "lost-records", unique_topic, "--partition", "0", "--output", str(raw))
    assert done.returncode == 0, done.stderr
    assert raw.read_bytes() == fetch_raw(kafka_broker.bootstrap, unique_topic, 0, 150, 250)
    # ... or decoded, every partition in one file: the 200 records produced after the pause, no others.
    decoded = tmp_path / "lost.jsonl"
    summary = cli_json(linkd, "mirror", "lost-records", unique_topic, "--output", str(decoded), "--decode")[0]
    assert [(p["partition"], p["records"]) for p in summary["partitions"]] == [(0, 100), (1, 100)]
    lines = [json.loads(line) for line in decoded.read_text().splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in lines) == [(p, o) for p in (0, 1) for o in range(150, 250)]
    assert sorted(r["key"] for r in lines) == sorted(f"tail-{i}" for i in range(200))
    # Raw batches carry no partition: asking for all of them at once is refused, naming the way out.
    refused = linkd.cli("mirror", "lost-records", unique_topic, "--output", str(tmp_path / "x"))
    assert refused.returncode != 0 and "--partition" in refused.stderr


def test_failover_after_a_restart_with_the_source_down_says_unknown_then_reconciles_when_it_returns(kafka_broker_factory, linkd, unique_topic, tmp_path):
    source = kafka_broker_factory()
    source.create_topic(unique_topic, 1)
    produce(source.bootstrap, unique_topic, 300, 1)
    mirror(linkd, "dc1", source.bootstrap, [unique_topic], extra_config=FAST)
    cli_json(linkd, "mirror", "pause", unique_topic)
    produce(source.bootstrap, unique_topic, 100, 1, prefix="tail")
    wait_for(lambda: _seen_source_end(linkd, unique_topic, {0: 400}), 20, "the paused mirror to see the source grow")
    time.sleep(2 * SOURCE_END_CHECKPOINT_S)  # the checkpoint is periodic (bounded write rate), not per fetch
    linkd.kill()
    source.stop()
    linkd.start()

    [p] = _failover(linkd, unique_topic)["stop_offsets"]

    assert p["stop_offset"] == 300
    assert p["records_possibly_lost"] is None  # not seen since the restart: unknown, not 0
    assert p["source_end_offset_seen_since_restart"] is False
    assert p["source_end_offset"] == 400 and p["records_possibly_lost_at_least"] == 100
    assert p["source_end_offset_age_ms"] > 0
    assert _describe(linkd, unique_topic)["lost_offsets"] is None

    source.start()
    assert source.list_offsets(unique_topic, 0)[1] == 400
    described = wait_for(lambda: (d := _describe(linkd, unique_topic))["lost_offsets"] and d, 40, "reconciliation after the source returned")
    [lost] = described["lost_offsets"]
    assert (lost["from"], lost["to"], lost["offsets"]) == (300, 400, 100)
    out = tmp_path / "lost.jsonl"
    cli_json(linkd, "mirror", "lost-records", unique_topic, "--output", str(out), "--decode")
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == [f"tail-{i}" for i in range(100)]


def test_failover_after_a_restart_with_the_source_up_reads_its_end_first(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce(kafka_broker.bootstrap, unique_topic, 300, 1)
    mirror(linkd, "dc1", kafka_broker.bootstrap, [unique_topic], extra_config=FAST)
    cli_json(linkd, "mirror", "pause", unique_topic)
    produce(kafka_broker.bootstrap, unique_topic, 50, 1, prefix="tail")
    linkd.restart()

    [p] = _failover(linkd, unique_topic)["stop_offsets"]

    assert p["source_end_offset_seen_since_restart"] is True
    assert p["source_end_offset"] == kafka_broker.list_offsets(unique_topic, 0)[1] == 350
    assert p["records_possibly_lost"] == 50


def test_failover_of_a_paused_mirror_after_the_source_died_reports_the_end_seen_while_paused(kafka_broker_factory, linkd, unique_topic):
    source = kafka_broker_factory()
    source.create_topic(unique_topic, 1)
    produce(source.bootstrap, unique_topic, 300, 1)
    mirror(linkd, "dc1", source.bootstrap, [unique_topic], extra_config=FAST)
    cli_json(linkd, "mirror", "pause", unique_topic)
    produce(source.bootstrap, unique_topic, 200, 1, prefix="tail")
    truth = source.list_offsets(unique_topic, 0)[1]
    wait_for(lambda: _seen_source_end(linkd, unique_topic, {0: truth}), 20, "the paused mirror to see the source grow")
    source.kill()

    [p] = _failover(linkd, unique_topic)["stop_offsets"]

    assert p["records_possibly_lost"] == truth - 300 == 200
    assert p["source_end_offset"] == truth and p["source_end_offset_seen_since_restart"] is True


def test_against_tansu_the_loss_is_judged_by_fetching_not_by_its_lagging_high_watermark(tansu_broker, linkd, unique_topic, tmp_path):
    tansu_broker.create_topic(unique_topic, 1)
    produce_confluent(tansu_broker.bootstrap, unique_topic, [(0, None, b"a%d" % i) for i in range(300)])
    mirror(linkd, "dc1", tansu_broker.bootstrap, [unique_topic], extra_config=FAST)
    stop = source_end(tansu_broker.bootstrap, unique_topic, 0)
    wait_for(lambda: _describe(linkd, unique_topic)["mirror_lags"][0]["mirror_log_end_offset"] == stop, 30, "mirrored")
    cli_json(linkd, "mirror", "pause", unique_topic)
    produce_confluent(tansu_broker.bootstrap, unique_topic, [(0, None, b"tail-%d" % i) for i in range(3000)], **{"batch.size": 4096})
    truth = source_end(tansu_broker.bootstrap, unique_topic, 0)  # by fetching (Tansu's high watermark can lag)

    [p] = _failover(linkd, unique_topic)["stop_offsets"]

    assert p["stop_offset"] == stop
    assert p["source_end_offset"] == truth
    assert p["records_possibly_lost"] == truth - stop
    described = wait_for(lambda: (d := _describe(linkd, unique_topic))["lost_offsets"] and d, 20, "reconciliation")
    [lost] = described["lost_offsets"]
    assert (lost["from"], lost["to"]) == (stop, truth)
    out = tmp_path / "lost.jsonl"
    cli_json(linkd, "mirror", "lost-records", unique_topic, "--output", str(out), "--decode")
    assert [json.loads(line)["value"] for line in out.read_text().splitlines()] == [f"tail-{i}" for i in range(3000)]


def test_failover_through_a_blackholed_path_does_not_hang_and_reports_the_end_last_seen(linkd_factory, unique_topic):
    from linkd.link.promotion import FAILOVER_SOURCE_READ_S
    from tests.broker.clients import create_topic
    from tests.link.faultproxy import FaultProxy

    source = linkd_factory(start=False)
    proxy = FaultProxy()
    try:
        source.extra_args += ["--advertised-listener", proxy.address]
        source.start()
        proxy.target = ("127.0.0.1", source.port)
        create_topic(source.bootstrap, unique_topic)
        produce(source.bootstrap, unique_topic, 200, 1)
        dest = linkd_factory()
        mirror(dest, "dc1", proxy.address, [unique_topic], extra_config=[*FAST, "request.timeout.ms=30000"])
        proxy.blackhole()  # requests now hang until their timeout: the failover must not wait for that

        started = time.monotonic()
        [p] = _failover(dest, unique_topic)["stop_offsets"]
        took = time.monotonic() - started

        assert took < FAILOVER_SOURCE_READ_S + 5, took
        assert (p["stop_offset"], p["source_end_offset"], p["records_possibly_lost"]) == (200, 200, 0)
    finally:
        proxy.close()


def test_failover_of_a_mirror_being_fetched_reports_the_ends_its_fetches_just_read_without_asking_again(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 2)
    produce(kafka_broker.bootstrap, unique_topic, 300, 2)
    mirror(linkd, "dc1", kafka_broker.bootstrap, [unique_topic], extra_config=FAST)
    wait_for(lambda: all(p["lag"] == 0 for p in _describe(linkd, unique_topic)["mirror_lags"]), 20, "caught up")

    result = _failover(linkd, unique_topic)

    for p in result["stop_offsets"]:
        assert (p["stop_offset"], p["source_end_offset"], p["records_possibly_lost"]) == (150, 150, 0)
        assert p["source_end_offset_seen_since_restart"] is True and p["source_end_offset_age_ms"] >= 0
    # The idle fetch session's answers were the reading: no ListOffsets and probe Fetch of its partitions first.
    assert "1 of 1 mirror(s) to stop have every source end read within 1200 ms by fetching" in linkd.log_path.read_text()
