"""Reading back what a failover lost or what differs from the source (verify). Runs on the event loop,
called by the link manager. (Creating mirrors: creations.py.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode

from .client import SourceProtocolError, SourceUnavailable
from .errors import DomainError, ErrorKind
from .loss import lost_offsets
from .states import MirrorState
from .verify import DEFAULT_STEP_BYTES, fetch_source_batches, verify_step

if TYPE_CHECKING:
    from .manager import LinkManager

log = logging.getLogger(__name__)


def lost_range(m: LinkManager, topic: str, partition: int) -> tuple[int, int]:
    """[from, to) of ``partition``'s lost offsets; refuses when they are not known yet."""
    mirror = m.mirror(topic)
    lost = lost_offsets(mirror.stop_info)
    if (mirror.stop_info or {}).get("kind") != "failover":
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"mirror topic '{topic}' was not failed over: nothing was lost")
    if lost is None:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"the lost offsets of '{topic}' are unknown until its source answers again (link '{mirror.link}')")
    found = [x for x in lost if x["partition"] == partition]
    if not found:
        raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' has no partition {partition}")
    return found[0]["from"], found[0]["to"]


async def lost_records(m: LinkManager, topic: str, partition: int):
    """Yield the source's record batches covering exactly the lost offsets of ``partition``, verified
    (CRC), as the source stores them. Memory is one Fetch response (``replica.fetch.max.bytes``)."""
    start, end = m.lost_range(topic, partition)
    mirror = m.mirror(topic)
    entry = m.link(mirror.link)
    offset = start
    while offset < end:
        theirs, _log_start, _hw = await fetch_source_batches(entry.runtime, mirror.source_topic, partition, offset, entry.settings.fetch_max_bytes, entry.settings.request_timeout_ms / 1000 * 2)
        batches = [b for b in theirs if b.next_offset > offset and b.base_offset < end]
        if not batches:
            raise SourceProtocolError(f"the source returned no records for {mirror.source_topic}-{partition} at offset {offset} (lost range ends at {end})")
        for batch in batches:
            batch.verify()
            yield bytes(batch.buffer)
            offset = batch.next_offset


async def verify(m: LinkManager, topic: str, partition: int, from_offset: int | None = None, end_offset: int | None = None, max_bytes: int = DEFAULT_STEP_BYTES) -> dict:
    """One step of ``mirror verify`` for ``partition`` (see verify.py): compares the source's batches with
    the mirror's from ``from_offset`` (default: the first offset both sides hold) up to ``end_offset``
    (default: the mirror's log end, or the stop offset once promoted or failed over)."""
    mirror = m.mirror(topic)
    entry = m.link(mirror.link)
    local = m.topics.get(topic)
    if local is None or not 0 <= partition < len(local.logs):
        raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' has no partition {partition}")
    plog = local.logs[partition]
    limit = plog.log_end_offset
    stops = {p["partition"]: p.get("stop_offset", p.get("mirror_end_offset")) for p in (mirror.stop_info or {}).get("partitions", [])}
    if mirror.state == MirrorState.STOPPED and partition in stops:
        limit = min(limit, stops[partition])  # what was produced here after the stop is not the source's
    end = limit if end_offset is None else min(end_offset, limit)
    timeout_s = entry.settings.request_timeout_ms / 1000
    try:
        start = plog.log_start_offset
        if from_offset is None or from_offset < start:
            with trio.fail_after(timeout_s):
                earliest = await entry.runtime.read_source_offsets([mirror], -2)
            source_start = earliest.get((topic, partition))
            if source_start is None:
                raise SourceUnavailable(f"the source did not say where {mirror.source_topic}-{partition} starts")
            start = max(start, source_start, from_offset or 0)
        else:
            start = from_offset
        step = await verify_step(entry.runtime, mirror.source_topic, plog, partition, start, end, max_bytes, timeout_s)
    except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
        raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot verify '{topic}' partition {partition}: the source of link '{mirror.link}' did not answer: {exc or 'timed out'}") from exc
    return {"mirror_topic_name": topic, "from_offset": start, **step}
