"""Creating a mirror (source metadata and configs read first, the topic created with them), and reading
back what a failover lost or what differs from the source (verify). Runs on the event loop, called by the
link manager."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode

from ..topics import TopicError, validate_topic_name
from .client import SourceProtocolError, SourceUnavailable
from .configsync import ConfigsUnsupported, describe_source_configs, mirrored_configs
from .errors import DomainError, ErrorKind
from .loss import lost_offsets
from .mirror import Mirror, PartitionProgress
from .states import MirrorState
from .verify import DEFAULT_STEP_BYTES, fetch_source_batches, verify_step

if TYPE_CHECKING:
    from .manager import LinkManager

log = logging.getLogger(__name__)


class _Outcome:
    """What a request run beside another returned or raised, kept until the caller wants it."""

    value = None
    error: Exception | None = None

    async def capture(self, request, *args) -> None:
        try:
            self.value = await request(*args)
        except Exception as exc:  # re-raised by ``result`` (trio's Cancelled is a BaseException: not caught)
            self.error = exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


async def create_mirror(m: LinkManager, topic: str | None, link: str, source_topic: str | None = None) -> str:
    """Mirror ``source_topic`` as ``topic``; returns the mirror topic's name. On a link with ``cluster.link.prefix`` the mirror is named
    prefix + source name: the source topic must be given, the mirror name may be left out."""
    entry = m.link(link)
    if entry.locked is not None:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, entry.locked)
    prefix = entry.settings.prefix
    if prefix:
        if not source_topic:
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, f"link '{link}' has cluster.link.prefix={prefix}: give the source topic (--source-topic); the mirror is named {prefix}<source topic>")
        if topic is not None and topic != prefix + source_topic:
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, f"link '{link}' has cluster.link.prefix={prefix}: the mirror of '{source_topic}' must be named '{prefix + source_topic}', not '{topic}'")
        topic = prefix + source_topic
    if not topic:
        topic = source_topic
    if not topic:
        raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, "a mirror needs a topic name or a source topic name")
    source_topic = source_topic or topic
    try:
        validate_topic_name(topic)
    except TopicError as exc:
        raise DomainError(ErrorKind.INVALID, exc.error_code, exc.message) from exc
    if topic in m.mirrors or m.topics.get(topic) is not None:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
    twin = next((m.topic for m in m.mirrors.values() if m.link == link and m.source_topic == source_topic and m.state != MirrorState.STOPPED), None)
    if twin is not None:
        # One link fetches a source partition once; a second mirror of it would never advance.
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"source topic '{source_topic}' is already mirrored as '{twin}' over link '{link}'; create another link to mirror it twice")
    # The configs are asked at once, pipelined behind the Metadata on the same connection (one round trip
    # for both across a WAN); their answer counts only once the metadata says the topic exists.
    configs_asked, meta_asked = _Outcome(), _Outcome()
    try:
        with trio.fail_after(entry.settings.request_timeout_ms / 1000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(configs_asked.capture, describe_source_configs, entry.runtime.source, [source_topic], entry.config_sync.names)
                await meta_asked.capture(entry.runtime.source.metadata, [source_topic])
        meta = meta_asked.result()
    except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
        raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot reach the source cluster of link '{link}': {exc}") from exc
    st = meta.get(source_topic)
    if st is not None and st.error == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
        raise DomainError(ErrorKind.DENIED, ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"link '{link}' is not authorized to describe source topic '{source_topic}' (TOPIC_AUTHORIZATION_FAILED): grant its principal Describe and Read on it")
    if st is None or st.error != ErrorCode.NONE or not st.partitions:
        code = st.error.name if st else "absent"
        raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"source topic '{source_topic}' does not exist on link '{link}' ({code})")
    if topic in m.mirrors or m.topics.get(topic) is not None:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
    # The source topic's configs before the first append: retention must never run with our defaults.
    try:
        source_configs = configs_asked.result()  # asked beside the Metadata above
    except ConfigsUnsupported as exc:
        log.warning("mirror %s: %s; created keeping everything (retention.ms=-1)", topic, exc)
        source_configs = {source_topic: {}}
    except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
        raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot read the configs of source topic '{source_topic}' on link '{link}': {exc}") from exc
    if topic in m.mirrors or m.topics.get(topic) is not None:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
    configs = mirrored_configs({}, source_configs[source_topic], entry.config_sync.names, set(), creating=True)
    partitions = len(st.partitions)
    # The mirror's own epoch starts at the source's so advertised epochs never go backwards (Invariant 4).
    epoch = max((p.leader_epoch for p in st.partitions.values()), default=0)
    mirror = Mirror(topic, link, source_topic, str(st.topic_id) if st.topic_id else None, MirrorState.ACTIVE)
    mirror.partitions = [PartitionProgress(p, max_bytes=entry.settings.fetch_max_bytes) for p in range(partitions)]
    try:
        # The mirror's row in the topic's own transaction: one commit, and never a topic without its mirror.
        await m.topics.create_async(topic, partitions, dict[str, str | None](configs), kind="mirror", leader_epoch=max(epoch, 0),
                                    also=lambda: m.mirror_store.insert(mirror))
    except TopicError as exc:
        raise DomainError(ErrorKind.INVALID, exc.error_code, f"cannot create mirror topic '{topic}' with the source's configs {configs}: {exc.message}") from exc
    entry.config_sync.remember(topic, source_configs[source_topic])
    m.mirrors[topic] = mirror
    entry.runtime.add_mirror(mirror, st)
    log.info("created mirror %s of %s over link %s (%d partitions)", topic, source_topic, link, partitions)
    return topic


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
