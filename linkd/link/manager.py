"""Links and mirrors: the operations behind the admin API and the CLI.

Every operation validates first and changes nothing when it fails; the error (``DomainError``) names the
problem and its kind. Mirror state changes go through ``MirrorTransitions.apply`` (transitions.py);
promotion and failover are tasks of this manager (promotion.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

import trio

from protocol.errors import ErrorCode

from ..controlstore import ControlStore
from ..producer_ids import ProducerIdAllocator
from ..topics import TopicError, TopicRegistry, TopicRole, validate_topic_name
from .autocreate import AutoCreate
from .client import AuthenticationFailed, SourceProtocolError, SourceUnavailable
from .config import DEFAULTS, SENSITIVE_KEYS, LinkConfigError, LinkSettings, is_known_key, validate
from .configsync import ConfigsUnsupported, ConfigSync, describe_source_configs, mirrored_configs
from .errors import DomainError, ErrorKind
from .loss import lost_offsets, reconciled
from .mirror import Mirror, MirrorStore, PartitionProgress
from .offsetsync import OffsetSync
from .promotion import DEFAULT_PROMOTE_TIMEOUT_S, Promotions
from .runtime import LinkRuntime, now_ms
from .secrets import (
    SecretsKey,
    SecretsKeyError,
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
from .status import FetchStatistics, LinkStatus, PartitionStatus, partition_status
from .tasks import link_tasks
from .transitions import MirrorTransitions
from .verify import DEFAULT_STEP_BYTES, fetch_source_batches, verify_step

log = logging.getLogger(__name__)

LINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    name TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    config TEXT NOT NULL,
    created_ms INTEGER NOT NULL
)
"""
SOURCE_END_CHECKPOINT_S = 1.0  # bounds the write rate of the source-end checkpoint (one transaction)
SEEN_ONLY_CHECKPOINT_MS = 30_000  # an unchanged source end's "seen at" is rewritten at most this often
RECONCILE_INTERVAL_S = 5.0
_LINK_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _sensitive(key: str) -> bool:
    return key in SENSITIVE_KEYS


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


