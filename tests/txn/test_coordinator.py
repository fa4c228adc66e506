"""The transaction coordinator alone, on a real control store and real partition logs (no network):
crash recovery of a prepared decision, offsets that wait for the outcome, fencing, timeouts, expiry."""

from __future__ import annotations

import trio

from linkd.controlstore import ControlStore
from linkd.groups.coordinator import GroupCoordinator
from linkd.producer_ids import ProducerIdAllocator
from linkd.topics import TopicRegistry
from linkd.txn.coordinator import TransactionCoordinator, TxnConfig
from linkd.txn.states import TxnEvent, TxnState
from protocol.errors import ErrorCode
from protocol.records import CONTROL_ABORT, CONTROL_COMMIT, BatchSpec, NewRecord, build_batch, split_batches

TOPIC = "orders"
GROUP = "app"


class Node:
    """One 'daemon': control store, topics, groups and coordinator over a data dir; ``crash`` drops it all
    without a clean shutdown of the coordinator and reopens from disk."""

    def __init__(self, path, clock_ms=None, config=None) -> None:
        self.path, self.clock_ms, self.config = path, clock_ms, config
        self.open()

    def open(self) -> None:
        self.store = ControlStore(self.path / "control.db")
        self.topics = TopicRegistry(self.store, self.path / "logs")
        self.topics.load()
        self.groups = GroupCoordinator(self.store)
        kwargs = {"clock_ms": self.clock_ms} if self.clock_ms else {}
        self.txn = TransactionCoordinator(self.store, self.topics, ProducerIdAllocator(self.store), self.groups,
                                          config=self.config, **kwargs)

    def crash(self) -> None:
        self.topics.close()
        self.store.close()
        self.open()
        self.txn.recover()

    def log(self, partition: int):
        return self.topics.get(TOPIC).partition(partition)


def _data(pid: int, epoch: int, seq: int, value: bytes) -> bytes:
    return build_batch(BatchSpec(producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True, records=[NewRecord(value)]))


def _markers(plog) -> list[int]:
    data = plog.read(plog.log_start_offset, 1 << 20).to_bytes()
    return [b.control_type() for b in split_batches(data).batches if b.is_control]


def _committed(node: Node) -> dict:
    return node.groups.committed_offsets(GROUP)


