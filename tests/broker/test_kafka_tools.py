"""Apache Kafka 4.1's own command-line tools (org.apache.kafka:kafka-tools and kafka_2.13 from Maven Central)
pointed at linkd: kafka-topics, kafka-configs, kafka-consumer-groups, kafka-log-dirs, kafka-delete-records,
kafka-get-offsets, kafka-features, kafka-transactions and kafka-leader-election, each checked on its output.

The tools run in one JVM per test (tests/peers/kafkatools.py); commands whose answer is a cluster's answer
(leader election, a feature upgrade) also run against a live single-node Kafka 4.1 and must print the same.
The mirror test has a source Kafka whose transactional producer leaves a transaction open: its mirror shows
the producer and the open transaction, and after failover (which aborts it) nothing hangs.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from linkd.broker.versions import SUPPORTED_VERSIONS
from protocol.messages import ApiKey
from tests.conftest import peer_unavailable
from tests.peers import PeerUnavailable, wait_until
from tests.promotion.helpers import cli_json, create_topic, mirror, produce

pytestmark = [pytest.mark.java, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def tools():
    from tests.peers import kafkatools

    try:
        kafkatools.ensure_compiled()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    return kafkatools


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def _table(result) -> list[list[str]]:
    """A tool's whitespace-aligned table, one list of cells per row (header included)."""
    return [line.split() for line in result.lines()]


def test_kafka_tools_administer_topics_configs_groups_and_logs_on_linkd(tools, linkd, kafka_broker, tmp_path):
    Tool = tools.Tool
    b = linkd.bootstrap
    new, data, group = f"tools-{uuid.uuid4().hex[:6]}", f"data-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    create_topic(b, data, 2)
    produce(b, data, 10, 2)  # 5 records per partition, offsets 0..4
    _commit(b, group, data, {0: 3, 1: 4})
    delete_spec = tmp_path / "delete.json"
    delete_spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": data, "partition": 0, "offset": 2}]}))
    kafka_topic = kafka_broker.create_topic(f"tools-k-{uuid.uuid4().hex[:6]}", 1)
    entity = ("--entity-type", "topics", "--entity-name", new)
    both = {"linkd": b, "kafka": kafka_broker.bootstrap}
    same_answer = [
        ("kafka-leader-election", "--election-type", "preferred", "--topic", "{topic}", "--partition", "0"),
        ("kafka-leader-election", "--election-type", "unclean", "--topic", "{topic}", "--partition", "0"),
        ("kafka-leader-election", "--election-type", "preferred", "--topic", "{topic}", "--partition", "7"),
        ("kafka-features", "upgrade", "--feature", "linkd.test.feature=1"),
    ]
    batch = [
        Tool("kafka-topics", "--bootstrap-server", b, "--create", "--topic", new, "--partitions", "2", "--config", "retention.ms=86400000"),
        Tool("kafka-topics", "--bootstrap-server", b, "--list"),
        Tool("kafka-topics", "--bootstrap-server", b, "--alter", "--topic", new, "--partitions", "3"),
        Tool("kafka-topics", "--bootstrap-server", b, "--describe", "--topic", new),
        Tool("kafka-configs", "--bootstrap-server", b, *entity, "--alter", "--add-config", "cleanup.policy=compact"),
        Tool("kafka-configs", "--bootstrap-server", b, *entity, "--describe"),
        Tool("kafka-get-offsets", "--bootstrap-server", b, "--topic", data),
        Tool("kafka-delete-records", "--bootstrap-server", b, "--offset-json-file", str(delete_spec)),
        Tool("kafka-get-offsets", "--bootstrap-server", b, "--topic", data, "--time", "-2"),
        Tool("kafka-log-dirs", "--bootstrap-server", b, "--describe", "--topic-list", f"{data},{new}"),
        Tool("kafka-features", "--bootstrap-server", b, "describe"),
        Tool("kafka-leader-election", "--bootstrap-server", b, "--election-type", "preferred", "--all-topic-partitions"),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--list"),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--describe", "--group", group),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--reset-offsets", "--group", group, "--topic", data, "--to-earliest", "--execute"),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--delete-offsets", "--group", group, "--topic", f"{data}:1"),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--describe", "--group", group),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--delete", "--group", group),
        Tool("kafka-consumer-groups", "--bootstrap-server", b, "--list"),
        Tool("kafka-topics", "--bootstrap-server", b, "--delete", "--topic", new),
        Tool("kafka-topics", "--bootstrap-server", b, "--list"),
    ]
    for who, bootstrap in both.items():
        topic = data if who == "linkd" else kafka_topic
        batch += [Tool(script, "--bootstrap-server", bootstrap, *(a.format(topic=topic) for a in args)) for script, *args in same_answer]
    started = time.monotonic()
    results = tools.run_tools(batch)
    elapsed = time.monotonic() - started
    (created, listed, altered, described, config_altered, config_described, offsets, deleted, earliest, log_dirs, features,
     elect_all, groups, group_described, reset, offset_deleted, group_after, group_deleted, groups_after, topic_deleted,
     listed_after, *compared) = results
    every = "\n".join(f"{r.tool.script} {' '.join(r.tool.args[2:])} -> {r.exit_code}\n{r.stdout}{r.stderr}" for r in results)
    fails = [r for r in results[: len(results) - len(compared)] if r.exit_code != 0]
    assert not fails, every

    assert created.lines() == [f"Created topic {new}."]
    assert {data, new} <= set(listed.lines())
    head, *parts = described.lines()
    assert re.match(rf"Topic: {new}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: .*retention.ms=86400000", head), every
    assert [re.match(r"\s*Topic: \S+\tPartition: (\d)\tLeader: 1\tReplicas: 1\tIsr: 1", p).group(1) for p in parts] == ["0", "1", "2"]
    assert f"Completed updating config for topic {new}." in config_altered.stdout
    assert "cleanup.policy=compact sensitive=false" in config_described.stdout and "retention.ms=86400000" in config_described.stdout
    assert sorted(offsets.lines()) == [f"{data}:0:5", f"{data}:1:5"]
    assert f"partition: {data}-0\tlow_watermark: 2" in deleted.stdout
    assert sorted(earliest.lines()) == [f"{data}:0:2", f"{data}:1:0"]

    dirs = json.loads(log_dirs.lines()[-1])
    [broker] = dirs["brokers"]
    [log_dir] = broker["logDirs"]
    assert broker["broker"] == 1 and log_dir["error"] is None and log_dir["logDir"].startswith(str(linkd.data_dir))
    sizes = {p["partition"]: (p["size"], p["offsetLag"], p["isFuture"]) for p in log_dir["partitions"]}
    assert set(sizes) == {f"{data}-0", f"{data}-1", f"{new}-0", f"{new}-1", f"{new}-2"}
    on_disk = sum(f.stat().st_size for f in (linkd.data_dir / "logs" / f"{data}-1").glob("*.log"))
    assert sizes[f"{data}-1"] == (on_disk, 0, False) and on_disk > 0
    assert sizes[f"{new}-0"] == (0, 0, False)

    assert features.stdout == ""  # linkd finalizes no feature flags, and says so by listing none
    assert elect_all.stdout == ""  # Kafka prints nothing when no partition needed an election

    assert group in groups.lines()
    # The tool prints partitions in the order of its answers' maps: compare them sorted.
    assert sorted(row[:5] for row in _table(group_described)[1:]) == [[group, data, "0", "3", "5"], [group, data, "1", "4", "5"]]
    assert sorted(row[:4] for row in _table(reset)[1:]) == [[group, data, "0", "2"], [group, data, "1", "0"]]
    assert _table(offset_deleted)[-1] == [data, "1", "Successful"], every
    assert [row[1:4] for row in _table(group_after)[1:]] == [[data, "0", "2"]]
    assert f"Deletion of requested consumer groups ('{group}') was successful." in group_deleted.stdout
    assert group not in groups_after.lines()
    assert new not in listed_after.lines() and data in listed_after.lines()

    half = len(compared) // 2
    for ours, theirs in zip(compared[:half], compared[half:], strict=True):
        assert (ours.exit_code, ours.stdout.replace(data, "TOPIC"), ours.stderr.replace(data, "TOPIC")) == \
            (theirs.exit_code, theirs.stdout.replace(kafka_topic, "TOPIC"), theirs.stderr.replace(kafka_topic, "TOPIC")), every
    assert f"Valid replica already elected for partitions {data}-0" in compared[0].stdout
    print(f"{len(batch)} tool runs in one JVM: {elapsed:.1f}s")


def _open_transaction(bootstrap: str, topic: str) -> Producer:
    """A transactional producer with one transaction left open on partition 0 (two records)."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"txn-{uuid.uuid4().hex[:6]}", "transaction.timeout.ms": 300_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(2):
        producer.produce(topic, value=b"open-%d" % i, partition=0)
    assert producer.flush(30) == 0
    return producer


def _producer_rows(result) -> list[dict[str, str]]:
    header, *rows = _table(result)
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_kafka_transactions_sees_mirrored_producers_and_no_hanging_transaction_after_failover(tools, linkd, kafka_broker, tmp_path):
    Tool = tools.Tool
    topic = kafka_broker.create_topic(f"txn-{uuid.uuid4().hex[:6]}", 1)
    produce(kafka_broker.bootstrap, topic, 3, 1)  # an idempotent producer: offsets 0..2
    producer = _open_transaction(kafka_broker.bootstrap, topic)  # offsets 3, 4, open
    try:
        mirror(linkd, f"l-{topic}", kafka_broker.bootstrap, [topic])
        wait_until(lambda: cli_json(linkd, "mirror", "describe", topic)[0]["partitions"][0]["mirror_log_end_offset"] == 5, 30, what="mirror caught up")
        b = linkd.bootstrap
        describe = Tool("kafka-transactions", "--bootstrap-server", b, "describe-producers", "--topic", topic, "--partition", "0")
        find = Tool("kafka-transactions", "--bootstrap-server", b, "find-hanging", "--broker-id", "1", "--max-transaction-timeout", "0")
        [before] = tools.run_tools([describe])
        assert before.exit_code == 0, before.stderr
        rows = _producer_rows(before)
        assert len(rows) == 2, before.stdout
        # The tool prints an absent start offset (-1 on the wire) as "None".
        idempotent, transactional = sorted(rows, key=lambda r: r["CurrentTransactionStartOffset"] != "None")
        assert (idempotent["ProducerEpoch"], idempotent["LastSequence"], idempotent["CurrentTransactionStartOffset"]) == ("0", "2", "None")
        assert (transactional["LastSequence"], transactional["CurrentTransactionStartOffset"]) == ("1", "3")
        assert transactional["LatestCoordinatorEpoch"] == "-1"

        cli_json(linkd, "mirror", "failover", topic)
        # The promoted partition's files (a real Kafka's batches, then linkd's ABORT marker), as Kafka reads them.
        copy = shutil.copytree(linkd.data_dir / "logs" / f"{topic}-0", tmp_path / f"{topic}-0")
        files = {suffix: ",".join(str(p) for p in sorted(copy.glob(f"*{suffix}"))) for suffix in (".log", ".index", ".timeindex", ".snapshot")}
        after, hanging, deep, verify, snapshot = tools.run_tools([
            describe, find,
            Tool("kafka-dump-log", "--deep-iteration", "--files", files[".log"]),
            Tool("kafka-dump-log", "--verify-index-only", "--files", files[".index"] + "," + files[".timeindex"]),
            Tool("kafka-dump-log", "--files", files[".snapshot"]),
        ])
    finally:
        producer.abort_transaction(30)
    assert after.exit_code == 0 and hanging.exit_code == 0, after.stderr + hanging.stderr
    for dumped in (deep, verify, snapshot):
        assert dumped.exit_code == 0 and "Exception" not in dumped.stdout + dumped.stderr, dumped.stdout + dumped.stderr
    assert "isvalid: false" not in deep.stdout and "endTxnMarker: ABORT" in deep.stdout, deep.stdout
    assert "Mismatches" not in verify.stdout and "not found" not in verify.stdout, verify.stdout
    assert f"producerId: {transactional['ProducerId']} " in snapshot.stdout and "currentTxnFirstOffset: OptionalLong.empty" in snapshot.stdout
    rows = {r["ProducerId"]: r for r in _producer_rows(after)}
    assert rows[transactional["ProducerId"]]["CurrentTransactionStartOffset"] == "None"  # failover aborted it
    assert _table(hanging)[1:] == []  # header only: nothing hangs


@pytest.mark.skipif(ApiKey.LIST_TRANSACTIONS not in SUPPORTED_VERSIONS, reason="find-hanging looks up transactional ids with ListTransactions, which this linkd does not serve yet")
def test_kafka_transactions_find_hanging_lists_an_open_mirrored_transaction(tools, linkd, kafka_broker):
    topic = kafka_broker.create_topic(f"hang-{uuid.uuid4().hex[:6]}", 1)
    producer = _open_transaction(kafka_broker.bootstrap, topic)
    try:
        mirror(linkd, f"l-{topic}", kafka_broker.bootstrap, [topic])
        wait_until(lambda: cli_json(linkd, "mirror", "describe", topic)[0]["partitions"][0]["mirror_log_end_offset"] == 2, 30, what="mirror caught up")
        [hanging] = tools.run_tools([tools.Tool("kafka-transactions", "--bootstrap-server", linkd.bootstrap, "find-hanging", "--topic", topic, "--max-transaction-timeout", "0")])
    finally:
        producer.abort_transaction(30)
    assert hanging.exit_code == 0, hanging.stderr
    [row] = _table(hanging)[1:]
    assert row[:2] == [topic, "0"] and row[5] == "0"  # the mirror's transaction, from offset 0, has no coordinator here


def _open_transaction_on(bootstrap: str, topic: str, partitions: dict[int, int]) -> Producer:
    """A transactional producer with one transaction left open: ``partitions`` maps partition -> record count."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"txn-{uuid.uuid4().hex[:6]}", "transaction.timeout.ms": 300_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for partition, count in partitions.items():
        for i in range(count):
            producer.produce(topic, value=b"open-%d" % i, partition=partition)
    assert producer.flush(30) == 0
    return producer


