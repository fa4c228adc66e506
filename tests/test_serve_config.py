"""`linkd serve` under a service manager: --config file, LINKD_* variables, flags over both, --print-config,
JSON logs, sd_notify over a real unix datagram socket, and the final "stopped cleanly" line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _linkd(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINKD_")}
    return subprocess.run([sys.executable, "-m", "linkd", *args], capture_output=True, text=True, timeout=timeout, env={**clean, **(env or {})})


def _printed(stdout: str) -> dict[str, tuple[str, str]]:
    """property -> (value, source comment) from --print-config."""
    out, source = {}, ""
    for line in stdout.splitlines():
        if line.startswith("# from "):
            source = line[len("# from ") :].split(" (flag", 1)[0]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = (value, source)
    return out


@pytest.mark.timeout(60)
def test_precedence_is_flags_then_env_then_file_then_defaults(tmp_path):
    config = tmp_path / "linkd.properties"
    config.write_text("# Kafka's names\nlog.dirs=/srv/from-file\nnode.id=3\nmax.connections=10\nlisteners=127.0.0.1:19092\nlog.retention.check.interval.ms=1000\n")
    result = _linkd("serve", "--config", str(config), "--max-connections", "30", "--print-config",
                    env={"LINKD_NODE_ID": "4", "LINKD_MAX_CONNECTIONS": "20", "LINKD_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    printed = _printed(result.stdout)
    assert printed["max.connections"] == ("30", "flag")
    assert printed["node.id"] == ("4", "env LINKD_NODE_ID")
    assert printed["log.level"] == ("warning", "env LINKD_LOG_LEVEL")
    assert printed["log.dirs"] == ("/srv/from-file", "file")
    assert printed["listeners"] == ("127.0.0.1:19092", "file")
    assert printed["log.retention.check.interval.ms"] == ("1000", "file")
    assert printed["log.format"] == ("text", "default")
    assert "secrets.key.file" in printed or "#secrets.key.file=" in result.stdout  # a path, shown
    # What --print-config prints is itself a usable --config file.
    again = tmp_path / "printed.properties"
    again.write_text(result.stdout)
    reread = _printed(_linkd("serve", "--print-config", env={"LINKD_CONFIG": str(again)}).stdout)
    assert {k: v for k, (v, _) in reread.items()} == {k: v for k, (v, _) in printed.items()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        ("no.such.setting=1\n", {}, "unknown key 'no.such.setting'"),
        ("num.io.threads=8\n", {}, "num.io.threads is a Kafka broker setting linkd does not support yet"),
        ("node.id=one\n", {}, "key node.id: invalid value 'one'"),
        ("", {"LINKD_NODE_ID": "x"}, "environment variable LINKD_NODE_ID: invalid value 'x'"),
        ("", {"LINKD_LOG_LEVEL": "loud"}, "LINKD_LOG_LEVEL: 'loud' is not one of"),
        ("node.id=1\nbroker.id=2\n", {}, "a second time"),
    ],
)
def test_bad_settings_are_refused_naming_them(tmp_path, content, env, expected):
    config = tmp_path / "linkd.properties"
    config.write_text(content)
    result = _linkd("serve", "--config", str(config), "--print-config", env=env)
    assert result.returncode == 2, result.stdout
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.timeout(90)
def test_daemon_from_a_config_file_notifies_systemd_and_logs_json(tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(notify_path)
    manager.settimeout(30)
    ready_file = tmp_path / "ready.json"
    config = tmp_path / "linkd.properties"
    config.write_text(f"listeners=127.0.0.1:0\nadmin=127.0.0.1:0\nlog.dirs={tmp_path / 'data'}\nnode.id=7\nready.file={ready_file}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINKD_")}
    log_path = tmp_path / "linkd.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "linkd", "serve", "--config", str(config), "--log-level", "INFO"], stdout=log, stderr=log,
                                   env={**clean, "NOTIFY_SOCKET": notify_path, "LINKD_LOG_FORMAT": "json"})
    try:
        message = manager.recv(4096).decode()
        assert "READY=1" in message.splitlines(), message
        admin_port = json.loads(ready_file.read_text())["admin_port"]
        readiness = httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=10)
        assert readiness.status_code == 200 and readiness.json()["ready"] is True
        process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in manager.recv(4096).decode().splitlines()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        manager.close()
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("linkd node 7 ready") for r in records)
    assert records[-1]["message"] == "linkd node 7 stopped cleanly", records[-3:]
    assert str(tmp_path / "data") in next(r["message"] for r in records if "ready" in r["message"])


@pytest.mark.timeout(30)
def test_abstract_notify_socket_names_work():
    from linkd import sdnotify

    name = f"linkd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(5)
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = "@" + name
        try:
            assert sdnotify.notify("READY=1", "STATUS=testing")
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
        assert manager.recv(100) == b"READY=1\nSTATUS=testing"


def test_secret_settings_are_hidden_and_repeatable_ones_split():
    """The mechanism over any serve parser: flags another module adds work through env and file too."""
    import argparse

    from linkd.serveconfig import apply_layers, render

    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--ssl-keystore-password")
    parser.add_argument("--listener", action="append")
    parser.add_argument("--allow-everyone", action="store_true")
    parser.add_argument("--config")
    args = parser.parse_args([])
    env = {"LINKD_SSL_KEYSTORE_PASSWORD": "hunter2", "LINKD_LISTENER": "A://h:1, B://h:2", "LINKD_ALLOW_EVERYONE": "TRUE"}
    sources = apply_layers(parser, [], args, environ=env)
    assert args.listener == ["A://h:1", "B://h:2"] and args.allow_everyone is True and args.ssl_keystore_password == "hunter2"
    shown = render(parser, args, sources)
    assert "hunter2" not in shown and "ssl.keystore.password=********" in shown
    assert "listeners=A://h:1,B://h:2" in shown and "allow.everyone=true" in shown
