"""Mirror topic config sync: a mirror keeps its source topic's contract.

A mirror is created with its source topic's configs, read with DescribeConfigs before the topic exists,
so its log never runs a single retention pass with linkd's defaults (a source with ``retention.ms=-1``
and month-old records would otherwise be emptied by the first pass). Then every ``topic.config.sync.ms``
the link asks the source again, on its short-request connection, and applies what changed to the live
logs (``TopicRegistry.set_configs``).

What is synced follows Cluster Linking's classes (``linkd.topicconfig``): always-synced names always;
configurable names when ``topic.config.sync.include`` names them (default: all) and the mirror has no
local override of them; independent names never. A value equal to linkd's default is stored as "not
set", so DescribeConfigs shows it as the default, exactly as the source's value.

A source that does not report ``retention.ms`` / ``retention.bytes`` (Tansu reports only what was set)
gets ``-1`` on the mirror: linkd never deletes what it does not know the source deletes. A source that
does not implement DescribeConfigs at all gets the same: its mirrors keep everything, and the link's
status says why.

A promoted or failed-over mirror is no longer synced: it keeps the configs last synced, all editable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from protocol.errors import ErrorCode
from protocol.messages import ApiKey

from .. import topicconfig
from ..topicconfig import InvalidTopicConfig
from ..topics import TopicError
from .client import SourceProtocolError, SourceUnavailable, source_error
from .decodememo import DecodeMemo
from .states import SYNCED_STATES, LinkState
from .tasks import RoundErrors, judge, now_ms, report, run_rounds

log = logging.getLogger(__name__)

RESOURCE_TOPIC = 2
KEEP_EVERYTHING = {"retention.ms": "-1", "retention.bytes": "-1"}
# Synced: the mirror still follows its source. Stopped mirrors are the operator's; failed ones keep what
# they had (the source may be the reason they failed).


class ConfigsUnsupported(SourceProtocolError):
    """The source does not implement DescribeConfigs."""


def synced_names(include: frozenset[str]) -> frozenset[str]:
    return topicconfig.ALWAYS_SYNCED | (include & topicconfig.CONFIGURABLE)


async def describe_source_configs(source, topics: list[str], names: frozenset[str] | None = None) -> dict[str, dict[str, str]]:
    """The source topics' effective configs (name -> value; only ``names`` when given), by source topic.
    Raises SourceUnavailable when no source broker answers, SourceProtocolError when the source refuses
    any of them (naming it)."""
    found, refused, _codes = await _describe(source, topics, names)
    if refused:
        raise SourceProtocolError("; ".join(refused.values()))
    return found


async def _describe(source, topics: list[str], names: frozenset[str] | None = None, memo: DecodeMemo | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, int]]:
    """(configs by topic, why by topic, error code by topic) for one DescribeConfigs of ``topics``; with
    ``names``, only those configs are asked for (the synced ones: a source answers a thousand topics with
    less than half the entries to decode, every ``topic.config.sync.ms``)."""
    if not topics:
        return {}, {}, {}
    keys = sorted(names) if names is not None and not source.named_config_keys_refused else None

    def request(keys: list[str] | None) -> dict:
        return {"resources": [{"resource_type": RESOURCE_TOPIC, "resource_name": t, "configuration_keys": keys} for t in topics], "include_synonyms": False, "include_documentation": False}

    try:
        body = await _request(source, request(keys), memo)
    except SourceUnavailable:
        if keys is None:
            raise
        # Tansu closes the connection on a DescribeConfigs naming keys: ask that source for everything.
        body = await _request(source, request(None), memo)
        source.named_config_keys_refused = True
        log.info("source %s does not answer DescribeConfigs for named configs; asking it for all of them", ",".join(f"{h}:{p}" for h, p in source.bootstrap))
    found: dict[str, dict[str, str]] = {}
    refused: dict[str, str] = {}
    codes: dict[str, int] = {}
    for result in body.get("results", []):
        name = result["resource_name"]
        if result["error_code"] != ErrorCode.NONE:
            detail = result.get("error_message") or ""
            refused[name] = f"DescribeConfigs of source topic {name} failed with {source_error(result['error_code']).name}" + (f": {detail}" if detail else "")
            codes[name] = int(source_error(result["error_code"]))
            continue
        found[name] = {c["name"]: c["value"] for c in result.get("configs", []) if c.get("value") is not None}
    for t in topics:
        if t not in found and t not in refused:
            refused[t] = f"DescribeConfigs answer left out source topic {t}"
            codes[t] = int(ErrorCode.UNKNOWN_SERVER_ERROR)
    return found, refused, codes


async def _request(source, body: dict, memo: DecodeMemo | None = None) -> dict:
    """DescribeConfigs to the first source broker that answers (as ``SourceCluster.request_any``), telling
    a source without the API (ConfigsUnsupported) from one that cannot be reached."""
    errors = []
    for address in dict.fromkeys([*source.bootstrap, *source.brokers.values()]):
        try:
            conn = await source.connection(address)
        except SourceUnavailable as exc:
            errors.append(str(exc))
            continue
        if ApiKey.DESCRIBE_CONFIGS not in conn.versions:
            raise ConfigsUnsupported(f"source broker {address[0]}:{address[1]} does not support DescribeConfigs")
        try:
            return await conn.request(ApiKey.DESCRIBE_CONFIGS, body, timeout=source.request_timeout_s, memo=memo)
        except (SourceUnavailable, SourceProtocolError) as exc:
            errors.append(str(exc))
            await source.drop(address)
    raise SourceUnavailable("no source broker reachable: " + "; ".join(errors))


def mirrored_configs(current: dict[str, str], source: dict[str, str], names: frozenset[str], overrides: set[str], creating: bool = False) -> dict[str, str]:
    """``current`` with every name of ``names`` (minus ``overrides``) set to the source's value."""
    out = dict(current)
    reported = dict(source)
    if creating:
        for key, value in KEEP_EVERYTHING.items():
            reported.setdefault(key, value)
    for name in sorted(names - (overrides & topicconfig.CONFIGURABLE)):  # always-synced names have no overrides
        given = reported.get(name)
        if given is None:
            continue
        try:
            value = topicconfig.check_value(name, given)
        except InvalidTopicConfig as exc:
            log.warning("source value of %s not usable here, kept %s: %s", name, topicconfig.effective(out, name), exc)
            continue
        if value == topicconfig.TOPIC_CONFIG_DEFAULTS[name]:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@dataclass
