"""``validate_only`` (the CLI's ``--dry-run``) answers what a command would, and changes nothing: for every
mirror state, the dry run of pause and resume agrees with the real command run on a twin mirror, and the
dry run of promote and failover agrees with the transition table; the dry-run mirror never moves."""

from __future__ import annotations

import pytest

from linkd.controlstore import ControlStore
from linkd.link.manager import LinkManager
from linkd.link.mirror import Mirror, PartitionProgress
from linkd.link.states import MIRROR_TRANSITIONS, MirrorError, MirrorEvent, MirrorState
from linkd.topics import TopicRegistry

STATES = [s for s in MirrorState if s is not MirrorState.FINALIZING]
EVENTS = {"pause": MirrorEvent.PAUSE, "resume": MirrorEvent.RESUME}


def _manager(tmp_path) -> LinkManager:
    store = ControlStore(tmp_path / "control.db")
    return LinkManager(store, topics=TopicRegistry(store, tmp_path / "data"), producer_ids=None, notify=lambda: None, groups=None)


def _add(manager: LinkManager, topic: str, state: MirrorState) -> Mirror:
    error = MirrorError.CORRUPT_BATCH if state is MirrorState.FAILED else MirrorError.NONE
    mirror = Mirror(topic, "l", "src", None, state, error, partitions=[PartitionProgress(0)])
    manager.mirror_store.insert(mirror)
    manager.mirrors[topic] = mirror
    return mirror


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ["pause", "resume"])
def test_a_dry_run_of_pause_or_resume_answers_as_the_command_and_changes_nothing(tmp_path, state, action):
    manager = _manager(tmp_path)
    dry, real = _add(manager, "dry", state), _add(manager, "real", state)
    real_before = real.state
    [would] = manager.validate(action, ["dry"])
    [did] = getattr(manager, action)(["real"])
    assert (would.error_code, would.mirror_status) == (did.error_code, did.mirror_status), (would, did)
    assert would.validate_only and not did.validate_only
    assert (real.state is not real_before) == (MIRROR_TRANSITIONS.get((real_before, EVENTS[action])) not in (None, real_before)), "the twin moved as the table says"
    [stored] = [m for m in manager.mirror_store.load() if m.topic == "dry"]
    assert (dry.state, stored.state, dry.state_time_ms) == (state, state, stored.state_time_ms)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action,event", [("promote", MirrorEvent.PROMOTE), ("failover", MirrorEvent.FAILOVER)])
def test_a_dry_run_of_promote_or_failover_follows_the_table_and_changes_nothing(tmp_path, state, action, event):
    manager = _manager(tmp_path)
    mirror = _add(manager, "dry", state)
    [would] = manager.validate(action, ["dry", "missing"])[:1]
    allowed = (state, event) in MIRROR_TRANSITIONS
    if action == "promote" and state is not MirrorState.STOPPED:
        allowed = False  # no link "l" exists here: promote refuses ("use failover"), as the real one does
    assert (would.error_code == 0) == allowed, would
    if allowed:
        assert would.mirror_status == "STOPPED" and would.partitions is not None
    assert mirror.state is state and [m.state for m in manager.mirror_store.load()] == [state]
    missing = manager.validate(action, ["missing"])[0]
    assert missing.error_code != 0 and "does not exist" in missing.error_message
