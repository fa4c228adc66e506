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
