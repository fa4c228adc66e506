"""Errors the partition log raises. Each carries the Kafka ``error_code`` the listener puts in its answer."""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError


class StorageError(ProtocolError):
    """A request the log refuses (bad sequence, stale epoch, offset out of range, bad config)."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR


class OffsetOutOfRange(StorageError):
    error_code = ErrorCode.OFFSET_OUT_OF_RANGE


class OutOfOrderSequence(StorageError):
    error_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpoch(StorageError):
    error_code = ErrorCode.INVALID_PRODUCER_EPOCH


class InvalidConfig(StorageError):
    error_code = ErrorCode.INVALID_CONFIG


class PolicyViolation(StorageError):
    """Refused by the topic's configuration (DeleteRecords on a topic whose cleanup.policy lacks "delete")."""

    error_code = ErrorCode.POLICY_VIOLATION


class InvalidRecord(StorageError):
    error_code = ErrorCode.INVALID_RECORD


class LogClosed(StorageError):
    """The log was closed or deleted; a caller kept a stale reference."""

    error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER
