"""Per-partition log configuration, with the Kafka topic-config names it is usually built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidConfig

DAY_MS = 24 * 3600 * 1000
INT32_MAX = 2**31 - 1
# Kafka writes Long.MAX_VALUE to mean "never" for the flush knobs.
_LONG_MAX = 2**63 - 1
POLICY_DELETE = "delete"
POLICY_COMPACT = "compact"


@dataclass(frozen=True)
class LogConfig:
    """How big segments get, how long data stays, and when appends are fsynced.

    Durability policy: by default nothing is fsynced per append (Kafka's default too). Appended bytes are in the
    page cache, so a process crash loses nothing; a power loss loses what was appended since the last
    ``flush()``. ``flush_messages`` / ``flush_ms`` force an fsync after that many records / milliseconds.
    ``checkpoint_interval_ms`` spaces out the small checkpoint files (recovery point, producer snapshot,
    leader epochs) written by ``flush()``; 0 writes them on every flush. Older checkpoints only make recovery
    scan more, never lose data.

    ``cleanup_policy`` is ``cleanup.policy`` as a tuple of "delete" / "compact" (both, one, or neither: an
    empty list keeps everything, as in Kafka 4.2). Time and size retention run only when it holds "delete";
    the log cleaner (``cleaner.py``) runs only when it holds "compact", with ``delete_retention_ms``,
    ``min_compaction_lag_ms``, ``max_compaction_lag_ms`` and ``min_cleanable_dirty_ratio`` (Kafka's
    meanings and defaults).
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * DAY_MS
    index_interval_bytes: int = 4096
    retention_bytes: int = -1
    retention_ms: int = 7 * DAY_MS
    flush_messages: int | None = None
    flush_ms: int | None = None
    checkpoint_interval_ms: int = 0
    cleanup_policy: tuple[str, ...] = (POLICY_DELETE,)
    delete_retention_ms: int = DAY_MS
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _LONG_MAX
    min_cleanable_dirty_ratio: float = 0.5

    @property
    def delete(self) -> bool:
        """Time and size retention apply (``cleanup.policy`` holds "delete")."""
        return POLICY_DELETE in self.cleanup_policy

    @property
    def compact(self) -> bool:
        """The log cleaner keeps the latest record per key (``cleanup.policy`` holds "compact")."""
        return POLICY_COMPACT in self.cleanup_policy

    @property
    def max_segment_ms(self) -> int:
        """How old the active segment may get before it rolls: on a compacted topic also bounded by
        ``max.compaction.lag.ms``, since the cleaner never touches the active segment (Kafka's rule)."""
        if self.compact and self.max_compaction_lag_ms > 0:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms

    def __post_init__(self) -> None:
        # The offset index stores 4-byte positions, so a segment must stay addressable with an int32.
        if not 14 <= self.segment_bytes <= INT32_MAX:
            raise InvalidConfig(f"segment.bytes must be in [14, {INT32_MAX}], got {self.segment_bytes}")
        if self.segment_ms < 1:
            raise InvalidConfig(f"segment.ms must be >= 1, got {self.segment_ms}")
        if self.index_interval_bytes < 0:
            raise InvalidConfig(f"index.interval.bytes must be >= 0, got {self.index_interval_bytes}")
        if self.retention_bytes < -1 or self.retention_ms < -1:
            raise InvalidConfig("retention.bytes and retention.ms must be >= -1")
        if self.flush_messages is not None and self.flush_messages < 1:
            raise InvalidConfig(f"flush.messages must be >= 1, got {self.flush_messages}")
        if self.flush_ms is not None and self.flush_ms < 0:
            raise InvalidConfig(f"flush.ms must be >= 0, got {self.flush_ms}")
        if self.checkpoint_interval_ms < 0:
            raise InvalidConfig("checkpoint_interval_ms must be >= 0")
        if not set(self.cleanup_policy) <= {POLICY_DELETE, POLICY_COMPACT} or len(set(self.cleanup_policy)) != len(self.cleanup_policy):
            raise InvalidConfig(f"cleanup.policy must be a list of distinct values from [compact, delete], got "
                                f"{','.join(self.cleanup_policy)!r}")
        if self.delete_retention_ms < 0:
            raise InvalidConfig(f"delete.retention.ms must be >= 0, got {self.delete_retention_ms}")
        if self.min_compaction_lag_ms < 0:
            raise InvalidConfig(f"min.compaction.lag.ms must be >= 0, got {self.min_compaction_lag_ms}")
        if self.max_compaction_lag_ms < 1:
            raise InvalidConfig(f"max.compaction.lag.ms must be >= 1, got {self.max_compaction_lag_ms}")
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms:
            raise InvalidConfig(f"conflict topic config setting min.compaction.lag.ms ({self.min_compaction_lag_ms}) "
                                f"> max.compaction.lag.ms ({self.max_compaction_lag_ms})")
        if not 0.0 <= self.min_cleanable_dirty_ratio <= 1.0:
            raise InvalidConfig(f"min.cleanable.dirty.ratio must be in [0, 1], got {self.min_cleanable_dirty_ratio}")

    @classmethod
    def from_topic_configs(cls, configs: Mapping[str, str], base: LogConfig | None = None) -> LogConfig:
        """Build from Kafka topic config strings (``segment.bytes``, ``cleanup.policy`` ...). Keys that do not
        concern the log (``min.insync.replicas`` ...) are ignored; a bad value raises ``InvalidConfig``."""
        base = base or cls()
        changes: dict[str, Any] = {}  # field name -> new value; the fields differ in type
        if "cleanup.policy" in configs:
            changes["cleanup_policy"] = parse_cleanup_policy(configs["cleanup.policy"])
        if "min.cleanable.dirty.ratio" in configs:
            raw = configs["min.cleanable.dirty.ratio"]
            try:
                ratio = float(str(raw).strip())
            except (TypeError, ValueError):
                raise InvalidConfig(f"topic config min.cleanable.dirty.ratio={raw!r} is not a number") from None
            if ratio != ratio:  # NaN
                raise InvalidConfig("topic config min.cleanable.dirty.ratio=NaN is not a number")
            changes["min_cleanable_dirty_ratio"] = ratio
        for key, attr in _TOPIC_CONFIG_NAMES.items():
            if key not in configs:
                continue
            try:
                value = int(configs[key].strip())
            except (TypeError, ValueError):
                raise InvalidConfig(f"topic config {key}={configs[key]!r} is not an integer") from None
            if attr in ("flush_messages", "flush_ms"):
                changes[attr] = None if value >= _LONG_MAX else value
            else:
                changes[attr] = value
        return replace(base, **changes)

    def to_topic_configs(self) -> dict[str, str]:
        """The inverse mapping, for DescribeConfigs."""
        out: dict[str, str] = {}
        for key, attr in _TOPIC_CONFIG_NAMES.items():
            value = getattr(self, attr)
            out[key] = str(_LONG_MAX if value is None else value)
        out["cleanup.policy"] = ",".join(self.cleanup_policy)
        out["min.cleanable.dirty.ratio"] = repr(self.min_cleanable_dirty_ratio)
        return out



def parse_cleanup_policy(value: str) -> tuple[str, ...]:
    """``cleanup.policy`` as Kafka reads it: a comma-separated list of "delete" / "compact", any case of
    spacing, each at most once; "" (no policy) keeps everything."""
    if value is None:
        raise InvalidConfig("topic config cleanup.policy must not be null")
    items = [item.strip() for item in str(value).split(",")]
    if items == [""]:
        return ()
    policy: list[str] = []
    for item in items:
        if item not in (POLICY_DELETE, POLICY_COMPACT):
            raise InvalidConfig(f"Invalid value {item!r} for configuration cleanup.policy: String must be one of: compact, delete")
        if item in policy:
            raise InvalidConfig(f"Invalid value {value!r} for configuration cleanup.policy: {item!r} is listed twice")
        policy.append(item)
    return tuple(policy)


_TOPIC_CONFIG_NAMES = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "index.interval.bytes": "index_interval_bytes",
    "retention.bytes": "retention_bytes",
    "retention.ms": "retention_ms",
    "flush.messages": "flush_messages",
    "flush.ms": "flush_ms",
    "delete.retention.ms": "delete_retention_ms",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
}
assert set(_TOPIC_CONFIG_NAMES.values()) <= {f.name for f in fields(LogConfig)}
