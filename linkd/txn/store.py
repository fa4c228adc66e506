"""The transaction log: one row per transactional id in the control store (``linkd.controlstore``).

Kafka keeps this in the ``__transaction_state`` topic; linkd keeps the latest state of each id, and every
transition is one SQLite transaction, so what a restart reads is a state the coordinator really reached.

Table ``txn_log``::

    transactional_id TEXT PRIMARY KEY
    producer_id INTEGER, producer_epoch INTEGER   -- current owner; markers carry these
    timeout_ms INTEGER                            -- the producer's transaction.timeout.ms
    state TEXT                                    -- a linkd.txn.states.TxnState value
    partitions TEXT                               -- JSON [[topic, partition], ...] of the open transaction
    groups TEXT                                   -- JSON [group id, ...] added with AddOffsetsToTxn
    txn_start_ms INTEGER                          -- when the open transaction began, -1 when none
    last_update_ms INTEGER                        -- for transactional.id.expiration.ms

The pending offsets of a transaction are in ``txn_pending_offsets`` (``linkd.groups.offsets``); the
coordinator applies or discards them in the same SQLite transaction that completes the transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..controlstore import ControlStore
from .states import TxnState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txn_log (
    transactional_id TEXT PRIMARY KEY,
    producer_id INTEGER NOT NULL,
    producer_epoch INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    partitions TEXT NOT NULL,
    groups TEXT NOT NULL,
    txn_start_ms INTEGER NOT NULL,
    last_update_ms INTEGER NOT NULL
)
"""


@dataclass
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[tuple[str, int]] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    txn_start_ms: int = -1
    last_update_ms: int = -1


class TxnStore:
    def __init__(self, store: ControlStore) -> None:
        self._store = store
        store.ensure_schema(_SCHEMA)

    def put(self, meta: TxnMetadata) -> None:
        """Write ``meta`` (joins an outer control-store transaction when there is one)."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO txn_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (transactional_id) DO UPDATE SET "
                "producer_id = excluded.producer_id, producer_epoch = excluded.producer_epoch, "
                "timeout_ms = excluded.timeout_ms, state = excluded.state, partitions = excluded.partitions, "
                "groups = excluded.groups, txn_start_ms = excluded.txn_start_ms, last_update_ms = excluded.last_update_ms",
                (meta.transactional_id, meta.producer_id, meta.producer_epoch, meta.timeout_ms, meta.state.value,
                 json.dumps(sorted(meta.partitions)), json.dumps(sorted(meta.groups)), meta.txn_start_ms, meta.last_update_ms),
            )

    def delete(self, transactional_id: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM txn_log WHERE transactional_id = ?", (transactional_id,))

    def load(self) -> dict[str, TxnMetadata]:
        out = {}
        for r in self._store.query("SELECT * FROM txn_log"):
            out[r["transactional_id"]] = TxnMetadata(
                r["transactional_id"], r["producer_id"], r["producer_epoch"], r["timeout_ms"], TxnState(r["state"]),
                {(t, p) for t, p in json.loads(r["partitions"])}, set(json.loads(r["groups"])),
                r["txn_start_ms"], r["last_update_ms"])
        return out
