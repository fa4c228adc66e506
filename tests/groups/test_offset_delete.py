"""OffsetDelete (``kafka-consumer-groups --delete-offsets``) answers as Apache Kafka 4.1 answers, on the wire:
an unknown group, an Empty group (offsets go), and a live consumer group, whose subscribed topics keep
their offsets (GROUP_SUBSCRIBED_TO_TOPIC) while other topics' go."""

from __future__ import annotations

import struct
import time
import uuid

import pytest

from protocol.messages import ApiKey
from tests.broker.wire import WireConnection

pytestmark = pytest.mark.timeout(120)
SESSION_MS = 30_000


def _subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def _create(conn: WireConnection, name: str) -> None:
    body = conn.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000})
    assert body["topics"][0]["error_code"] == 0, body


def _commit(conn: WireConnection, group: str, topics: list[str], generation: int = -1, member: str = "") -> None:
    body = conn.request(ApiKey.OFFSET_COMMIT, 8, {"group_id": group, "generation_id_or_member_epoch": generation, "member_id": member, "group_instance_id": None,
                                                  "topics": [{"name": t, "partitions": [{"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1, "committed_metadata": ""}]} for t in topics]})
    assert all(p["error_code"] == 0 for t in body["topics"] for p in t["partitions"]), body


def _delete(conn: WireConnection, group: str, topics: list[str]) -> tuple[int, dict[str, int]]:
    body = conn.request(ApiKey.OFFSET_DELETE, 0, {"group_id": group, "topics": [{"name": t, "partitions": [{"partition_index": 0}]} for t in topics]})
    return body["error_code"], {t["name"]: t["partitions"][0]["error_code"] for t in body["topics"]}


def _join(conn: WireConnection, group: str, topic: str) -> tuple[str, int]:
    join = {"group_id": group, "session_timeout_ms": SESSION_MS, "rebalance_timeout_ms": SESSION_MS, "member_id": "", "group_instance_id": None,
            "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": _subscription(topic)}], "reason": None}
    first = conn.request(ApiKey.JOIN_GROUP, 9, join)
    joined = conn.request(ApiKey.JOIN_GROUP, 9, {**join, "member_id": first["member_id"]})
    assert joined["error_code"] == 0, joined
    synced = conn.request(ApiKey.SYNC_GROUP, 5, {"group_id": group, "generation_id": joined["generation_id"], "member_id": joined["member_id"], "group_instance_id": None,
                                                 "protocol_type": "consumer", "protocol_name": "range", "assignments": [{"member_id": joined["member_id"], "assignment": b""}]})
    assert synced["error_code"] == 0, synced
    return joined["member_id"], joined["generation_id"]


def _coordinator_ready(conn: WireConnection, group: str) -> None:
    """Kafka creates and loads __consumer_offsets on first use: until then a group's requests get
    COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS."""
    deadline = time.monotonic() + 60
    while True:
        found = conn.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": [group]})["coordinators"][0]
        fetched = conn.request(ApiKey.OFFSET_FETCH, 7, {"group_id": group, "topics": None, "require_stable": False})
        if found["error_code"] == 0 and fetched["error_code"] == 0:
            return
        assert time.monotonic() < deadline, (found, fetched)
        time.sleep(0.5)


def _scenario(bootstrap: str) -> list:
    suffix = uuid.uuid4().hex[:6]
    subscribed, other, group = f"od-sub-{suffix}", f"od-other-{suffix}", f"od-g-{suffix}"
    answers = []
    with WireConnection(bootstrap) as conn:
        _create(conn, subscribed)
        _create(conn, other)
        _coordinator_ready(conn, group)
        _coordinator_ready(conn, f"od-none-{suffix}")
        answers.append(_delete(conn, f"od-none-{suffix}", [subscribed]))
        member, generation = _join(conn, group, subscribed)
        _commit(conn, group, [subscribed, other], generation, member)
        answers.append(_delete(conn, group, [subscribed, other]))
        fetched = conn.request(ApiKey.OFFSET_FETCH, 7, {"group_id": group, "topics": None, "require_stable": False})
        answers.append(sorted((t["name"], p["committed_offset"]) for t in fetched["topics"] for p in t["partitions"]))
        left = conn.request(ApiKey.LEAVE_GROUP, 5, {"group_id": group, "members": [{"member_id": member, "group_instance_id": None, "reason": None}]})
        assert left["error_code"] == 0, left
        answers.append(_delete(conn, group, [subscribed]))  # Empty now: it goes
        answers.append(_delete(conn, group, [subscribed]))  # no offsets left: the group is gone
    return [a if not isinstance(a, list) else [(n.split("-")[1], o) for n, o in a] for a in answers]


def _normalise(answers: list) -> list:
    out = []
    for a in answers:
        if isinstance(a, tuple):
            out.append((a[0], sorted((n.split("-")[1], code) for n, code in a[1].items())))
        else:
            out.append(a)
    return out


def test_offset_delete_answers_as_apache_kafka_does(kafka_broker, linkd):
    ours = _normalise(_scenario(linkd.bootstrap))
    theirs = _normalise(_scenario(kafka_broker.bootstrap))
    assert ours == theirs
    assert ours[1] == (0, [("other", 0), ("sub", 86)])  # GROUP_SUBSCRIBED_TO_TOPIC for the subscribed topic only
