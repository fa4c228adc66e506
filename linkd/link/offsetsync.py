"""Consumer offset sync: copy committed group offsets from the source into linkd's group store.

Every ``consumer.offset.sync.ms`` the link lists the source's groups (asking every source broker, since
each coordinates some groups), keeps those ``consumer.offset.group.filters`` include, reads their
committed offsets for the partitions this link mirrors from each group's coordinator, and stores them
unchanged: offsets line up, so there is nothing to translate. With ``consumer.group.prefix.enable`` a
group is stored on linkd as ``cluster.link.prefix`` + its source name (as Cluster Linking names it); the
filters still match the source name. Two guards keep consumers safe:

* a group with live members on linkd (by its local, possibly prefixed name) is never overwritten (its
  consumers already moved here), and
* an offset is never stored above the mirror's high watermark, so a consumer never starts past data
  linkd does not hold yet (it would skip records after failover).

Promotion runs one last sync for the topic being promoted, after the mirror has caught up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from protocol.errors import ErrorCode
from protocol.messages import ApiKey

from .client import SourceProtocolError, source_error
from .groupfilter import GroupFilter
from .states import SYNCED_STATES, LinkState
from .tasks import RoundErrors, judge, report, run_rounds

log = logging.getLogger(__name__)

OFFSET_FETCH_MAX_VERSION = 7  # single-group, topic-name layout; every source we meet supports it
# A paused mirror still gets offsets (clamped to what it holds); stopped and failed ones no longer follow
# (SYNCED_STATES, in states.py).


TASK_NAME = "ConsumerOffsetSync"


class OffsetSyncError(SourceProtocolError):
    """The source answered an offset-sync request with an error code."""

    def __init__(self, message: str, error_code: ErrorCode) -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass
class SyncStatus(RoundErrors):
    enabled: bool
    interval_ms: int
    last_sync_ms: int | None = None  # the last successful round
    last_error: str | None = None  # set while the last round failed
    last_error_code: int | None = None
    last_error_ms: int | None = None
    groups_synced: int = 0
    groups_skipped_live: int = 0
    offsets_synced: int = 0
    offsets_clamped: int = 0
    syncs: int = 0
    errors: int = 0  # failed rounds since start

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class GroupDenied(Exception):
    """The source refuses this link's principal Describe on one group (GROUP_AUTHORIZATION_FAILED)."""


