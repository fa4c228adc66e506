"""Partition log store: Kafka's on-disk layout, byte-for-byte mirrored batches, crash recovery.

Storage does no network I/O and imports neither trio nor the listener. See docs/storage.md.
"""

from .config import LogConfig
from .errors import (
    InvalidConfig,
    InvalidProducerEpoch,
    InvalidRecord,
    LogClosed,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PolicyViolation,
    StorageError,
)
from .log import AppendResult, FileRange, LogStatistics, PartitionLog, ReadResult

__all__ = [
    "AppendResult",
    "FileRange",
    "InvalidConfig",
    "InvalidProducerEpoch",
    "InvalidRecord",
    "LogClosed",
    "LogConfig",
    "LogStatistics",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PartitionLog",
    "PolicyViolation",
    "ReadResult",
    "StorageError",
]
