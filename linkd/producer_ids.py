"""Producer-id allocation: never reused across restarts, always above every id seen in mirrored data.

Ids are handed out from blocks persisted in the control store (as Kafka's controller does), so a restart
skips the unused rest of a block instead of rescanning anything. ``raise_floor`` is how promotion keeps
new ids clear of producer ids that arrived with mirrored batches (design Invariant 5).
"""

from __future__ import annotations

from .controlstore import ControlStore

_BLOCK = 1000
_SCHEMA = "CREATE TABLE IF NOT EXISTS producer_id_block (id INTEGER PRIMARY KEY CHECK (id = 0), next_block_start INTEGER NOT NULL)"


class ProducerIdAllocator:
    def __init__(self, store: ControlStore) -> None:
        self._store = store
        store.ensure_schema(_SCHEMA)
        self._next = 0
        self._block_end = 0  # exclusive; forces a block reservation on first use

    def _persisted_start(self) -> int:
        rows = self._store.query("SELECT next_block_start FROM producer_id_block WHERE id = 0")
        return rows[0][0] if rows else 0

    def _reserve(self, start: int) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO producer_id_block (id, next_block_start) VALUES (0, ?) "
                "ON CONFLICT(id) DO UPDATE SET next_block_start = excluded.next_block_start",
                (start + _BLOCK,),
            )
        self._next, self._block_end = start, start + _BLOCK

    def allocate(self) -> int:
        if self._next >= self._block_end:
            self._reserve(max(self._persisted_start(), self._next))
        pid = self._next
        self._next += 1
        return pid

    def raise_floor(self, highest_seen: int) -> None:
        """Make every future id greater than ``highest_seen``."""
        if highest_seen >= self._next:
            self._reserve(max(highest_seen + 1, self._persisted_start()))
