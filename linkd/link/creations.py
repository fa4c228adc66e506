"""Creating mirrors, many at once: creations asked for together on one link share their source round trips
and their commit.

A mirror needs its source topic's metadata (partition count, leader epochs, topic id) and configs before
its topic exists, then the topic's partition logs, then the topic's and the mirror's rows in control.db.
One creation after another, a thousand mirrors cost two thousand source round trips and a thousand
fsyncs of control.db. Here a link looks up its sources one batch at a time: every creation asked for
while a lookup is in flight joins the next batch (at most ``MAX_BATCH``), whose metadata and configs are
read in one Metadata and one DescribeConfigs request. The batch then makes its logs and records every
topic and mirror row in one transaction (``TopicRegistry.create_many_async``) while the link's next batch
is looked up: two stages, each batching what arrived while it was busy, as a database groups commits.

Each creation is still checked on its own and gets its own answer: one that fails (a bad name, a source
topic that does not exist, a refused config) does not fail the rest of its batch. A creation is answered
only once its rows are committed, so an answered mirror survives a crash right after. Once its batch has
begun, a creation completes even if its caller stops waiting (as a topic creation whose logs are made).
Auto-create asks for a whole round's topics at once, so they are looked up and committed in batches too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode

from ..topics import TopicError, TopicSpec, validate_topic_name
from .client import SourceProtocolError, SourceUnavailable
from .configsync import ConfigsUnsupported, describe_source_configs, mirrored_configs
from .errors import DomainError, ErrorKind
from .mirror import Mirror, PartitionProgress
from .source import SourceTopic
from .states import MirrorState

if TYPE_CHECKING:
    from .manager import LinkEntry, LinkManager

log = logging.getLogger(__name__)

MAX_BATCH = 100  # creations per lookup: one Metadata and one DescribeConfigs naming this many topics


@dataclass(eq=False)
class _Creation:
    topic: str | None  # as asked (None: named after the source topic)
    source_topic: str | None
    done: trio.Event = field(default_factory=trio.Event)
    name: str | None = None  # the mirror's name, once checked
    source: str | None = None  # the source topic, once checked
    error: DomainError | None = None


@dataclass(eq=False)
class _Looked:
    """A creation whose source topic was found, with what its mirror is created from."""

    creation: _Creation
    source_meta: SourceTopic  # partitions, leader epochs, topic id
    source_configs: dict[str, str]
    mirror: Mirror
    spec: TopicSpec


class MirrorCreations:
    """The manager's mirror creations (``create``); concurrent calls on one link are batched."""

    def __init__(self, manager: LinkManager) -> None:
        self._m = manager
        self._queued: dict[str, list[_Creation]] = {}  # link -> creations waiting for its next lookup
        self._looking: set[str] = set()  # links with a lookup task running
        self._names: set[str] = set()  # mirror names being created (checked, not committed yet)
        self._sources: dict[tuple[str, str], str] = {}  # (link, source topic) being mirrored -> mirror name

    async def create(self, topic: str | None, link: str, source_topic: str | None = None) -> str:
        """Mirror ``source_topic`` as ``topic`` over ``link`` (see ``mirror create``); returns the name."""
        [created] = await self._submit(link, [_Creation(topic, source_topic)])
        if created.error is not None:
            raise created.error
        assert created.name is not None
        return created.name

    async def _submit(self, link: str, creations: list[_Creation]) -> list[_Creation]:
        self._m.link(link)  # a link that does not exist is refused at once
        self._queued.setdefault(link, []).extend(creations)
        if link not in self._looking:
            self._looking.add(link)
            if self._m.nursery is not None:
                self._m.nursery.start_soon(self._lookups, link, self._m.nursery)
            else:  # the manager is not running (a test driving it alone): this caller does the work
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._lookups, link, nursery)
        for c in creations:
            await c.done.wait()
        return creations

    def _finish(self, link: str, c: _Creation, error: DomainError | None = None) -> None:
        if c.name is not None:
            self._names.discard(c.name)
        if c.source is not None and self._sources.get((link, c.source)) == c.name:
            del self._sources[(link, c.source)]
        c.error = error
        c.done.set()

    async def _lookups(self, link: str, nursery: trio.Nursery) -> None:
        """The link's lookup stage: batch after batch until nothing is queued; each looked-up batch is
        made and committed in a task of its own, so the next lookup does not wait for its disk work."""
        try:
            while queue := self._queued.get(link):
                batch, self._queued[link] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                try:
                    looked = await self._look_up(link, batch)
                except Exception as exc:  # a bug, not a refusal: every creation of the batch says so
                    log.exception("link %s: looking up %d mirror creations failed", link, len(batch))
                    for c in batch:
                        if not c.done.is_set():
                            self._finish(link, c, DomainError(ErrorKind.UNAVAILABLE, ErrorCode.UNKNOWN_SERVER_ERROR, f"mirror creation failed: {exc!r}"))
                    continue
                if looked:
                    nursery.start_soon(self._commit, link, looked)
        finally:
            self._looking.discard(link)
            for c in self._queued.pop(link, []):  # only when cancelled (shutdown)
                self._finish(link, c, DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, "linkd is shutting down"))

    # -- stage 1: checks and the source's metadata and configs, one request each for the batch ------

    async def _look_up(self, link: str, batch: list[_Creation]) -> list[_Looked]:
        m = self._m
        try:
            entry = m.link(link)
            if entry.locked is not None:
                raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, entry.locked)
        except DomainError as exc:
            for c in batch:
                self._finish(link, c, exc)
            return []
        twins = {mm.source_topic: mm.topic for mm in m.mirrors.values() if mm.link == link and mm.state != MirrorState.STOPPED}
        checked: list[_Creation] = []
        for c in batch:
            try:
                name, source = _names(entry, c.topic, c.source_topic)
                self._check_free(name)
                twin = twins.get(source) or self._sources.get((link, source))
                if twin is not None:
                    # One link fetches a source partition once; a second mirror of it would never advance.
                    raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"source topic '{source}' is already mirrored as '{twin}' over link '{link}'; create another link to mirror it twice")
            except DomainError as exc:
                self._finish(link, c, exc)
                continue
            c.name, c.source = name, source
            self._names.add(name)
            self._sources[(link, source)] = name
            checked.append(c)
        if not checked:
            return []
        sources = sorted({c.source for c in checked if c.source is not None})
        # The configs are asked at once, pipelined behind the Metadata on the same connection (one round trip
        # for both across a WAN); their answer counts only for the topics the metadata says exist.
        early: list[dict[str, dict[str, str]]] = []
        try:
            with trio.fail_after(entry.settings.request_timeout_ms / 1000):
                failed: list[Exception] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_configs_early, entry, sources, early)
                    try:
                        meta = await entry.runtime.source.metadata(sources)
                    except (SourceUnavailable, SourceProtocolError) as exc:  # raised below, not in an ExceptionGroup
                        failed.append(exc)
                        nursery.cancel_scope.cancel()
                if failed:
                    raise failed[0]
        except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
            error = DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot reach the source cluster of link '{link}': {exc}")
            for c in checked:
                self._finish(link, c, error)
            return []
        found: list[_Creation] = []
        for c in checked:
            st = meta.get(c.source or "")
            if st is not None and st.error == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
                self._finish(link, c, DomainError(ErrorKind.DENIED, ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"link '{link}' is not authorized to describe source topic '{c.source}' (TOPIC_AUTHORIZATION_FAILED): grant its principal Describe and Read on it"))
            elif st is None or st.error != ErrorCode.NONE or not st.partitions:
                code = st.error.name if st else "absent"
                self._finish(link, c, DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"source topic '{c.source}' does not exist on link '{link}' ({code})"))
            else:
                found.append(c)
        # The source topics' configs before the first append: retention must never run with our defaults.
        wanted = sorted({c.source for c in found if c.source is not None})
        if early and all(t in early[0] for t in wanted):
            configs: dict[str, dict[str, str] | DomainError] = {t: early[0][t] for t in wanted}
        else:  # refused, unsupported or cut short beside the Metadata: asked again with every fallback
            configs = await _source_configs(entry, wanted)
        looked = []
        for c in found:
            assert c.name is not None and c.source is not None
            source_configs = configs.get(c.source)
            if isinstance(source_configs, DomainError):
                self._finish(link, c, source_configs)
                continue
            st = meta[c.source]
            mirrored = mirrored_configs({}, source_configs or {}, entry.config_sync.names, set(), creating=True)
            # The mirror's own epoch starts at the source's so advertised epochs never go backwards (Invariant 4).
            epoch = max((p.leader_epoch for p in st.partitions.values()), default=0)
            mirror = Mirror(c.name, link, c.source, str(st.topic_id) if st.topic_id else None, MirrorState.ACTIVE)
            mirror.partitions = [PartitionProgress(p, max_bytes=entry.settings.fetch_max_bytes) for p in range(len(st.partitions))]
            spec = TopicSpec(c.name, len(st.partitions), dict[str, str | None](mirrored), kind="mirror", leader_epoch=max(epoch, 0))
            looked.append(_Looked(c, st, source_configs or {}, mirror, spec))
        return looked

    def _check_free(self, name: str) -> None:
        if name in self._m.mirrors or name in self._names or self._m.topics.get(name) is not None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{name}' already exists on this cluster")

    # -- stage 2: the logs, and every topic and mirror row of the batch in one commit ---------------

    async def _commit(self, link: str, looked: list[_Looked]) -> None:
        m = self._m
        try:
            entry = m.link(link)
        except DomainError as exc:  # deleted while its sources were looked up
            for x in looked:
                self._finish(link, x.creation, exc)
            return
        mirrors = {x.spec.name: x.mirror for x in looked}
        # The mirror's row in its topic's savepoint: one commit, and never a topic without its mirror.
        try:
            results = await m.topics.create_many_async([x.spec for x in looked], also=lambda topic: m.mirror_store.insert(mirrors[topic.name]))
        except Exception as exc:
            log.exception("link %s: creating %d mirror topics failed", link, len(looked))
            results = [TopicError(ErrorCode.KAFKA_STORAGE_ERROR, repr(exc))] * len(looked)
        for x, result in zip(looked, results, strict=True):
            name = x.spec.name
            if isinstance(result, TopicError):
                kind = ErrorKind.CONFLICT if result.error_code == ErrorCode.TOPIC_ALREADY_EXISTS else ErrorKind.INVALID
                self._finish(link, x.creation, DomainError(kind, result.error_code, f"cannot create mirror topic '{name}' with the source's configs {dict(x.spec.configs)}: {result.message}"))
                continue
            entry.config_sync.remember(name, x.source_configs)
            m.mirrors[name] = x.mirror
            entry.runtime.add_mirror(x.mirror, x.source_meta)
            log.info("created mirror %s of %s over link %s (%d partitions)", name, x.mirror.source_topic, link, x.spec.partitions)
            self._finish(link, x.creation)
        # Answered: now Kafka's partition.metadata files, which linkd never reads (off the answers' path).
        await m.topics.record_topic_ids_async([r for r in results if not isinstance(r, TopicError)])


