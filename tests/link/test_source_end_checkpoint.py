"""The source-end checkpoint behind the failover loss report: what a restart reloads, and a write rate
bounded by changes (an idle partition seen at every fetch is not rewritten every second)."""

from __future__ import annotations

from linkd.controlstore import ControlStore
from linkd.link.checkpoints import SEEN_ONLY_CHECKPOINT_MS
from linkd.link.manager import LinkManager
from linkd.link.mirror import Mirror, PartitionProgress
from linkd.link.states import MirrorState
from linkd.link.store import MirrorStore


def _manager(tmp_path) -> LinkManager:
    return LinkManager(ControlStore(tmp_path / "control.db"), topics=None, producer_ids=None, notify=lambda: None, groups=None)


def _seen(progress: PartitionProgress, hw: int, at_ms: int) -> None:
    progress.source_high_watermark, progress.source_end_seen_ms = hw, at_ms


def test_checkpoints_reload_and_are_rewritten_only_when_something_changed(tmp_path):
    manager = _manager(tmp_path)
    mirror = Mirror("t", "l", "t", None, MirrorState.PAUSED, partitions=[PartitionProgress(0), PartitionProgress(1)])
    manager.mirrors["t"] = mirror
    store: MirrorStore = manager.mirror_store

    manager.checkpoint_source_ends()
    assert store.source_ends("t") == {}  # never seen: nothing to record (and nothing made up)

    _seen(mirror.partitions[0], 400, 1_000)
    manager.checkpoint_source_ends()
    assert store.source_ends("t") == {0: (400, -1, 1_000)}

    _seen(mirror.partitions[0], 400, 2_000)  # seen again, unchanged: not rewritten yet
    manager.checkpoint_source_ends()
    assert store.source_ends("t")[0] == (400, -1, 1_000)

    _seen(mirror.partitions[0], 400, 1_000 + SEEN_ONLY_CHECKPOINT_MS)  # ... but now and then
    manager.checkpoint_source_ends()
    assert store.source_ends("t")[0] == (400, -1, 1_000 + SEEN_ONLY_CHECKPOINT_MS)

    _seen(mirror.partitions[0], 450, 40_000)
    _seen(mirror.partitions[1], 7, 40_000)
    manager.checkpoint_source_ends()
    assert _manager(tmp_path).mirror_store.source_ends("t") == {0: (450, -1, 40_000), 1: (7, -1, 40_000)}

    store.delete("t")
    assert store.source_ends("t") == {}


def test_a_failover_is_reconciled_with_the_source_only_one_interval_after_it():
    from linkd.link.checkpoints import RECONCILE_INTERVAL_S, due_for_reconcile

    def stopped(topic: str, link: str, at_ms: int, kind: str = "failover") -> Mirror:
        return Mirror(topic, link, topic, None, MirrorState.STOPPED, stop_info={"phase": "done", "kind": kind, "stopped_ms": at_ms})

    now = 1_000_000
    interval_ms = int(RECONCILE_INTERVAL_S * 1000)
    settled, fresh = stopped("a", "l", now - interval_ms), stopped("b", "l", now - 10)
    promoted, other_link = stopped("c", "l", now - 2 * interval_ms, kind="promote"), stopped("d", "m", now - 2 * interval_ms)
    active = Mirror("e", "l", "e", None, MirrorState.ACTIVE)
    assert due_for_reconcile([settled, fresh, promoted, other_link, active], "l", now) == [settled]
    assert due_for_reconcile([fresh], "l", now + interval_ms) == [fresh]
