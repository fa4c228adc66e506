"""Which source broker fetches which mirror partition: source metadata in, a plan out (pure).

For one mirror, ``plan`` reads its source topic's metadata and decides one of:

- ``Assigned``: each partition with a leader goes to that leader's fetcher; a partition whose leader or
  leader epoch changed must be validated again (a new leader may hold another history). When the source
  has more partitions than the mirror, ``grow_to`` says how many the mirror topic must get first;
- ``Fail``: the source topic came back with another topic id while the mirror holds data (re-created,
  or a source that lost everything: its offsets now name other records), or it has fewer partitions;
- ``SourceDenied``: the source refuses Describe on the topic to the link's principal;
- ``SourceMissing``: absent from the metadata, an error, or a new id on an empty mirror (wait, then fail);
- ``NoLocalTopic``: the mirror's topic is gone here (deleted meanwhile).

``spread`` then splits each broker's partitions among that broker's ``num.cluster.link.fetchers``
fetchers, each with its own connection: disjoint sets, so each partition's appends stay in order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from protocol.errors import ErrorCode

from .mirror import Mirror, PartitionProgress
from .partition import Fail
from .states import MirrorError


@dataclass(frozen=True)
class Assigned:
    leaders: list[tuple[int, PartitionProgress]] = field(default_factory=list)
    grow_to: int | None = None


@dataclass(frozen=True)
class SourceDenied:
    pass


@dataclass(frozen=True)
class SourceMissing:
    reason: str  # the metadata error's name, or "absent"


@dataclass(frozen=True)
class NoLocalTopic:
    pass


Plan = Assigned | Fail | SourceDenied | SourceMissing | NoLocalTopic


def recreated(mirror: Mirror, st) -> bool:
    """The source topic ``st`` (its metadata) is another log than the one the mirror was created from."""
    return st is not None and st.error == ErrorCode.NONE and bool(mirror.source_topic_id) and st.topic_id is not None and str(st.topic_id) != mirror.source_topic_id


def plan(mirror: Mirror, st, local_partitions: int | None, holds_data: bool, fetch_max_bytes: int) -> Plan:
    """The plan for ``mirror`` given ``st`` (its source topic's metadata, None when absent), the number of
    partitions of its local topic (None: no such topic) and whether any of them holds data. Adds progress
    records for new partitions and records the leaders on them; nothing else is changed."""
    new_id = recreated(mirror, st)
    if new_id and holds_data:
        # Same name, another log: its offsets now name other records than the ones the mirror holds.
        return Fail(
            MirrorError.UNEXPECTED_TRUNCATION,
            f"source topic {mirror.source_topic} came back with a new topic id ({mirror.source_topic_id} -> {st.topic_id}): "
            "the source lost or re-created the log the mirror holds",
        )
    if st is not None and st.error == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
        return SourceDenied()
    if st is None or st.error != ErrorCode.NONE or new_id:
        return SourceMissing(st.error.name if st is not None else "absent")
    if local_partitions is None:
        return NoLocalTopic()
    count = len(st.partitions)
    if count < local_partitions:
        return Fail(MirrorError.SOURCE_PARTITIONS_DECREASED, f"source topic {mirror.source_topic} has {count} partitions, mirror has {local_partitions}")
    grow_to = count if count > local_partitions else None
    while len(mirror.partitions) < count:
        mirror.partitions.append(PartitionProgress(len(mirror.partitions), max_bytes=fetch_max_bytes))
    leaders = []
    for progress in mirror.partitions:
        sp = st.partitions.get(progress.partition)
        if sp is None or sp.leader < 0:
            continue
        if (sp.leader, sp.leader_epoch) != (progress.leader, progress.leader_epoch):
            progress.validated = False  # a new leader may hold a different history
        progress.leader, progress.leader_epoch = sp.leader, sp.leader_epoch
        leaders.append((sp.leader, progress))
    return Assigned(leaders, grow_to)


# num.cluster.link.fetchers=0 (the default) adapts: one fetch connection per broker while the source's
# round trip is under LAN_ROUND_TRIP_S, WAN_FETCHERS beyond. On a LAN one connection's response in flight
# (replica.fetch.response.max.bytes) exceeds the bandwidth-delay product, and more connections cost CPU
# (on loopback 4 were no faster than 1 and took ~1.7x its CPU); across 100 ms, 4 moved ~2x what 1 did. The round
# trip is the least any request took (a loaded broker answers slowly, never faster than the path), so
# 20 ms sits between a region's ~1-2 ms and the 30-150 ms between regions with room for noise.
LAN_ROUND_TRIP_S = 0.020
WAN_FETCHERS = 4


def wide_area(round_trip_s: float | None) -> bool:
    """The source is across a WAN: its round trip (the least measured over the link's connections) is
    LAN_ROUND_TRIP_S or more; unknown counts as a LAN."""
    return round_trip_s is not None and round_trip_s >= LAN_ROUND_TRIP_S


def fetcher_count(configured: int, round_trip_s: float | None) -> int:
    """Fetchers per source broker: ``num.cluster.link.fetchers`` when set (> 0), else adaptive on the
    source's round trip."""
    if configured > 0:
        return configured
    return WAN_FETCHERS if wide_area(round_trip_s) else 1


def spread(parts: list[tuple[Mirror, PartitionProgress]], fetchers: int) -> dict[int, list[tuple[Mirror, PartitionProgress]]]:
    """Split one source broker's partitions among its ``fetchers`` fetchers: fetcher index -> partitions
    (only indexes that get some). A topic's partitions go round-robin by their rank among the ones this
    broker leads, starting at an index its name picks, so every topic is spread evenly, many small topics
    do not all land on fetcher 0, and a partition keeps its fetcher when other mirrors come and go."""
    by_topic: dict[str, list[tuple[Mirror, PartitionProgress]]] = {}
    for mirror, progress in parts:
        by_topic.setdefault(mirror.topic, []).append((mirror, progress))
    out: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
    for topic, items in by_topic.items():
        start = zlib.crc32(topic.encode())
        for rank, item in enumerate(sorted(items, key=lambda i: i[1].partition)):
            out.setdefault((start + rank) % fetchers, []).append(item)
    return out
