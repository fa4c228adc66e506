"""A mirror topic's runtime record and its persistence.

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

import json
import time
from dataclasses import dataclass, field

from ..controlstore import ControlStore
from .states import FETCHING_STATES, MirrorError, MirrorEvent, MirrorState, next_state

SCHEMA = """
CREATE TABLE IF NOT EXISTS mirrors (
    topic TEXT PRIMARY KEY,
    link TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    source_topic_id TEXT,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    error_message TEXT,
    stop_info TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror_gaps (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    to_offset INTEGER NOT NULL,
    reason TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror_source_ends (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    high_watermark INTEGER NOT NULL,
    fetch_offset INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
)
"""

SKIP_REASON_PREFIX = "skipped: "


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
    inflight_end: int = -1  # next offset once the append running in a worker thread lands
    # The timestamp (ms) of the oldest source record known not to be mirrored yet: the first record of the
    # first batch past the log end that a fetch has shown (-1: none known). ``next_unmirrored_ts``: the
    # same for the batch after the append in flight, when the answer showed its header.
    unmirrored_ts: int = -1
    next_unmirrored_ts: int = -1


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


class MirrorStore:
    def __init__(self, store: ControlStore) -> None:
        self._store = store
        store.ensure_schema(SCHEMA)

    def load(self) -> list[Mirror]:
        out = []
        for row in self._store.query("SELECT * FROM mirrors ORDER BY topic"):
            stop_info = json.loads(row["stop_info"]) if row["stop_info"] else None
            state = MirrorState(row["state"])
            if stop_info and stop_info.get("phase") == "finalizing" and state is not MirrorState.STOPPED:
                state = MirrorState.FINALIZING  # written before FINALIZING was a state of its own
            out.append(
                Mirror(
                    topic=row["topic"],
                    link=row["link"],
                    source_topic=row["source_topic"],
                    source_topic_id=row["source_topic_id"],
                    state=state,
                    error=MirrorError(row["error"]),
                    error_message=row["error_message"],
                    stop_info=stop_info,
                    state_time_ms=row["updated_ms"],
                )
            )
        return out

    def insert(self, mirror: Mirror) -> None:
        now = int(time.time() * 1000)
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO mirrors (topic, link, source_topic, source_topic_id, state, error, error_message, stop_info, created_ms, updated_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (mirror.topic, mirror.link, mirror.source_topic, mirror.source_topic_id, mirror.state.value, mirror.error.value, mirror.error_message, None, now, now),
            )
        mirror.state_time_ms = now

    def transition(
        self,
        mirror: Mirror,
        event: MirrorEvent,
        error: MirrorError | None = None,
        message: str | None = None,
        stop_info: dict | None = None,
    ) -> MirrorState:
        """Apply ``event`` (raises InvalidTransition, leaving the mirror unchanged) and persist it."""
        new_state = next_state(mirror.state, event)
        new_error = error if error is not None else (MirrorError.NONE if new_state != MirrorState.FAILED else mirror.error)
        new_message = message if error is not None else (None if new_state != MirrorState.FAILED else mirror.error_message)
        new_stop = stop_info if stop_info is not None else mirror.stop_info
        if (new_state, new_error, new_message, new_stop) == (mirror.state, mirror.error, mirror.error_message, mirror.stop_info):
            return new_state
        changed_ms = int(time.time() * 1000) if new_state != mirror.state else mirror.state_time_ms
        with self._store.transaction() as db:
            db.execute(
                "UPDATE mirrors SET state = ?, error = ?, error_message = ?, stop_info = ?, updated_ms = ? WHERE topic = ?",
                (new_state.value, new_error.value, new_message, json.dumps(new_stop) if new_stop else None, changed_ms, mirror.topic),
            )
        mirror.state_time_ms = changed_ms
        mirror.state, mirror.error, mirror.error_message, mirror.stop_info = new_state, new_error, new_message, new_stop
        return new_state

    def save_stop_info(self, topic: str, info: dict) -> None:
        with self._store.transaction() as db:
            # updated_ms is the state's time: recording stop details does not change the state
            db.execute("UPDATE mirrors SET stop_info = ? WHERE topic = ?", (json.dumps(info), topic))

    def delete(self, topic: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM mirrors WHERE topic = ?", (topic,))
            db.execute("DELETE FROM mirror_gaps WHERE topic = ?", (topic,))
            db.execute("DELETE FROM mirror_source_ends WHERE topic = ?", (topic,))

    def record_gap(self, topic: str, partition: int, from_offset: int, to_offset: int, reason: str) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO mirror_gaps (topic, partition, from_offset, to_offset, reason, recorded_ms) VALUES (?,?,?,?,?,?)",
                (topic, partition, from_offset, to_offset, reason, int(time.time() * 1000)),
            )

    def record_skip(self, topic: str, partition: int, from_offset: int, to_offset: int, reason: str) -> None:
        """A gap the mirror jumps over without truncating: fetching continues at ``to_offset``."""
        self.record_gap(topic, partition, from_offset, to_offset, f"{SKIP_REASON_PREFIX}{reason}")

    def skip_resume_offset(self, topic: str, partition: int, log_end: int) -> int | None:
        """Where to fetch next for a log that ends at ``log_end``, if it ended there when a skip was
        recorded (nothing appended or truncated since); otherwise None (fetch from the log end)."""
        rows = self._store.query(
            "SELECT to_offset FROM mirror_gaps WHERE topic = ? AND partition = ? AND from_offset = ? AND reason LIKE ?"
            " ORDER BY recorded_ms DESC, rowid DESC LIMIT 1",
            (topic, partition, log_end, SKIP_REASON_PREFIX + "%"),
        )
        return rows[0]["to_offset"] if rows and rows[0]["to_offset"] > log_end else None

    def gaps(self, topic: str) -> list[dict]:
        return [
            {"partition": r["partition"], "from_offset": r["from_offset"], "to_offset": r["to_offset"], "reason": r["reason"]}
            for r in self._store.query("SELECT * FROM mirror_gaps WHERE topic = ? ORDER BY recorded_ms", (topic,))
        ]

    def save_source_ends(self, rows: list[tuple[str, int, int, int, int]]) -> None:
        """(topic, partition, high watermark, fetch offset, seen_ms) for each changed partition, in one
        transaction."""
        if not rows:
            return
        with self._store.transaction() as db:
            db.executemany(
                "INSERT INTO mirror_source_ends (topic, partition, high_watermark, fetch_offset, seen_ms) VALUES (?,?,?,?,?)"
                " ON CONFLICT (topic, partition) DO UPDATE SET high_watermark = excluded.high_watermark,"
                " fetch_offset = excluded.fetch_offset, seen_ms = excluded.seen_ms",
                rows,
            )

    def source_ends(self, topic: str) -> dict[int, tuple[int, int, int]]:
        return {
            r["partition"]: (r["high_watermark"], r["fetch_offset"], r["seen_ms"])
            for r in self._store.query("SELECT * FROM mirror_source_ends WHERE topic = ?", (topic,))
        }
