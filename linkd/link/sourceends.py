"""The source's end offsets, read without fetching: ListOffsets on the short-request connections, probes
past a high watermark that lags (Tansu), and the caught-up probe a promotion asks for.

These run on the link's event loop beside its fetchers and never on a fetch connection (never behind a
long poll). They only record readings on ``PartitionProgress``; records they see are the fetchers' to
append.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import split_batches

from .client import SourceProtocolError, SourceUnavailable
from .fetcher import now_ms
from .mirror import Mirror, PartitionProgress
from .partition import fetch_position
from .states import WATCHED_STATES, LinkState
from .wire import fetch_partition, fetch_request, list_offsets_request, read_fetch, read_list_offsets

if TYPE_CHECKING:
    from .runtime import LinkRuntime

log = logging.getLogger(__name__)

PROBE_WAIT_MS = 100  # how long a probe Fetch past the high watermark may wait for data (Kafka: it waits this long)
SERVED_PAST_MAX_ROUNDS = 16  # Fetches spent walking past a source's high watermark to what it serves
SOURCE_END_REFRESH_MAX_MS = 5000  # the source end of a partition not being fetched is read this often, at least


async def read_source_offsets(rt: LinkRuntime, mirrors: list[Mirror], timestamp: int = -1) -> dict[tuple[str, int], int]:
    """ListOffsets(``timestamp``: -1 latest, -2 earliest) for every partition of ``mirrors``, asked of
    each partition's current leader on the short-request connections (never behind a long poll).
    Returns (mirror topic, partition) -> offset for the partitions that answered; a partition whose
    leader errs or cannot be reached is left out (unknown), never guessed. The caller bounds the time."""
    source_topics = sorted({m.source_topic for m in mirrors})
    if not source_topics:
        return {}
    meta = await rt.source.metadata(source_topics)
    by_leader: dict[int, dict[str, list[tuple[Mirror, int]]]] = {}
    for mirror in mirrors:
        st = meta.get(mirror.source_topic)
        if st is None or st.error != ErrorCode.NONE:
            continue
        if mirror.source_topic_id and st.topic_id is not None and str(st.topic_id) != mirror.source_topic_id:
            continue  # another log under the same name: its offsets say nothing about ours
        for sp in st.partitions.values():
            if sp.leader >= 0:
                by_leader.setdefault(sp.leader, {}).setdefault(mirror.source_topic, []).append((mirror, sp.partition))
    out: dict[tuple[str, int], int] = {}
    for leader, topics in by_leader.items():
        body = list_offsets_request({t: sorted({p for _m, p in items}) for t, items in topics.items()}, timestamp)
        try:
            conn = await rt.source.broker_connection(leader)
            answered = read_list_offsets(await conn.request(ApiKey.LIST_OFFSETS, body, timeout=rt.settings.request_timeout_ms / 1000))
        except (SourceUnavailable, SourceProtocolError) as exc:
            address = rt.source.brokers.get(leader)
            if address:
                await rt.source.drop(address)
            log.debug("link %s: ListOffsets on source broker %d failed: %s", rt.name, leader, exc)
            continue
        ends = {key: p.offset for key, p in answered.items() if p.error == ErrorCode.NONE and p.offset >= 0}
        if timestamp == -1 and ends:
            try:
                await _served_past(rt, conn, ends)
            except (SourceUnavailable, SourceProtocolError) as exc:
                log.debug("link %s: probing what source broker %d serves past its high watermarks failed: %s", rt.name, leader, exc)
                continue  # a lower bound is not an end: leave these partitions unknown
        for source_topic, items in topics.items():
            for mirror, partition in items:
                if (source_topic, partition) in ends:
                    out[(mirror.topic, partition)] = ends[(source_topic, partition)]
    return out


async def _served_past(rt: LinkRuntime, conn, ends: dict[tuple[str, int], int]) -> None:
    """Move each (source topic, partition) end in ``ends`` past whatever the source serves beyond the
    high watermark it reported: Tansu's can stay below the records it serves for good, so an end is
    judged by fetching (Fetches that wait at most PROBE_WAIT_MS; for Apache Kafka one empty answer).
    A partition the answer leaves out while others brought records (a size limit) is asked again."""
    pending = dict(ends)
    for _round in range(SERVED_PAST_MAX_ROUNDS):
        if not pending:
            return
        by_topic: dict[str, list[dict]] = {}
        for (topic, partition), offset in pending.items():
            by_topic.setdefault(topic, []).append(fetch_partition(partition, offset, rt.settings.fetch_max_bytes))
        # Tansu answers a Fetch that may not wait (max_wait_ms 0) with no partitions at all.
        body = fetch_request([{"topic": t, "partitions": ps} for t, ps in by_topic.items()], max_wait_ms=PROBE_WAIT_MS, min_bytes=1, max_bytes=rt.settings.fetch_response_max_bytes)
        answer = read_fetch(await conn.request(ApiKey.FETCH, body, timeout=rt.settings.request_timeout_ms / 1000 + PROBE_WAIT_MS / 1000))
        if answer.error != ErrorCode.NONE:
            raise SourceProtocolError(f"probe fetch failed with {answer.error.name}")
        moved, answered = {}, set()
        for key, pdata in answer.partitions.items():
            if key not in pending:
                continue
            answered.add(key)
            if pdata.error != ErrorCode.NONE:
                moved[key] = pending[key]  # not proven: asked again, unknown if it stays so
                continue
            batches = split_batches(pdata.records or b"").batches
            served = max(batches[-1].next_offset if batches else -1, pdata.high_watermark)
            if served > pending[key]:
                moved[key] = served
        left_out = {key: offset for key, offset in pending.items() if key not in answered}
        if left_out and not answered:
            raise SourceProtocolError("the probe Fetch answered for none of the partitions asked")
        ends.update(moved)
        pending = {**moved, **left_out}
    for key in pending:
        ends.pop(key)  # still more after the last round: no end known (never a made-up one)


def note_session_ends(rt: LinkRuntime) -> None:
    """A quiet partition is left out of its fetch session's answers, which says its source end is
    unchanged (KIP-227): record it as seen at the session's last answer, so the source-end watcher
    does not read 10,000 idle partitions' ends with ListOffsets every few seconds."""
    for (broker_id, index), fetcher in rt.fetchers().items():
        session = fetcher.session
        if not session.answered_ms:
            continue
        for mirror, progress in rt.share((broker_id, index)):
            if progress.source_end_seen_ms and progress.source_end_seen_ms < session.answered_ms and progress.leader == broker_id \
                    and session.holds((mirror.source_topic, progress.partition)):
                progress.source_end_seen_ms = session.answered_ms


def seen_ends_fresh(rt: LinkRuntime, mirrors: list[Mirror], within_ms: int) -> set[str]:
    """The topics of ``mirrors`` being fetched (mirror and link active) whose every partition's source end
    was read within the last ``within_ms``: by a fetch answer, or by its fetch session answering without
    it (unchanged, KIP-227). A failover need not ask the source again for those."""
    if rt.state != LinkState.ACTIVE:
        return set()
    note_session_ends(rt)
    since = now_ms() - within_ms
    fresh = set()
    for m in mirrors:
        local = rt.topics.get(m.topic)
        # Every local partition must have been read: one the mirror has no progress for yet (the topic just
        # grew) is asked about like any stale one.
        if m.fetching and local is not None and len(m.partitions) >= len(local.logs) and all(p.source_end_seen_ms >= since for p in m.partitions):
            fresh.add(m.topic)
    return fresh


def refresh_interval_s(rt: LinkRuntime) -> float:
    """How often the source's end is read for partitions no fetch has reported on lately."""
    return min(rt.settings.metadata_max_age_ms, SOURCE_END_REFRESH_MAX_MS) / 1000


async def watch_source_ends(rt: LinkRuntime) -> None:
    """Keep the source's end offsets fresh where fetching does not: paused mirrors, a paused link, a
    source whose fetches fail or time out. A partition a fetch answered within the interval costs
    nothing; the rest cost one ListOffsets per source broker per interval, however many they are."""
    while True:
        await trio.sleep(refresh_interval_s(rt))
        stale_before = now_ms() - int(refresh_interval_s(rt) * 1000)
        note_session_ends(rt)
        # A partition held by a fetcher whose session was answered since is being fetched: that answer
        # (or the session holding it unchanged) brings its end, or its first answer soon will (a new or
        # resumed mirror: a fetcher that began taking partitions within two intervals, its session
        # not granted yet). Reading 10,000 such ends with ListOffsets in the middle of a catch-up cost
        # the link a fifth of its event loop.
        fetching = {key for key, f in rt.fetchers().items() if (f.session.session_id and f.session.answered_ms >= stale_before)
                    or (not f.session.session_id and f.taking_since_ms >= stale_before - int(refresh_interval_s(rt) * 1000))}
        stale = [
            m for m in rt.mirrors()
            if not m.deleted and m.state in WATCHED_STATES
            and any(p.source_end_seen_ms < stale_before and p.fetcher not in fetching for p in m.partitions)
        ]
        if not stale:
            continue
        with trio.move_on_after(rt.settings.request_timeout_ms / 1000):
            try:
                await refresh_source_ends(rt, stale)
            except (SourceUnavailable, SourceProtocolError) as exc:
                log.debug("link %s: cannot read the source's end offsets: %s", rt.name, exc)
            except Exception:
                log.exception("link %s: reading the source's end offsets failed", rt.name)


