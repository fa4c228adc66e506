"""A link's fetch loop long-polls the source; nothing else the link asks may queue behind that poll.

Apache Kafka answers one connection's requests in order, so a Metadata request sent on the connection of
a Fetch that waits ``replica.fetch.wait.max.ms`` for data is answered only when that Fetch ends.
"""

from __future__ import annotations

import time

import pytest

from tests.link.mirroring import admin, create_link, mirror_ends, produce_confluent, wait_for

LONG_POLL_MS = 40_000  # far longer than anything below may take


@pytest.mark.timeout(120)
def test_creating_a_mirror_does_not_wait_for_the_links_long_poll(kafka_broker, linkd, unique_topic):
    idle, second = f"{unique_topic}-idle", f"{unique_topic}-second"
    kafka_broker.create_topic(idle, partitions=2)
    kafka_broker.create_topic(second, partitions=2)
    produce_confluent(kafka_broker.bootstrap, idle, [(0, None, b"a"), (1, None, b"b")])
    client = admin(linkd)
    create_link(client, "poll", kafka_broker.bootstrap, **{"replica.fetch.wait.max.ms": str(LONG_POLL_MS), "request.timeout.ms": "5000"})
    client.create_mirror(idle, "poll")
    # The idle mirror has fetched its one record per partition: its next Fetch waits for data that never
    # comes, for LONG_POLL_MS.
    wait_for(lambda: mirror_ends(client, idle) == {0: 1, 1: 1}, 30, "the idle mirror's first records")
    time.sleep(0.5)

    started = time.monotonic()
    created = client.create_mirror(second, "poll")
    took = time.monotonic() - started
    assert created["num_partitions"] == 2
    # Queued behind the poll, the create's Metadata request would be answered after up to 40 s.
    assert took < LONG_POLL_MS / 1000 / 4, f"create_mirror took {took:.1f}s while the link's Fetch long-polled ({LONG_POLL_MS} ms)"
    # And the new mirror fetches: its partitions join the loop when the poll ends or new data wakes it.
    assert client.describe_mirror(second)["mirror_status"] == "ACTIVE"


@pytest.mark.timeout(120)
def test_promoting_an_idle_mirror_does_not_wait_for_the_links_long_poll(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, partitions=3)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(p, None, b"first-%d" % p) for p in range(3)])
    client = admin(linkd)
    create_link(client, "poll", kafka_broker.bootstrap, **{"replica.fetch.wait.max.ms": str(LONG_POLL_MS), "request.timeout.ms": "5000"})
    client.create_mirror(unique_topic, "poll")
    wait_for(lambda: mirror_ends(client, unique_topic) == {0: 1, 1: 1, 2: 1}, 30, "the first records")
    # New data wakes the waiting Fetch at once; after it, the link's next Fetch waits LONG_POLL_MS.
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"more-%d" % i) for i in range(5)])
    ends = {p: kafka_broker.list_offsets(unique_topic, p)[1] for p in range(3)}
    assert ends == {0: 6, 1: 1, 2: 1}

    started = time.monotonic()
    (result,) = client.mirror_action("promote", [unique_topic])
    took = time.monotonic() - started
    assert result["error_code"] == 0, result
    assert took < LONG_POLL_MS / 1000 / 4, f"promote took {took:.1f}s while the link's Fetch long-polled ({LONG_POLL_MS} ms)"
    # Caught up means caught up: every record the source had is in the promoted topic.
    assert mirror_ends(client, unique_topic) == ends
    assert client.describe_mirror(unique_topic)["mirror_status"] == "STOPPED"
