"""/metrics counts refused TLS handshakes and SASL exchanges on secured listeners, over real sockets:
garbage sent to an SSL listener, and confluent-kafka logging in with a wrong password."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.link.mirroring import wait_for
from tests.peers import LOOPBACK
from tests.peers.securekafka import STORE_PASSWORD, make_pki


def _counter(daemon, name: str) -> float:
    text = httpx.get(daemon.admin_url + "/metrics", timeout=10).text
    found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    assert found, f"{name}_total not in /metrics"
    return float(found.group(1))


@pytest.mark.timeout(120)
def test_tls_handshake_failures_and_refused_sasl_logins_are_counted(linkd_factory, tmp_path):
    pki = make_pki(tmp_path / "pki")
    data = tmp_path / "data"
    data.mkdir()
    added = subprocess.run([sys.executable, "-m", "linkd", "user", "add", "alice", "--data-dir", str(data)], input="alice-secret\n",
                           capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    daemon = linkd_factory(data_dir=data, extra_args=[
        "--listener", f"SSL://{LOOPBACK}:0", "--listener", f"SASL_PLAINTEXT://{LOOPBACK}:0",
        "--listener-config", f"ssl.keystore.location={pki.server_p12}", "--listener-config", f"ssl.keystore.password={STORE_PASSWORD}"])
    assert _counter(daemon, "linkd_tls_handshake_failures") == 0
    assert _counter(daemon, "linkd_authentication_failures") == 0

    host, port = daemon.address("SSL").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as plain:  # not a TLS ClientHello
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        while plain.recv(4096):
            pass
    wait_for(lambda: _counter(daemon, "linkd_tls_handshake_failures") == 1, timeout=10, what="the failed handshake counted")

    client = AdminClient({"bootstrap.servers": daemon.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
                          "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": "wrong"})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    wait_for(lambda: _counter(daemon, "linkd_authentication_failures") >= 1, timeout=10, what="the refused login counted")
    assert _counter(daemon, "linkd_tls_handshake_failures") == 1
