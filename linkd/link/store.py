"""Persistence of links and mirrors in the control store: the only module that writes their rows.

Tables: ``links`` (name, id, config as stored: secrets sealed), ``mirrors`` (state, error, stop info; every
state change one transaction), ``mirror_gaps`` (ranges skipped or truncated, and skip resume points),
``mirror_source_ends`` (the source end offsets last seen, checkpointed at a bounded rate). Blocking
(SQLite, ``synchronous=FULL``); called from the event loop by the link manager and its modules.
"""

from __future__ import annotations

import json
import time

from ..controlstore import ControlStore
from .mirror import Mirror
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
LINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    name TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    config TEXT NOT NULL,
    created_ms INTEGER NOT NULL
)
"""
SKIP_REASON_PREFIX = "skipped: "


class LinkStore:
    def __init__(self, store: ControlStore) -> None:
        self._store = store
        store.ensure_schema(LINK_SCHEMA)

    def load(self) -> list[tuple[str, str, dict]]:
        """(name, link id, stored config) of every link, by name."""
        return [(row["name"], row["link_id"], json.loads(row["config"])) for row in self._store.query("SELECT * FROM links ORDER BY name")]

    def insert(self, name: str, link_id: str, stored: dict) -> None:
        with self._store.transaction() as db:
            db.execute("INSERT INTO links (name, link_id, config, created_ms) VALUES (?,?,?,?)", (name, link_id, json.dumps(stored), int(time.time() * 1000)))

    def save_config(self, name: str, stored: dict) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE links SET config = ? WHERE name = ?", (json.dumps(stored), name))

    def delete(self, name: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM links WHERE name = ?", (name,))


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
        """[from_offset, to_offset) is missing from the mirror; an empty range records nothing."""
        if from_offset >= to_offset:
            return
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
