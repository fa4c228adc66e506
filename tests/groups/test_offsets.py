"""OffsetStore: committed offsets in the control store."""

from __future__ import annotations

import pytest

from linkd.controlstore import ControlStore
from linkd.groups.offsets import CommittedOffset, OffsetStore


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "control.db"


def test_commit_then_fetch_returns_offset_epoch_and_metadata(db_path):
    offsets = OffsetStore(ControlStore(db_path))
    offsets.commit("g", {("t", 0): CommittedOffset(42, 7, "meta"), ("t", 1): CommittedOffset(3)})
    assert offsets.fetch("g") == {("t", 0): CommittedOffset(42, 7, "meta"), ("t", 1): CommittedOffset(3, -1, "")}


def test_a_later_commit_overwrites_the_partition_only(db_path):
    offsets = OffsetStore(ControlStore(db_path))
    offsets.commit("g", {("t", 0): CommittedOffset(1), ("t", 1): CommittedOffset(1)})
    offsets.commit("g", {("t", 0): CommittedOffset(9, 2, "x")})
    assert offsets.fetch("g") == {("t", 0): CommittedOffset(9, 2, "x"), ("t", 1): CommittedOffset(1)}


def test_fetch_filters_by_topic_and_keeps_groups_apart(db_path):
    offsets = OffsetStore(ControlStore(db_path))
    offsets.commit("g1", {("a", 0): CommittedOffset(1), ("b", 0): CommittedOffset(2)})
    offsets.commit("g2", {("a", 0): CommittedOffset(5)})
    assert offsets.fetch("g1", ["b"]) == {("b", 0): CommittedOffset(2)}
    assert offsets.fetch("g2") == {("a", 0): CommittedOffset(5)}
    assert offsets.fetch("nobody") == {}
    assert offsets.group_ids() == {"g1", "g2"}
    assert offsets.has_group("g1") and not offsets.has_group("nobody")


def test_offsets_survive_reopening_the_store(db_path):
    store = ControlStore(db_path)
    OffsetStore(store).commit("g", {("t", 3): CommittedOffset(100, 4, "m")})
    store.close()
    assert OffsetStore(ControlStore(db_path)).fetch("g") == {("t", 3): CommittedOffset(100, 4, "m")}


def test_delete_group_and_delete_topic(db_path):
    offsets = OffsetStore(ControlStore(db_path))
    offsets.commit("g1", {("a", 0): CommittedOffset(1), ("b", 0): CommittedOffset(2)})
    offsets.commit("g2", {("a", 1): CommittedOffset(3)})
    assert offsets.delete_topic("a") == 2
    assert offsets.fetch("g1") == {("b", 0): CommittedOffset(2)}
    assert not offsets.has_group("g2")
    assert offsets.delete_group("g1") == 1
    assert offsets.group_ids() == set()


def test_a_commit_inside_a_failed_transaction_is_rolled_back(db_path):
    # The coordinator may join a caller's transaction (nested transaction()); all or nothing.
    store = ControlStore(db_path)
    offsets = OffsetStore(store)
    with pytest.raises(RuntimeError), store.transaction():
        offsets.commit("g", {("t", 0): CommittedOffset(1)})
        raise RuntimeError("crash before commit")
    assert offsets.fetch("g") == {}
