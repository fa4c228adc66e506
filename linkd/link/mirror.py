"""A mirror topic's runtime record: its durable row (persisted by ``store.MirrorStore``) and its
per-partition progress.

The durable part (link, source topic, state, error, stop offsets) is a row in the control store, and
every state change is one transaction. The per-partition progress (source high watermark, last fetch)
lives in memory: on restart the mirror's own log end offset is the exact place to resume, except right
after a *skip* (the source's log start moved past the mirror's end): the skip's gap record then says where
fetching continues, so a restart does not fetch the deleted range again.

The source end offsets last seen (high watermark, fetch position, when) are *checkpointed* to
``mirror_source_ends`` at a bounded rate (see ``LinkManager``; never on the fetch path), so a failover
after a restart can still say what the source held when linkd last looked, and how long ago. Such a
value is reported as a lower bound, not as the loss: the source may have grown while linkd was down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .states import FETCHING_STATES, MirrorError, MirrorState

if TYPE_CHECKING:
    from .store import MirrorStore

@dataclass
class PartitionProgress:
    partition: int
    source_high_watermark: int = -1
    source_log_start: int = -1
    last_source_fetch_offset: int = -1
    validated: bool = False
    max_bytes: int = 0
    leader: int = -1
    leader_epoch: int = -1
    last_fetch_ms: int = 0  # when a Fetch answer for this partition last arrived (0: not since start)
    source_end_seen_ms: int = 0  # when source_high_watermark was last read, by Fetch or ListOffsets
    caught_up_ms: int = 0  # when a reading last showed the mirror at the source's end
    # The last checkpoint written before this process started: (high watermark, fetch offset, seen_ms).
    persisted_end: tuple[int, int, int] | None = None
    checkpointed: tuple[int, int, int] | None = None  # what the checkpoint holds now (skip unchanged rows)
    # Where the next fetch starts when it is past the log end: after a skip over a range the source no
    # longer holds, until the first batch beyond it is appended. -1: the log end.
    skip_to: int = -1
    # An empty mirror of a ``earliest`` start that fetches from 0 without asking the source where its log
    # starts (a round trip saved): until its first append, an OFFSET_OUT_OF_RANGE moves it to the source's
    # start without recording a gap, as the ListOffsets it skipped would have.
    start_unconfirmed: bool = False
    inflight_end: int = -1  # next offset once the append running in a worker thread lands
    # The timestamp (ms) of the oldest source record known not to be mirrored yet: the first record of the
    # first batch past the log end that a fetch has shown (-1: none known). ``next_unmirrored_ts``: the
    # same for the batch after the append in flight, when the answer showed its header.
    unmirrored_ts: int = -1
    next_unmirrored_ts: int = -1
    fetcher: tuple[int, int] | None = None  # the (source broker, index) fetcher holding it (see fetcher)


    def source_end(self) -> int:
        """The source's end as last seen since this process started (-1: never): the high watermark, or
        what a fetch proved the source serves when that is more (Tansu's high watermark lags)."""
        return max(self.source_high_watermark, self.last_source_fetch_offset) if self.source_end_seen_ms else -1

    def checkpoint_row(self) -> tuple[int, int, int] | None:
        if not self.source_end_seen_ms:
            return None
        return (self.source_high_watermark, self.last_source_fetch_offset, self.source_end_seen_ms)


def partition_lag(progress: PartitionProgress, position: int, fresh: bool) -> int | None:
    """Offsets the mirror is behind the source's end as last seen, from ``position`` (where it fetches
    next). None when the source's end has not been seen since this process started, or not lately
    (``fresh`` false: the source cannot be read): unknown, not 0. The one lag formula: describe, list,
    the promote/failover answers and /metrics all use it."""
    end = progress.source_end()
    return None if end < 0 or not fresh else max(end - position, 0)


def lag_seconds(progress: PartitionProgress, lag: int | None, now_ms: int) -> float | None:
    """The age of the oldest source record the mirror does not hold yet, in seconds: 0 when caught up.

    Exact when a fetch has shown that record's batch (``unmirrored_ts``: the batch's first timestamp, or
    its append time for LogAppendTime topics). Otherwise, behind, an upper bound: the time since a reading
    last showed the mirror at the source's end (every record it lacks was written after that). With the
    lag unknown (source unreachable), the time since the last successful fetch. None when none of these
    is known since this process started."""
    if lag == 0:
        return 0.0
    if lag is not None and progress.unmirrored_ts >= 0:
        return max(now_ms - progress.unmirrored_ts, 0) / 1000
    since = progress.caught_up_ms if lag is not None else progress.last_fetch_ms
    return max(now_ms - since, 0) / 1000 if since else None


@dataclass
class Mirror:
    topic: str
    link: str
    source_topic: str
    source_topic_id: str | None
    state: MirrorState
    error: MirrorError = MirrorError.NONE
    error_message: str | None = None
    stop_info: dict | None = None
    partitions: list[PartitionProgress] = field(default_factory=list)
    missing_since_ms: int | None = None  # source topic absent from metadata since then
    deleted: bool = False  # a client deleted the mirror topic; the link drops it at its next round
    state_time_ms: int = 0  # when the mirror entered its current state (the row's updated_ms)

    @property
    def finalizing(self) -> bool:
        """Promotion or failover has committed to stopping; only finishing steps remain."""
        return self.state is MirrorState.FINALIZING

    @property
    def fetching(self) -> bool:
        return not self.deleted and self.state in FETCHING_STATES

    def set_stop_info(self, store: MirrorStore, info: dict) -> None:
        store.save_stop_info(self.topic, info)
        self.stop_info = info
