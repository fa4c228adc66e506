"""Transactions against linkd with real clients (confluent-kafka / librdkafka, kafka-python): commit and
abort cycles, read_committed readers, fencing, consume-transform-produce with offsets in the transaction,
timeouts, and SIGKILL of linkd in the middle of transaction cycles."""

from __future__ import annotations

import concurrent.futures
import queue
import random
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.broker.clients import create_topic


def _producer(bootstrap: str, tid: str, **config) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5, **config})


def _read(bootstrap: str, topic: str, partitions: int, isolation: str, expect: int, timeout: float = 30.0, settle: float = 1.5) -> list[str]:
    """Every value from the start of each partition; stops ``settle`` s after ``expect`` values arrived
    with nothing more (so extra records would be seen) or at the deadline."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}", "isolation.level": isolation,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[str] = []
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                if len(values) >= expect:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > settle:
                        break
                continue
            quiet_since = None
            values.append(msg.value().decode())
    finally:
        c.close()
    return values


@pytest.mark.timeout(90)
def test_commit_and_abort_cycles_read_committed_sees_exactly_the_committed_records(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, 3)
    producer = _producer(linkd.bootstrap, f"tx-{unique_topic}")
    producer.init_transactions(30)
    committed = []
    for cycle in range(10):
        producer.begin_transaction()
        values = [f"c{cycle}-{i}" for i in range(30)]
        for i, value in enumerate(values):
            producer.produce(unique_topic, value.encode(), partition=i % 3)
        if cycle % 3 == 1:
            producer.flush(30)  # in linkd's log before the abort (librdkafka would otherwise drop them unsent)
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed += values
    seen = _read(linkd.bootstrap, unique_topic, 3, "read_committed", len(committed))
    assert sorted(seen) == sorted(committed) and len(seen) == len(set(seen))
    everything = _read(linkd.bootstrap, unique_topic, 3, "read_uncommitted", 300)
    assert len(everything) == 300  # aborted records are in the log; read_committed skipped them


@pytest.mark.timeout(90)
def test_open_transaction_holds_read_committed_readers_at_its_first_offset(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, 1)
    producer = _producer(linkd.bootstrap, f"tx-{unique_topic}")
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(unique_topic, b"first", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(unique_topic, b"pending", partition=0)
    producer.flush(30)
    assert _read(linkd.bootstrap, unique_topic, 1, "read_committed", 1, timeout=5) == ["first"]
    producer.commit_transaction(30)
    assert _read(linkd.bootstrap, unique_topic, 1, "read_committed", 2) == ["first", "pending"]


@pytest.mark.timeout(90)
def test_a_second_producer_with_the_same_transactional_id_fences_the_first(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, 1)
    tid = f"tx-{unique_topic}"
    first = _producer(linkd.bootstrap, tid)
    first.init_transactions(30)
    first.begin_transaction()
    first.produce(unique_topic, b"from-first", partition=0)
    first.flush(30)

    second = _producer(linkd.bootstrap, tid)
    second.init_transactions(30)  # aborts the first one's open transaction
    second.begin_transaction()
    second.produce(unique_topic, b"from-second", partition=0)
    second.commit_transaction(30)

    with pytest.raises(KafkaException) as failed:
        first.produce(unique_topic, b"zombie", partition=0)
        first.commit_transaction(30)
    error = failed.value.args[0]
    assert error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), error
    assert _read(linkd.bootstrap, unique_topic, 1, "read_committed", 1) == ["from-second"]


@pytest.mark.timeout(120)
def test_consume_transform_produce_commits_offsets_with_the_records(linkd, unique_topic):
    source, sink, group = f"{unique_topic}-in", f"{unique_topic}-out", f"g-{unique_topic}"
    create_topic(linkd.bootstrap, source, 1)
    create_topic(linkd.bootstrap, sink, 1)
    plain = Producer({"bootstrap.servers": linkd.bootstrap})
    for i in range(60):
        plain.produce(source, f"{i}".encode(), partition=0)
    assert plain.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "isolation.level": "read_committed",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([source])
    producer = _producer(linkd.bootstrap, f"tx-{unique_topic}")
    producer.init_transactions(30)
    processed = 0
    cycle = 0
    deadline = time.monotonic() + 60
    while processed < 60 and time.monotonic() < deadline:
        batch = consumer.consume(20, 1.0)
        batch = [m for m in batch if not m.error()]
        if not batch:
            continue
        producer.begin_transaction()
        for m in batch:
            producer.produce(sink, f"x{m.value().decode()}".encode(), partition=0)
        producer.send_offsets_to_transaction([TopicPartition(source, 0, batch[-1].offset() + 1)], consumer.consumer_group_metadata(), 30)
        if cycle == 1:
            producer.abort_transaction(30)
            # Rewind to what the group has committed, as an application does after an abort.
            [committed] = consumer.committed([TopicPartition(source, 0)], 10)
            consumer.seek(TopicPartition(source, 0, committed.offset if committed.offset >= 0 else 0))
        else:
            producer.commit_transaction(30)
            processed = batch[-1].offset() + 1
        cycle += 1
    consumer.close()
    assert processed == 60
    out = _read(linkd.bootstrap, sink, 1, "read_committed", 60)
    assert out == [f"x{i}" for i in range(60)]  # the aborted cycle left nothing; its records were redone once
    check = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "isolation.level": "read_committed"})
    [committed] = check.committed([TopicPartition(source, 0)], 10)
    check.close()
    assert committed.offset == 60


@pytest.mark.timeout(90)
def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(linkd_factory, unique_topic):
    linkd = linkd_factory(extra_args=["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"])
    create_topic(linkd.bootstrap, unique_topic, 1)
    producer = _producer(linkd.bootstrap, f"tx-{unique_topic}", **{"transaction.timeout.ms": 1500})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(unique_topic, b"too-slow", partition=0)
    producer.flush(30)
    time.sleep(3)
    # The coordinator aborted it: read_committed readers are not held back, and the producer cannot commit.
    assert _read(linkd.bootstrap, unique_topic, 1, "read_committed", 0, timeout=5, settle=1) == []
    assert len(_read(linkd.bootstrap, unique_topic, 1, "read_uncommitted", 1, timeout=10)) == 1
    with pytest.raises(KafkaException):
        producer.commit_transaction(10)


@pytest.mark.timeout(60)
def test_kafka_python_transactional_producer_commits_and_aborts(linkd, unique_topic):
    from kafka import KafkaProducer

    create_topic(linkd.bootstrap, unique_topic, 1)
    producer = KafkaProducer(bootstrap_servers=linkd.bootstrap, transactional_id=f"tx-{unique_topic}", max_block_ms=20_000)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(unique_topic, b"kept", partition=0)
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(unique_topic, b"dropped", partition=0)
        producer.abort_transaction()
    finally:
        producer.close(timeout=5)
    assert _read(linkd.bootstrap, unique_topic, 1, "read_committed", 1) == ["kept"]


def _attempt(producer: Producer, op, *args, give_up_after: float = 20.0) -> None:
    """Run a transactional call, retrying what librdkafka says is retriable (e.g. the broker restarting)
    for ``give_up_after`` s; then the last error is raised, and the caller starts a new producer instance
    (which fences this one), as an application does."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            op(*args)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(420)
