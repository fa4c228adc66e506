"""Restart on a full disk: the daemon starts, serves what is stored, refuses Produce with a retriable
KAFKA_STORAGE_ERROR and accepts it again once space returns.

The data directory lives on a 16 MiB tmpfs this test mounts (root only; skipped otherwise), filled to 0 bytes
free by a filler file after an unclean stop, so recovery's index rebuild and checkpoints (after SIGKILL) or the control store's new WAL (after a clean
stop) hit a real ENOSPC.
"""

from __future__ import annotations

import os

import pytest
from confluent_kafka import TopicPartition

from protocol.errors import ErrorCode
from protocol.messages import ApiKey
from protocol.records import build_records
from tests.broker.clients import consumer, create_topic, drain, produce, record
from tests.broker.wire import ConnectionClosed, WireConnection, produce_request
from tests.peers.linkd import LinkdProcess
from tests.smallfs import fill, small_tmpfs

COUNT = 300



def _read(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    c = consumer(bootstrap)
    c.assign([TopicPartition(topic, 0, 0)])
    msgs = drain([c], expected, timeout=15)[0]
    c.close()
    return [m.key() for m in msgs]


@pytest.fixture
def small_fs():
    with small_tmpfs("16m", prefix="linkd-fulldisk-") as mount:
        yield mount


@pytest.mark.timeout(40)
@pytest.mark.parametrize("how", ["sigkill", "graceful"])
def test_restart_on_a_full_disk_serves_what_is_stored_and_writes_resume_when_space_returns(small_fs, unique_topic, how):
    mount = small_fs
    daemon = LinkdProcess(data_dir=mount / "data", start_timeout=15)
    try:
        daemon.start()
        create_topic(daemon.bootstrap, unique_topic, partitions=1)
        batch = [record(i) for i in range(COUNT)]
        produce(daemon.bootstrap, unique_topic, batch, acks="all")
        if how == "sigkill":
            daemon.kill()  # unclean: the restart must rebuild indexes and rewrite checkpoints
        else:
            assert daemon.stop() == 0  # clean: SQLite removed control.db's WAL, which must be created again

        filler = mount / "filler"
        fill(filler)
        assert os.statvfs(mount).f_bavail == 0

        daemon.start()
        # Opening the data dir removes Kafka's log-directory checkpoints (written at the clean close), which
        # frees a few blocks: fill them too, so the writes below meet a full disk again.
        fill(mount / "filler-after-start")
        assert os.statvfs(mount).f_bavail == 0
        log_text = daemon.log_path.read_text()
        if how == "sigkill":
            # Recovery writes little now (rebuilt indexes in the pages their truncation freed, the recovery
            # point; no producer snapshot, an unchanged epoch file not at all): the full disk may not refuse
            # any of it. When it does, the error names the file system and its free bytes.
            refusal = [line for line in log_text.splitlines() if "ERROR" in line and "recovery could not write" in line]
            if refusal:
                assert "No space left on device" in refusal[-1] and str(mount / "data" / "logs") in refusal[-1], daemon.logs()
        else:
            refusal = [line for line in log_text.splitlines() if "ERROR" in line and "write-ahead log" in line]
            assert refusal and str(mount / "data" / "control.db") in refusal[-1], daemon.logs()
        assert not refusal or "0 bytes free" in refusal[-1], daemon.logs()
        assert _read(daemon.bootstrap, unique_topic, COUNT) == [r.key for r in batch]

        with WireConnection(daemon.bootstrap) as conn:
            refused = produce_request(conn, unique_topic, 0, build_records([b"while-full"]))
        assert refused["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR, refused

        if how == "graceful":
            # A control-store write (a new producer id) cannot commit: refused, and the daemon keeps serving.
            with WireConnection(daemon.bootstrap) as conn:
                try:
                    body = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60_000, "producer_id": -1, "producer_epoch": -1})
                except ConnectionClosed as exc:
                    body = {"closed": repr(exc)}
            assert body.get("error_code", -1) != 0, body
            assert daemon.running and "control store is read-only" in daemon.log_path.read_text(), daemon.logs()
        filler.unlink()
        more = [record(i, "after") for i in range(20)]
        acks = produce(daemon.bootstrap, unique_topic, more, acks="all", timeout=15)
        # After a clean stop the refused batch may still have landed in the segment's last page (tmpfs
        # had room there) with only the acks=all flush failing, as on Kafka; after SIGKILL it never lands.
        first = acks[0][1]
        assert first == COUNT or (how == "graceful" and first == COUNT + 1)
        assert [o for _, o in acks] == list(range(first, first + 20))
        keys = _read(daemon.bootstrap, unique_topic, first + 20)
        assert keys[:COUNT] == [r.key for r in batch] and keys[first:] == [r.key for r in more]
    finally:
        daemon.close()
