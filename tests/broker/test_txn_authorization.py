"""Authorization of the transaction APIs (linkd/broker/txnauth.py), over real sockets against
``linkd serve --authorizer standard``.

The principal is User:ANONYMOUS on PLAINTEXT. While it is a super user the ACLs are made and one
transaction is left open on ``tx-ro`` (with partitions of two topics and a group); the daemon then
restarts without super users, so ANONYMOUS may only DESCRIBE ``tx-ro``: every write to it is refused with
Kafka's code and the transaction stays as it was. ``tx-ok-*`` ids may be written and work.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from tests.broker.wire import WireConnection

ANON = "User:ANONYMOUS"
BROKER_USER, BROKER_PASSWORD = "broker", "broker-secret"  # a SASL user with CLUSTER_ACTION, as another broker would have
TXN_DENIED = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
TOPIC_DENIED, GROUP_DENIED = ErrorCode.TOPIC_AUTHORIZATION_FAILED, ErrorCode.GROUP_AUTHORIZATION_FAILED


class World:
    def __init__(self, daemon) -> None:
        tag = uuid.uuid4().hex[:6]
        self.daemon = daemon
        self.ok = f"ok-{tag}"  # PREFIXED ALLOW ALL: ok-{tag} exists (2 partitions), ok-{tag}-absent does not
        self.readable = f"ro-{tag}"  # ALLOW READ only (so DESCRIBE, no WRITE)
        self.secret = f"secret-{tag}"  # no ACL
        self.group = f"g-ok-{tag}"  # PREFIXED ALLOW READ
        self.group_denied = f"g-no-{tag}"
        self.tx_ok = f"tx-ok-{tag}"  # PREFIXED ALLOW WRITE (DESCRIBE implied)
        self.tx_ro = f"tx-ro-{tag}"  # ALLOW DESCRIBE only; its transaction was opened by a super user
        self.tx_hidden = f"tx-hidden-{tag}"  # no ACL; initialised by a super user
        self.ro_pid = self.ro_epoch = -1
        self.conn = WireConnection(daemon.bootstrap)

    def call(self, api, version, body):
        return self.conn.request(api, version, body)

    def init(self, tid: str, timeout_ms: int = 60_000) -> tuple[int, int]:
        answer = self.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": timeout_ms, "producer_id": -1, "producer_epoch": -1})
        assert answer["error_code"] == 0, answer
        return answer["producer_id"], answer["producer_epoch"]

    def add_partitions(self, tid: str, pid: int, epoch: int, parts: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        by_topic: dict[str, list[int]] = {}
        for name, index in parts:
            by_topic.setdefault(name, []).append(index)
        answer = self.call(ApiKey.ADD_PARTITIONS_TO_TXN, 3, {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch,
                                                             "v3_and_below_topics": [{"name": n, "partitions": ps} for n, ps in by_topic.items()]})
        return {(t["name"], p["partition_index"]): p["partition_error_code"] for t in answer["results_by_topic_v3_and_below"] for p in t["results_by_partition"]}

    def add_offsets(self, tid: str, pid: int, epoch: int, group: str) -> int:
        return self.call(ApiKey.ADD_OFFSETS_TO_TXN, 3, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": group})["error_code"]

    def txn_commit_offsets(self, tid: str, pid: int, epoch: int, group: str, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        by_topic: dict[str, list[dict]] = {}
        for (name, index), offset in offsets.items():
            by_topic.setdefault(name, []).append({"partition_index": index, "committed_offset": offset, "committed_leader_epoch": -1, "committed_metadata": ""})
        answer = self.call(ApiKey.TXN_OFFSET_COMMIT, 3, {"transactional_id": tid, "group_id": group, "producer_id": pid, "producer_epoch": epoch, "generation_id": -1,
                                                         "member_id": "", "group_instance_id": None, "topics": [{"name": n, "partitions": ps} for n, ps in by_topic.items()]})
        return {(t["name"], p["partition_index"]): p["error_code"] for t in answer["topics"] for p in t["partitions"]}

    def end(self, tid: str, pid: int, epoch: int, commit: bool = True, version: int = 5) -> dict:
        return self.call(ApiKey.END_TXN, version, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": commit})

    def describe(self, *tids: str) -> list[dict]:
        return self.call(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": list(tids)})["transaction_states"]

    def listed(self) -> set[str]:
        answer = self.call(ApiKey.LIST_TRANSACTIONS, 1, {"state_filters": [], "producer_id_filters": [], "duration_filter": -1})
        return {s["transactional_id"] for s in answer["transaction_states"]}

    def stable_offset(self, group: str, topic: str, index: int) -> tuple[int, int]:
        """OffsetFetch with require_stable: UNSTABLE_OFFSET_COMMIT while a transaction holds a pending offset."""
        answer = self.call(ApiKey.OFFSET_FETCH, 7, {"group_id": group, "topics": [{"name": topic, "partition_indexes": [index]}], "require_stable": True})
        part = answer["topics"][0]["partitions"][0]
        return part["error_code"], part["committed_offset"]


def _acl(rtype, name, op, pattern=ResourcePatternType.LITERAL, principal=ANON) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", op, AclPermissionType.ALLOW)


def _sasl_plain(conn: WireConnection, user: str, password: str) -> None:
    assert conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
    answer = conn.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\0" + user.encode() + b"\0" + password.encode()})
    assert answer["error_code"] == 0, answer


@pytest.fixture(scope="module")
def world():
    from tests.peers.linkd import LinkdProcess

    sasl = ["--listener", "SASL_PLAINTEXT://127.0.0.1:0"]
    daemon = LinkdProcess(extra_args=["--authorizer", "standard", "--super-users", ANON, *sasl])
    daemon.data_dir.mkdir(parents=True, exist_ok=True)
    added = subprocess.run([sys.executable, "-m", "linkd", "user", "add", BROKER_USER, "--data-dir", str(daemon.data_dir)],
                           input=BROKER_PASSWORD + "\n", capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    daemon.start()
    try:
        w = World(daemon)
        for name, partitions in ((w.ok, 2), (w.readable, 1), (w.secret, 1)):
            body = w.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [], "configs": []}], "timeout_ms": 10_000})
            assert body["topics"][0]["error_code"] == 0
        T, G, X, P = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID, ResourcePatternType.PREFIXED
        admin = AdminClient({"bootstrap.servers": daemon.bootstrap})
        bindings = [_acl(T, w.ok, AclOperation.ALL, P), _acl(T, w.readable, AclOperation.READ), _acl(G, w.group, AclOperation.READ, P),
                    _acl(X, w.tx_ok, AclOperation.WRITE, P), _acl(X, w.tx_ro, AclOperation.DESCRIBE),
                    _acl(ResourceType.BROKER, "kafka-cluster", AclOperation.CLUSTER_ACTION, principal=f"User:{BROKER_USER}")]
        for future in admin.create_acls(bindings, request_timeout=10).values():
            future.result(10)
        # As a super user: an open transaction on tx-ro (a long timeout, so it stays open for the module).
        w.ro_pid, w.ro_epoch = w.init(w.tx_ro, timeout_ms=600_000)
        assert set(w.add_partitions(w.tx_ro, w.ro_pid, w.ro_epoch, [(w.ok, 0), (w.secret, 0)]).values()) == {0}
        assert w.add_offsets(w.tx_ro, w.ro_pid, w.ro_epoch, f"{w.group}-ro") == 0
        w.init(w.tx_hidden)
        w.conn.close()
        daemon.extra_args = ["--authorizer", "standard", *sasl]
        daemon.restart()
        w.conn = WireConnection(daemon.bootstrap)
        yield w
        w.conn.close()
    finally:
        daemon.close()


def _ro_state(world) -> dict:
    [state] = world.describe(world.tx_ro)
    return state


@pytest.mark.timeout(120)
def test_add_partitions_needs_write_on_the_transactional_id_and_on_every_topic(world):
    ro = world.add_partitions(world.tx_ro, world.ro_pid, world.ro_epoch, [(world.ok, 1), (world.readable, 0)])
    assert ro == {(world.ok, 1): TXN_DENIED, (world.readable, 0): TXN_DENIED}
    pid, epoch = world.init(f"{world.tx_ok}-a")
    mixed = world.add_partitions(f"{world.tx_ok}-a", pid, epoch, [(world.ok, 0), (world.readable, 0), (world.secret, 0), (f"{world.ok}-absent", 0)])
    assert mixed == {(world.ok, 0): ErrorCode.OPERATION_NOT_ATTEMPTED, (world.readable, 0): TOPIC_DENIED, (world.secret, 0): TOPIC_DENIED,
                     (f"{world.ok}-absent", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    [state] = world.describe(f"{world.tx_ok}-a")
    assert (state["error_code"], state["transaction_state"], state["topics"]) == (0, "Empty", [])  # nothing was added
    assert world.add_partitions(f"{world.tx_ok}-a", pid, epoch, [(world.ok, 0), (world.ok, 1)]) == {(world.ok, 0): 0, (world.ok, 1): 0}
    [state] = world.describe(f"{world.tx_ok}-a")
    assert state["transaction_state"] == "Ongoing" and state["topics"] == [{"topic": world.ok, "partitions": [0, 1]}]
    assert _ro_state(world)["topics"] == [{"topic": world.ok, "partitions": [0]}]  # tx-ro's denied add changed nothing
    assert world.end(f"{world.tx_ok}-a", pid, epoch, commit=False)["error_code"] == 0


@pytest.mark.timeout(120)
def test_broker_to_broker_add_partitions_needs_cluster_action(world):
    body = {"transactions": [{"transactional_id": world.tx_ro, "producer_id": world.ro_pid, "producer_epoch": world.ro_epoch, "verify_only": False,
                              "topics": [{"name": world.ok, "partitions": [1]}]}]}
    answer = world.call(ApiKey.ADD_PARTITIONS_TO_TXN, 4, body)
    assert (answer["error_code"], answer["results_by_transaction"]) == (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, [])
    assert _ro_state(world)["topics"] == [{"topic": world.ok, "partitions": [0]}]
    # With CLUSTER_ACTION (a SASL user here) the batch reaches the coordinator; as in Kafka, this form checks
    # neither the transactional id nor the topics. verify_only leaves the transaction as it is.
    body["transactions"][0].update(verify_only=True, topics=[{"name": world.ok, "partitions": [0, 1]}, {"name": world.secret, "partitions": [0]}])
    with WireConnection(world.daemon.address("SASL_PLAINTEXT")) as broker:
        _sasl_plain(broker, BROKER_USER, BROKER_PASSWORD)
        answer = broker.request(ApiKey.ADD_PARTITIONS_TO_TXN, 4, body)
    assert answer["error_code"] == 0
    [result] = answer["results_by_transaction"]
    codes = {(t["name"], p["partition_index"]): p["partition_error_code"] for t in result["topic_results"] for p in t["results_by_partition"]}
    assert codes == {(world.ok, 0): 0, (world.ok, 1): ErrorCode.INVALID_TXN_STATE, (world.secret, 0): 0}
    assert _ro_state(world)["topics"] == [{"topic": world.ok, "partitions": [0]}]


@pytest.mark.timeout(120)
def test_write_txn_markers_the_abort_tool_sends_needs_cluster_action(world):
    body = {"markers": [{"producer_id": world.ro_pid, "producer_epoch": world.ro_epoch, "transaction_result": False, "coordinator_epoch": 0,
                         "topics": [{"name": world.ok, "partition_indexes": [0]}]}]}
    answer = world.call(ApiKey.WRITE_TXN_MARKERS, 1, body)
    assert answer["markers"][0]["topics"][0]["partitions"] == [{"partition_index": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED}]
    assert _ro_state(world)["transaction_state"] == "Ongoing"  # the denied abort changed nothing


@pytest.mark.timeout(120)
def test_add_offsets_needs_write_on_the_transactional_id_then_read_on_the_group(world):
    assert world.add_offsets(world.tx_ro, world.ro_pid, world.ro_epoch, f"{world.group}-x") == TXN_DENIED
    pid, epoch = world.init(f"{world.tx_ok}-b")
    assert world.add_offsets(f"{world.tx_ok}-b", pid, epoch, world.group_denied) == GROUP_DENIED
    assert world.describe(f"{world.tx_ok}-b")[0]["transaction_state"] == "Empty"
    assert world.add_offsets(f"{world.tx_ok}-b", pid, epoch, f"{world.group}-b") == 0
    assert world.describe(f"{world.tx_ok}-b")[0]["transaction_state"] == "Ongoing"
    assert world.end(f"{world.tx_ok}-b", pid, epoch, commit=False)["error_code"] == 0


@pytest.mark.timeout(120)
def test_txn_offset_commit_needs_write_read_on_the_group_and_read_on_each_topic(world):
    ro_group = f"{world.group}-ro"  # added to tx-ro's transaction by the super user
    denied = world.txn_commit_offsets(world.tx_ro, world.ro_pid, world.ro_epoch, ro_group, {(world.ok, 1): 7})
    assert denied == {(world.ok, 1): TXN_DENIED}
    assert world.stable_offset(ro_group, world.ok, 1) == (0, -1)  # no pending offset was staged
    tid, group = f"{world.tx_ok}-c", f"{world.group}-c"
    pid, epoch = world.init(tid)
    assert world.add_offsets(tid, pid, epoch, group) == 0
    assert world.txn_commit_offsets(tid, pid, epoch, world.group_denied, {(world.ok, 0): 3}) == {(world.ok, 0): GROUP_DENIED}
    answer = world.txn_commit_offsets(tid, pid, epoch, group, {(world.ok, 0): 5, (world.readable, 0): 1, (world.secret, 0): 1})
    assert answer == {(world.ok, 0): 0, (world.readable, 0): 0, (world.secret, 0): TOPIC_DENIED}
    assert world.stable_offset(group, world.ok, 0)[0] == ErrorCode.UNSTABLE_OFFSET_COMMIT
    assert world.end(tid, pid, epoch)["error_code"] == 0
    assert world.stable_offset(group, world.ok, 0) == (0, 5)
    assert world.stable_offset(group, world.readable, 0) == (0, 1)


@pytest.mark.timeout(120)
def test_end_txn_needs_write_on_the_transactional_id(world):
    refused = world.end(world.tx_ro, world.ro_pid, world.ro_epoch)
    assert (refused["error_code"], refused["producer_id"], refused["producer_epoch"]) == (TXN_DENIED, -1, -1)
    assert world.end(world.tx_ro, world.ro_pid, world.ro_epoch, commit=False, version=3)["error_code"] == TXN_DENIED
    assert _ro_state(world)["transaction_state"] == "Ongoing"
    pid, epoch = world.init(f"{world.tx_ok}-d")
    assert world.add_partitions(f"{world.tx_ok}-d", pid, epoch, [(world.ok, 1)]) == {(world.ok, 1): 0}
    done = world.end(f"{world.tx_ok}-d", pid, epoch)
    assert (done["error_code"], done["producer_id"], done["producer_epoch"]) == (0, pid, epoch)
    assert world.describe(f"{world.tx_ok}-d")[0]["transaction_state"] == "CompleteCommit"


@pytest.mark.timeout(120)
def test_list_and_describe_show_only_describable_ids_and_topics(world):
    listed = world.listed()
    assert world.tx_ro in listed and world.tx_hidden not in listed
    assert all(not t.startswith("tx-hidden") for t in listed)
    ro, hidden = world.describe(world.tx_ro, world.tx_hidden)
    # tx-ro's transaction holds ok-*/0 and secret/0; the secret topic is not describable here.
    assert (ro["error_code"], ro["transaction_state"], ro["topics"]) == (0, "Ongoing", [{"topic": world.ok, "partitions": [0]}])
    assert ro["producer_id"] == world.ro_pid
    assert hidden == {"error_code": TXN_DENIED, "transactional_id": world.tx_hidden, "transaction_state": "", "transaction_timeout_ms": 0,
                      "transaction_start_time_ms": 0, "producer_id": 0, "producer_epoch": 0, "topics": []}


@pytest.mark.timeout(120)
def test_confluent_kafka_transactional_producer_commits_where_allowed_and_fails_on_a_denied_topic(world):
    def producer(tid: str) -> Producer:
        p = Producer({"bootstrap.servers": world.daemon.bootstrap, "transactional.id": tid, "message.timeout.ms": 10_000})
        p.init_transactions(15)
        return p

    good = producer(f"{world.tx_ok}-ck")
    good.begin_transaction()
    for i in range(3):
        good.produce(world.ok, f"c{i}".encode(), partition=0)
    good.commit_transaction(15)
    [state] = world.describe(f"{world.tx_ok}-ck")
    assert state["transaction_state"] == "CompleteCommit"

    bad = producer(f"{world.tx_ok}-bad")
    bad.begin_transaction()
    errors = []
    bad.produce(world.readable, b"nope", on_delivery=lambda err, msg: errors.append(err))
    with pytest.raises(KafkaException) as raised:
        bad.commit_transaction(15)
    # AddPartitionsToTxn was refused: the transaction must abort, and its message is purged, never sent.
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and raised.value.args[0].txn_requires_abort()
    bad.poll(0)
    assert [e.code() for e in errors] == [KafkaError._PURGE_QUEUE]
    assert world.describe(f"{world.tx_ok}-bad")[0]["topics"] == []
    with pytest.raises(KafkaException) as raised:
        Producer({"bootstrap.servers": world.daemon.bootstrap, "transactional.id": world.tx_ro}).init_transactions(15)
    assert raised.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