def test_sigkill_during_transaction_cycles_leaves_each_fully_committed_or_fully_aborted(linkd, unique_topic):
    """20 consume-transform-produce cycles (records and input offsets in one transaction) while linkd is
    SIGKILLed and restarted at random moments: afterwards the output is exactly the transformed input up to
    the committed offset, each input record once, and every transaction the client saw commit is there."""
    source, sink, group = f"{unique_topic}-in", f"{unique_topic}-out", f"g-{unique_topic}"
    per_cycle, cycles = 25, 20
    create_topic(linkd.bootstrap, source, 1)
    create_topic(linkd.bootstrap, sink, 2)
    plain = Producer({"bootstrap.servers": linkd.bootstrap})
    for i in range(per_cycle * cycles):
        plain.produce(source, f"{i}".encode(), partition=0)
    assert plain.flush(30) == 0

    rng = random.Random(19)
    kill_cycles = set(rng.sample(range(1, cycles), 4))
    kills: list[float] = []
    orders: queue.Queue[float | None] = queue.Queue()

    def chaos():
        """SIGKILL linkd a given delay after each order, whatever the client is doing then, and start it
        again. One thread for the whole test: the daemon dies with the thread that started it (PDEATHSIG)."""
        while (delay := orders.get()) is not None:
            time.sleep(delay)
            linkd.kill()
            kills.append(delay)
            linkd.start()
            orders.task_done()

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()

    def committed_offset() -> int:
        c = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "isolation.level": "read_committed"})
        try:
            while True:
                try:
                    [tp] = c.committed([TopicPartition(source, 0)], 10)
                    return max(tp.offset, 0)
                except KafkaException:
                    time.sleep(0.3)
        finally:
            c.close()

    def new_producer() -> Producer:
        p = _producer(linkd.bootstrap, f"tx-{unique_topic}", **{"transaction.timeout.ms": 20_000})
        _attempt(p, p.init_transactions, 30, give_up_after=90)
        return p

    group_meta_consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group})
    group_meta = group_meta_consumer.consumer_group_metadata()
    producer = new_producer()
    position = committed_offset()
    acknowledged = 0  # highest input offset a successful commit covered
    deadline = time.monotonic() + 200
    try:
        while position < per_cycle * cycles and time.monotonic() < deadline:
            end = position + per_cycle
            cycle = position // per_cycle
            if cycle in kill_cycles:
                kill_cycles.discard(cycle)
                orders.join()  # the previous kill and restart are done
                orders.put(rng.uniform(0.0, 0.25))  # lands in begin/produce/offsets/commit/markers of this cycle

            def one_cycle(producer=producer, position=position, end=end):
                producer.begin_transaction()
                for i in range(position, end):
                    producer.produce(sink, f"x{i}".encode(), partition=i % 2)
                _attempt(producer, producer.send_offsets_to_transaction, [TopicPartition(source, 0, end)], group_meta, 5, give_up_after=8)
                _attempt(producer, producer.commit_transaction, 5, give_up_after=8)

            # librdkafka can stay inside a transactional call past its timeout after its coordinator
            # restarts; an application's watchdog then replaces the instance (which fences the stuck one).
            pool = concurrent.futures.ThreadPoolExecutor(1)
            try:
                pool.submit(one_cycle).result(timeout=30)
                position = acknowledged = end
            except concurrent.futures.TimeoutError:
                print(f"cycle {cycle}: stuck; a new producer instance", flush=True)
                producer = new_producer()
                position = committed_offset()
            except KafkaException as exc:
                error = exc.args[0]
                print(f"cycle {cycle}: {error}; {len(kills)} kills so far", flush=True)
                if error.txn_requires_abort():
                    try:
                        producer.abort_transaction(30)
                    except KafkaException:
                        producer = new_producer()
                else:
                    producer = new_producer()  # fatal (e.g. fenced after a timeout abort): a new instance
                position = committed_offset()
            finally:
                pool.shutdown(wait=False)
    except BaseException:
        print(linkd.logs(300))
        raise
    finally:
        orders.join()
        group_meta_consumer.close()
    assert len(kills) == 4, kills
    assert position == per_cycle * cycles, f"only {position} input records processed"
    final = committed_offset()
    assert final == per_cycle * cycles and final >= acknowledged
    out = _read(linkd.bootstrap, sink, 2, "read_committed", final, timeout=60)
    orders.put(None)  # only now: the thread's end stops the daemon it started
    killer.join(30)
    assert sorted(out, key=lambda v: int(v[1:])) == [f"x{i}" for i in range(final)], "duplicates or holes in committed output"


