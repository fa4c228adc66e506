"""Links and mirrors: the operations behind the admin API and the CLI.

Every operation validates first and changes nothing when it fails; the error (``DomainError``) names the
problem and its kind. Mirror state changes go through ``MirrorTransitions.apply`` (transitions.py);
promotion and failover are tasks of this manager (promotion.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode

from ..controlstore import ControlStore
from ..producer_ids import ProducerIdAllocator
from ..topics import TopicRegistry, TopicRole
from . import aclsync, checkpoints, linkops, mirrorops
from .aclsync import AclSync
from .autocreate import AutoCreate
from .config import DEFAULTS, SENSITIVE_KEYS, LinkSettings
from .configsync import ConfigSync
from .creations import MirrorCreations
from .errors import DomainError, ErrorKind
from .mirror import Mirror, PartitionProgress
from .offsetsync import OffsetSync
from .promotion import DEFAULT_PROMOTE_TIMEOUT_S, Promotions, validate_command
from .runtime import LinkRuntime, now_ms
from .secrets import (
    SecretsKey,
    SecretsUnavailable,
    has_secrets,
    is_sealed,
    open_config,
    public_view,
    seal_config,
)
from .security import redact
from .source import SourceCluster
from .states import InvalidTransition, MirrorEvent, MirrorState
from .status import CommandResult, FetchStatistics, LinkStatus, PartitionStatus, partition_status
from .store import LinkStore, MirrorStore
from .tasks import link_tasks
from .transitions import MirrorTransitions
from .verify import DEFAULT_STEP_BYTES

if TYPE_CHECKING:
    from ..broker.acl import StandardAuthorizer

log = logging.getLogger(__name__)




@dataclass
class LinkEntry:
    name: str
    link_id: str
    config: dict[str, str]
    settings: LinkSettings
    runtime: LinkRuntime
    offset_sync: OffsetSync
    config_sync: ConfigSync
    auto_create: AutoCreate
    scope: trio.CancelScope | None = None
    nursery: trio.Nursery | None = None
    sync_scope: trio.CancelScope | None = None
    locked: str | None = None  # why the link cannot run: its secrets do not open with this daemon's key
    acl_sync: AclSync = field(init=False)  # made with the entry (it reads the entry's config and runtime)


class LinkManager:
    def __init__(self, store: ControlStore, topics: TopicRegistry, producer_ids: ProducerIdAllocator, notify, groups,
                 secrets_key: SecretsKey | None = None, authorizer: StandardAuthorizer | None = None) -> None:
        self._store = store
        self.authorizer = authorizer  # linkd's own ACLs, which ACL sync writes (None: no authorizer, sync refused)
        self._secrets_key = secrets_key
        self.topics = topics
        self.producer_ids = producer_ids
        self._notify = notify
        self._groups = groups
        self.link_store = LinkStore(store)
        self.mirror_store = MirrorStore(store)
        self.transitions = MirrorTransitions(self.mirror_store, topics, notify, self._wake_link)
        self.promotions = Promotions(self)
        self.creations = MirrorCreations(self)
        self.links: dict[str, LinkEntry] = {}
        self.mirrors: dict[str, Mirror] = {}
        self.nursery: trio.Nursery | None = None

    @property
    def control_store(self) -> ControlStore:
        """The store every link and mirror row lives in (one transaction may span several changes)."""
        return self._store

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        for name, link_id, stored in self.link_store.load():
            self.links[name] = self._load_entry(name, link_id, stored)
        for mirror in self.mirror_store.load():
            topic = self.topics.get(mirror.topic)
            if topic is None:
                log.warning("mirror %s has no topic any more; dropping its record", mirror.topic)
                self.mirror_store.delete(mirror.topic)
                continue
            mirror.partitions = [PartitionProgress(p) for p in range(len(topic.logs))]
            for partition, end in self.mirror_store.source_ends(mirror.topic).items():
                if partition < len(mirror.partitions):
                    mirror.partitions[partition].persisted_end = mirror.partitions[partition].checkpointed = end
            self.mirrors[mirror.topic] = mirror
            self.transitions.sync_role(mirror)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            finalizing = [mirror for mirror in self.mirrors.values() if mirror.finalizing]
            for mirror in finalizing:
                log.info("mirror %s: completing %s interrupted by a restart", mirror.topic, (mirror.stop_info or {}).get("kind"))
            await self.promotions.finalize_many(finalizing)
            for mirror in list(self.mirrors.values()):
                if mirror.state == MirrorState.PENDING_STOPPED:
                    self.transitions.apply(mirror, MirrorEvent.PROMOTE_ABORT)
                    log.info("mirror %s: promotion interrupted by a restart before it committed; mirror stays active", mirror.topic)
            for entry in self.links.values():
                if entry.locked is None:
                    await nursery.start(self._run_link, entry)
            nursery.start_soon(checkpoints.checkpoint_loop, self)
            nursery.start_soon(checkpoints.reconcile_loop, self)
            task_status.started()
            await trio.sleep_forever()

    # -- source end checkpoints and reconciliation ------------------------------------------------

    def checkpoint_source_ends(self) -> None:
        """Persist the source end offsets seen since the last checkpoint (see checkpoints.py)."""
        checkpoints.checkpoint_source_ends(self)

    async def reconcile(self, entry: LinkEntry, mirrors: list[Mirror]) -> None:
        await checkpoints.reconcile(self, entry, mirrors)

    async def _run_link(self, entry: LinkEntry, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            entry.scope = scope
            async with trio.open_nursery() as nursery:
                entry.nursery = nursery
                await nursery.start(self._run_syncs, entry)
                await nursery.start(entry.runtime.run)
                task_status.started()

    async def _run_syncs(self, entry: LinkEntry, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The link's periodic syncs, in a scope of their own so a config update can restart them alone."""
        with trio.CancelScope() as scope:
            entry.sync_scope = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(entry.offset_sync.run)
                await nursery.start(entry.config_sync.run)
                await nursery.start(entry.auto_create.run)
                await nursery.start(entry.acl_sync.run)
                task_status.started()

    def _entry(self, name: str, link_id: str, config: dict[str, str]) -> LinkEntry:
        settings = LinkSettings.from_config(config)
        runtime = LinkRuntime(
            name,
            settings,
            mirrors=lambda: [m for m in self.mirrors.values() if m.link == name],
            transitions=self.transitions,
            topics=self.topics,
            notify=self._notify,
        )
        mirrors = lambda: [m for m in self.mirrors.values() if m.link == name]  # noqa: E731
        entry = LinkEntry(
            name, link_id, config, settings, runtime,
            OffsetSync(runtime, mirrors, self.topics, self._groups),
            ConfigSync(runtime, mirrors, self.topics),
            AutoCreate(runtime, mirrors, self.topics, self.create_mirror),
        )
        entry.acl_sync = AclSync(entry, self.authorizer)
        return entry

    def mirror_synced_configs(self, name: str) -> dict[str, str] | None:
        """Broker hook: the synced source configs of a mirror still following its source, else None."""
        mirror = self.mirrors.get(name)
        entry = self.links.get(mirror.link) if mirror is not None else None
        if mirror is None:
            return None
        if entry is None:
            # Its link is gone: nothing syncs it any more, but it is still read-only until failed over.
            return {} if mirror.state != MirrorState.STOPPED else None
        return entry.config_sync.following(name)

    def _load_entry(self, name: str, link_id: str, stored: dict) -> LinkEntry:
        """A stored link; one whose secrets this daemon cannot open is loaded locked (not started, FAILED
        with the reason), so every other link still runs."""
        try:
            config = open_config(name, stored, self._secrets_key)
        except SecretsUnavailable as exc:
            log.error("link %s: %s", name, exc)
            plain = {k: v for k, v in public_view(stored).items() if k == "bootstrap.servers" or not (k.startswith(("ssl.", "sasl.")) or k == "security.protocol")}
            entry = self._entry(name, link_id, plain)
            entry.config, entry.locked = public_view(stored), str(exc)
            entry.runtime.source = _LockedSource(str(exc))
            entry.runtime.lock(str(exc), exc.link_error)
            return entry
        if not is_sealed(stored) and has_secrets(config) and self._secrets_key is not None:
            # Written in plaintext before secrets were sealed: seal it now that a key is here.
            self.link_store.save_config(name, seal_config(name, config, self._secrets_key))
        return self._entry(name, link_id, config)

    def _wake_link(self, name: str) -> None:
        entry = self.links.get(name)
        if entry is not None:
            entry.runtime.wake()

    # -- links ----------------------------------------------------------------------------------

    async def create_link(self, name: str, config: dict[str, str], validate_link: bool = True) -> None:
        await linkops.create_link(self, name, config, validate_link)

    def link_configs(self, name: str) -> list[dict]:
        return linkops.link_configs(self, name)

    async def update_link(self, name: str, set_configs: dict[str, str], delete_configs: list[str], validate_only: bool = False) -> None:
        await linkops.update_link(self, name, set_configs, delete_configs, validate_only)

    def link(self, name: str) -> LinkEntry:
        entry = self.links.get(name)
        if entry is None:
            raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.INVALID_REQUEST, f"link '{name}' does not exist")
        return entry

    def link_status(self, name: str) -> LinkStatus:
        entry = self.link(name)
        rt = entry.runtime
        return LinkStatus(
            name=name,
            link_id=entry.link_id,
            source_cluster_id=rt.source.cluster_id,
            bootstrap_servers=entry.config.get("bootstrap.servers"),
            state=rt.state.value,
            error=rt.link_error,
            error_message=rt.state_message,
            topic_names=sorted(m.topic for m in self.mirrors.values() if m.link == name),
            # Secrets by the schema's marks (Kafka's password-type keys), shown as [hidden], never by name guessing.
            configs=[(k, v, k in SENSITIVE_KEYS) for k, v in sorted(redact({**DEFAULTS, **entry.config}).items())],
            statistics=FetchStatistics(rt.fetch_requests, rt.incremental_fetch_requests, rt.fetched_bytes, rt.appended_batches),
            consumer_offset_sync=entry.offset_sync.status.as_dict(),
            topic_config_sync=entry.config_sync.status.as_dict(),
            auto_create=entry.auto_create.status.as_dict(),
            acl_sync=aclsync.status(entry),
            tasks=link_tasks(entry),
        )

    async def delete_link(self, name: str, force: bool = False) -> list[CommandResult]:
        """Delete a link. Its mirrors must be stopped first; ``force`` fails over those that are not (the
        unreplicated tail is reported as for ``failover``). Stopped mirrors become plain topics, so no
        mirror names a link that does not exist. Returns the failover results."""
        entry = self.link(name)
        active = sorted(m.topic for m in self.mirrors.values() if m.link == name and m.state != MirrorState.STOPPED)
        if active and not force:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' still has mirror topics {', '.join(active)}: promote, fail over or delete them first (or delete with force, which fails them over)")
        failed_over = await self.failover(active) if active else []
        stuck = [r.topic for r in failed_over if r.error_code != 0]
        if stuck:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' not deleted: mirror topics {', '.join(stuck)} could not be failed over")
        if entry.scope is not None:
            entry.scope.cancel()
        mine = sorted(t for t, m in self.mirrors.items() if m.link == name)
        with self._store.transaction():  # one transaction: the link, its mirrors' rows and their topics' roles
            self.link_store.delete(name)
            for topic in mine:
                self.mirror_store.delete(topic)
                self.topics.set_role(topic, TopicRole.LOCAL)  # a plain topic: no mirror names the deleted link
        for topic in mine:
            del self.mirrors[topic]
        del self.links[name]
        log.info("deleted link %s%s", name, f"; failed over {', '.join(active)}" if active else "")
        return failed_over

    # -- mirrors --------------------------------------------------------------------------------

    async def create_mirror(self, topic: str | None, link: str, source_topic: str | None = None) -> str:
        """Creations asked for together share their source round trips and their commit (creations.py)."""
        return await self.creations.create(topic, link, source_topic)

    def mirror(self, topic: str) -> Mirror:
        mirror = self.mirrors.get(topic)
        if mirror is None:
            raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' does not exist")
        return mirror

    def partition_status(self, mirror: Mirror) -> list[PartitionStatus]:
        """Per partition: where the mirror ends, the source's end as last seen, and the lag (None when
        unknown). describe, list, the promote/failover answers and /metrics all read these."""
        local = self.topics.get(mirror.topic)
        entry = self.links.get(mirror.link)
        now = now_ms()
        return [
            partition_status(
                progress,
                local.logs[progress.partition] if local and progress.partition < len(local.logs) else None,
                entry is not None and entry.runtime.lag_known(progress),
                now,
            )
            for progress in mirror.partitions
        ]

    def mirror_gaps(self, topic: str) -> list[dict]:
        return self.mirror_store.gaps(topic)

    def lost_range(self, topic: str, partition: int) -> tuple[int, int]:
        return mirrorops.lost_range(self, topic, partition)

    def lost_records(self, topic: str, partition: int) -> AsyncIterator[bytes]:
        return mirrorops.lost_records(self, topic, partition)

    async def verify(self, topic: str, partition: int, from_offset: int | None = None, end_offset: int | None = None, max_bytes: int = DEFAULT_STEP_BYTES) -> dict:
        return await mirrorops.verify(self, topic, partition, from_offset, end_offset, max_bytes)

    def mirrors_of(self, link: str | None = None) -> list[Mirror]:
        """The mirrors of ``link`` (every mirror when None), by name; refuses a link that does not exist."""
        if link is not None:
            self.link(link)
        return [m for _t, m in sorted(self.mirrors.items()) if link is None or m.link == link]

    def on_topic_deleted(self, name: str) -> None:
        """A client deleted a mirror topic: forget the mirror too, and tell its link to stop fetching it."""
        mirror = self.mirrors.pop(name, None)
        if mirror is not None:
            mirror.deleted = True
            self.mirror_store.delete(name)
            self.transitions.progressed(mirror)  # a promotion waiting on it sees it gone
            entry = self.links.get(mirror.link)
            if entry:
                entry.runtime.wake()

    # -- commands ------------------------------------------------------------------------------

    def _simple(self, topics: list[str], event: MirrorEvent) -> list[CommandResult]:
        results = []
        for topic in topics:
            try:
                mirror = self.mirror(topic)
                self.transitions.apply(mirror, event)
                results.append(CommandResult(topic, mirror_status=mirror.state.reported, partitions=tuple(self.partition_status(mirror))))
            except DomainError as exc:
                results.append(CommandResult(topic, exc.error_code, exc.message))
            except InvalidTransition as exc:
                results.append(CommandResult(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=mirror.state.reported))
        return results

    def pause(self, topics: list[str]) -> list[CommandResult]:
        return self._simple(topics, MirrorEvent.PAUSE)

    def resume(self, topics: list[str]) -> list[CommandResult]:
        return self._simple(topics, MirrorEvent.RESUME)

    def validate(self, action: str, topics: list[str]) -> list[CommandResult]:
        """What ``action`` (promote, failover, pause, resume) would answer for each topic, changing nothing:
        the transition table is consulted, never applied (``validate_only``)."""
        return validate_command(self, action, topics)

    async def promote(self, topics: list[str], timeout_s: float = DEFAULT_PROMOTE_TIMEOUT_S) -> list[CommandResult]:
        return await self.promotions.promote(topics, timeout_s)

    async def failover(self, topics: list[str]) -> list[CommandResult]:
        return await self.promotions.failover(topics)


class _LockedSource(SourceCluster):
    """The source of a link whose secrets this daemon cannot read: every use says why, nothing connects."""

    def __init__(self, reason: str) -> None:
        super().__init__([], client_id="locked")
        self.reason = reason

    async def _open(self, pool, key, address, receive_buffer_bytes=-1, read_turn=None):
        raise SecretsUnavailable(self.reason)

    async def request_any(self, api_key: int, body: dict) -> dict:
        raise SecretsUnavailable(self.reason)
