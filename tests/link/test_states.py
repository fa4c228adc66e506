"""The mirror state machine: every (state, event) pair follows the table or is rejected unchanged."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkd.link.states import (
    FETCHING_STATES,
    LINK_TRANSITIONS,
    MIRROR_TRANSITIONS,
    SYNCED_STATES,
    WRITABLE_STATES,
    InvalidTransition,
    LinkEvent,
    LinkState,
    MirrorEvent,
    MirrorState,
    next_link_state,
    next_state,
)


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


def test_failover_reaches_stopped_from_every_state_through_finalizing():
    for state in MirrorState:
        after = next_state(state, MirrorEvent.FAILOVER)
        assert after is (MirrorState.STOPPED if state is MirrorState.STOPPED else MirrorState.FINALIZING)
        if after is MirrorState.FINALIZING:
            assert next_state(after, MirrorEvent.FINALIZED) is MirrorState.STOPPED


def test_a_committed_stop_only_leads_to_stopped():
    reachable = {next_state(MirrorState.FINALIZING, e) for e in MirrorEvent if (MirrorState.FINALIZING, e) in MIRROR_TRANSITIONS}
    assert reachable == {MirrorState.FINALIZING, MirrorState.STOPPED}


def test_promotion_commits_through_finalizing():
    state = next_state(MirrorState.ACTIVE, MirrorEvent.PROMOTE)
    state = next_state(state, MirrorEvent.COMMIT_STOP)
    assert state is MirrorState.FINALIZING and state.reported == "PENDING_STOPPED"
    assert next_state(state, MirrorEvent.FINALIZED) is MirrorState.STOPPED


def test_the_derived_sets_agree_with_the_table():
    # Nothing fetches or syncs a mirror that committed to stopping or stopped; only STOPPED is writable.
    for state in (MirrorState.FINALIZING, MirrorState.STOPPED, MirrorState.FAILED):
        assert state not in FETCHING_STATES and state not in SYNCED_STATES
    assert WRITABLE_STATES == {MirrorState.STOPPED}
    assert FETCHING_STATES <= SYNCED_STATES


@pytest.mark.parametrize("state,event", list(itertools.product(LinkState, LinkEvent)))
def test_every_link_state_event_pair_follows_its_table_or_is_rejected(state, event):
    if (state, event) in LINK_TRANSITIONS:
        assert next_link_state(state, event) is LINK_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            next_link_state(state, event)


def test_a_paused_link_stays_paused_whatever_its_source_does():
    for event in (LinkEvent.SOURCE_LOST, LinkEvent.SOURCE_BACK):
        assert next_link_state(LinkState.PAUSED, event) is LinkState.PAUSED
    assert next_link_state(LinkState.UNAVAILABLE, LinkEvent.SOURCE_BACK) is LinkState.ACTIVE


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
