"""A new mirror's first Fetch waits for as few round trips to the source as its answers allow.

Across a WAN each round trip between ``mirror create`` and the first Fetch is 30-150 ms of nothing
moving. ``RoundTripProxy`` holds the source's answers back until everyone is waiting, so the round in
which the first Fetch arrives is the number of round trips the link waited for, whatever the machine's
load: Metadata and DescribeConfigs go together (one round), the fetch connections reuse the API versions
the link's own connection learned (ApiVersions is sent but not waited for), and the Fetch follows: at the
default start (earliest) an empty partition fetches from 0 without a ListOffsets round first (a source
whose log starts later answers OFFSET_OUT_OF_RANGE, and the mirror starts there).
"""

from __future__ import annotations

import pytest

from protocol.messages import ApiKey
from tests.link.mirroring import admin, create_link, mirror_ends, produce_confluent, wait_for
from tests.link.roundtripproxy import RoundTripProxy
from tests.peers import LOOPBACK, free_port

# Nothing on a timer may talk to the source while rounds are counted.
QUIET_LINK = {
    "metadata.max.age.ms": "600000",
    "topic.config.sync.ms": "600000",
    "consumer.offset.sync.enable": "false",
    "acl.sync.enable": "false",
    "num.cluster.link.fetchers": "2",
}


@pytest.fixture
def source_behind_proxy(kafka_broker_factory):
    port = free_port()
    broker = kafka_broker_factory(extra_config={"advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}"})
    proxy = RoundTripProxy((LOOPBACK, broker.port), port=port)
    yield broker, proxy
    proxy.close()


@pytest.mark.timeout(180)
def test_first_fetch_of_a_new_mirror_waits_one_round_trip(source_behind_proxy, linkd, unique_topic):
    broker, proxy = source_behind_proxy
    broker.create_topic(unique_topic, partitions=4)
    produce_confluent(broker.bootstrap, unique_topic, [(p, None, b"r%d" % p) for p in range(4)])
    client = admin(linkd)
    create_link(client, "rt", proxy.address, **QUIET_LINK)
    # The link's own connection is open and idle (its first metadata answered) before the clock starts.
    # Link creation's validation probe sends a Metadata first, so one Metadata seen is not enough: the
    # second is the link's own (on a loaded machine the link's first requests came after the probe's rounds
    # were over, and were counted as the mirror's).
    wait_for(lambda: proxy.api_keys_in_all_rounds().count(ApiKey.METADATA) >= 2 and not proxy._held, 30, "the link's first metadata")
    wait_for(lambda: not proxy._held, 10, "the proxy to hold nothing")
    start = proxy.rounds

    client.create_mirror(unique_topic, "rt")
    wait_for(lambda: proxy.first_round_of(ApiKey.FETCH, start) is not None, 60, "the mirror's first Fetch")
    first_fetch = proxy.first_round_of(ApiKey.FETCH, start)
    waited = {r - start: sorted(ApiKey(k).name for k in proxy.api_keys_in_round(r)) for r in range(start, first_fetch + 1)}
    assert first_fetch - start == 1, f"round trips before the first Fetch: {waited}"
    wait_for(lambda: mirror_ends(client, unique_topic) == {0: 1, 1: 1, 2: 1, 3: 1}, 60, "the records")


@pytest.mark.timeout(180)
def test_a_mirror_created_right_after_its_link_skips_the_links_api_versions_round(source_behind_proxy, linkd, unique_topic):
    """``link create`` probes the source (ApiVersions, Metadata) before it answers; the link then keeps
    that open connection rather than opening another, so a mirror created at once (as scripts and the WAN
    benchmark do) waits for no second ApiVersions before its Metadata and DescribeConfigs."""
    broker, proxy = source_behind_proxy
    broker.create_topic(unique_topic, partitions=2)
    produce_confluent(broker.bootstrap, unique_topic, [(p, None, b"r%d" % p) for p in range(2)])
    client = admin(linkd)
    wait_for(lambda: not proxy._held, 10, "the proxy to hold nothing")
    start = proxy.rounds  # the set-up's own requests (CreateTopics, Produce) went through the proxy too
    create_link(client, "rt", proxy.address, **QUIET_LINK)
    client.create_mirror(unique_topic, "rt")
    wait_for(lambda: proxy.first_round_of(ApiKey.FETCH, start) is not None, 60, "the mirror's first Fetch")
    first_fetch = proxy.first_round_of(ApiKey.FETCH, start)
    waited = {r - start: sorted(ApiKey(k).name for k in proxy.api_keys_in_round(r)) for r in range(start, first_fetch + 1)}
    before_fetch = [key for r, _conn, key in proxy.requests if start <= r < first_fetch]
    # The probe's ApiVersions and Metadata, then the link's and the mirror's Metadata (and DescribeConfigs):
    # 3 rounds (4 when the probe's connection was closed and the link waited for an ApiVersions of its own).
    # How many rounds also depends on whether the mirror's lookup caught the link's first Metadata round,
    # so the ApiVersions asked is what is checked.
    assert before_fetch.count(ApiKey.API_VERSIONS) == 1, f"rounds from link create to the first Fetch: {waited}"
    wait_for(lambda: mirror_ends(client, unique_topic) == {0: 1, 1: 1}, 60, "the records")
