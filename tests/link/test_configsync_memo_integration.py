"""Config sync's periodic DescribeConfigs against Apache Kafka: an answer byte-identical to the round before
is not decoded again (decodememo.py), and a changed source config is still read in the next round."""

from __future__ import annotations

import pytest
import trio

from linkd.link import configsync
from linkd.link.decodememo import DecodeMemo
from linkd.link.source import SourceCluster
from linkd.topicconfig import ALWAYS_SYNCED
from protocol.messages import ApiKey
from tests.broker.wire import WireConnection
from tests.peers import LOOPBACK


def set_retention(bootstrap: str, topic: str, value: str) -> None:
    with WireConnection(bootstrap) as conn:
        body = conn.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": topic, "configs": [{"name": "retention.ms", "config_operation": 0, "value": value}]}], "validate_only": False})
    assert body["responses"][0]["error_code"] == 0, body


@pytest.mark.timeout(60)
def test_an_unchanged_answer_is_taken_from_the_memo_and_a_changed_config_is_still_read(kafka_broker, unique_topic):
    topics = [f"{unique_topic}-{i}" for i in range(3)]
    for t in topics:
        kafka_broker.create_topic(t, partitions=1)
    names = frozenset(ALWAYS_SYNCED) | {"retention.ms"}
    memo = DecodeMemo()
    rounds: list[dict[str, dict[str, str]]] = []
    hits: list[int] = []

    async def main() -> None:
        source = SourceCluster([(LOOPBACK, kafka_broker.port)], "memo-test")
        try:
            for change in (None, None, "123456789", None):
                if change is not None:
                    await trio.to_thread.run_sync(set_retention, kafka_broker.bootstrap, topics[1], change)
                found, refused, _codes = await configsync._describe(source, topics, names, memo)
                assert not refused, refused
                rounds.append(found)
                hits.append(memo.hits)
        finally:
            await source.close()

    trio.run(main)
    assert hits == [0, 1, 1, 2]  # decoded, kept, decoded (changed), kept
    assert rounds[0] == rounds[1]
    assert rounds[2][topics[1]]["retention.ms"] == "123456789" != rounds[1][topics[1]]["retention.ms"]
    assert rounds[2][topics[0]] == rounds[1][topics[0]] and rounds[3] == rounds[2]