async def _begin(node: Node, tid: str = "tx") -> tuple[int, int]:
    init = await node.txn.init_producer_id({"transactional_id": tid, "transaction_timeout_ms": 60_000}, 4)
    assert init["error_code"] == ErrorCode.NONE
    pid, epoch = init["producer_id"], init["producer_epoch"]
    added = await node.txn.add_partitions({"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch,
                                           "v3_and_below_topics": [{"name": TOPIC, "partitions": [0, 1]}]}, 3)
    assert all(p["partition_error_code"] == 0 for t in added["results_by_topic_v3_and_below"] for p in t["results_by_partition"]), added
    assert (await node.txn.add_offsets({"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": GROUP}, 3))["error_code"] == 0
    committed = await node.txn.txn_offset_commit({"transactional_id": tid, "group_id": GROUP, "producer_id": pid, "producer_epoch": epoch,
                                                  "generation_id": -1, "member_id": "", "group_instance_id": None,
                                                  "topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "committed_offset": 7, "committed_leader_epoch": -1, "committed_metadata": ""}]}]}, 3)
    assert committed["topics"][0]["partitions"][0]["error_code"] == 0, committed
    for p in (0, 1):
        node.log(p).append_assigned(_data(pid, epoch, 0, b"x%d" % p), 0)
    return pid, epoch


def test_crash_in_prepare_commit_completes_the_commit_with_one_marker_per_partition(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        await _begin(node)
        meta = node.txn.state_of("tx")
        # What EndTxn(commit) does, cut short: the decision is durable, one marker is in, then the process dies.
        node.txn._transition(meta, TxnEvent.COMMIT)
        node.log(0).append_assigned(node.txn._marker(meta, True), 0)

    trio.run(main)
    assert node.log(1).last_stable_offset == 0  # the open transaction holds back read_committed readers
    node.crash()
    assert node.txn.state_of("tx").state is TxnState.COMPLETE_COMMIT
    assert _markers(node.log(0)) == [CONTROL_COMMIT] and _markers(node.log(1)) == [CONTROL_COMMIT]
    for p in (0, 1):
        assert node.log(p).last_stable_offset == node.log(p).log_end_offset == 2
        assert node.log(p).aborted_transactions(0, 2) == []
    assert _committed(node)[(TOPIC, 0)][0] == 7
    node.crash()  # recovering again writes nothing more
    assert _markers(node.log(0)) == [CONTROL_COMMIT] and _markers(node.log(1)) == [CONTROL_COMMIT]


def test_crash_in_prepare_abort_aborts_and_drops_the_offsets(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        await _begin(node)
        node.txn._transition(node.txn.state_of("tx"), TxnEvent.ABORT)

    trio.run(main)
    node.crash()
    assert _markers(node.log(0)) == [CONTROL_ABORT] and _markers(node.log(1)) == [CONTROL_ABORT]
    assert node.log(0).aborted_transactions(0, 2) == [(node.txn.state_of("tx").producer_id, 0)]
    assert (TOPIC, 0) not in _committed(node)


def test_offsets_are_pending_until_commit_and_require_stable_says_so(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        pid, epoch = await _begin(node)
        fetch = {"groups": [{"group_id": GROUP, "topics": [{"name": TOPIC, "partition_indexes": [0]}]}]}
        stable = await node.groups.offset_fetch({**fetch, "require_stable": True}, 8)
        assert stable["groups"][0]["topics"][0]["partitions"][0]["error_code"] == ErrorCode.UNSTABLE_OFFSET_COMMIT
        plain = await node.groups.offset_fetch({**fetch, "require_stable": False}, 8)
        assert plain["groups"][0]["topics"][0]["partitions"][0]["committed_offset"] == -1
        ended = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": True}, 3)
        assert ended["error_code"] == 0
        stable = await node.groups.offset_fetch({**fetch, "require_stable": True}, 8)
        part = stable["groups"][0]["topics"][0]["partitions"][0]
        assert part["error_code"] == 0 and part["committed_offset"] == 7
        # A retried EndTxn of the same outcome is fine; the other outcome is not.
        again = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": True}, 3)
        assert again["error_code"] == 0
        other = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": False}, 3)
        assert other["error_code"] == ErrorCode.INVALID_TXN_STATE

    trio.run(main)


def test_a_new_instance_fences_the_old_one_and_aborts_its_transaction(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        pid, epoch = await _begin(node)
        second = await node.txn.init_producer_id({"transactional_id": "tx", "transaction_timeout_ms": 60_000}, 4)
        assert second["error_code"] == 0 and second["producer_id"] == pid and second["producer_epoch"] == epoch + 2
        assert _markers(node.log(0)) == [CONTROL_ABORT]
        assert node.txn.check_produce("tx", pid, epoch, TOPIC, 0)[0] == ErrorCode.INVALID_PRODUCER_EPOCH
        ended = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": True}, 4)
        assert ended["error_code"] == ErrorCode.PRODUCER_FENCED
        old = await node.txn.init_producer_id({"transactional_id": "tx", "transaction_timeout_ms": 60_000, "producer_id": pid, "producer_epoch": epoch}, 4)
        assert old["error_code"] == ErrorCode.PRODUCER_FENCED

    trio.run(main)


def test_produce_needs_the_partition_added(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 3)

    async def main():
        pid, epoch = await _begin(node)
        assert node.txn.check_produce("tx", pid, epoch, TOPIC, 0) == (ErrorCode.NONE, None)
        assert node.txn.check_produce("tx", pid, epoch, TOPIC, 2)[0] == ErrorCode.INVALID_TXN_STATE
        assert node.txn.check_produce("tx", pid + 1, epoch, TOPIC, 0)[0] == ErrorCode.INVALID_PRODUCER_ID_MAPPING

    trio.run(main)


def test_expired_transaction_is_aborted_and_idle_ids_expire(tmp_path):
    now = [1_000_000]
    node = Node(tmp_path, clock_ms=lambda: now[0], config=TxnConfig(id_expiration_ms=3_600_000))
    node.topics.create(TOPIC, 2)

    async def main():
        pid, epoch = await _begin(node)
        now[0] += 59_000
        await node.txn.expire_due()
        assert node.txn.state_of("tx").state is TxnState.ONGOING
        now[0] += 2_000
        await node.txn.expire_due()
        meta = node.txn.state_of("tx")
        assert meta.state is TxnState.COMPLETE_ABORT and meta.producer_epoch == epoch + 1
        assert _markers(node.log(1)) == [CONTROL_ABORT]
        assert node.txn.statistics().timed_out == 1
        now[0] += 3_600_001
        await node.txn.expire_due()
        assert node.txn.state_of("tx") is None

    trio.run(main)
    node.crash()
    assert node.txn.state_of("tx") is None


def test_transaction_timeout_above_the_maximum_is_refused(tmp_path):
    node = Node(tmp_path, config=TxnConfig(max_timeout_ms=10_000))

    async def main():
        init = await node.txn.init_producer_id({"transactional_id": "tx", "transaction_timeout_ms": 10_001}, 4)
        assert init["error_code"] == ErrorCode.INVALID_TRANSACTION_TIMEOUT

    trio.run(main)


def test_a_decision_left_unfinished_is_completed_by_the_next_request_without_a_restart(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        pid, epoch = await _begin(node)
        # As if the marker append had failed (full disk) after the decision was made durable.
        node.txn._transition(node.txn.state_of("tx"), TxnEvent.COMMIT)
        retried = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": True}, 3)
        assert retried["error_code"] == 0
        assert node.txn.state_of("tx").state is TxnState.COMPLETE_COMMIT
        assert _markers(node.log(0)) == [CONTROL_COMMIT] and _markers(node.log(1)) == [CONTROL_COMMIT]
        assert _committed(node)[(TOPIC, 0)][0] == 7

    trio.run(main)


def test_an_operators_abort_of_one_partition_aborts_the_whole_transaction_and_fences_its_producer(tmp_path):
    node = Node(tmp_path)
    node.topics.create(TOPIC, 2)

    async def main():
        pid, epoch = await _begin(node)
        assert await node.txn.abort_for_operator(pid + 1, TOPIC, 0) is False  # not a producer of ours
        assert await node.txn.abort_for_operator(pid, TOPIC, 0) is True
        meta = node.txn.state_of("tx")
        assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, epoch + 1)
        assert _markers(node.log(0)) == [CONTROL_ABORT] and _markers(node.log(1)) == [CONTROL_ABORT]
        assert (TOPIC, 0) not in _committed(node)  # its pending offsets were dropped
        assert node.txn.check_produce("tx", pid, epoch, TOPIC, 1)[0] == ErrorCode.INVALID_PRODUCER_EPOCH  # fenced
        ended = await node.txn.end_txn({"transactional_id": "tx", "producer_id": pid, "producer_epoch": epoch, "committed": True}, 3)
        assert ended["error_code"] == ErrorCode.PRODUCER_FENCED
        assert await node.txn.abort_for_operator(pid, TOPIC, 0) is False  # nothing open any more

    trio.run(main)
