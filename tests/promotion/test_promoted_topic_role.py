"""A promoted mirror is an ordinary writable topic with its own partition count: CreatePartitions works on
it (kafka-python and confluent-kafka AdminClient), while a mirror still following its source refuses it.
The source is Apache Kafka. The role survives a restart."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka.admin import KafkaAdminClient
from kafka.admin import NewPartitions as KafkaPythonNewPartitions
from kafka.errors import InvalidRequestError

from tests.peers.rawclient import list_offsets

from .helpers import cli_json, mirror, produce

pytestmark = pytest.mark.timeout(120)


def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def _confluent_create_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(topic, total)])[topic].result(15)


def test_create_partitions_is_refused_on_a_mirror_and_works_once_it_is_promoted(kafka_broker, linkd, unique_topic):
    promoted, following = f"{unique_topic}-p", f"{unique_topic}-f"
    for topic in (promoted, following):
        kafka_broker.create_topic(topic, 2)
    produce(kafka_broker.bootstrap, promoted, 20, 2)
    mirror(linkd, "src", kafka_broker.bootstrap, [promoted, following])

    kp_admin = KafkaAdminClient(bootstrap_servers=linkd.bootstrap, request_timeout_ms=15000)
    try:
        with pytest.raises(InvalidRequestError, match="follows its source"):
            kp_admin.create_partitions({following: KafkaPythonNewPartitions(3)})

        [result], _ = cli_json(linkd, "mirror", "promote", promoted, "--timeout", "30")
        assert result["error_code"] == 0 and result["mirror_status"] == "STOPPED", result

        kp_admin.create_partitions({promoted: KafkaPythonNewPartitions(3)})
        assert _partition_count(linkd.bootstrap, promoted) == 3
    finally:
        kp_admin.close()

    _confluent_create_partitions(linkd.bootstrap, promoted, 5)
    assert _partition_count(linkd.bootstrap, promoted) == 5
    with pytest.raises(Exception, match="follows its source"):
        _confluent_create_partitions(linkd.bootstrap, following, 4)
    assert _partition_count(linkd.bootstrap, following) == 2

    # The new partitions take records; the mirrored ones keep their offsets.
    produce(linkd.bootstrap, promoted, 5, 5, prefix="after")
    ends = [list_offsets(linkd.bootstrap, promoted, p)[1] for p in range(5)]
    assert ends == [11, 11, 1, 1, 1], ends

    # After a restart the topic is still promoted (writable, its own partition count) and the other still follows.
    linkd.restart()
    _confluent_create_partitions(linkd.bootstrap, promoted, 6)
    assert _partition_count(linkd.bootstrap, promoted) == 6
    with pytest.raises(Exception, match="follows its source"):
        _confluent_create_partitions(linkd.bootstrap, following, 4)
    described, _ = cli_json(linkd, "mirror", "describe", promoted)
    assert described["mirror_status"] == "STOPPED"
