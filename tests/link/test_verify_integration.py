"""``linkd mirror verify`` against Apache Kafka: it proves an identical mirror identical (batch and byte
counts checked against the source's own batches), stops at the stop offset after a failover, and names
the first differing batch when a mirrored segment is altered on disk, whether the altered batch is
self-consistent (CRC rewritten) or simply corrupt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.records import crc32c, split_batches
from tests.link.mirroring import admin, create_link, produce_confluent, source_end, wait_mirrored
from tests.peers import rawclient

pytestmark = pytest.mark.timeout(120)

CRC_AT = 17  # baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1
ATTRIBUTES_AT = 21


def _mirror(kafka_broker, linkd, topic: str, partitions: int = 2) -> dict[int, int]:
    kafka_broker.create_topic(topic, partitions)
    for codec in ("none", "lz4", "zstd"):
        produce_confluent(kafka_broker.bootstrap, topic, [(n % partitions, b"k%d" % n, b"%s-%d" % (codec.encode(), n) * 8) for n in range(300)], **{"compression.type": codec, "batch.size": 2048})
    ends = {p: source_end(kafka_broker.bootstrap, topic, p) for p in range(partitions)}  # by fetching (Tansu)
    client = admin(linkd)
    create_link(client, "l", kafka_broker.bootstrap)
    client.create_mirror(topic, "l")
    wait_mirrored(client, topic, ends)
    return ends


def _verify(linkd, topic: str, *extra: str):
    result = linkd.cli("mirror", "verify", topic, "--json", *extra, timeout=60)
    return result, json.loads(result.stdout)


@pytest.fixture(params=["kafka", "tansu"])
def any_source(request):
    return request.getfixturevalue("kafka_broker" if request.param == "kafka" else "tansu_broker")


def test_an_identical_mirror_verifies_batch_for_batch(any_source, linkd, unique_topic):
    kafka_broker = any_source
    ends = _mirror(kafka_broker, linkd, unique_topic)

    result, report = _verify(linkd, unique_topic)

    assert result.returncode == 0, result.stderr
    assert report["identical"] is True
    for r in report["partitions"]:
        source = rawclient.fetch_raw(kafka_broker.bootstrap, unique_topic, r["partition"], 0, ends[r["partition"]])
        assert (r["from_offset"], r["end_offset"], r["next_offset"]) == (0, ends[r["partition"]], ends[r["partition"]])
        assert r["batches"] == len(split_batches(source).batches) > 3
        assert r["bytes"] == len(source)
    # --partition and --from narrow it down.
    _, one = _verify(linkd, unique_topic, "--partition", "1", "--from", "100")
    assert [(r["partition"], r["identical"]) for r in one["partitions"]] == [(1, True)]
    assert one["partitions"][0]["from_offset"] == 100


def test_after_a_failover_verify_compares_up_to_the_stop_offsets(kafka_broker, linkd, unique_topic):
    ends = _mirror(kafka_broker, linkd, unique_topic, partitions=1)
    [stopped] = admin(linkd).mirror_action("failover", [unique_topic])
    produce_confluent(linkd.bootstrap, unique_topic, [(0, None, b"written-here-%d" % i) for i in range(50)])

    result, report = _verify(linkd, unique_topic)

    assert result.returncode == 0, result.stderr
    [r] = report["partitions"]
    assert r["end_offset"] == stopped["stop_offsets"][0]["stop_offset"] == ends[0]
    assert r["identical"] and r["next_offset"] == ends[0]


def _segment(linkd, topic: str, partition: int) -> Path:
    [log] = sorted((linkd.data_dir / "logs" / f"{topic}-{partition}").glob("*.log"))
    return log


def _alter_batch(path: Path, index: int, rewrite_crc: bool):
    """Flip one byte inside batch ``index``'s records; optionally rewrite its CRC to match."""
    data = bytearray(path.read_bytes())
    batches = split_batches(bytes(data)).batches
    position = sum(b.size for b in batches[:index])
    batch = batches[index]
    data[position + batch.size - 3] ^= 0x40
    if rewrite_crc:
        data[position + CRC_AT : position + CRC_AT + 4] = crc32c(bytes(data[position + ATTRIBUTES_AT : position + batch.size])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return batch, int.from_bytes(data[position + CRC_AT : position + CRC_AT + 4], "big")


@pytest.mark.parametrize("rewrite_crc", [True, False], ids=["crc-rewritten", "crc-left-stale"])
def test_a_byte_flipped_in_a_mirrored_segment_is_reported_at_its_batch(kafka_broker, linkd, unique_topic, rewrite_crc):
    _mirror(kafka_broker, linkd, unique_topic, partitions=1)
    linkd.stop()  # graceful: the clean-shutdown marker means the reopened log is not rescanned
    original, new_crc = _alter_batch(_segment(linkd, unique_topic, 0), index=3, rewrite_crc=rewrite_crc)
    linkd.start()

    result, report = _verify(linkd, unique_topic)

    assert result.returncode != 0
    assert f"first at partition 0 offset {original.base_offset}" in result.stderr
    [r] = report["partitions"]
    div = r["divergence"]
    assert div["offset"] == original.base_offset
    assert r["batches"] == 3  # the three batches before it were proven identical
    assert div["source_crc"] == original.crc
    assert div["mirror_crc"] == new_crc
    if rewrite_crc:
        assert new_crc != original.crc and "CRC source" in div["reason"]
    else:
        assert "does not match its own CRC" in div["reason"]