def _open_txn_rows(result) -> list[tuple[str, str, str]]:
    """(epoch, last sequence, transaction start offset) of each producer describe-producers lists."""
    return sorted((r["ProducerEpoch"], r["LastSequence"], r["CurrentTransactionStartOffset"]) for r in _producer_rows(result))


def test_kafka_transactions_abort_find_hanging_and_describe_producers_on_linkd_and_kafka(tools, linkd, kafka_broker):
    """The same open transaction (two records on partition 0, one on partition 1) on linkd and on Kafka:
    describe-producers and find-hanging print the same. ``abort`` of partition 0 succeeds on both; Kafka
    ends the transaction in that partition only, linkd aborts the whole transaction and fences its
    producer (docs/operator-guide.md). On a mirror, whose transactions are the source's, it is refused."""
    Tool = tools.Tool
    suffix = uuid.uuid4().hex[:6]
    ours, theirs, mirrored = f"abort-{suffix}", kafka_broker.create_topic(f"abort-{suffix}", 2), kafka_broker.create_topic(f"abort-m-{suffix}", 1)
    create_topic(linkd.bootstrap, ours, 2)
    on_linkd = _open_transaction_on(linkd.bootstrap, ours, {0: 2, 1: 1})
    on_kafka = _open_transaction_on(kafka_broker.bootstrap, theirs, {0: 2, 1: 1})
    at_source = _open_transaction_on(kafka_broker.bootstrap, mirrored, {0: 2})
    try:
        mirror(linkd, f"l-{suffix}", kafka_broker.bootstrap, [mirrored])
        wait_until(lambda: cli_json(linkd, "mirror", "describe", mirrored)[0]["partitions"][0]["mirror_log_end_offset"] == 2, 30, what="mirror caught up")
        b, k = linkd.bootstrap, kafka_broker.bootstrap

        def per_cluster(*args: str) -> list:
            return [Tool("kafka-transactions", "--bootstrap-server", b, *[ours if a == "TOPIC" else a for a in args]),
                    Tool("kafka-transactions", "--bootstrap-server", k, *[theirs if a == "TOPIC" else a for a in args])]

        runs = tools.run_tools([
            *per_cluster("describe-producers", "--topic", "TOPIC", "--partition", "0"),
            *per_cluster("find-hanging", "--topic", "TOPIC", "--max-transaction-timeout", "0"),
            *per_cluster("abort", "--topic", "TOPIC", "--partition", "0", "--start-offset", "0"),
            *per_cluster("describe-producers", "--topic", "TOPIC", "--partition", "0"),
            *per_cluster("describe-producers", "--topic", "TOPIC", "--partition", "1"),
            Tool("kafka-transactions", "--bootstrap-server", b, "abort", "--topic", mirrored, "--partition", "0", "--start-offset", "0"),
            Tool("kafka-transactions", "--bootstrap-server", b, "describe-producers", "--topic", mirrored, "--partition", "0"),
        ])
    finally:
        for producer in (on_kafka, at_source):
            producer.abort_transaction(30)
    (before, before_k, hanging, hanging_k, abort, abort_k, after0, after0_k, after1, after1_k, abort_mirror, mirror_after) = runs
    for run in runs[:-2]:
        assert run.exit_code == 0, (run.tool, run.stdout, run.stderr)
    assert _open_txn_rows(before) == _open_txn_rows(before_k) == [("0", "1", "0")], (before.stdout, before_k.stdout)
    # Both coordinators know the transaction holds the partition: it is open, not hanging.
    assert _table(hanging)[1:] == _table(hanging_k)[1:] == [], (hanging.stdout, hanging_k.stdout)
    assert abort.stdout == abort_k.stdout, (abort.stdout, abort_k.stdout)
    # Kafka wrote the marker with the producer's epoch and left partition 1 open; linkd's coordinator
    # aborted both partitions with the bumped epoch that fences the producer (a new epoch has no sequence yet).
    assert _open_txn_rows(after0_k) == [("0", "1", "None")], after0_k.stdout
    assert _open_txn_rows(after1_k) == [("0", "0", "0")], after1_k.stdout
    assert _open_txn_rows(after0) == _open_txn_rows(after1) == [("1", "-1", "None")], (after0.stdout, after1.stdout)
    assert abort_mirror.exit_code != 0 and "invalid state" in abort_mirror.stderr, abort_mirror
    assert [row[2] for row in _open_txn_rows(mirror_after)] == ["0"], mirror_after.stdout  # the source's, untouched
    # The producer linkd fenced cannot commit what it wrote; read_committed readers never see it.
    with pytest.raises(Exception, match="(?i)fenc|epoch"):
        on_linkd.commit_transaction(30)
    consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": f"g-{suffix}", "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(ours, p, 0) for p in (0, 1)])
        deadline, seen = time.monotonic() + 3, []
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                seen.append(msg.value())
        low_high = [consumer.get_watermark_offsets(TopicPartition(ours, p), timeout=10) for p in (0, 1)]
    finally:
        consumer.close()
    assert seen == [] and low_high == [(0, 3), (0, 2)], (seen, low_high)  # records plus one ABORT marker each