class LinkManager:
    def __init__(self, store: ControlStore, topics: TopicRegistry, producer_ids: ProducerIdAllocator, notify, groups, secrets_key: SecretsKey | None = None) -> None:
        self._store = store
        self._secrets_key = secrets_key
        self.topics = topics
        self.producer_ids = producer_ids
        self._notify = notify
        self._groups = groups
        store.ensure_schema(LINK_SCHEMA)
        self.mirror_store = MirrorStore(store)
        self.transitions = MirrorTransitions(self.mirror_store, topics, notify, self._wake_link)
        self.promotions = Promotions(self)
        self.links: dict[str, LinkEntry] = {}
        self.mirrors: dict[str, Mirror] = {}
        self.nursery: trio.Nursery | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        for row in self._store.query("SELECT * FROM links ORDER BY name"):
            self.links[row["name"]] = self._load_entry(row["name"], row["link_id"], json.loads(row["config"]))
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
            for mirror in list(self.mirrors.values()):
                if mirror.finalizing:
                    log.info("mirror %s: completing %s interrupted by a restart", mirror.topic, (mirror.stop_info or {}).get("kind"))
                    self.promotions.finalize(mirror)
                elif mirror.state == MirrorState.PENDING_STOPPED:
                    self.transitions.apply(mirror, MirrorEvent.PROMOTE_ABORT)
                    log.info("mirror %s: promotion interrupted by a restart before it committed; mirror stays active", mirror.topic)
            for entry in self.links.values():
                if entry.locked is None:
                    await nursery.start(self._run_link, entry)
            nursery.start_soon(self._checkpoint_source_ends_loop)
            nursery.start_soon(self._reconcile_loop)
            task_status.started()
            await trio.sleep_forever()

    # -- source end checkpoints and reconciliation ------------------------------------------------

    def checkpoint_source_ends(self) -> None:
        """Persist the source end offsets seen since the last checkpoint (changed partitions only)."""
        rows = []
        for mirror in self.mirrors.values():
            for progress in mirror.partitions:
                row = progress.checkpoint_row()
                if row is None or row == progress.checkpointed:
                    continue
                old = progress.checkpointed
                # Offsets unchanged, only seen again: refresh the time now and then, not every second
                # (an idle partition is seen at every fetch).
                if old is not None and row[:2] == old[:2] and row[2] - old[2] < SEEN_ONLY_CHECKPOINT_MS:
                    continue
                rows.append((mirror.topic, progress.partition, *row))
                progress.checkpointed = row
        self.mirror_store.save_source_ends(rows)

    async def _checkpoint_source_ends_loop(self) -> None:
        # One small transaction per interval whatever the fetch rate: the fetch path only sets fields.
        try:
            while True:
                await trio.sleep(SOURCE_END_CHECKPOINT_S)
                try:
                    self.checkpoint_source_ends()
                except Exception:
                    log.exception("could not checkpoint the source end offsets seen; retrying")
        finally:
            try:  # synchronous: a cancellation cannot cut it short
                self.checkpoint_source_ends()
            except Exception:
                log.exception("could not checkpoint the source end offsets seen at shutdown")

    async def _reconcile_loop(self) -> None:
        """After a failover, ask the source (whenever it answers) where its partitions end, so describe
        can show the exact offsets the mirror never got (``lost_offsets``)."""
        while True:
            await trio.sleep(RECONCILE_INTERVAL_S)
            for name, entry in list(self.links.items()):
                stopped = [m for m in self.mirrors.values() if m.link == name and m.state == MirrorState.STOPPED and (m.stop_info or {}).get("kind") == "failover"]
                if stopped:
                    with trio.move_on_after(entry.settings.request_timeout_ms / 1000):
                        try:
                            await self.reconcile(entry, stopped)
                        except (SourceUnavailable, SourceProtocolError) as exc:
                            log.debug("link %s: reconciliation waits for the source: %s", name, exc)
                        except Exception:
                            log.exception("link %s: reconciliation failed; retrying", name)

    async def reconcile(self, entry: LinkEntry, mirrors: list[Mirror]) -> None:
        latest = await entry.runtime.read_source_offsets(mirrors, -1)
        earliest = await entry.runtime.read_source_offsets(mirrors, -2)
        for mirror in mirrors:
            info = dict(mirror.stop_info or {})
            found = reconciled(info, {p: o for (t, p), o in latest.items() if t == mirror.topic}, {p: o for (t, p), o in earliest.items() if t == mirror.topic})
            if found is None or (info.get("reconciled") or {}).get("partitions") == found["partitions"]:
                continue
            info["reconciled"] = {"recorded_ms": now_ms(), **found}
            mirror.set_stop_info(self.mirror_store, info)
            lost = sum(x["offsets"] for x in lost_offsets(info) or [])
            log.info("mirror %s: the source is reachable again after the failover; %d offsets it holds past the stop offsets were never mirrored", mirror.topic, lost)

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
        return LinkEntry(
            name, link_id, config, settings, runtime,
            OffsetSync(runtime, mirrors, self.topics, self._groups),
            ConfigSync(runtime, mirrors, self.topics),
            AutoCreate(runtime, mirrors, self.topics, self.create_mirror),
        )

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
            with self._store.transaction() as db:
                db.execute("UPDATE links SET config = ? WHERE name = ?", (json.dumps(seal_config(name, config, self._secrets_key)), name))
        return self._entry(name, link_id, config)

    def _wake_link(self, name: str) -> None:
        entry = self.links.get(name)
        if entry is not None:
            entry.runtime.wake()

    # -- links ----------------------------------------------------------------------------------

    async def create_link(self, name: str, config: dict[str, str], validate_link: bool = True) -> None:
        if not name or not set(name) <= _LINK_NAME_OK or len(name) > 249:
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, f"invalid link name {name!r}: use letters, digits, '.', '_' and '-'")
        if name in self.links:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' already exists")
        try:
            merged = validate(config)
            stored = seal_config(name, config, self._secrets_key)
        except (LinkConfigError, SecretsKeyError) as exc:
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, str(exc)) from exc
        if validate_link:
            settings = LinkSettings.from_config(config)
            probe = SourceCluster(settings.bootstrap_servers, client_id=f"linkd-link-{name}", request_timeout_s=min(settings.request_timeout_ms / 1000, 10), security=settings.security)
            try:
                with trio.fail_after(15):
                    await probe.metadata([])
            except AuthenticationFailed as exc:
                raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, f"the source cluster at {merged['bootstrap.servers']} refused authentication: {exc}") from exc
            except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
                raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, f"cannot reach the source cluster at {merged['bootstrap.servers']}: {exc}") from exc
            finally:
                await probe.close()
        link_id = str(uuid.uuid4())
        with self._store.transaction() as db:
            db.execute("INSERT INTO links (name, link_id, config, created_ms) VALUES (?,?,?,?)", (name, link_id, json.dumps(stored), now_ms()))
        entry = self._entry(name, link_id, config)
        self.links[name] = entry
        if self.nursery is not None:
            await self.nursery.start(self._run_link, entry)
        log.info("created link %s to %s", name, merged["bootstrap.servers"])
        return None

    def link_configs(self, name: str) -> list[dict]:
        """Every link config with its value and whether it was set (REST v3 ``configs`` shape)."""
        entry = self.link(name)
        merged = validate(entry.config)
        return [
            {"link_name": name, "name": k, "value": None if _sensitive(k) else v, "is_default": k not in entry.config, "is_read_only": False, "is_sensitive": _sensitive(k), "source": "DYNAMIC_CLUSTER_LINK_CONFIG" if k in entry.config else "DEFAULT_CONFIG"}
            for k, v in sorted(merged.items())
        ]

    async def update_link(self, name: str, set_configs: dict[str, str], delete_configs: list[str], validate_only: bool = False) -> None:
        """Change a link's configs, validated as at create, applied to the running link without a restart:
        fetching uses the new settings from its next round, the periodic syncs restart with theirs."""
        entry = self.link(name)
        if entry.locked is not None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, entry.locked)  # its stored secrets cannot be read here
        unknown_deletes = sorted(k for k in delete_configs if not is_known_key(k))
        if unknown_deletes:
            raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.INVALID_CONFIG, f"unknown link config key(s): {', '.join(unknown_deletes)}")
        config = {k: v for k, v in entry.config.items() if k not in delete_configs}
        config.update(set_configs)
        if config.get("cluster.link.prefix", "") != entry.config.get("cluster.link.prefix", ""):
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, f"cluster.link.prefix of link '{name}' cannot be changed once the link exists (its mirrors are named by it)")
        try:
            validate(config)
            settings = LinkSettings.from_config(config)
            stored = seal_config(name, config, self._secrets_key)  # secrets stay encrypted at rest
        except (LinkConfigError, SecretsKeyError) as exc:
            raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, str(exc)) from exc
        if validate_only or config == entry.config:
            return None
        with self._store.transaction() as db:
            db.execute("UPDATE links SET config = ? WHERE name = ?", (json.dumps(stored), name))
        before = entry.settings
        entry.config, entry.settings = config, settings
        runtime = entry.runtime
        runtime.settings = settings
        runtime.source.bootstrap = list(settings.bootstrap_servers)
        runtime.source.request_timeout_s = settings.request_timeout_ms / 1000
        if settings.paused != before.paused:
            runtime.set_paused(settings.paused)
        if settings.fetch_max_bytes != before.fetch_max_bytes:
            for mirror in self.mirrors.values():
                if mirror.link == name:
                    for progress in mirror.partitions:
                        progress.max_bytes = settings.fetch_max_bytes
        mirrors = lambda: [m for m in self.mirrors.values() if m.link == name]  # noqa: E731
        old_sync = entry.config_sync
        entry.offset_sync = OffsetSync(runtime, mirrors, self.topics, self._groups)
        entry.config_sync = ConfigSync(runtime, mirrors, self.topics)
        entry.config_sync.source_configs = old_sync.source_configs
        entry.auto_create = AutoCreate(runtime, mirrors, self.topics, self.create_mirror)
        if entry.sync_scope is not None:
            entry.sync_scope.cancel()
        if entry.nursery is not None:
            await entry.nursery.start(self._run_syncs, entry)
        runtime.wake()
        changed = sorted(set(set_configs) | set(delete_configs))
        log.info("link %s: configs %s changed, applied to the running link", name, ", ".join(changed))
        return None

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
            tasks=link_tasks(entry),
        )

    async def delete_link(self, name: str, force: bool = False) -> list[dict]:
        """Delete a link. Its mirrors must be stopped first; ``force`` fails over those that are not (the
        unreplicated tail is reported as for ``failover``). Stopped mirrors become plain topics, so no
        mirror names a link that does not exist. Returns the failover results."""
        entry = self.link(name)
        active = sorted(m.topic for m in self.mirrors.values() if m.link == name and m.state != MirrorState.STOPPED)
        if active and not force:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' still has mirror topics {', '.join(active)}: promote, fail over or delete them first (or delete with force, which fails them over)")
        failed_over = await self.failover(active) if active else []
        stuck = [r["mirror_topic_name"] for r in failed_over if r["error_code"] != 0]
        if stuck:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' not deleted: mirror topics {', '.join(stuck)} could not be failed over")
        if entry.scope is not None:
            entry.scope.cancel()
        mine = sorted(t for t, m in self.mirrors.items() if m.link == name)
        with self._store.transaction() as db:
            db.execute("DELETE FROM links WHERE name = ?", (name,))
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
        """Mirror ``source_topic`` as ``topic``; returns the mirror topic's name. On a link with ``cluster.link.prefix`` the mirror is named
        prefix + source name: the source topic must be given, the mirror name may be left out."""
        entry = self.link(link)
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
        if topic in self.mirrors or self.topics.get(topic) is not None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
        twin = next((m.topic for m in self.mirrors.values() if m.link == link and m.source_topic == source_topic and m.state != MirrorState.STOPPED), None)
        if twin is not None:
            # One link fetches a source partition once; a second mirror of it would never advance.
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"source topic '{source_topic}' is already mirrored as '{twin}' over link '{link}'; create another link to mirror it twice")
        try:
            with trio.fail_after(entry.settings.request_timeout_ms / 1000):
                meta = await entry.runtime.source.metadata([source_topic])
        except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
            raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot reach the source cluster of link '{link}': {exc}") from exc
        st = meta.get(source_topic)
        if st is not None and st.error == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
            raise DomainError(ErrorKind.DENIED, ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"link '{link}' is not authorized to describe source topic '{source_topic}' (TOPIC_AUTHORIZATION_FAILED): grant its principal Describe and Read on it")
        if st is None or st.error != ErrorCode.NONE or not st.partitions:
            code = st.error.name if st else "absent"
            raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"source topic '{source_topic}' does not exist on link '{link}' ({code})")
        if topic in self.mirrors or self.topics.get(topic) is not None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
        # The source topic's configs before the first append: retention must never run with our defaults.
        try:
            with trio.fail_after(entry.settings.request_timeout_ms / 1000):
                source_configs = await describe_source_configs(entry.runtime.source, [source_topic])
        except ConfigsUnsupported as exc:
            log.warning("mirror %s: %s; created keeping everything (retention.ms=-1)", topic, exc)
            source_configs = {source_topic: {}}
        except (SourceUnavailable, SourceProtocolError, trio.TooSlowError) as exc:
            raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, f"cannot read the configs of source topic '{source_topic}' on link '{link}': {exc}") from exc
        if topic in self.mirrors or self.topics.get(topic) is not None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{topic}' already exists on this cluster")
        configs = mirrored_configs({}, source_configs[source_topic], entry.config_sync.names, set(), creating=True)
        partitions = len(st.partitions)
        # The mirror's own epoch starts at the source's so advertised epochs never go backwards (Invariant 4).
        epoch = max((p.leader_epoch for p in st.partitions.values()), default=0)
        try:
            await self.topics.create_async(topic, partitions, dict[str, str | None](configs), kind="mirror", leader_epoch=max(epoch, 0))
        except TopicError as exc:
            raise DomainError(ErrorKind.INVALID, exc.error_code, f"cannot create mirror topic '{topic}' with the source's configs {configs}: {exc.message}") from exc
        entry.config_sync.remember(topic, source_configs[source_topic])
        mirror = Mirror(topic, link, source_topic, str(st.topic_id) if st.topic_id else None, MirrorState.ACTIVE)
        mirror.partitions = [PartitionProgress(p, max_bytes=entry.settings.fetch_max_bytes) for p in range(partitions)]
        try:
            self.mirror_store.insert(mirror)
        except Exception:
            self.topics.delete(topic)
            raise
        self.mirrors[topic] = mirror
        entry.runtime.add_mirror(mirror, st)
        log.info("created mirror %s of %s over link %s (%d partitions)", topic, source_topic, link, partitions)
        return topic

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
        """[from, to) of ``partition``'s lost offsets; refuses when they are not known yet."""
        mirror = self.mirror(topic)
        lost = lost_offsets(mirror.stop_info)
        if (mirror.stop_info or {}).get("kind") != "failover":
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"mirror topic '{topic}' was not failed over: nothing was lost")
        if lost is None:
            raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"the lost offsets of '{topic}' are unknown until its source answers again (link '{mirror.link}')")
        found = [x for x in lost if x["partition"] == partition]
        if not found:
            raise DomainError(ErrorKind.NOT_FOUND, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' has no partition {partition}")
        return found[0]["from"], found[0]["to"]

    async def lost_records(self, topic: str, partition: int):
        """Yield the source's record batches covering exactly the lost offsets of ``partition``, verified
        (CRC), as the source stores them. Memory is one Fetch response (``replica.fetch.max.bytes``)."""
        start, end = self.lost_range(topic, partition)
        mirror = self.mirror(topic)
        entry = self.link(mirror.link)
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

    async def verify(self, topic: str, partition: int, from_offset: int | None = None, end_offset: int | None = None, max_bytes: int = DEFAULT_STEP_BYTES) -> dict:
        """One step of ``mirror verify`` for ``partition`` (see verify.py): compares the source's batches with
        the mirror's from ``from_offset`` (default: the first offset both sides hold) up to ``end_offset``
        (default: the mirror's log end, or the stop offset once promoted or failed over)."""
        mirror = self.mirror(topic)
        entry = self.link(mirror.link)
        local = self.topics.get(topic)
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

    def _result(self, topic: str, code: int = ErrorCode.NONE, message: str | None = None, **extra) -> dict:
        return {"mirror_topic_name": topic, "error_code": int(code), "error_message": message, **extra}

    def _simple(self, topics: list[str], event: MirrorEvent) -> list[dict]:
        results = []
        for topic in topics:
            try:
                mirror = self.mirror(topic)
                self.transitions.apply(mirror, event)
                results.append(self._result(topic, mirror_status=mirror.state.reported))
            except DomainError as exc:
                results.append(self._result(topic, exc.error_code, exc.message))
            except InvalidTransition as exc:
                results.append(self._result(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=mirror.state.reported))
        return results

    def pause(self, topics: list[str]) -> list[dict]:
        return self._simple(topics, MirrorEvent.PAUSE)

    def resume(self, topics: list[str]) -> list[dict]:
        return self._simple(topics, MirrorEvent.RESUME)

    def lags(self, mirror: Mirror) -> list[dict]:
        """The per-partition lags in a command's answer (promote, failover)."""
        return [
            {"partition": p.partition, "lag": p.lag, "mirror_log_end_offset": p.mirror_log_end_offset, "last_source_offset": p.source_high_watermark, "last_fetch_time_ms": p.last_fetch_time_ms}
            for p in self.partition_status(mirror)
        ]

    async def promote(self, topics: list[str], timeout_s: float = DEFAULT_PROMOTE_TIMEOUT_S) -> list[dict]:
        return await self.promotions.promote(topics, timeout_s)

    async def failover(self, topics: list[str]) -> list[dict]:
        return await self.promotions.failover(topics)


class _LockedSource(SourceCluster):
    """The source of a link whose secrets this daemon cannot read: every use says why, nothing connects."""

    def __init__(self, reason: str) -> None:
        super().__init__([], client_id="locked")
        self.reason = reason

    async def _open(self, pool, address, client_id):
        raise SecretsUnavailable(self.reason)

    async def request_any(self, api_key: int, body: dict) -> dict:
        raise SecretsUnavailable(self.reason)
