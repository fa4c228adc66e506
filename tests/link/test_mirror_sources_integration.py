"""The other sources: Tansu (no OffsetForLeaderEpoch, a high watermark that can lag what it serves) and
a second linkd (a plain writable topic mirrored by another linkd). Byte identity must hold for both."""

from __future__ import annotations

import pytest

from protocol.records import split_batches
from tests.link.mirroring import (
    admin,
    assert_bytes_identical,
    cli_json,
    consume_all,
    create_link,
    produce_confluent,
    source_end,
    wait_for,
    wait_mirrored,
)
from tests.peers import rawclient


@pytest.mark.timeout(90)
def test_tansu_source_is_mirrored_byte_for_byte_judged_by_fetching(tansu_broker, linkd, unique_topic):
    source = tansu_broker.bootstrap
    tansu_broker.create_topic(unique_topic, partitions=2)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        produce_confluent(source, unique_topic, [(n % 2, b"k%d" % n, b"%s-%d" % (codec.encode(), n) * 10) for n in range(400)], **{"compression.type": codec})
    client = admin(linkd)
    create_link(client, "tansu", source)
    client.create_mirror(unique_topic, "tansu")
    produce_confluent(source, unique_topic, [(n % 2, None, b"live-%d" % n) for n in range(3000)], **{"batch.size": 4096})
    # Tansu's high watermark can read lower than what it serves: the source end is judged by fetching.
    ends = {p: source_end(source, unique_topic, p) for p in range(2)}
    assert sum(ends.values()) == 5 * 400 + 3000
    wait_mirrored(client, unique_topic, ends)
    for partition in range(2):
        data = assert_bytes_identical(source, unique_topic, linkd.bootstrap, unique_topic, partition, 0, ends[partition])
        assert split_batches(data).batches[-1].next_offset == ends[partition]
        # linkd's own high watermark is exact even when its source's is not.
        assert rawclient.list_offsets(linkd.bootstrap, unique_topic, partition) == (0, ends[partition])
    assert consume_all(linkd.bootstrap, unique_topic, 2, ends) == consume_all(source, unique_topic, 2, ends)


@pytest.mark.timeout(90)
def test_linkd_topic_mirrored_by_another_linkd_is_byte_identical(linkd_factory, unique_topic):
    from confluent_kafka.admin import AdminClient, NewTopic

    upstream = linkd_factory()
    downstream = linkd_factory()
    upstream_admin = AdminClient({"bootstrap.servers": upstream.bootstrap, "log_level": 3})
    upstream_admin.create_topics([NewTopic(unique_topic, 3, 1)])[unique_topic].result(30)
    produce_confluent(upstream.bootstrap, unique_topic, [(n % 3, b"k%d" % n, b"v%d" % n * 20) for n in range(900)], **{"compression.type": "lz4"})

    cli_json(downstream, "link", "create", "upstream", "--bootstrap-server", upstream.bootstrap, "--config", "metadata.max.age.ms=1000")
    produce_confluent(upstream.bootstrap, unique_topic, [(n % 3, None, b"late-%d" % n) for n in range(300)], **{"compression.type": "zstd"})
    ends = {p: rawclient.list_offsets(upstream.bootstrap, unique_topic, p)[1] for p in range(3)}
    mirror = cli_json(downstream, "mirror", "create", unique_topic, "--link", "upstream", "--wait", "--wait-timeout", "60")
    assert {p["partition"]: p["mirror_log_end_offset"] for p in mirror["partitions"]} == ends
    for partition in range(3):
        assert_bytes_identical(upstream.bootstrap, unique_topic, downstream.bootstrap, unique_topic, partition, 0, ends[partition])
    records = consume_all(downstream.bootstrap, unique_topic, 3, ends)
    assert records == consume_all(upstream.bootstrap, unique_topic, 3, ends)
    assert len(records) == 1200

    # Still live: records written upstream afterwards arrive too.
    produce_confluent(upstream.bootstrap, unique_topic, [(0, None, b"after")])
    wait_for(lambda: admin(downstream).describe_mirror(unique_topic)["partitions"][0]["mirror_log_end_offset"] == ends[0] + 1, 30, "the late record")
    assert_bytes_identical(upstream.bootstrap, unique_topic, downstream.bootstrap, unique_topic, 0, 0, ends[0] + 1)
