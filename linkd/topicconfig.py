"""Topic configuration as a Kafka broker defines it: names, types, defaults, validation, and how each
name behaves on a mirror.

The list is Apache Kafka 4.1's topic-config list (``LogConfig``), checked against a live 4.1 broker's
DescribeConfigs by tests/broker/test_topic_configs.py. A value is validated by type and range with the
messages Kafka uses (``Invalid value abc for configuration retention.ms: Not a number of type LONG``), so
clients and tools see the answers they know.

A handful of names are accepted only at the value that means "nothing to do" on a single-replica broker
without tiered storage (``remote.storage.enable=true``, ``preallocate=true`` ...): any other value is
refused as "not supported yet", never stored and ignored.

Mirror topics follow Cluster Linking's three classes:

* ``ALWAYS_SYNCED``: copied from the source and read-only while the topic is a mirror (they decide what a
  batch may be, so a mirror that disagreed would refuse, after promotion, what the source accepted);
* ``CONFIGURABLE``: copied unless the mirror overrides the name locally or the link leaves it out of
  ``topic.config.sync.include``;
* everything else is independent: never copied (replication, tiered storage, on-disk details).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1

# DescribeConfigs config_type codes (Kafka's ConfigEntry.ConfigType).
TYPE_BOOLEAN = 1
TYPE_STRING = 2
TYPE_INT = 3
TYPE_LONG = 5
TYPE_DOUBLE = 6
TYPE_LIST = 7
_TYPE_NAMES = {TYPE_BOOLEAN: "BOOLEAN", TYPE_STRING: "STRING", TYPE_INT: "INT", TYPE_LONG: "LONG", TYPE_DOUBLE: "DOUBLE", TYPE_LIST: "LIST"}


class InvalidTopicConfig(ValueError):
    """A topic config name or value Kafka would refuse (INVALID_CONFIG)."""


@dataclass(frozen=True)
class ConfigDef:
    name: str
    type: int
    default: str
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None  # STRING: one of; LIST: each item one of
    # (broker config name, its value here) pairs DescribeConfigs reports as synonyms, most specific first.
    broker_synonyms: tuple[tuple[str, str], ...] = ()
    # Values linkd cannot honour yet; None: every valid value works.
    supported: Callable[[str], bool] | None = None
    unsupported_reason: str = ""

    def parse(self, value: str) -> object:
        """The typed value, or InvalidTopicConfig with Kafka's message."""
        text = value.strip()
        if self.type in (TYPE_INT, TYPE_LONG):
            try:
                number = int(text)
            except ValueError:
                raise self._invalid(value, f"Not a number of type {_TYPE_NAMES[self.type]}") from None
            limit = INT_MAX if self.type == TYPE_INT else LONG_MAX
            if not -limit - 1 <= number <= limit:
                raise self._invalid(value, f"Not a number of type {_TYPE_NAMES[self.type]}")
            self._check_range(value, number)
            return number
        if self.type == TYPE_DOUBLE:
            try:
                real = float(text)
            except ValueError:
                raise self._invalid(value, "Not a number of type DOUBLE") from None
            self._check_range(str(real), real)
            return real
        if self.type == TYPE_BOOLEAN:
            if text.lower() not in ("true", "false"):
                raise self._invalid(value, "Expected value to be either true or false")
            return text.lower() == "true"
        if self.type == TYPE_LIST:
            items = [item.strip() for item in text.split(",") if item.strip()] if text else []
            if self.choices is not None:
                bad = [item for item in items if item not in self.choices]
                if bad or not items:
                    raise self._invalid(value, f"String must be one of: {', '.join(self.choices)}")
            return items
        if self.choices is not None and text not in self.choices:
            raise self._invalid(value, f"String must be one of: {', '.join(self.choices)}")
        return text

    def _check_range(self, shown: str, number: float) -> None:
        if self.low is not None and number < self.low:
            raise self._invalid(shown, f"Value must be at least {_num(self.low)}")
        if self.high is not None and number > self.high:
            raise self._invalid(shown, f"Value must be no more than {_num(self.high)}")

    def _invalid(self, value: str, why: str) -> InvalidTopicConfig:
        return InvalidTopicConfig(f"Invalid value {value} for configuration {self.name}: {why}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _only(*values: str) -> Callable[[str], bool]:
    return lambda v: v.strip().lower() in values


_DEFS = [
    ConfigDef("cleanup.policy", TYPE_LIST, "delete", "delete: drop old segments by retention; compact: keep each key's latest value; both: compact, then drop by retention", choices=("compact", "delete"), broker_synonyms=(("log.cleanup.policy", "delete"),)),
    ConfigDef("compression.gzip.level", TYPE_INT, "-1", "gzip level when the broker compresses", low=-1, high=9, broker_synonyms=(("compression.gzip.level", "-1"),), supported=_only("-1"), unsupported_reason="compression levels other than the codec's default are not supported yet"),
    ConfigDef("compression.lz4.level", TYPE_INT, "9", "lz4 level when the broker compresses", low=1, high=17, broker_synonyms=(("compression.lz4.level", "9"),), supported=_only("9"), unsupported_reason="compression levels other than the codec's default are not supported yet"),
    ConfigDef("compression.type", TYPE_STRING, "producer", "codec of stored batches: producer keeps the producer's, any other recompresses on Produce", choices=("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"), broker_synonyms=(("compression.type", "producer"),)),
    ConfigDef("compression.zstd.level", TYPE_INT, "3", "zstd level when the broker compresses", low=-131072, high=22, broker_synonyms=(("compression.zstd.level", "3"),), supported=_only("3"), unsupported_reason="compression levels other than the codec's default are not supported yet"),
    ConfigDef("delete.retention.ms", TYPE_LONG, "86400000", "how long tombstones stay in a compacted topic", low=0, broker_synonyms=(("log.cleaner.delete.retention.ms", "86400000"),)),
    ConfigDef("file.delete.delay.ms", TYPE_LONG, "60000", "delay before a deleted segment's files are removed (linkd removes them at once: no reader holds them, they read snapshots)", low=0, broker_synonyms=(("log.segment.delete.delay.ms", "60000"),)),
    ConfigDef("flush.messages", TYPE_LONG, str(LONG_MAX), "fsync after this many appended records", low=1, broker_synonyms=(("log.flush.interval.messages", str(LONG_MAX)),)),
    ConfigDef("flush.ms", TYPE_LONG, str(LONG_MAX), "fsync after this many milliseconds", low=0),
    ConfigDef("follower.replication.throttled.replicas", TYPE_LIST, "", "replicas throttled as followers (one replica here: nothing to throttle)"),
    ConfigDef("index.interval.bytes", TYPE_INT, "4096", "bytes between offset index entries", low=0, broker_synonyms=(("log.index.interval.bytes", "4096"),)),
    ConfigDef("leader.replication.throttled.replicas", TYPE_LIST, "", "replicas throttled as leaders (one replica here: nothing to throttle)"),
    ConfigDef("local.retention.bytes", TYPE_LONG, "-2", "local retention with tiered storage (no tiered storage here: unused)", low=-2, broker_synonyms=(("log.local.retention.bytes", "-2"),)),
    ConfigDef("local.retention.ms", TYPE_LONG, "-2", "local retention with tiered storage (no tiered storage here: unused)", low=-2, broker_synonyms=(("log.local.retention.ms", "-2"),)),
    ConfigDef("max.compaction.lag.ms", TYPE_LONG, str(LONG_MAX), "longest a record may stay uncompacted", low=1, broker_synonyms=(("log.cleaner.max.compaction.lag.ms", str(LONG_MAX)),)),
    ConfigDef("max.message.bytes", TYPE_INT, "1048588", "largest record batch Produce accepts", low=0, broker_synonyms=(("message.max.bytes", "1048588"),)),
    ConfigDef("message.timestamp.after.max.ms", TYPE_LONG, "3600000", "how far in the future a CreateTime timestamp may be", low=0, broker_synonyms=(("log.message.timestamp.after.max.ms", "3600000"),)),
    ConfigDef("message.timestamp.before.max.ms", TYPE_LONG, str(LONG_MAX), "how far in the past a CreateTime timestamp may be", low=0, broker_synonyms=(("log.message.timestamp.before.max.ms", str(LONG_MAX)),)),
    ConfigDef("message.timestamp.type", TYPE_STRING, "CreateTime", "CreateTime keeps the producer's timestamps, LogAppendTime stamps the append time", choices=("CreateTime", "LogAppendTime"), broker_synonyms=(("log.message.timestamp.type", "CreateTime"),)),
    ConfigDef("min.cleanable.dirty.ratio", TYPE_DOUBLE, "0.5", "dirty share of a log that makes it eligible for compaction", low=0, high=1, broker_synonyms=(("log.cleaner.min.cleanable.ratio", "0.5"),)),
    ConfigDef("min.compaction.lag.ms", TYPE_LONG, "0", "shortest a record stays uncompacted", low=0, broker_synonyms=(("log.cleaner.min.compaction.lag.ms", "0"),)),
    ConfigDef("min.insync.replicas", TYPE_INT, "1", "replicas an acks=all write needs (linkd holds one: above 1, acks=all gets NOT_ENOUGH_REPLICAS)", low=1, broker_synonyms=(("min.insync.replicas", "1"),)),
    ConfigDef("preallocate", TYPE_BOOLEAN, "false", "preallocate segment files", broker_synonyms=(("log.preallocate", "false"),), supported=_only("false"), unsupported_reason="preallocated segments are not supported yet"),
    ConfigDef("remote.log.copy.disable", TYPE_BOOLEAN, "false", "tiered storage: stop copying (no tiered storage here: unused)"),
    ConfigDef("remote.log.delete.on.disable", TYPE_BOOLEAN, "false", "tiered storage: delete on disable (no tiered storage here: unused)"),
    ConfigDef("remote.storage.enable", TYPE_BOOLEAN, "false", "tiered storage", supported=_only("false"), unsupported_reason="tiered storage is not supported yet"),
    ConfigDef("retention.bytes", TYPE_LONG, "-1", "largest a partition gets before old segments are deleted; -1: no limit", low=-1, broker_synonyms=(("log.retention.bytes", "-1"),)),
    ConfigDef("retention.ms", TYPE_LONG, "604800000", "age after which old segments are deleted; -1: no limit", low=-1, broker_synonyms=(("log.retention.hours", "168"),)),
    # Kafka 4 refuses segments under 1 MiB; linkd allows smaller ones (tests roll segments quickly).
    ConfigDef("segment.bytes", TYPE_INT, "1073741824", "segment size before a new one is rolled", low=14, broker_synonyms=(("log.segment.bytes", "1073741824"),)),
    ConfigDef("segment.index.bytes", TYPE_INT, "10485760", "offset index size", low=4, broker_synonyms=(("log.index.size.max.bytes", "10485760"),), supported=_only("10485760"), unsupported_reason="a segment.index.bytes other than the default is not supported yet"),
    ConfigDef("segment.jitter.ms", TYPE_LONG, "0", "random jitter subtracted from segment.ms", low=0, supported=_only("0"), unsupported_reason="segment.jitter.ms is not supported yet"),
    ConfigDef("segment.ms", TYPE_LONG, "604800000", "age of a segment before a new one is rolled", low=1),
    ConfigDef("unclean.leader.election.enable", TYPE_BOOLEAN, "false", "elect an out-of-sync replica (one replica here: there is no election)", broker_synonyms=(("unclean.leader.election.enable", "false"),)),
]
TOPIC_CONFIGS: dict[str, ConfigDef] = {d.name: d for d in _DEFS}
TOPIC_CONFIG_DEFAULTS: dict[str, str] = {d.name: d.default for d in _DEFS}

# Cluster Linking's mirror classes. message.timestamp.difference.max.ms is in Cluster Linking's list but
# was removed in Kafka 4.0: a source that still reports it (Kafka 3.x) has its before/after pair synced.
ALWAYS_SYNCED = frozenset({
    "cleanup.policy",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
})
CONFIGURABLE = frozenset({
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "flush.messages",
    "flush.ms",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "compression.type",
})
INDEPENDENT = frozenset(TOPIC_CONFIGS) - ALWAYS_SYNCED - CONFIGURABLE
assert ALWAYS_SYNCED | CONFIGURABLE <= set(TOPIC_CONFIGS)


def sync_class(name: str) -> str:
    if name in ALWAYS_SYNCED:
        return "always"
    if name in CONFIGURABLE:
        return "configurable"
    return "independent"


def check_value(name: str, value: str | None) -> str:
    """The value to store for ``name``, or InvalidTopicConfig naming what is wrong."""
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidTopicConfig(f"Unknown topic config name: {name}")
    if value is None:
        raise InvalidTopicConfig(f"Null value not supported for topic configs: {name}")
    definition.parse(value)
    if definition.supported is not None and not definition.supported(value):
        raise InvalidTopicConfig(f"{name}={value} is not supported yet: {definition.unsupported_reason}")
    return value.strip()


def check_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    return {name: check_value(name, value) for name, value in configs.items()}


def effective(configs: Mapping[str, str], name: str) -> str:
    return configs.get(name, TOPIC_CONFIG_DEFAULTS[name])


def parsed(configs: Mapping[str, str], name: str) -> object:
    return TOPIC_CONFIGS[name].parse(effective(configs, name))


def int_value(configs: Mapping[str, str], name: str) -> int:
    """An INT or LONG config's effective value (the topic's, else the default). Cached by (name, text):
    Produce asks for several per partition."""
    return _int_value(name, effective(configs, name))


@functools.lru_cache(maxsize=1024)
def _int_value(name: str, text: str) -> int:
    value = TOPIC_CONFIGS[name].parse(text)
    assert isinstance(value, int) and not isinstance(value, bool), name
    return value
