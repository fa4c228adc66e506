"""Per-partition log configuration, with the Kafka topic-config names it is usually built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from .errors import InvalidConfig

DAY_MS = 24 * 3600 * 1000
INT32_MAX = 2**31 - 1
# Kafka writes Long.MAX_VALUE to mean "never" for the flush knobs.
_LONG_MAX = 2**63 - 1


@dataclass(frozen=True)
class LogConfig:
    """How big segments get, how long data stays, and when appends are fsynced.

    Durability policy: by default nothing is fsynced per append (Kafka's default too). Appended bytes are in the
    page cache, so a process crash loses nothing; a power loss loses what was appended since the last
    ``flush()``. ``flush_messages`` / ``flush_ms`` force an fsync after that many records / milliseconds.
    ``checkpoint_interval_ms`` spaces out the small checkpoint files (recovery point, producer snapshot,
    leader epochs) written by ``flush()``; 0 writes them on every flush. Older checkpoints only make recovery
    scan more, never lose data.
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * DAY_MS
    index_interval_bytes: int = 4096
    retention_bytes: int = -1
    retention_ms: int = 7 * DAY_MS
    flush_messages: int | None = None
    flush_ms: int | None = None
    checkpoint_interval_ms: int = 0

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

    @classmethod
    def from_topic_configs(cls, configs: Mapping[str, str], base: LogConfig | None = None) -> LogConfig:
        """Build from Kafka topic config strings (``segment.bytes`` ...). Keys that do not concern the log
        (``cleanup.policy``, ``min.insync.replicas`` ...) are ignored; a bad number raises ``InvalidConfig``."""
        base = base or cls()
        changes: dict[str, int | None] = {}
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
        return out


_TOPIC_CONFIG_NAMES = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "index.interval.bytes": "index_interval_bytes",
    "retention.bytes": "retention_bytes",
    "retention.ms": "retention_ms",
    "flush.messages": "flush_messages",
    "flush.ms": "flush_ms",
}
assert set(_TOPIC_CONFIG_NAMES.values()) <= {f.name for f in fields(LogConfig)}
