"""Frozen status records of links and mirrors, and the ONE lag formula every reader uses.

``LinkManager.partition_status`` builds a ``PartitionStatus`` per mirror partition from the in-memory
progress and the log; describe, list, the promote/failover answers (``linkd/admin/views.py`` and
``promotion.py``) and ``/metrics`` all read these records, so they cannot disagree (after a skip, lag
counts from where the link fetches next, past the log end).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .mirror import PartitionProgress, lag_seconds, partition_lag
from .partition import LogView, fetch_position


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    mirror_log_end_offset: int  # -1: the partition has no log here
    last_source_fetch_offset: int
    source_high_watermark: int  # -1: not seen since this process started
    lag: int | None  # None: unknown (the source's end not seen lately)
    lag_seconds: float | None
    last_fetch_time_ms: int | None
    source_end_seen_ms: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def partition_status(progress: PartitionProgress, log: LogView | None, fresh: bool, now_ms: int) -> PartitionStatus:
    """``fresh``: the source end last seen is recent enough to compute a lag from."""
    lag = partition_lag(progress, fetch_position(progress, log), fresh) if log is not None else None
    return PartitionStatus(
        partition=progress.partition,
        mirror_log_end_offset=log.log_end_offset if log is not None else -1,
        last_source_fetch_offset=progress.last_source_fetch_offset,
        source_high_watermark=progress.source_high_watermark if progress.source_end_seen_ms else -1,
        lag=lag,
        lag_seconds=lag_seconds(progress, lag, now_ms),
        last_fetch_time_ms=progress.last_fetch_ms or None,
        source_end_seen_ms=progress.source_end_seen_ms or None,
    )


@dataclass(frozen=True)
class FetchStatistics:
    fetch_requests: int
    incremental_fetch_requests: int
    fetched_bytes: int
    appended_batches: int


@dataclass(frozen=True)
class LinkStatus:
    name: str
    link_id: str
    source_cluster_id: str | None
    bootstrap_servers: str | None
    state: str
    error: str
    error_message: str | None
    topic_names: list[str]
    configs: list[tuple[str, str, bool]]  # (key, value shown, sensitive): secrets already hidden
    statistics: FetchStatistics
    consumer_offset_sync: dict
    topic_config_sync: dict
    auto_create: dict
    acl_sync: dict
    tasks: list[dict]


@dataclass(frozen=True)
class StopSummary:
    """What a promote or failover recorded when the mirror stopped (from its stop info)."""

    kind: str | None
    offsets: list[dict]  # per partition: the stop offset, the source end seen, records possibly lost
    records_possibly_lost: int | None  # None: unknown (a source end never seen)
    aborted_transactions: list[dict]


@dataclass(frozen=True)
class CommandResult:
    """One mirror topic's answer to promote, failover, pause or resume — or, for ``validate_only``, the
    answer it would get. ``partitions`` and ``stop`` are None where the command does not report them
    (pause/resume; a refusal before the mirror was looked at)."""

    topic: str
    error_code: int = 0  # a Kafka error code; 0: done (or would be done)
    error_message: str | None = None
    mirror_status: str | None = None
    partitions: tuple[PartitionStatus, ...] | None = None
    stop: StopSummary | None = None
    validate_only: bool = False