class OffsetSync:
    def __init__(self, runtime, mirrors, topics, groups) -> None:
        self._runtime = runtime
        self._mirrors = mirrors  # () -> list[Mirror] of this link
        self._topics = topics
        self._groups = groups
        settings = runtime.settings
        self.filter = GroupFilter.parse(settings.offset_group_filters)
        self.group_prefix = settings.consumer_group_prefix
        self.status = SyncStatus(settings.offset_sync_enable, settings.offset_sync_ms)

    def task(self) -> dict:
        """The task's health as ``link describe`` and /metrics show it."""
        st = self.status
        if not st.enabled:
            not_configured = "consumer.offset.sync.enable is false"
        elif not any(f.include for f in self.filter.filters):
            not_configured = "no consumer.offset.group.filters"
        else:
            not_configured = None
        state, reason = judge(self._runtime.state == LinkState.PAUSED, st.last_error, not_configured)
        return report(TASK_NAME, state, reason, last_success_ms=st.last_sync_ms, last_error_code=st.last_error_code, last_error_message=st.last_error,
                      last_error_ms=st.last_error_ms, runs=st.syncs, errors=st.errors)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.status.enabled:
            return
        await run_rounds(self._runtime.name, "consumer offset sync", self.sync_once, self.status, interval_s=lambda: self.status.interval_ms / 1000,
                         paused=lambda: self._runtime.state == LinkState.PAUSED, sleep_first=True, logger=log)

    def _mirrored(self, only_topic: str | None) -> dict[str, str]:
        """source topic -> mirror topic, for mirrors whose offsets should be synced."""
        return {
            m.source_topic: m.topic
            for m in self._mirrors()
            if (only_topic is None and m.state in SYNCED_STATES and not m.finalizing) or m.topic == only_topic
        }

    async def _list_groups(self) -> list[str]:
        source = self._runtime.source
        if not source.brokers:
            await source.metadata([])
        groups: set[str] = set()
        for node_id in list(source.brokers):
            conn = await source.broker_connection(node_id)
            body = await conn.request(ApiKey.LIST_GROUPS, {"states_filter": [], "types_filter": []})
            if body["error_code"] != ErrorCode.NONE:
                raise OffsetSyncError(f"ListGroups on source broker {node_id} failed with {source_error(body['error_code']).name}", source_error(body["error_code"]))
            groups.update(g["group_id"] for g in body.get("groups") or [] if g.get("protocol_type", "consumer") in ("consumer", ""))
        return sorted(g for g in groups if self.filter.includes(g))

    async def _coordinator(self, group: str):
        source = self._runtime.source
        body = await source.request_any(ApiKey.FIND_COORDINATOR, {"key": group, "key_type": 0, "coordinator_keys": [group]})
        if "coordinators" in body and body["coordinators"]:
            c = body["coordinators"][0]
        else:
            c = body
        if c["error_code"] == ErrorCode.GROUP_AUTHORIZATION_FAILED:
            raise GroupDenied(group)
        if c["error_code"] != ErrorCode.NONE:
            raise OffsetSyncError(f"FindCoordinator for group {group} failed with {source_error(c['error_code']).name}", source_error(c["error_code"]))
        return await source.connection((c["host"], c["port"]))

    async def _fetch_offsets(self, group: str, source_topics: dict[str, int]) -> dict[tuple[str, int], tuple[int, int, str | None]]:
        """``source_topics``: source topic -> partitions mirrored. They are named explicitly: Tansu answers
        "all topics" (null) with none."""
        conn = await self._coordinator(group)
        version = min(conn.version_for(ApiKey.OFFSET_FETCH), OFFSET_FETCH_MAX_VERSION)
        topics = [{"name": t, "partition_indexes": list(range(n))} for t, n in sorted(source_topics.items())]
        body = await conn.request(ApiKey.OFFSET_FETCH, {"group_id": group, "topics": topics, "require_stable": False}, version=version)
        if body.get("error_code", 0) == ErrorCode.GROUP_AUTHORIZATION_FAILED:
            raise GroupDenied(group)
        if body.get("error_code", 0) != ErrorCode.NONE:
            raise OffsetSyncError(f"OffsetFetch for group {group} failed with {source_error(body['error_code']).name}", source_error(body["error_code"]))
        out = {}
        wanted = set(source_topics)
        for t in body.get("topics") or []:
            if t["name"] not in wanted:
                continue
            for p in t.get("partitions") or []:
                if p["error_code"] == ErrorCode.NONE and p["committed_offset"] >= 0:
                    out[(t["name"], p["partition_index"])] = (p["committed_offset"], p.get("committed_leader_epoch", -1), p.get("metadata"))
        return out

    async def sync_once(self, only_topic: str | None = None) -> None:
        mapping = self._mirrored(only_topic)
        if not mapping:
            return
        groups = await self._list_groups()
        partitions = {}
        for source_topic, mirror_topic in mapping.items():
            local = self._topics.get(mirror_topic)
            if local is not None:
                partitions[source_topic] = len(local.logs)
        synced = skipped = offsets = clamped = 0
        denied: list[str] = []
        for group in groups:
            try:
                committed = await self._fetch_offsets(group, partitions)
            except GroupDenied:
                # Least privilege: a group the link may not read costs that group, never the others.
                denied.append(group)
                continue
            to_store = {}
            for (source_topic, partition), (offset, epoch, metadata) in committed.items():
                local = self._topics.get(mapping[source_topic])
                if local is None or partition >= len(local.logs):
                    continue
                high_watermark = local.logs[partition].high_watermark
                if offset > high_watermark:
                    offset, clamped = high_watermark, clamped + 1
                to_store[(local.name, partition)] = (offset, epoch, metadata)
            if not to_store:
                continue
            if self._groups.store_synced_offsets(self.group_prefix + group, to_store):
                synced += 1
                offsets += len(to_store)
            else:
                skipped += 1
        self.status.last_sync_ms = int(time.time() * 1000)
        self.status.last_error = (
            f"GROUP_AUTHORIZATION_FAILED: the source denies Describe on group(s) {', '.join(denied)} to this link's principal; they are not synced"
            if denied else None
        )
        self.status.last_error_code = int(ErrorCode.GROUP_AUTHORIZATION_FAILED) if denied else None
        if denied:
            self.status.last_error_ms = self.status.last_sync_ms
        self.status.syncs += 1
        self.status.groups_synced = synced
        self.status.groups_skipped_live = skipped
        self.status.offsets_synced += offsets
        self.status.offsets_clamped += clamped
        log.debug("link %s: synced %d offsets of %d groups (%d skipped: live members here)", self._runtime.name, offsets, synced, skipped)
