"""Creating, configuring and reading the configs of links: validated first, changed in one transaction,
applied to a running link without a restart. Runs on the event loop, called by the link manager."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import trio

from protocol.errors import ErrorCode

from .autocreate import AutoCreate
from .client import AuthenticationFailed, SourceProtocolError, SourceUnavailable
from .config import SENSITIVE_KEYS, LinkConfigError, LinkSettings, is_known_key, validate
from .configsync import ConfigSync
from .errors import DomainError, ErrorKind
from .offsetsync import OffsetSync
from .secrets import SecretsKeyError, seal_config
from .source import SourceCluster

if TYPE_CHECKING:
    from .manager import LinkManager

log = logging.getLogger(__name__)

_LINK_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _sensitive(key: str) -> bool:
    return key in SENSITIVE_KEYS


async def create_link(m: LinkManager, name: str, config: dict[str, str], validate_link: bool = True) -> None:
    if not name or not set(name) <= _LINK_NAME_OK or len(name) > 249:
        raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, f"invalid link name {name!r}: use letters, digits, '.', '_' and '-'")
    if name in m.links:
        raise DomainError(ErrorKind.CONFLICT, ErrorCode.INVALID_REQUEST, f"link '{name}' already exists")
    try:
        merged = validate(config)
        stored = seal_config(name, config, m._secrets_key)
    except (LinkConfigError, SecretsKeyError) as exc:
        raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, str(exc)) from exc
    probe: SourceCluster | None = None
    try:
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
        link_id = str(uuid.uuid4())
        m.link_store.insert(name, link_id, stored)
        entry = m._entry(name, link_id, config)
        if probe is not None and m.nursery is not None:
            # The probe's connection is open and negotiated, with the link's own settings: the link's first
            # requests (and a mirror created right after the link) skip a connect and ApiVersions round trip.
            entry.runtime.source.adopt(probe)
    finally:
        if probe is not None:
            await probe.close()  # whatever was not adopted
    m.links[name] = entry
    if m.nursery is not None:
        await m.nursery.start(m._run_link, entry)
    log.info("created link %s to %s", name, merged["bootstrap.servers"])
    return None


def link_configs(m: LinkManager, name: str) -> list[dict]:
    """Every link config with its value and whether it was set (REST v3 ``configs`` shape)."""
    entry = m.link(name)
    merged = validate(entry.config)
    return [
        {"link_name": name, "name": k, "value": None if _sensitive(k) else v, "is_default": k not in entry.config, "is_read_only": False, "is_sensitive": _sensitive(k), "source": "DYNAMIC_CLUSTER_LINK_CONFIG" if k in entry.config else "DEFAULT_CONFIG"}
        for k, v in sorted(merged.items())
    ]


async def update_link(m: LinkManager, name: str, set_configs: dict[str, str], delete_configs: list[str], validate_only: bool = False) -> None:
    """Change a link's configs, validated as at create, applied to the running link without a restart:
    fetching uses the new settings from its next round, the periodic syncs restart with theirs."""
    entry = m.link(name)
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
        stored = seal_config(name, config, m._secrets_key)  # secrets stay encrypted at rest
    except (LinkConfigError, SecretsKeyError) as exc:
        raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_CONFIG, str(exc)) from exc
    if validate_only or config == entry.config:
        return None
    m.link_store.save_config(name, stored)
    before = entry.settings
    entry.config, entry.settings = config, settings
    runtime = entry.runtime
    runtime.settings = settings
    runtime.source.bootstrap = list(settings.bootstrap_servers)
    runtime.source.request_timeout_s = settings.request_timeout_ms / 1000
    runtime.source.receive_buffer_bytes = settings.receive_buffer_bytes  # fetch connections opened from now on
    if settings.paused != before.paused:
        runtime.set_paused(settings.paused)
    if settings.fetch_max_bytes != before.fetch_max_bytes:
        for mirror in m.mirrors.values():
            if mirror.link == name:
                for progress in mirror.partitions:
                    progress.max_bytes = settings.fetch_max_bytes
    mirrors = lambda: [m for m in m.mirrors.values() if m.link == name]  # noqa: E731
    old_sync = entry.config_sync
    entry.offset_sync = OffsetSync(runtime, mirrors, m.topics, m._groups)
    entry.config_sync = ConfigSync(runtime, mirrors, m.topics)
    entry.config_sync.source_configs = old_sync.source_configs
    entry.auto_create = AutoCreate(runtime, mirrors, m.topics, m.create_mirror)
    if entry.sync_scope is not None:
        entry.sync_scope.cancel()
    if entry.nursery is not None:
        await entry.nursery.start(m._run_syncs, entry)
    runtime.wake()
    changed = sorted(set(set_configs) | set(delete_configs))
    log.info("link %s: configs %s changed, applied to the running link", name, ", ".join(changed))
    return None
