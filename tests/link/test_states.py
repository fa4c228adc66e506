"""The mirror state machine: every (state, event) pair follows the table or is rejected unchanged."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkd.link.states import MIRROR_TRANSITIONS, InvalidTransition, MirrorEvent, MirrorState, next_state


@pytest.mark.parametrize("state,event", list(itertools.product(MirrorState, MirrorEvent)))
def test_every_state_event_pair_follows_table_or_is_rejected(state, event):
    if (state, event) in MIRROR_TRANSITIONS:
        assert next_state(state, event) is MIRROR_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition) as info:
            next_state(state, event)
        assert state.value in str(info.value)


def test_stopped_is_terminal_and_commands_on_it_are_idempotent():
    for event in MirrorEvent:
        if (MirrorState.STOPPED, event) in MIRROR_TRANSITIONS:
            assert next_state(MirrorState.STOPPED, event) is MirrorState.STOPPED


def test_failover_reaches_stopped_from_every_state():
    for state in MirrorState:
        assert next_state(state, MirrorEvent.FAILOVER) is MirrorState.STOPPED


def test_promote_is_not_allowed_while_source_unavailable_or_failed():
    for state in (MirrorState.SOURCE_UNAVAILABLE, MirrorState.FAILED):
        with pytest.raises(InvalidTransition):
            next_state(state, MirrorEvent.PROMOTE)


@given(st.lists(st.sampled_from(list(MirrorEvent)), max_size=40))
def test_random_event_sequences_never_leave_stopped(events):
    state = MirrorState.ACTIVE
    stopped = False
    for event in events:
        try:
            state = next_state(state, event)
        except InvalidTransition:
            continue
        stopped = stopped or state is MirrorState.STOPPED
        if stopped:
            assert state is MirrorState.STOPPED
