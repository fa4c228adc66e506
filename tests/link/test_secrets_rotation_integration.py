"""``linkd secrets rotate-key`` is offline: against a running daemon it refuses, names why, and changes
nothing (the daemon keeps the old key in memory; re-sealing under it would lock its own links)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from linkd.link.secrets import SecretsKey


def _linkd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "linkd", *args], capture_output=True, text=True, timeout=30)


def _stored(data_dir) -> dict:
    db = sqlite3.connect(data_dir / "control.db")
    try:
        return {name: json.loads(config) for name, config in db.execute("SELECT name, config FROM links")}
    finally:
        db.close()


@pytest.mark.timeout(90)
def test_rotating_the_key_while_the_daemon_runs_is_refused_and_changes_nothing(linkd_factory, tmp_path):
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    assert _linkd("secrets", "generate-key", str(old_key)).returncode == 0
    assert _linkd("secrets", "generate-key", str(new_key)).returncode == 0
    daemon = linkd_factory(extra_args=["--secrets-key-file", str(old_key)])
    password = "rotation-test-secret-0"
    props = tmp_path / "link.properties"
    props.write_text(
        "bootstrap.servers=127.0.0.1:9\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        f'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="{password}";\n'
    )
    created = daemon.cli("link", "create", "sealed", "--config-file", str(props), "--no-validate")
    assert created.returncode == 0, created.stderr
    before = _stored(daemon.data_dir)
    assert before["sealed"]["key_id"] == SecretsKey.from_file(str(old_key)).key_id

    rotated = _linkd("secrets", "rotate-key", "--data-dir", str(daemon.data_dir), "--key-file", str(old_key), "--new-key-file", str(new_key))
    assert rotated.returncode != 0
    assert "a linkd daemon is running" in rotated.stderr and "stop it before rotating" in rotated.stderr, rotated.stderr
    assert password not in rotated.stderr + rotated.stdout
    assert _stored(daemon.data_dir) == before  # still sealed under the key the daemon holds
    assert daemon.cli("link", "describe", "sealed", "--json").returncode == 0
