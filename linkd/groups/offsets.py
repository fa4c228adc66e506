"""Durable committed offsets of consumer groups, one row per (group, topic, partition).

Kafka keeps these in the ``__consumer_offsets`` topic; linkd keeps them in the control-plane SQLite store
(``linkd.controlstore``), so a commit is one transaction and survives a crash once acknowledged.

Table ``group_offsets``::

    group_id TEXT, topic TEXT, partition INTEGER     -- primary key
    committed_offset INTEGER                         -- the next offset the group will consume
    leader_epoch INTEGER                             -- -1 when the client sent none (OffsetCommit < v6)
    metadata TEXT                                    -- client's opaque string; '' when it sent null
    commit_timestamp_ms INTEGER                      -- wall clock of the commit, for operators

Table ``txn_pending_offsets`` holds offsets a transactional producer committed with TxnOffsetCommit
(same columns, keyed by transactional id too): invisible to OffsetFetch until the transaction commits,
when they move into ``group_offsets``; dropped when it aborts.

Offsets are stored unchanged: offsets of mirror topics line up with the source cluster, so offsets a
link copies from the source and offsets a client commits here are the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from linkd.controlstore import ControlStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    commit_timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_offsets_by_topic ON group_offsets (topic);
CREATE TABLE IF NOT EXISTS txn_pending_offsets (
    transactional_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (transactional_id, group_id, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS txn_pending_offsets_by_group ON txn_pending_offsets (group_id);
"""

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""


class OffsetStore:
    """Committed offsets in the control store. Every method is one short SQLite statement or transaction."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store
        store.ensure_schema(_SCHEMA)

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, CommittedOffset]) -> None:
        """Store all offsets of one request atomically: a client must never see half a commit."""
        now_ms = int(time.time() * 1000)
        rows = [
            (group_id, topic, partition, c.offset, c.leader_epoch, c.metadata, now_ms)
            for (topic, partition), c in offsets.items()
        ]
        with self._store.transaction() as db:
            db.executemany(
                "INSERT INTO group_offsets VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                "committed_offset = excluded.committed_offset, leader_epoch = excluded.leader_epoch, "
                "metadata = excluded.metadata, commit_timestamp_ms = excluded.commit_timestamp_ms",
                rows,
            )

    def fetch(self, group_id: str, topics: Iterable[str] | None = None) -> dict[TopicPartition, CommittedOffset]:
        """The group's committed offsets, for the given topics or (None) all of them."""
        rows = self._store.query(
            "SELECT topic, partition, committed_offset, leader_epoch, metadata FROM group_offsets "
            "WHERE group_id = ? ORDER BY topic, partition",
            (group_id,),
        )
        wanted = None if topics is None else set(topics)
        return {
            (r["topic"], r["partition"]): CommittedOffset(r["committed_offset"], r["leader_epoch"], r["metadata"])
            for r in rows
            if wanted is None or r["topic"] in wanted
        }

    def has_group(self, group_id: str) -> bool:
        return bool(self._store.query("SELECT 1 FROM group_offsets WHERE group_id = ? LIMIT 1", (group_id,)))

    def group_ids(self) -> set[str]:
        return {r["group_id"] for r in self._store.query("SELECT DISTINCT group_id FROM group_offsets")}

    def delete_group(self, group_id: str) -> int:
        with self._store.transaction() as db:
            return db.execute("DELETE FROM group_offsets WHERE group_id = ?", (group_id,)).rowcount

    def delete_offsets(self, group_id: str, partitions: Iterable[TopicPartition]) -> int:
        rows = [(group_id, topic, partition) for topic, partition in partitions]
        if not rows:
            return 0
        with self._store.transaction() as db:
            return db.executemany("DELETE FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?", rows).rowcount

    def delete_topic(self, topic: str) -> int:
        with self._store.transaction() as db:
            return db.execute("DELETE FROM group_offsets WHERE topic = ?", (topic,)).rowcount

    # -- transactional offset commits -----------------------------------------------------------------

    def stage(self, transactional_id: str, group_id: str, offsets: Mapping[TopicPartition, CommittedOffset]) -> None:
        """Offsets of an open transaction: pending, a later commit of the same partition replaces them."""
        rows = [(transactional_id, group_id, t, p, c.offset, c.leader_epoch, c.metadata) for (t, p), c in offsets.items()]
        with self._store.transaction() as db:
            db.executemany(
                "INSERT INTO txn_pending_offsets VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (transactional_id, group_id, topic, partition) DO UPDATE SET "
                "committed_offset = excluded.committed_offset, leader_epoch = excluded.leader_epoch, metadata = excluded.metadata",
                rows,
            )

    def complete_staged(self, transactional_id: str, commit: bool) -> int:
        """Apply (commit) or drop (abort) a transaction's pending offsets; joins an outer transaction, so
        the coordinator completes the transaction and its offsets in one step. Returns how many there were."""
        now_ms = int(time.time() * 1000)
        with self._store.transaction() as db:
            if commit:
                db.execute(
                    "INSERT INTO group_offsets SELECT group_id, topic, partition, committed_offset, leader_epoch, metadata, ? "
                    "FROM txn_pending_offsets WHERE transactional_id = ? "
                    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                    "committed_offset = excluded.committed_offset, leader_epoch = excluded.leader_epoch, "
                    "metadata = excluded.metadata, commit_timestamp_ms = excluded.commit_timestamp_ms",
                    (now_ms, transactional_id),
                )
            return db.execute("DELETE FROM txn_pending_offsets WHERE transactional_id = ?", (transactional_id,)).rowcount

    def unstable(self, group_id: str) -> set[TopicPartition]:
        """Partitions of the group with offsets pending in an open transaction (OffsetFetch require_stable)."""
        rows = self._store.query("SELECT topic, partition FROM txn_pending_offsets WHERE group_id = ?", (group_id,))
        return {(r["topic"], r["partition"]) for r in rows}
