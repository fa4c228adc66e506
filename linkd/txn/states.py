"""Transaction state machine of one transactional id, as a transition table.

Theory of operation
-------------------
``InitProducerId`` registers a transactional id in ``Empty`` with a producer id and epoch. The first
``AddPartitionsToTxn`` or ``AddOffsetsToTxn`` opens a transaction: ``Ongoing``. ``EndTxn`` moves it to
``PrepareCommit`` or ``PrepareAbort``; that decision is durable before any marker is written, so a crash
after it completes the same outcome on restart. When COMMIT/ABORT markers are in every partition of the
transaction (and its offsets are applied or discarded), ``markers_written`` lands in ``CompleteCommit``
or ``CompleteAbort``, from which the next transaction may start.

An open transaction that must die without its producer's say-so (a new producer instance initialising
the same transactional id, or ``transaction.timeout.ms`` passing) goes through ``PrepareEpochFence``:
the epoch is bumped so the old instance is fenced, then ``fence_abort`` proceeds as an abort.

An idle transactional id (``Empty``/``Complete*``) not used for ``transactional.id.expiration.ms``
goes to ``Dead`` and is forgotten. Repeating ``init`` on an idle id keeps it idle (epoch bump only).
Anything not in the table is refused and leaves the transaction unchanged.
"""

from __future__ import annotations

import enum


class TxnState(enum.StrEnum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"
    DEAD = "Dead"


class TxnEvent(enum.StrEnum):
    INIT = "init"                      # InitProducerId on an idle id
    ADD = "add"                        # AddPartitionsToTxn / AddOffsetsToTxn
    COMMIT = "commit"                  # EndTxn(committed=true)
    ABORT = "abort"                    # EndTxn(committed=false)
    MARKERS_WRITTEN = "markers_written"
    FENCE = "fence"                    # new instance or timeout: bump the epoch, then abort
    FENCE_ABORT = "fence_abort"
    EXPIRE = "expire"                  # transactional.id.expiration.ms


S, E = TxnState, TxnEvent
IDLE_STATES = frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT})
PREPARE_STATES = frozenset({S.PREPARE_COMMIT, S.PREPARE_ABORT})

TXN_TRANSITIONS: dict[tuple[TxnState, TxnEvent], TxnState] = {
    **{(idle, E.INIT): S.EMPTY for idle in IDLE_STATES},
    **{(idle, E.ADD): S.ONGOING for idle in IDLE_STATES},
    **{(idle, E.EXPIRE): S.DEAD for idle in IDLE_STATES},
    (S.ONGOING, E.ADD): S.ONGOING,
    (S.ONGOING, E.COMMIT): S.PREPARE_COMMIT,
    (S.ONGOING, E.ABORT): S.PREPARE_ABORT,
    (S.ONGOING, E.FENCE): S.PREPARE_EPOCH_FENCE,
    (S.PREPARE_EPOCH_FENCE, E.FENCE_ABORT): S.PREPARE_ABORT,
    (S.PREPARE_COMMIT, E.MARKERS_WRITTEN): S.COMPLETE_COMMIT,
    (S.PREPARE_ABORT, E.MARKERS_WRITTEN): S.COMPLETE_ABORT,
}


class InvalidTxnTransition(Exception):
    def __init__(self, state: TxnState, event: TxnEvent) -> None:
        super().__init__(f"cannot {event.value.replace('_', ' ')} a transaction in state {state.value}")
        self.state = state
        self.event = event


def next_state(state: TxnState, event: TxnEvent) -> TxnState:
    try:
        return TXN_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTxnTransition(state, event) from None