def _names(entry: LinkEntry, topic: str | None, source_topic: str | None) -> tuple[str, str]:
    """(mirror name, source topic) as asked; on a link with ``cluster.link.prefix`` the mirror is named prefix
    + source name: the source topic must be given, the mirror name may be left out."""
    link, prefix = entry.name, entry.settings.prefix
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
    try:
        validate_topic_name(topic)
    except TopicError as exc:
        raise DomainError(ErrorKind.INVALID, exc.error_code, exc.message) from exc
    return topic, source_topic or topic


async def _configs_early(entry: LinkEntry, topics: list[str], out: list[dict[str, dict[str, str]]]) -> None:
    """Every topic's configs in one DescribeConfigs sent beside the batch's Metadata; appends the answer to
    ``out``, or nothing when the source refuses any of it (``_source_configs`` then asks again for the
    topics that exist, with its fallbacks)."""
    try:
        out.append(dict(await describe_source_configs(entry.runtime.source, topics, entry.config_sync.names)))
    except (ConfigsUnsupported, SourceProtocolError, SourceUnavailable):
        pass


async def _source_configs(entry: LinkEntry, topics: list[str]) -> dict[str, dict[str, str] | DomainError]:
    """Each source topic's configs, in one DescribeConfigs; when the source refuses some, each is asked
    alone so only those are refused. A source without DescribeConfigs: every mirror keeps everything."""
    if not topics:
        return {}
    source, link = entry.runtime.source, entry.name
    timeout_s = entry.settings.request_timeout_ms / 1000
    try:
        with trio.fail_after(timeout_s):
            return dict(await describe_source_configs(source, topics, entry.config_sync.names))
    except ConfigsUnsupported as exc:
        log.warning("link %s: %s; mirrors created keeping everything (retention.ms=-1)", link, exc)
        return {t: {} for t in topics}
    except SourceProtocolError as exc:
        if len(topics) == 1:
            return {topics[0]: _configs_refused(link, topics[0], exc)}
    except (SourceUnavailable, trio.TooSlowError) as exc:
        return {t: _configs_refused(link, t, exc) for t in topics}
    out: dict[str, dict[str, str] | DomainError] = {}
    for t in topics:
        out.update(await _source_configs(entry, [t]))
    return out


def _configs_refused(link: str, topic: str, exc: Exception) -> DomainError:
    return DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot read the configs of source topic '{topic}' on link '{link}': {exc}")
