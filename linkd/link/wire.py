"""The link's requests to a source, and typed readers of the source's answers.

Builders return request dicts that name only what the link decides; the schema's defaults fill the rest.
Readers turn an answer dict into small frozen records. A field that is missing or of the wrong type is
the *source's* fault and raises ``SourceProtocolError`` (the fetcher drops the connection and retries);
an error anywhere else (a ``KeyError`` in our own code) stays a bug and surfaces as one. Nothing here
performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode

from .client import SourceProtocolError, source_error

Key = tuple[str, int]  # (source topic, partition)

LATEST = -1  # ListOffsets timestamps
EARLIEST = -2


# -- requests -----------------------------------------------------------------------------------


def fetch_partition(partition: int, fetch_offset: int, max_bytes: int, leader_epoch: int = -1) -> dict:
    return {
        "partition": partition,
        "current_leader_epoch": leader_epoch,
        "fetch_offset": fetch_offset,
        "last_fetched_epoch": -1,
        "log_start_offset": -1,
        "partition_max_bytes": max_bytes,
    }


def fetch_request(topics: list[dict], *, max_wait_ms: int, min_bytes: int, max_bytes: int) -> dict:
    """A consumer's read_uncommitted Fetch outside any session (``FetchSession.build`` adds one)."""
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": topics,
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def list_offsets_request(asks: dict[str, list[int]], timestamp: int) -> dict:
    """ListOffsets at ``timestamp`` (LATEST, EARLIEST or epoch ms) for topic -> partitions."""
    return {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [
            {"name": t, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp} for p in ps]}
            for t, ps in asks.items()
        ],
        "timeout_ms": 0,
    }


def epoch_end_request(topic: str, partition: int, epoch: int) -> dict:
    return {
        "replica_id": -1,
        "topics": [{"topic": topic, "partitions": [{"partition": partition, "current_leader_epoch": -1, "leader_epoch": epoch}]}],
    }


# -- answers ------------------------------------------------------------------------------------


def _get(d: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise SourceProtocolError(f"{what} answer lacks {key!r}")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise SourceProtocolError(f"{what} answer has {key!r} of type {type(value).__name__}")
    return value


def _opt(d: dict, key: str, kind: type | tuple[type, ...], default: Any, what: str) -> Any:
    return default if d.get(key) is None else _get(d, key, kind, what)


def _list(d: Any, key: str, what: str) -> list:
    if isinstance(d, dict) and d.get(key) is None:
        return []
    return _get(d, key, list, what)


@dataclass(frozen=True)
class FetchedPartition:
    """One partition of a Fetch answer."""

    partition: int
    error: ErrorCode
    high_watermark: int = -1
    log_start_offset: int = -1
    records: bytes | bytearray | memoryview | None = None
    diverging: tuple[int, int] | None = None  # (epoch, end offset) when the source says our log diverged


@dataclass(frozen=True)
class FetchAnswer:
    error: ErrorCode
    session_id: int
    partitions: dict[Key, FetchedPartition]


def read_fetch(response: dict) -> FetchAnswer:
    what = "Fetch"
    partitions: dict[Key, FetchedPartition] = {}
    for t in _list(response, "responses", what):
        topic = _opt(t, "topic", str, "", what)
        for p in _list(t, "partitions", what):
            records = p.get("records")
            if records is not None and not isinstance(records, (bytes, bytearray, memoryview)):
                raise SourceProtocolError(f"{what} answer has records of type {type(records).__name__}")
            diverging = None
            d = p.get("diverging_epoch")
            if d:
                epoch = _get(d, "epoch", int, what)
                if epoch >= 0:
                    diverging = (epoch, _get(d, "end_offset", int, what))
            index = _get(p, "partition_index", int, what)
            partitions[(topic, index)] = FetchedPartition(
                index,
                source_error(_get(p, "error_code", int, what)),
                _opt(p, "high_watermark", int, -1, what),
                _opt(p, "log_start_offset", int, -1, what),
                records,
                diverging,
            )
    return FetchAnswer(source_error(_opt(response, "error_code", int, 0, what)), _opt(response, "session_id", int, 0, what), partitions)


@dataclass(frozen=True)
class ListedOffset:
    error: ErrorCode
    offset: int


def read_list_offsets(response: dict) -> dict[Key, ListedOffset]:
    what = "ListOffsets"
    out: dict[Key, ListedOffset] = {}
    for t in _list(response, "topics", what):
        name = _get(t, "name", str, what)
        for p in _list(t, "partitions", what):
            code = source_error(_get(p, "error_code", int, what))
            offset = _opt(p, "offset", int, -1, what) if code == ErrorCode.NONE else -1
            out[(name, _get(p, "partition_index", int, what))] = ListedOffset(code, offset)
    return out


@dataclass(frozen=True)
class EpochEnd:
    error: ErrorCode
    leader_epoch: int
    end_offset: int


def read_epoch_end(response: dict, topic: str, partition: int) -> EpochEnd:
    what = "OffsetForLeaderEpoch"
    for t in _list(response, "topics", what):
        if _opt(t, "topic", str, "", what) in (topic, ""):
            for p in _list(t, "partitions", what):
                if _get(p, "partition", int, what) == partition:
                    code = source_error(_get(p, "error_code", int, what))
                    return EpochEnd(code, _opt(p, "leader_epoch", int, -1, what), _opt(p, "end_offset", int, -1, what))
    raise SourceProtocolError(f"{what} response has no entry for {topic}-{partition}")


def only(answers: dict[Key, Any], topic: str, partition: int, what: str) -> Any:
    """The entry for ``topic``/``partition`` in a one-partition answer. A source that answers without it
    (Tansu does, for a topic it no longer has) is a protocol error: the connection is dropped and retried."""
    for key in ((topic, partition), ("", partition)):
        if key in answers:
            return answers[key]
    raise SourceProtocolError(f"{what} response has no entry for {topic}-{partition}")