async def refresh_source_ends(rt: LinkRuntime, mirrors: list[Mirror]) -> int:
    """Read the source's high watermarks for ``mirrors`` now and record them as the source end seen
    (the lag and the loss report use them); returns how many partitions answered."""
    asked = now_ms()
    found = await read_source_offsets(rt, mirrors, -1)
    seen = now_ms()
    local_topics = {m.topic: rt.topics.get(m.topic) for m in mirrors}
    for mirror in mirrors:
        local = local_topics[mirror.topic]
        for progress in mirror.partitions:
            offset = found.get((mirror.topic, progress.partition))
            if offset is None or progress.source_end_seen_ms > asked:
                continue  # unanswered, or a fetch answered meanwhile: its reading is the newer one
            progress.source_high_watermark = offset
            progress.source_end_seen_ms = seen
            if local is not None and progress.partition < len(local.logs) and fetch_position(progress, local.logs[progress.partition]) >= offset:
                progress.caught_up_ms = seen
    return len(found)


async def probe_caught_up(rt: LinkRuntime, mirror: Mirror) -> None:
    """Ask the source, with Fetches that do not wait, whether anything lies past where each of
    ``mirror``'s partitions fetches next. For a promote: an idle source otherwise answers the fetch
    loop only when its long poll ends (up to ``replica.fetch.wait.max.ms``). Records the evidence of
    being caught up (as the loop would for an empty answer) and nothing else. Sent on the short-request
    connections; errors just leave the evidence to the loop."""
    local = rt.topics.get(mirror.topic)
    if local is None or not mirror.fetching:
        return
    by_leader: dict[int, list[tuple[PartitionProgress, int]]] = {}
    for progress in mirror.partitions:
        if progress.validated and progress.leader >= 0 and progress.partition < len(local.logs):
            by_leader.setdefault(progress.leader, []).append((progress, fetch_position(progress, local.logs[progress.partition])))
    for leader, items in by_leader.items():
        plist = [fetch_partition(p.partition, position, p.max_bytes or rt.settings.fetch_max_bytes, p.leader_epoch) for p, position in items]
        body = fetch_request([{"topic": mirror.source_topic, "partitions": plist}], max_wait_ms=0, min_bytes=0, max_bytes=rt.settings.fetch_response_max_bytes)
        try:
            conn = await rt.source.broker_connection(leader)
            answer = read_fetch(await conn.request(ApiKey.FETCH, body, timeout=rt.settings.request_timeout_ms / 1000))
        except (SourceUnavailable, SourceProtocolError):
            continue
        if mirror.deleted or not mirror.fetching:
            return
        answered = {key[1]: pdata for key, pdata in answer.partitions.items() if key[0] == mirror.source_topic}
        if any(pdata.records for pdata in answered.values()):
            # Not caught up. (And only an answer with no records at all proves every partition
            # empty: a size limit may leave a partition out once another one returned data.)
            continue
        for progress, position in items:
            pdata = answered.get(progress.partition)
            if pdata is None or pdata.error != ErrorCode.NONE:
                continue
            if position != fetch_position(progress, local.logs[progress.partition]) or progress.leader != leader:
                continue  # the loop moved on meanwhile: its own answer counts
            progress.source_high_watermark = pdata.high_watermark
            progress.last_fetch_ms = progress.source_end_seen_ms = now_ms()
            progress.last_source_fetch_offset = position
            if position >= progress.source_high_watermark:
                progress.caught_up_ms = progress.last_fetch_ms