class ConfigSyncStatus(RoundErrors):
    interval_ms: int
    include: list[str]
    last_sync_ms: int | None = None  # the last round that ran to the end
    last_error: str | None = None  # set while the last round failed or refused some topic
    last_error_code: int | None = None
    last_error_ms: int | None = None
    syncs: int = 0
    errors: int = 0  # rounds that failed or refused some topic, since start
    changes_applied: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


TASK_NAME = "TopicConfigsSync"


class ConfigSync:
    """The periodic config sync of one link's mirrors."""

    def __init__(self, runtime, mirrors, topics) -> None:
        self._runtime = runtime
        self._mirrors = mirrors  # () -> list[Mirror] of this link
        self._topics = topics
        settings = runtime.settings
        self.names = synced_names(settings.topic_config_sync_include)
        self.status = ConfigSyncStatus(settings.topic_config_sync_ms, sorted(settings.topic_config_sync_include))
        self.source_configs: dict[str, dict[str, str]] = {}  # mirror topic -> synced names' source values last seen
        # mirror topic -> (source values, its configs) when a round last found the two in sync
        self._in_sync: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.answers = DecodeMemo()  # the rounds' DescribeConfigs answer, decoded again only once it changes

    def following(self, topic: str) -> dict[str, str] | None:
        """The synced source values of mirror ``topic`` if it still follows its source, else None."""
        mirror = next((m for m in self._mirrors() if m.topic == topic), None)
        if mirror is None or mirror.state not in SYNCED_STATES or mirror.finalizing:
            return None
        return dict(self.source_configs.get(topic, {}))

    def remember(self, topic: str, source: dict[str, str]) -> None:
        if source.keys() <= self.names:
            self.source_configs[topic] = source  # asked for the synced names only (a fresh dict per answer)
        else:
            self.source_configs[topic] = {k: v for k, v in source.items() if k in self.names}

    def task(self) -> dict:
        """The task's health as ``link describe`` and /metrics show it. Always configured: every mirror
        follows its source's always-synced configs."""
        st = self.status
        state, reason = judge(self._runtime.state == LinkState.PAUSED, st.last_error)
        return report(TASK_NAME, state, reason, last_success_ms=st.last_sync_ms, last_error_code=st.last_error_code, last_error_message=st.last_error,
                      last_error_ms=st.last_error_ms, runs=st.syncs, errors=st.errors)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await run_rounds(self._runtime.name, "topic config sync", self._round, self.status, interval_s=lambda: self.status.interval_ms / 1000,
                         paused=lambda: self._runtime.state == LinkState.PAUSED, sleep_first=True, logger=log)

    async def _round(self) -> None:
        try:
            await self.sync_once()
        except ConfigsUnsupported as exc:
            if self.status.last_error != str(exc):
                log.warning("link %s: topic configs are not synced: %s (its mirrors keep everything)", self._runtime.name, exc)
            self.status.failed(int(ErrorCode.UNSUPPORTED_VERSION), str(exc))

    async def sync_once(self) -> int:
        """One round over every mirror that follows its source; returns the number of topics changed."""
        mirrors = [m for m in self._mirrors() if m.state in SYNCED_STATES and not m.finalizing and not m.deleted]
        if not mirrors:
            self.status.last_sync_ms, self.status.last_error = now_ms(), None  # nothing to follow: done
            self.status.syncs += 1
            return 0
        described, refused, codes = await _describe(self._runtime.source, sorted({m.source_topic for m in mirrors}), self.names, self.answers)
        changed = 0
        problems = list(refused.values())  # e.g. a source topic deleted: the others are synced all the same
        code = next(iter(codes.values()), None)
        for mirror in mirrors:
            if mirror.deleted or mirror.finalizing or mirror.state not in SYNCED_STATES or mirror.source_topic not in described:
                continue  # changed while we waited for the source, or the source refused this one
            topic = self._topics.get(mirror.topic)
            if topic is None:
                continue
            source = described[mirror.source_topic]
            self.remember(mirror.topic, source)
            last = self._in_sync.get(mirror.topic)
            if last is not None and last[0] == source and last[1] == topic.configs:
                # The source says what it said when the topic last matched it, and nothing changed here
                # (a local override changes the topic's configs too): nothing to work out again.
                continue
            wanted = mirrored_configs(topic.configs, source, self.names, self._topics.local_overrides(mirror.topic))
            if wanted == topic.configs:
                self._in_sync[mirror.topic] = (source, dict(topic.configs))
                continue
            keys = sorted(k for k in set(wanted) | set(topic.configs) if wanted.get(k) != topic.configs.get(k))
            try:
                await self._topics.set_configs(mirror.topic, wanted)
            except TopicError as exc:
                problems.append(f"{mirror.topic}: {exc.message}")
                code = code if code is not None else int(exc.error_code)
                log.error("mirror %s: cannot apply source configs %s: %s", mirror.topic, keys, exc.message)
                continue
            changed += 1
            self.status.changes_applied += 1
            log.info("mirror %s: synced topic configs %s from source topic %s", mirror.topic, ", ".join(f"{k}={topicconfig.effective(wanted, k)}" for k in keys), mirror.source_topic)
        self.status.last_sync_ms = now_ms()
        self.status.syncs += 1
        if problems:
            self.status.failed(code if code is not None else int(ErrorCode.UNKNOWN_SERVER_ERROR), "; ".join(problems))
        else:
            self.status.last_error = self.status.last_error_code = None
        if refused:
            log.warning("link %s: topic config sync: %s", self._runtime.name, "; ".join(refused.values()))
        return changed
