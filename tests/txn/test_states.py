"""The transaction state machine: every (state, event) pair follows the table or is rejected unchanged."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkd.txn.states import IDLE_STATES, TXN_TRANSITIONS, InvalidTxnTransition, TxnEvent, TxnState, next_state


@pytest.mark.parametrize("state,event", list(itertools.product(TxnState, TxnEvent)))
def test_every_state_event_pair_follows_table_or_is_rejected(state, event):
    if (state, event) in TXN_TRANSITIONS:
        assert next_state(state, event) is TXN_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTxnTransition) as info:
            next_state(state, event)
        assert state.value in str(info.value)


def test_every_state_is_reachable_from_empty():
    reached, frontier = {TxnState.EMPTY}, [TxnState.EMPTY]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in TXN_TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(TxnState)


def test_dead_is_terminal():
    assert not [key for key in TXN_TRANSITIONS if key[0] is TxnState.DEAD]


def test_a_decision_once_prepared_only_completes_the_same_way():
    assert [e for (s, e) in TXN_TRANSITIONS if s is TxnState.PREPARE_COMMIT] == [TxnEvent.MARKERS_WRITTEN]
    assert next_state(TxnState.PREPARE_COMMIT, TxnEvent.MARKERS_WRITTEN) is TxnState.COMPLETE_COMMIT
    assert [e for (s, e) in TXN_TRANSITIONS if s is TxnState.PREPARE_ABORT] == [TxnEvent.MARKERS_WRITTEN]
    assert next_state(TxnState.PREPARE_ABORT, TxnEvent.MARKERS_WRITTEN) is TxnState.COMPLETE_ABORT


def test_fencing_an_open_transaction_ends_in_an_abort():
    state = next_state(TxnState.ONGOING, TxnEvent.FENCE)
    assert state is TxnState.PREPARE_EPOCH_FENCE
    assert next_state(next_state(state, TxnEvent.FENCE_ABORT), TxnEvent.MARKERS_WRITTEN) is TxnState.COMPLETE_ABORT


def test_only_idle_ids_expire_or_reinitialise():
    for state in TxnState:
        assert ((state, TxnEvent.EXPIRE) in TXN_TRANSITIONS) == (state in IDLE_STATES)
        assert ((state, TxnEvent.INIT) in TXN_TRANSITIONS) == (state in IDLE_STATES)


@given(st.lists(st.sampled_from(list(TxnEvent)), max_size=40))
def test_random_event_sequences_commit_only_through_prepare_commit(events):
    state = TxnState.EMPTY
    for event in events:
        try:
            new = next_state(state, event)
        except InvalidTxnTransition:
            continue
        if new is TxnState.COMPLETE_COMMIT:
            assert state is TxnState.PREPARE_COMMIT
        state = new