def _transactions_command(bootstrap: str, *args: str):
    """Kafka's ``kafka-transactions.sh`` (org.apache.kafka.tools.TransactionsCommand), as an operator runs it."""
    import subprocess
    from pathlib import Path

    from tests.peers.kafka import ensure_kafka_libs, java_binary

    libs = Path(ensure_kafka_libs())
    tools = libs.parent / "tools-libs"  # org.apache.kafka:kafka-tools and its dependencies
    if not (tools / f"kafka-tools-{libs.parent.name.split('-', 1)[1]}.jar").exists():
        pytest.skip(f"Kafka's tools are not resolved in {tools}")
    argv = [java_binary(), "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{tools}/*:{libs}/*", "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(240)
def test_kafka_transactions_tool_lists_and_describes_transactions_on_linkd(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, 1)
    tid = f"tx-{unique_topic}"
    producer = _producer(linkd.bootstrap, tid)
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(unique_topic, b"open", partition=0)
    producer.flush(30)
    listed = _transactions_command(linkd.bootstrap, "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith(tid)]
    assert row[1] == "1" and row[3] == "Ongoing", listed.stdout
    described = _transactions_command(linkd.bootstrap, "describe", "--transactional-id", tid)
    assert described.returncode == 0, described.stderr
    [row] = [line.split() for line in described.stdout.splitlines() if tid in line.split()]
    assert row[4] == "Ongoing" and row[5] == "60000" and row[-1] == f"{unique_topic}-0", described.stdout
    producer.commit_transaction(30)
    described = _transactions_command(linkd.bootstrap, "describe", "--transactional-id", tid)
    assert "CompleteCommit" in described.stdout, described.stdout


@pytest.mark.timeout(60)
def test_transactional_produce_only_lands_in_a_partition_added_to_the_ongoing_transaction(linkd, unique_topic):
    """KIP-890 part 1, enforced by linkd as partition leader: a transactional batch for a partition not in
    the producer's ongoing transaction (never added, or written after EndTxn) is refused with
    INVALID_TXN_STATE and not appended, so a late write cannot start a transaction nobody will end."""
    from protocol.errors import ErrorCode
    from protocol.messages import ApiKey
    from protocol.records import build_records
    from tests.broker.wire import WireConnection

    create_topic(linkd.bootstrap, unique_topic, 2)
    tid = f"tx-{unique_topic}"
    with WireConnection(linkd.bootstrap) as conn:
        init = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
        pid, epoch = init["producer_id"], init["producer_epoch"]
        sequence = {0: 0, 1: 0}

        def produce(partition: int) -> tuple[int, int]:
            records = build_records([b"x"], producer_id=pid, producer_epoch=epoch, base_sequence=sequence[partition], transactional=True)
            body = conn.request(ApiKey.PRODUCE, 11, {"transactional_id": tid, "acks": -1, "timeout_ms": 5000,
                                                     "topic_data": [{"name": unique_topic, "partition_data": [{"index": partition, "records": records}]}]})
            result = body["responses"][0]["partition_responses"][0]
            if result["error_code"] == 0:
                sequence[partition] += 1
            return result["error_code"], result["base_offset"]

        def add(partition: int) -> None:
            added = conn.request(ApiKey.ADD_PARTITIONS_TO_TXN, 3, {"v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid, "v3_and_below_producer_epoch": epoch,
                                                                   "v3_and_below_topics": [{"name": unique_topic, "partitions": [partition]}]})
            assert added["results_by_topic_v3_and_below"][0]["results_by_partition"][0]["partition_error_code"] == 0, added

        assert produce(0)[0] == ErrorCode.INVALID_TXN_STATE  # no transaction yet
        add(0)
        assert produce(0) == (ErrorCode.NONE, 0)
        assert produce(1)[0] == ErrorCode.INVALID_TXN_STATE  # partition 1 was not added
        ended = conn.request(ApiKey.END_TXN, 3, {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": True})
        assert ended["error_code"] == 0, ended
        assert produce(0)[0] == ErrorCode.INVALID_TXN_STATE  # after EndTxn: a late write is refused
        ends = conn.request(ApiKey.LIST_OFFSETS, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": unique_topic, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": -1} for p in (0, 1)]}]})
    offsets = {p["partition_index"]: p["offset"] for p in ends["topics"][0]["partitions"]}
    assert offsets == {0: 2, 1: 0}  # one record and its COMMIT marker; nothing in partition 1
