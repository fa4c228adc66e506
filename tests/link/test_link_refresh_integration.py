"""The link against changes that land while it works: a wake-up during a metadata refresh, a mirror topic
deleted while it is being fetched. None may be lost, and none may stop the daemon.

A lost wake-up is silent: the mirror looks ACTIVE and simply does not move until the next periodic refresh
(``metadata.max.age.ms``, 5 minutes by default). The fake source holds its Metadata answer so the change
is sure to land inside the refresh."""

from __future__ import annotations

import threading
import time

import pytest

from protocol.records import build_records
from tests.link.fakesource import FakeSource
from tests.link.mirroring import admin, create_link, wait_mirrored


@pytest.mark.timeout(90)
def test_a_mirror_resumed_while_the_link_refreshes_metadata_is_fetched_at_once(linkd):
    with FakeSource("a", also_serves=("b", "c")) as fake:
        fake.serve(build_records([b"first-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        # The default periodic refresh (the tests' links refresh every second, which would hide a lost wake-up).
        create_link(client, "fake", fake.bootstrap, **{"metadata.max.age.ms": "300000"})
        for name in "abc":
            client.create_mirror(f"m{name}", "fake", source_topic=name)
            wait_mirrored(client, f"m{name}", {0: 5})
        client.mirror_action("pause", ["mb", "mc"])
        fake.serve(build_records([b"second-%d" % n for n in range(5)], base_offset=5))
        wait_mirrored(client, "ma", {0: 10})

        fake.hold_metadata()
        client.mirror_action("resume", ["mc"])  # wakes the link: its refresh now waits for the source
        assert fake.metadata_held.wait(10), "the link did not refresh its metadata after a resume"
        client.mirror_action("resume", ["mb"])  # lands while that refresh is in flight
        fake.release_metadata()
        wait_mirrored(client, "mc", {0: 10}, timeout=15)
        wait_mirrored(client, "mb", {0: 10}, timeout=15)


@pytest.mark.timeout(90)
def test_a_new_mirror_starts_on_the_metadata_its_create_fetched(linkd):
    """``mirror create`` has just read the source topic's metadata; the link starts fetching on that rather
    than waiting for a refresh of its own (a slow source's Metadata answer no longer delays a new mirror)."""
    with FakeSource("a", also_serves=("b",)) as fake:
        fake.serve(build_records([b"first-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap, **{"metadata.max.age.ms": "300000"})
        client.create_mirror("ma", "fake", source_topic="a")
        wait_mirrored(client, "ma", {0: 5})
        fake.hold_metadata(after=1)  # the create's own lookup is answered, any refresh after it waits
        try:
            client.create_mirror("mb", "fake", source_topic="b")
            wait_mirrored(client, "mb", {0: 5}, timeout=10)
        finally:
            fake.release_metadata()
        assert "Traceback" not in linkd.logs(400), linkd.logs()


@pytest.mark.timeout(90)
def test_deleting_a_mirror_topic_while_its_link_fetches_stops_only_that_mirror(linkd):
    # DeleteTopics on a mirror used to leave it in the link's fetch assignment; the next round looked up
    # the deleted log and the exception took the whole daemon down.
    from confluent_kafka.admin import AdminClient as KafkaAdmin

    with FakeSource("a", also_serves=("b",)) as fake:
        fake.serve(build_records([b"first-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap)
        for name in "ab":
            client.create_mirror(f"m{name}", "fake", source_topic=name)
            wait_mirrored(client, f"m{name}", {0: 5})
        kafka_admin = KafkaAdmin({"bootstrap.servers": linkd.bootstrap})
        for future in kafka_admin.delete_topics(["ma"], operation_timeout=10).values():
            future.result(30)
        fetches = fake.fetches
        fake.serve(build_records([b"second-%d" % n for n in range(5)], base_offset=5))
        wait_mirrored(client, "mb", {0: 10}, timeout=15)
        assert fake.fetches > fetches and linkd.running, linkd.logs()
        assert [m["mirror_topic_name"] for m in client.list_mirrors()] == ["mb"]
        assert "Traceback" not in linkd.logs(400), linkd.logs()
        # The name is free again: a new mirror of it starts from the source's beginning.
        client.create_mirror("ma", "fake", source_topic="a")
        wait_mirrored(client, "ma", {0: 10}, timeout=15)


@pytest.mark.timeout(90)
def test_deleting_a_mirror_topic_while_it_is_promoted_ends_the_promote_at_once(linkd):
    """A promote waits for the mirror to catch up; if a client deletes the topic meanwhile, the promote
    must say so at once, not wait out its timeout and then try to stop a mirror that is gone."""
    from confluent_kafka.admin import AdminClient as KafkaAdmin

    with FakeSource("a") as fake:
        fake.serve(build_records([b"r-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap)
        client.create_mirror("ma", "fake", source_topic="a")
        wait_mirrored(client, "ma", {0: 5})
        fake.unfetchable = 3  # the source claims offsets the mirror never gets: the promote cannot finish
        outcome: list = []
        promoting = threading.Thread(target=lambda: outcome.append(admin(linkd).mirror_action("promote", ["ma"], timeout_s=60)))
        promoting.start()
        deadline = time.monotonic() + 10
        while client.describe_mirror("ma")["mirror_status"] != "PENDING_STOPPED":
            assert time.monotonic() < deadline, client.describe_mirror("ma")
            time.sleep(0.05)
        kafka_admin = KafkaAdmin({"bootstrap.servers": linkd.bootstrap})
        for future in kafka_admin.delete_topics(["ma"], operation_timeout=10).values():
            future.result(30)
        promoting.join(15)
        assert not promoting.is_alive(), "the promote kept waiting for a deleted mirror"
        [result] = outcome[0]
        assert "deleted" in result["error_message"], result
        assert client.list_mirrors() == [] and linkd.running
        assert "Traceback" not in linkd.logs(400), linkd.logs()


@pytest.mark.timeout(90)
def test_a_source_answering_metadata_with_an_error_code_we_do_not_know_does_not_stop_the_daemon(linkd):
    """A newer broker may send error codes this linkd has never heard of; that must not end the daemon."""
    from tests.broker.clients import create_topic
    from tests.broker.wire import WireConnection, produce_request

    with FakeSource("a") as fake:
        fake.serve(build_records([b"first-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap)  # refreshes its metadata every second
        client.create_mirror("ma", "fake", source_topic="a")
        wait_mirrored(client, "ma", {0: 5})
        fake.metadata_partition_error = 9999
        time.sleep(3)  # a few refreshes see it
        assert linkd.process.poll() is None, linkd.logs()
        create_topic(linkd.bootstrap, "bystander")
        with WireConnection(linkd.bootstrap) as conn:
            assert produce_request(conn, "bystander", 0, build_records([b"still serving"]))["error_code"] == 0
        fake.metadata_partition_error = 0
        fake.serve(build_records([b"second-%d" % n for n in range(5)], base_offset=5))
        wait_mirrored(client, "ma", {0: 10}, timeout=15)


@pytest.mark.timeout(90)
def test_mirrors_created_on_a_paused_link_cost_the_source_one_metadata_lookup_each(linkd):
    """A paused link fetches nothing, so a new mirror needs no refresh of the link's whole metadata (one
    per created mirror made creating 1,000 mirrors quadratic: minutes); resuming the link refreshes it,
    and every mirror is then fetched."""
    names = [f"t{i}" for i in range(8)]
    with FakeSource(names[0], also_serves=tuple(names[1:])) as fake:
        fake.serve(build_records([b"r-%d" % n for n in range(5)], base_offset=0))
        client = admin(linkd)
        create_link(client, "fake", fake.bootstrap, **{"metadata.max.age.ms": "300000", "cluster.link.paused": "true"})
        before = fake.metadata_requests
        for name in names:
            client.create_mirror(f"m{name}", "fake", source_topic=name)
        asked = fake.metadata_requests - before
        # One lookup per create (its source topic), and at most one periodic source-end reading meanwhile.
        assert asked <= len(names) + 1, f"{asked} Metadata requests to create {len(names)} mirrors on a paused link"
        client.alter_link_configs("fake", {"cluster.link.paused": "false"}, [])
        for name in names:
            wait_mirrored(client, f"m{name}", {0: 5}, timeout=20)
