"""Link configuration with the Kafka / Cluster Linking property names.

Accepted as a Java ``.properties`` file (``--config-file``) and as ``KEY=VALUE`` overrides
(``--config``). Unknown keys are rejected by name, and every value is checked here so a bad link never
reaches the store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import javaproperties

from .. import topicconfig
from . import security
from .groupfilter import GroupFilter

BOOL_KEYS = {"consumer.offset.sync.enable", "acl.sync.enable", "auto.create.mirror.topics.enable", "cluster.link.paused", "consumer.group.prefix.enable"}
INT_KEYS = {
    "consumer.offset.sync.ms": (1, None),
    "topic.config.sync.ms": (1, None),
    "cluster.link.retry.timeout.ms": (0, None),
    "replica.fetch.max.bytes": (1024, None),
    "replica.fetch.response.max.bytes": (1024, None),
    "replica.fetch.wait.max.ms": (0, 60_000),
    "replica.fetch.min.bytes": (1, None),
    "request.timeout.ms": (1, None),
    "metadata.max.age.ms": (1, None),
    "retry.backoff.ms": (1, None),
    "retry.backoff.max.ms": (1, None),
    "num.cluster.link.fetchers": (0, 32),
    "receive.buffer.bytes": (-1, 256 * 1024 * 1024),
}
JSON_KEYS = {"consumer.offset.group.filters", "acl.filters", "auto.create.mirror.topics.filters"}
STRING_KEYS = {"bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.jaas.config", "cluster.link.prefix", "mirror.start.offset.spec"}
STRING_KEYS |= {"topic.config.sync.include", "acl.sync.ms"}
# Known Cluster Linking keys linkd does not implement yet, with the value that means "off": any other
# value (or any value at all, for None) is refused rather than accepted and ignored.
NOT_SUPPORTED_YET: dict[str, str | None] = {}

DEFAULTS: dict[str, str] = {
    "security.protocol": "PLAINTEXT",
    "consumer.offset.sync.enable": "false",
    "consumer.offset.sync.ms": "30000",
    "consumer.offset.group.filters": "",
    "topic.config.sync.ms": "5000",
    "acl.sync.enable": "false",
    "auto.create.mirror.topics.enable": "false",
    "cluster.link.prefix": "",
    "consumer.group.prefix.enable": "false",
    "mirror.start.offset.spec": "earliest",
    "cluster.link.paused": "false",
    "cluster.link.retry.timeout.ms": "300000",
    "replica.fetch.max.bytes": str(1024 * 1024),
    "replica.fetch.response.max.bytes": str(10 * 1024 * 1024),
    "replica.fetch.wait.max.ms": "500",
    "replica.fetch.min.bytes": "1",
    "request.timeout.ms": "30000",
    "metadata.max.age.ms": "300000",
    "retry.backoff.ms": "100",
    "retry.backoff.max.ms": "10000",
    # Fetch connections per source broker, each with its own share of the partitions that broker leads.
    # 0: adaptive (assignment.fetcher_count): one on a LAN, where one keeps the path full and more only
    # cost CPU, several across a WAN, where one Fetch per round trip cannot. See docs/operator-guide.md.
    "num.cluster.link.fetchers": "0",
    "receive.buffer.bytes": "-1",  # the Kafka client's name; -1: the OS sizes (and grows) the buffer itself
}
_PREFIX_OK = re.compile(r"^[a-zA-Z0-9._-]{1,200}$")
SUPPORTED_SECURITY = set(security.PROTOCOLS)
SENSITIVE_KEYS = security.SENSITIVE_KEYS  # hidden in every output, encrypted at rest (see security.py)
_HOSTPORT = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


class LinkConfigError(ValueError):
    pass


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java .properties text as Java's ``Properties.load`` does (comments, separators, continuations,
    escapes), with the ``javaproperties`` library."""
    try:
        return dict(javaproperties.loads(text))
    except (ValueError, UnicodeError) as exc:  # a malformed \\uXXXX escape
        raise LinkConfigError(f"cannot parse properties: {exc}") from exc


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LinkConfigError(f"--config expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _is_known(key: str) -> bool:
    # ssl.* and sasl.* keys are judged by security.check: a Kafka key we do not implement is "not supported yet".
    return key in BOOL_KEYS or key in INT_KEYS or key in JSON_KEYS or key in STRING_KEYS or security.is_security_key(key)


def is_known_key(key: str) -> bool:
    """A link config name linkd knows (implemented or refused as not supported yet)."""
    return _is_known(key)


def validate(config: dict[str, str]) -> dict[str, str]:
    """Return the config with defaults applied; raise LinkConfigError naming every problem."""
    unknown = sorted(k for k in config if not _is_known(k))
    if unknown:
        raise LinkConfigError(f"unknown link config key(s): {', '.join(unknown)}")
    merged = {**DEFAULTS, **config}
    problems = []
    servers = merged.get("bootstrap.servers", "")
    if not servers:
        problems.append("bootstrap.servers is required")
    else:
        bad = [s for s in servers.split(",") if not _HOSTPORT.match(s.strip())]
        if bad:
            problems.append(f"bootstrap.servers entries must be HOST:PORT, got {', '.join(bad)}")
    for key in BOOL_KEYS:
        if merged[key].lower() not in ("true", "false"):
            problems.append(f"{key} must be true or false, got {merged[key]!r}")
    for key, (low, high) in INT_KEYS.items():
        try:
            value = int(merged[key])
        except ValueError:
            problems.append(f"{key} must be an integer, got {merged[key]!r}")
            continue
        if key == "receive.buffer.bytes" and -1 < value < 1024:
            problems.append(f"{key} must be -1 (the OS's own sizing) or at least 1024, got {value}")
        elif value < low or (high is not None and value > high):
            problems.append(f"{key} must be between {low} and {high if high is not None else 'infinity'}, got {value}")
    for key in JSON_KEYS:
        if merged.get(key):
            try:
                json.loads(merged[key])
            except json.JSONDecodeError as exc:
                problems.append(f"{key} is not valid JSON: {exc}")
    problems.extend(security.check(merged))
    spec = merged["mirror.start.offset.spec"]
    if spec not in ("earliest", "latest"):
        try:
            datetime.fromisoformat(spec.replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"mirror.start.offset.spec must be earliest, latest or an ISO-8601 timestamp, got {spec!r}")
    if merged.get("auto.create.mirror.topics.filters"):
        try:
            GroupFilter.parse(merged["auto.create.mirror.topics.filters"], key="topicFilters")
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"auto.create.mirror.topics.filters: {exc}")
    prefix = merged["cluster.link.prefix"]
    if prefix and not _PREFIX_OK.match(prefix):
        problems.append(f"cluster.link.prefix {prefix!r} may hold only ASCII letters, digits, '.', '_' and '-'")
    if merged["consumer.group.prefix.enable"].lower() == "true" and not prefix:
        # Cluster Linking applies the group prefix only when the link has a prefix; accepting the key and
        # storing groups unprefixed would be the silent no-op we refuse everywhere.
        problems.append("consumer.group.prefix.enable=true needs cluster.link.prefix: synced groups are named prefix + source group name")
    if merged.get("consumer.offset.group.filters"):
        try:
            GroupFilter.parse(merged["consumer.offset.group.filters"])
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"consumer.offset.group.filters: {exc}")
    for key, off in NOT_SUPPORTED_YET.items():
        if key in config and (off is None or config[key].strip().lower() != off):
            problems.append(f"{key} is not supported yet" + (f" (only {key}={off})" if off is not None else ""))
    from .aclsync import config_problems  # the ACL sync owns its keys' rules

    problems.extend(config_problems(merged))
    if "topic.config.sync.include" in config:
        try:
            _sync_include(config["topic.config.sync.include"])
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise LinkConfigError("; ".join(problems))
    return merged


