"""A mirror topic's runtime record and its persistence.

The durable part (link, source topic, state, error, stop offsets) is a row in the control store, and
every state change is one transaction. The per-partition progress (source high watermark, last fetch)
is runtime only: on restart the mirror's own log end offset is the exact place to resume, except right
after a *skip* (the source's log start moved past the mirror's end): the skip's gap record then says where
fetching continues, so a restart does not fetch the deleted range again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..controlstore import ControlStore
from .states import MirrorError, MirrorEvent, MirrorState, next_state

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
    last_fetch_ms: int = 0
    # Where the next fetch starts when it is past the log end: after a skip over a range the source no
    # longer holds, until the first batch beyond it is appended. -1: the log end.
    skip_to: int = -1
    inflight_end: int = -1  # next offset once the append running in a worker thread lands


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

    @property
    def finalizing(self) -> bool:
        """Promotion or failover has committed to stopping; only finishing steps remain."""
        return bool(self.stop_info) and self.stop_info.get("phase") == "finalizing"

    @property
    def fetching(self) -> bool:
        return not self.deleted and self.state in (MirrorState.ACTIVE, MirrorState.SOURCE_UNAVAILABLE, MirrorState.PENDING_STOPPED) and not self.finalizing

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
            out.append(
                Mirror(
                    topic=row["topic"],
                    link=row["link"],
                    source_topic=row["source_topic"],
                    source_topic_id=row["source_topic_id"],
                    state=MirrorState(row["state"]),
                    error=MirrorError(row["error"]),
                    error_message=row["error_message"],
                    stop_info=json.loads(row["stop_info"]) if row["stop_info"] else None,
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
        with self._store.transaction() as db:
            db.execute(
                "UPDATE mirrors SET state = ?, error = ?, error_message = ?, stop_info = ?, updated_ms = ? WHERE topic = ?",
                (new_state.value, new_error.value, new_message, json.dumps(new_stop) if new_stop else None, int(time.time() * 1000), mirror.topic),
            )
        mirror.state, mirror.error, mirror.error_message, mirror.stop_info = new_state, new_error, new_message, new_stop
        return new_state

    def save_stop_info(self, topic: str, info: dict) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE mirrors SET stop_info = ?, updated_ms = ? WHERE topic = ?", (json.dumps(info), int(time.time() * 1000), topic))

    def delete(self, topic: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM mirrors WHERE topic = ?", (topic,))
            db.execute("DELETE FROM mirror_gaps WHERE topic = ?", (topic,))

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
