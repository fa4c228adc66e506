"""Promotion runs as a task of the link manager: a client that disconnects in the middle of a promote (its
HTTP request cancelled) does not stop it between phases; it still completes once the source answers."""

from __future__ import annotations

import httpx
import pytest

from tests.link.faultproxy import FaultProxy
from tests.link.mirroring import admin, create_link, produce_confluent, source_end, wait_for, wait_mirrored


@pytest.mark.timeout(150)
def test_a_client_disconnecting_mid_promote_does_not_stop_the_promotion(linkd_factory, unique_topic):
    # The source is a linkd advertised through the proxy, so every connection of the link goes through it.
    source = linkd_factory(start=False)
    proxy = FaultProxy()
    try:
        source.extra_args += ["--advertised-listener", proxy.address]
        source.start()
        proxy.target = ("127.0.0.1", source.port)
        from confluent_kafka.admin import AdminClient, NewTopic

        source_admin = AdminClient({"bootstrap.servers": source.bootstrap, "log_level": 3})
        source_admin.create_topics([NewTopic(unique_topic, 1, 1)])[unique_topic].result(30)
        produce_confluent(source.bootstrap, unique_topic, [(0, None, b"r-%d" % n) for n in range(50)])
        dest = linkd_factory()
        client = admin(dest)
        create_link(client, "via-proxy", proxy.address)
        client.create_mirror(unique_topic, "via-proxy")
        wait_mirrored(client, unique_topic, {0: source_end(source.bootstrap, unique_topic, 0)}, timeout=60)

        # Nothing gets through: the promotion cannot prove it caught up and waits (its timeout is long).
        proxy.blackhole()
        body = {"mirror_topic_names": [unique_topic], "timeout_ms": 60_000}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{client.base}{client.cluster}/links/-/mirrors:promote", json=body, timeout=2.0)
        assert client.describe_mirror(unique_topic)["mirror_status"] == "PENDING_STOPPED"

        proxy.restore()
        done = wait_for(lambda: (d := client.describe_mirror(unique_topic))["mirror_status"] == "STOPPED" and d, 60, "the promotion to complete")
        assert done["mirror_topic_error"] == "NO_ERROR" and done["stop_info"]["kind"] == "promote"
        # Repeating the command reports the finished promotion.
        [again] = client.mirror_action("promote", [unique_topic])
        assert again["error_code"] == 0 and again["mirror_status"] == "STOPPED"
    finally:
        proxy.close()


@pytest.mark.timeout(150)
def test_a_promote_whose_caller_is_cancelled_between_phases_still_completes(linkd_factory, unique_topic, tmp_path):
    """In-process: the caller of ``LinkManager.promote`` is cancelled while the promotion waits to prove
    it caught up (its source blackholed); the promotion goes on and lands in STOPPED once it can."""
    import trio

    from linkd.daemon import Daemon, ServeConfig
    from linkd.link.states import MirrorState

    source = linkd_factory(start=False)
    proxy = FaultProxy()
    try:
        source.extra_args += ["--advertised-listener", proxy.address]
        source.start()
        proxy.target = ("127.0.0.1", source.port)
        from confluent_kafka.admin import AdminClient, NewTopic

        source_admin = AdminClient({"bootstrap.servers": source.bootstrap, "log_level": 3})  # alive until the result
        source_admin.create_topics([NewTopic(unique_topic, 1, 1)])[unique_topic].result(30)
        produce_confluent(source.bootstrap, unique_topic, [(0, None, b"r-%d" % n) for n in range(20)])
        end = source_end(source.bootstrap, unique_topic, 0)

        async def main() -> None:
            config = ServeConfig(data_dir=tmp_path / "dest", listener=("127.0.0.1", 0), advertised=None, admin=("127.0.0.1", 0))
            async with trio.open_nursery() as nursery:
                daemon = await nursery.start(Daemon(config).run)
                links = daemon.links
                await links.create_link("l", {"bootstrap.servers": proxy.address, "metadata.max.age.ms": "1000", "cluster.link.retry.timeout.ms": "600000"})
                await links.create_mirror(unique_topic, "l")
                # (``_topics``: the manager before the split, so this test can be run against it and fail)
                topic = links.topics.get(unique_topic) if hasattr(links, "topics") else links._topics.get(unique_topic)
                with trio.fail_after(60):
                    while topic.logs[0].log_end_offset < end:  # noqa: ASYNC110 - a test watching from outside
                        await trio.sleep(0.05)
                proxy.blackhole()
                with trio.move_on_after(1.0) as waited:
                    await links.promote([unique_topic], 60.0)
                assert waited.cancelled_caught, "the promotion finished although its source was blackholed"
                assert links.mirrors[unique_topic].state == MirrorState.PENDING_STOPPED
                proxy.restore()
                with trio.move_on_after(45):
                    while links.mirrors[unique_topic].state != MirrorState.STOPPED:  # noqa: ASYNC110 - as above
                        await trio.sleep(0.05)
                assert links.mirrors[unique_topic].state == MirrorState.STOPPED, "the promotion stopped with its caller"
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        proxy.close()
