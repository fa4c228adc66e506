"""What an SRE scrapes and greps: /metrics carries link and task state, offset-sync counters, build info
and process metrics; `linkd --version`; every admin action is logged at INFO with who asked."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from linkd import __version__
from tests.link.mirroring import admin, create_link, produce_confluent, wait_mirrored

pytestmark = pytest.mark.timeout(60)


def test_version_flag_prints_the_version():
    done = subprocess.run([sys.executable, "-m", "linkd", "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == f"linkd {__version__}"


def test_metrics_carry_link_and_task_state_build_info_and_process_metrics(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"x%d" % i) for i in range(10)])
    client = admin(linkd)
    create_link(client, "l", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "l")
    wait_mirrored(client, unique_topic, {0: 10})

    text = httpx.get(f"{linkd.admin_url}/metrics", timeout=10).text

    assert f'linkd_build_info{{version="{__version__}"}} 1.0' in text
    assert 'linkd_link_state{link="l",state="ACTIVE"} 1.0' in text
    assert 'linkd_link_state{link="l",state="UNAVAILABLE"} 0.0' in text
    assert 'linkd_link_task_state{link="l",state="NOT_CONFIGURED",task="ConsumerOffsetSync"} 1.0' in text
    assert 'linkd_offset_sync_runs_total{link="l"} 0.0' in text
    assert f'linkd_mirror_partition_last_fetch_timestamp_seconds{{link="l",partition="0",topic="{unique_topic}"}}' in text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info"):
        assert f"\n{name}" in text, name


def test_admin_actions_are_logged_with_the_peer_address(kafka_broker, linkd, unique_topic):
    kafka_broker.create_topic(unique_topic, 1)
    client = admin(linkd)
    create_link(client, "audited", kafka_broker.bootstrap)
    client.create_mirror(unique_topic, "audited")
    for action in ("pause", "resume", "failover"):
        client.mirror_action(action, [unique_topic])
    client.delete_link("audited")

    logged = [line for line in linkd.log_path.read_text().splitlines() if " INFO linkd.admin.api: admin API 127.0.0.1:" in line]
    assert any("create link audited" in line for line in logged), logged
    for action in ("pause", "resume", "failover"):
        assert any(f"{action} mirror topic(s) {unique_topic}" in line for line in logged), action
        assert any(f"{action} {unique_topic}: " in line for line in logged), action
    assert any("delete link audited" in line for line in logged)
