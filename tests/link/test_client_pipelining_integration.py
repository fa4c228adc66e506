"""The link client pipelines requests on one connection to a real Kafka broker: requests sent together
are in flight together (one round trip), each task gets its own answer, and a request whose answer is
never read closes the connection rather than leave the next request reading it."""

from __future__ import annotations

import pytest
import trio

from linkd.link.client import SourceProtocolError, SourceUnavailable
from linkd.link.source import SourceCluster
from linkd.link.wire import EARLIEST, LATEST, list_offsets_request, read_list_offsets
from protocol.messages import ApiKey
from tests.link.mirroring import produce_confluent
from tests.link.roundtripproxy import RoundTripProxy
from tests.peers import LOOPBACK


@pytest.fixture
def proxied_source(kafka_broker):
    proxy = RoundTripProxy((LOOPBACK, kafka_broker.port), quiet_s=0.3)
    yield SourceCluster([(LOOPBACK, proxy.port)], "pipelining-test"), proxy
    proxy.close()


@pytest.mark.timeout(60)
def test_requests_sent_together_share_one_round_trip_and_get_their_own_answers(kafka_broker, proxied_source, unique_topic):
    kafka_broker.create_topic(unique_topic, partitions=1)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"a"), (0, None, b"b"), (0, None, b"c")])
    source, proxy = proxied_source
    answers: dict[str, object] = {}

    async def main() -> None:
        address = source.bootstrap[0]
        conn = await source.connection(address)  # ApiVersions: its own round trip
        start = proxy.rounds

        async def ask(name: str, api_key: int, body: dict) -> None:
            answers[name] = await conn.request(api_key, body, timeout=20)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "metadata", ApiKey.METADATA, {"topics": [{"name": unique_topic}], "allow_auto_topic_creation": False})
            nursery.start_soon(ask, "earliest", ApiKey.LIST_OFFSETS, list_offsets_request({unique_topic: [0]}, EARLIEST))
            nursery.start_soon(ask, "latest", ApiKey.LIST_OFFSETS, list_offsets_request({unique_topic: [0]}, LATEST))
        answers["rounds"] = proxy.rounds - start
        await source.close()

    trio.run(main)
    assert answers["rounds"] == 1, proxy.requests
    assert [t["name"] for t in answers["metadata"]["topics"]] == [unique_topic]  # type: ignore[index]
    assert read_list_offsets(answers["earliest"])[unique_topic, 0].offset == 0  # type: ignore[arg-type]
    assert read_list_offsets(answers["latest"])[unique_topic, 0].offset == 3  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_a_request_whose_answer_is_not_read_closes_the_connection(proxied_source):
    source, proxy = proxied_source
    outcome: dict[str, object] = {}

    async def main() -> None:
        address = source.bootstrap[0]
        conn = await source.connection(address)
        with trio.move_on_after(0.1):  # the proxy holds the answer back for longer than this
            await conn.request(ApiKey.METADATA, {"topics": [], "allow_auto_topic_creation": False})
        try:
            await conn.request(ApiKey.METADATA, {"topics": [], "allow_auto_topic_creation": False}, timeout=10)
        except (SourceUnavailable, SourceProtocolError) as exc:
            outcome["reuse"] = type(exc).__name__
        outcome["closed"] = getattr(conn, "closed", None)
        # The cluster opens a new connection for the next request, which gets its own answer.
        again = await source.connection(address)
        outcome["fresh"] = again is not conn
        outcome["brokers"] = (await again.request(ApiKey.METADATA, {"topics": [], "allow_auto_topic_creation": False}, timeout=10))["brokers"]
        await source.close()

    trio.run(main)
    assert outcome["reuse"] == "SourceUnavailable"  # not an answer meant for the cancelled request
    assert outcome["closed"] is True
    assert outcome["fresh"] is True
    assert len(outcome["brokers"]) == 1  # type: ignore[arg-type]