def test_kafka_transactions_finds_and_aborts_a_transaction_the_coordinator_lost(tools, linkd):
    """A transaction open in a partition's log that linkd's coordinator has no record of (here: its row
    removed from control.db while linkd was down, as a control store restored from an older backup would
    be) holds read_committed readers at its first offset. find-hanging reports it and abort ends it with
    an ABORT marker in that partition, as on Kafka."""
    import sqlite3

    from tests.broker.wire import WireConnection

    Tool = tools.Tool
    topic = f"lost-{uuid.uuid4().hex[:6]}"
    create_topic(linkd.bootstrap, topic, 1)
    producer = _open_transaction(linkd.bootstrap, topic)  # offsets 0, 1
    linkd.kill()
    with sqlite3.connect(linkd.data_dir / "control.db") as db:
        assert db.execute("DELETE FROM txn_log").rowcount == 1
    linkd.start()
    del producer  # its transaction now belongs to no coordinator

    def stable_offset() -> int:
        with WireConnection(linkd.bootstrap) as conn:
            body = conn.request(ApiKey.LIST_OFFSETS, 7, {"replica_id": -1, "isolation_level": 1, "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
        return body["topics"][0]["partitions"][0]["offset"]

    assert stable_offset() == 0
    b = linkd.bootstrap
    find = Tool("kafka-transactions", "--bootstrap-server", b, "find-hanging", "--topic", topic, "--max-transaction-timeout", "0")
    before, abort, after, producers = tools.run_tools([
        find,
        Tool("kafka-transactions", "--bootstrap-server", b, "abort", "--topic", topic, "--partition", "0", "--start-offset", "0"),
        find,
        Tool("kafka-transactions", "--bootstrap-server", b, "describe-producers", "--topic", topic, "--partition", "0"),
    ])
    for run in (before, abort, after, producers):
        assert run.exit_code == 0, (run.tool, run.stdout, run.stderr)
    [row] = _table(before)[1:]
    assert row[:2] == [topic, "0"] and row[5] == "0", before.stdout  # the partition and the transaction's first offset
    assert _table(after)[1:] == [], after.stdout
    assert _open_txn_rows(producers) == [("0", "1", "None")], producers.stdout  # ended with the producer's own epoch
    assert stable_offset() == 3  # two records and the ABORT marker: readers move on
