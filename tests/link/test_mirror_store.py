"""Mirror transitions are persisted atomically; a rejected command leaves the stored mirror unchanged."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkd.controlstore import ControlStore
from linkd.link.mirror import Mirror
from linkd.link.states import MIRROR_TRANSITIONS, InvalidTransition, MirrorError, MirrorEvent, MirrorState
from linkd.link.store import MirrorStore


def _row(store: MirrorStore, topic: str) -> tuple:
    [m] = [m for m in store.load() if m.topic == topic]
    return (m.state, m.error, m.error_message, m.stop_info)


@pytest.mark.parametrize("state,event", list(itertools.product(MirrorState, MirrorEvent)))
def test_every_state_command_pair_is_persisted_or_rejected_unchanged(tmp_path, state, event):
    store = MirrorStore(ControlStore(tmp_path / "c.db"))
    mirror = Mirror("t", "l", "t", None, state, MirrorError.CORRUPT_BATCH if state == MirrorState.FAILED else MirrorError.NONE)
    store.insert(mirror)
    before = _row(store, "t")
    if (state, event) in MIRROR_TRANSITIONS:
        error = MirrorError.CORRUPT_BATCH if event == MirrorEvent.FAIL else None
        store.transition(mirror, event, error, "why" if error else None)
        assert _row(store, "t")[0] is MIRROR_TRANSITIONS[(state, event)]
        assert mirror.state is MIRROR_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            store.transition(mirror, event)
        assert _row(store, "t") == before
        assert mirror.state is state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list(MirrorEvent)), max_size=25))
def test_reloaded_mirror_always_matches_memory(tmp_path_factory, events):
    store = MirrorStore(ControlStore(tmp_path_factory.mktemp("m") / "c.db"))
    mirror = Mirror("t", "l", "t", None, MirrorState.ACTIVE)
    store.insert(mirror)
    for event in events:
        try:
            store.transition(mirror, event, MirrorError.SOURCE_TOPIC_MAY_BE_DELETED if event == MirrorEvent.FAIL else None, "gone" if event == MirrorEvent.FAIL else None)
        except InvalidTransition:
            pass
        assert _row(store, "t")[:3] == (mirror.state, mirror.error, mirror.error_message)


def test_gaps_are_recorded_and_deleted_with_the_mirror(tmp_path):
    store = MirrorStore(ControlStore(tmp_path / "c.db"))
    store.insert(Mirror("t", "l", "t", None, MirrorState.ACTIVE))
    store.record_gap("t", 0, 10, 50, "retention")
    assert store.gaps("t") == [{"partition": 0, "from_offset": 10, "to_offset": 50, "reason": "retention"}]
    store.delete("t")
    assert store.gaps("t") == [] and store.load() == []


def test_state_time_ms_is_when_the_state_last_changed_and_survives_a_reload(tmp_path, monkeypatch):
    """REST v3's ``state_time_ms``: set by a change of state, kept by a repeat or a stop-info update, and read
    back from the store after a restart."""
    import types

    from linkd.link import store as store_module

    clock = [1_000.0]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(time=lambda: clock[0]))
    store = MirrorStore(ControlStore(tmp_path / "c.db"))
    mirror = Mirror("t", "l", "t", None, MirrorState.ACTIVE, MirrorError.NONE)
    store.insert(mirror)
    assert mirror.state_time_ms == 1_000_000
    clock[0] = 2_000.0
    store.transition(mirror, MirrorEvent.PAUSE)
    assert mirror.state_time_ms == 2_000_000
    clock[0] = 3_000.0
    store.transition(mirror, MirrorEvent.PAUSE)  # a repeat: the state did not change
    store.transition(mirror, MirrorEvent.FAILOVER, stop_info={"phase": "finalizing", "kind": "failover", "epoch": 1})
    clock[0] = 4_000.0
    store.save_stop_info("t", {"phase": "finalizing", "kind": "failover", "epoch": 1, "note": "more detail"})
    [reloaded] = MirrorStore(ControlStore(tmp_path / "c.db")).load()
    assert (mirror.state_time_ms, reloaded.state_time_ms) == (3_000_000, 3_000_000)