def _sync_include(value: str | None) -> frozenset[str]:
    """topic.config.sync.include: comma-separated configurable topic config names (default: all of them).
    Always-synced names may be listed (they are synced anyway); independent ones are never synced."""
    if value is None:
        return topicconfig.CONFIGURABLE
    names = {n.strip() for n in value.split(",") if n.strip()}
    unknown = sorted(n for n in names if n not in topicconfig.TOPIC_CONFIGS)
    if unknown:
        raise ValueError(f"topic.config.sync.include names unknown topic config(s): {', '.join(unknown)}")
    independent = sorted(names & topicconfig.INDEPENDENT)
    if independent:
        raise ValueError(f"topic.config.sync.include: {', '.join(independent)} cannot be synced (independent of the source topic)")
    return frozenset(names & topicconfig.CONFIGURABLE)


@dataclass(frozen=True)
class LinkSettings:
    """Typed view of a validated config."""

    bootstrap_servers: list[tuple[str, int]]
    paused: bool
    retry_timeout_ms: int
    fetch_max_bytes: int
    fetch_response_max_bytes: int
    fetch_wait_max_ms: int
    fetch_min_bytes: int
    request_timeout_ms: int
    metadata_max_age_ms: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    start_offset_spec: str
    offset_sync_enable: bool
    offset_sync_ms: int
    offset_group_filters: str
    prefix: str
    consumer_group_prefix: str  # prepended to synced group names ("" unless consumer.group.prefix.enable)
    auto_create_enable: bool
    auto_create_filters: str
    topic_config_sync_ms: int
    topic_config_sync_include: frozenset[str]
    fetchers: int = 0  # num.cluster.link.fetchers: fetch connections per source broker (0: adaptive)
    receive_buffer_bytes: int = -1  # SO_RCVBUF of fetch connections; -1: left to the OS (auto-tuned)
    security: security.SecuritySettings = field(default_factory=security.SecuritySettings)

    @classmethod
    def from_config(cls, config: dict[str, str]) -> LinkSettings:
        merged = validate(config)
        servers = []
        for s in merged["bootstrap.servers"].split(","):
            host, _, port = s.strip().rpartition(":")
            servers.append((host.strip("[]"), int(port)))
        return cls(
            bootstrap_servers=servers,
            paused=merged["cluster.link.paused"].lower() == "true",
            retry_timeout_ms=int(merged["cluster.link.retry.timeout.ms"]),
            fetch_max_bytes=int(merged["replica.fetch.max.bytes"]),
            fetch_response_max_bytes=int(merged["replica.fetch.response.max.bytes"]),
            fetch_wait_max_ms=int(merged["replica.fetch.wait.max.ms"]),
            fetch_min_bytes=int(merged["replica.fetch.min.bytes"]),
            request_timeout_ms=int(merged["request.timeout.ms"]),
            metadata_max_age_ms=int(merged["metadata.max.age.ms"]),
            retry_backoff_ms=int(merged["retry.backoff.ms"]),
            retry_backoff_max_ms=int(merged["retry.backoff.max.ms"]),
            start_offset_spec=merged["mirror.start.offset.spec"],
            offset_sync_enable=merged["consumer.offset.sync.enable"].lower() == "true",
            offset_sync_ms=int(merged["consumer.offset.sync.ms"]),
            offset_group_filters=merged["consumer.offset.group.filters"],
            prefix=merged["cluster.link.prefix"],
            consumer_group_prefix=merged["cluster.link.prefix"] if merged["consumer.group.prefix.enable"].lower() == "true" else "",
            auto_create_enable=merged["auto.create.mirror.topics.enable"].lower() == "true",
            auto_create_filters=merged.get("auto.create.mirror.topics.filters", ""),
            topic_config_sync_ms=int(merged["topic.config.sync.ms"]),
            topic_config_sync_include=_sync_include(merged.get("topic.config.sync.include")),
            fetchers=int(merged["num.cluster.link.fetchers"]),
            receive_buffer_bytes=int(merged["receive.buffer.bytes"]),
            security=security.SecuritySettings.from_config(merged),
        )
