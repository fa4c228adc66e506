"""Long-lived state and the garbage collector (linkd/gcpolicy.py): a failover takes the state it works on
out of the collector's walk (a full collection at 10,000 partitions stopped the loop for 0.45-1.1 s, inside
the failover and its first Produce), and a deleted topic's logs are still collected afterwards."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio

from linkd.controlstore import ControlStore
from linkd.link.manager import LinkManager
from linkd.link.mirror import Mirror, PartitionProgress
from linkd.link.states import MirrorState
from linkd.producer_ids import ProducerIdAllocator
from linkd.topics import TopicRegistry
from tests.storage.helpers import batch

PARTITIONS = 3


@pytest.fixture(autouse=True)
def unfrozen():
    """Each test starts and ends with nothing frozen (the freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _manager_with_mirror(tmp_path) -> tuple[LinkManager, Mirror]:
    """A mirror whose link is gone (the disaster case: failover needs no source), with mirrored data."""
    store = ControlStore(tmp_path / "control.db")
    topics = TopicRegistry(store, tmp_path / "data")
    manager = LinkManager(store, topics=topics, producer_ids=ProducerIdAllocator(store), notify=lambda: None, groups=None)
    topic = topics.create("m", PARTITIONS, kind="mirror")
    for plog in topic.logs:
        plog.append_mirrored(batch(0, 3))
    mirror = Mirror("m", "gone", "m", None, MirrorState.ACTIVE, partitions=[PartitionProgress(p) for p in range(PARTITIONS)])
    manager.mirror_store.insert(mirror)
    manager.mirrors["m"] = mirror
    return manager, mirror


def _walked_by_the_collector(obj) -> bool:
    """``gc.get_objects()`` lists the objects of the collector's generations: what a full collection walks."""
    return any(o is obj for o in gc.get_objects())


def test_a_failover_takes_the_partition_logs_out_of_the_collectors_walk(tmp_path):
    manager, mirror = _manager_with_mirror(tmp_path)
    logs = list(manager.topics.get("m").logs)
    assert all(_walked_by_the_collector(plog) for plog in logs)
    [answer] = trio.run(manager.failover, ["m"])
    assert answer.error_code == 0 and mirror.state is MirrorState.STOPPED
    assert not any(_walked_by_the_collector(plog) for plog in logs)
    assert not _walked_by_the_collector(mirror.stop_info), "the stop report made by the failover is settled too"
    # The topic took the produced batch as before: the freeze changes no behaviour.
    assert [plog.append_assigned(batch(0, 1), 1).base_offset for plog in logs] == [3] * PARTITIONS


def test_a_deleted_topics_logs_are_collected_after_a_failover_settled_them(tmp_path):
    manager, _ = _manager_with_mirror(tmp_path)
    trio.run(manager.failover, ["m"])
    plog_refs = [weakref.ref(plog) for plog in manager.topics.get("m").logs]
    trio.run(manager.topics.delete, "m")
    manager.mirrors.pop("m", None)
    gc.collect()
    assert [ref() for ref in plog_refs] == [None] * PARTITIONS, "a frozen reference cycle would keep the deleted logs"
