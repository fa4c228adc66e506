"""One daemon per data dir: a second ``linkd serve`` on a live data dir exits at once, naming the holder,
and leaves the running daemon (and its partitions' files) alone; the lock dies with a SIGKILLed holder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.broker.clients import create_topic, produce, record
from tests.peers.linkd import LinkdProcess

pytestmark = pytest.mark.timeout(90)


def _second_serve(data_dir, timeout: float = 20.0) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "linkd", "serve", "--data-dir", str(data_dir), "--listener", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _markers(data_dir) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("clean-shutdown"))


def test_a_second_daemon_on_a_live_data_dir_exits_and_the_first_keeps_serving(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=2)
    produce(linkd.bootstrap, unique_topic, [record(i) for i in range(100)], acks="all")
    assert _markers(linkd.data_dir) == []  # a running daemon holds no clean-shutdown markers

    second = _second_serve(linkd.data_dir)

    assert second.returncode != 0
    pid = linkd.process.pid
    assert f"data dir {linkd.data_dir} is in use by another linkd (pid {pid})" in second.stderr
    # The refused daemon opened nothing: no markers written into the live daemon's partitions ...
    assert _markers(linkd.data_dir) == []
    # ... and the first one serves on as before.
    assert linkd.running
    more = produce(linkd.bootstrap, unique_topic, [record(i) for i in range(100, 150)], acks="all")
    assert len(more) == 50
    assert linkd.cli("mirror", "list", "--json").returncode == 0


def test_a_restart_after_sigkill_takes_the_lock_without_cleanup(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic)
    produce(linkd.bootstrap, unique_topic, [record(i) for i in range(20)], acks="all")
    linkd.kill()
    assert (linkd.data_dir / ".lock").exists()  # left behind by the dead holder, as Kafka's is
    linkd.start()
    assert linkd.running
    # And the restarted daemon holds it again against a newcomer.
    second = _second_serve(linkd.data_dir)
    assert second.returncode != 0 and f"(pid {linkd.process.pid})" in second.stderr


def test_the_lock_is_released_on_a_graceful_stop(tmp_path):
    first = LinkdProcess(data_dir=tmp_path / "data").start()
    try:
        first.stop()
        again = LinkdProcess(data_dir=tmp_path / "data").start()
        again.close()
    finally:
        first.close()
