"""compose.yaml and the Dockerfile, checked without a container runtime (none works on these machines):
parsed, then held to what a platform team needs — non-root, a health check that really probes linkd,
a data volume, two SASL_SSL listeners advertised right for host and in-network clients, a certificate
and a SCRAM user made by a one-shot init service from a compose secret (no password in the file), no open
admin API, and LINKD_* settings that `linkd serve` really accepts. The init script and the compose
settings also run for real here, against a real linkd and confluent-kafka over SASL_SSL."""

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


# Variables compose sets for the CLI run with `docker compose exec`, not for `linkd serve`.
CLI_VARIABLES = {"LINKD_ADMIN_USER"}


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
    # No PLAINTEXT listener: nothing in the demo connects to linkd without credentials.
    assert set(protocols.values()) == {"SASL_SSL"}, protocols
    # The admin API is neither published nor bound beyond loopback.
    admin_port = int(env["LINKD_ADMIN"].rsplit(":", 1)[1])
    assert env["LINKD_ADMIN"].startswith("127.0.0.1:") and admin_port not in published
    # The data dir is a named volume.
    volumes = [str(v).split(":")[:2] for v in linkd["volumes"]]
    assert [name for name, path in volumes if path == env["LINKD_DATA_DIR"]] == ["linkd-data"]
    assert "linkd-data" in compose()["volumes"]
    # The source Kafka the same way, so the demo reaches it from both sides.
    kafka = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert "INTERNAL://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"] and "HOST://localhost:19092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["ports"] == ["127.0.0.1:19092:19092"]


@pytest.mark.timeout(60)
def test_compose_settings_are_accepted_by_linkd_serve():
    env = {k: str(v) for k, v in compose()["services"]["linkd"]["environment"].items() if k not in CLI_VARIABLES}
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


def _linkd_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["linkd"]["environment"].items()}


def test_compose_secures_the_listeners_with_a_generated_certificate_and_scram():
    doc = compose()
    services = doc["services"]
    env = _linkd_env()
    # SCRAM-SHA-512 only, the certificate from the shared TLS volume, Kafka's ACL model with the admin as super user.
    assert env["LINKD_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["LINKD_SSL_KEYSTORE_TYPE"] == "PEM"
    init = services["linkd-init"]
    init_env = {k: str(v) for k, v in init["environment"].items()}
    tls_dir = init_env["LINKD_TLS_DIR"]
    assert env["LINKD_SSL_KEYSTORE_LOCATION"] == f"{tls_dir}/server-keystore.pem"
    assert env["LINKD_AUTHORIZER"] == "standard" and env["LINKD_SUPER_USERS"] == f"User:{env['LINKD_ADMIN_USER']}"
    # The init service writes the certificate and the user into the volumes linkd mounts, and runs first.
    mounts = lambda service: {path.split(":")[0]: name for name, path in (str(v).split(":", 1) for v in service["volumes"])}  # noqa: E731
    assert mounts(init)[tls_dir] == mounts(services["linkd"])[tls_dir] == "linkd-tls"
    assert mounts(init)[init_env["LINKD_DATA_DIR"]] == mounts(services["linkd"])[env["LINKD_DATA_DIR"]] == "linkd-data"
    assert "linkd-tls" in doc["volumes"]
    assert services["linkd"]["depends_on"]["linkd-init"]["condition"] == "service_completed_successfully"
    assert init["entrypoint"] == ["/opt/linkd/deploy/linkd-init.sh"]
    script = (ROOT / "deploy" / "linkd-init.sh").read_text()
    assert "openssl req -x509" in script and "linkd user add" in script and "--mechanism SCRAM-SHA-512" in script
    # The certificate names what clients are told: every advertised host is in the SAN list.
    san = set(init_env["LINKD_TLS_SAN"].split(","))
    for host, _ in _listeners(env["LINKD_ADVERTISED_LISTENER"]).values():
        assert f"DNS:{host}" in san or f"IP:{host}" in san, (host, san)
    # The image ships the script and openssl, and the TLS dir exists for the unprivileged user.
    instructions = dockerfile()
    assert any(ins == "COPY" and rest.split()[0] == "deploy" for ins, rest in instructions)
    assert any(ins == "RUN" and "install" in rest and "openssl" in rest for ins, rest in instructions)
    assert any(ins == "RUN" and tls_dir in rest and "chown" in rest for ins, rest in instructions)


def test_compose_has_no_inline_password_and_does_not_publish_the_admin_api():
    doc = compose()
    services = doc["services"]
    # The admin's password is a compose secret read from a file the operator creates (and git ignores).
    secret = doc["secrets"]["linkd_admin_password"]
    assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")
    assert "/secrets/" in (ROOT / ".gitignore").read_text().split()
    init_env = {k: str(v) for k, v in services["linkd-init"]["environment"].items()}
    assert services["linkd-init"]["secrets"] == ["linkd_admin_password"]
    assert init_env["LINKD_ADMIN_PASSWORD_FILE"] == "/run/secrets/linkd_admin_password"
    for name, service in services.items():
        for key, value in dict(service.get("environment", {})).items():
            assert not any(word in key.upper() for word in ("PASSWORD", "SECRET", "JAAS")) or key.endswith("_FILE"), f"{name}: {key} inline"
            assert "password=" not in str(value).lower(), f"{name}: {key}"
    text = (ROOT / "compose.yaml").read_text()
    assert "sasl.jaas.config" not in text
    # The admin API: loopback only, not published, authenticated against linkd's users.
    env = _linkd_env()
    admin_port = env["LINKD_ADMIN"].rsplit(":", 1)[1]
    assert env["LINKD_ADMIN"].startswith("127.0.0.1:") and env["LINKD_ADMIN_AUTH"] == "users"
    for service in services.values():
        for mapping in service.get("ports", []):
            assert str(mapping).rsplit(":", 1)[-1] != admin_port, mapping
    assert "expose" not in services["linkd"]


def _compose_env_here(tls: Path, data: Path, ports: dict[str, int], admin_port: int, ready: Path) -> dict[str, str]:
    """linkd's compose environment with the container's paths and ports replaced by this machine's."""
    env = _linkd_env()
    init_env = {k: str(v) for k, v in compose()["services"]["linkd-init"]["environment"].items()}
    out = {}
    for key, value in env.items():
        value = value.replace(init_env["LINKD_TLS_DIR"], str(tls)).replace(env["LINKD_DATA_DIR"], str(data))
        out[key] = value
    for key in ("LINKD_LISTENER", "LINKD_ADVERTISED_LISTENER"):
        items = []
        for name, (host, _port) in _listeners(env[key]).items():
            host = "127.0.0.1" if host in ("0.0.0.0", "linkd") else host  # the service name only resolves in compose
            items.append(f"{name}://{host}:{ports[name]}")
        out[key] = ",".join(items)
    out["LINKD_ADMIN"] = f"127.0.0.1:{admin_port}"
    out["LINKD_READY_FILE"] = str(ready)
    out["LINKD_LOG_FORMAT"] = "text"
    return out


@pytest.mark.timeout(180)
def test_the_compose_init_script_and_settings_work_with_confluent_kafka_over_sasl_ssl(tmp_path):
    """Without Docker: the init script the compose file runs, then `linkd serve` with the compose file's
    LINKD_* settings (paths and ports made local), then confluent-kafka over SASL_SSL SCRAM-SHA-512 trusting
    only the generated CA, the admin as super user, a wrong password refused, the admin API only with the
    admin's password."""
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.peers import free_port, port_accepts, spawn, terminate, wait_until

    password = "pw-" + os.urandom(8).hex()
    secret = tmp_path / "linkd-admin-password"
    secret.write_text(password + "\n")
    tls, data, ready = tmp_path / "tls", tmp_path / "data", tmp_path / "ready.json"
    init_env = {k: str(v) for k, v in compose()["services"]["linkd-init"]["environment"].items()}
    init_env.update(LINKD_TLS_DIR=str(tls), LINKD_DATA_DIR=str(data), LINKD_ADMIN_PASSWORD_FILE=str(secret))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINKD_")}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    script = str(ROOT / "deploy" / "linkd-init.sh")
    for _ in range(2):  # idempotent: the second run (a `docker compose up` after a restart) keeps the certificate
        done = subprocess.run(["sh", script], capture_output=True, text=True, timeout=60, env={**clean, **init_env})
        assert done.returncode == 0, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    assert (tls / "server-keystore.pem").exists() and (tls / "ca.pem").exists()
    missing = subprocess.run(["sh", script], capture_output=True, text=True, timeout=60, env={**clean, **init_env, "LINKD_ADMIN_PASSWORD_FILE": str(tmp_path / "none")})
    assert missing.returncode != 0 and "no admin password" in missing.stderr

    ports = {"INTERNAL": free_port(), "HOST": free_port()}
    env = _compose_env_here(tls, data, ports, free_port(), ready)
    log = tmp_path / "linkd.log"
    process = spawn([sys.executable, "-m", "linkd", "serve"], log, cwd=tmp_path, env={**clean, **env, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: ready.exists() and port_accepts(ports["HOST"]), 60, interval=0.1, what="linkd with the compose settings")
        base = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "ssl.ca.location": str(tls / "ca.pem")}
        admin_conf = {**base, "sasl.username": "admin", "sasl.password": password}
        topic = "compose-" + os.urandom(4).hex()
        for listener in ("HOST", "INTERNAL"):  # HOST advertises localhost, INTERNAL (here) 127.0.0.1: both in the SAN
            conf = {**admin_conf, "bootstrap.servers": f"127.0.0.1:{ports[listener]}"}
            name = f"{topic}-{listener.lower()}"
            client = AdminClient(conf)
            for future in client.create_topics([NewTopic(name, 1, 1)], request_timeout=20).values():
                future.result(30)
            producer = Producer(conf)
            for i in range(3):
                producer.produce(name, b"v%d" % i)
            assert producer.flush(30) == 0
            consumer = Consumer({**conf, "group.id": f"g-{name}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
            consumer.subscribe([name])
            got = []
            deadline = 60
            while len(got) < 3 and deadline:
                message = consumer.poll(1.0)
                deadline -= 1
                if message is not None and not message.error():
                    got.append(message.value())
            consumer.close()
            assert got == [b"v0", b"v1", b"v2"], (listener, got)
        # A wrong password fails authentication (librdkafka reports it through error_cb).
        errors = []
        wrong = Producer({**base, "sasl.username": "admin", "sasl.password": "not-it", "bootstrap.servers": f"127.0.0.1:{ports['HOST']}", "error_cb": errors.append})
        wait_until(lambda: wrong.poll(0.2) is not None and any(e.code() == KafkaError._AUTHENTICATION for e in errors), 30, what="an authentication error")
        assert "invalid credentials" in str(next(e for e in errors if e.code() == KafkaError._AUTHENTICATION))
        # The admin API: the CLI as compose's exec runs it, with and without the password.
        cli_env = {**clean, "LINKD_ADMIN": env["LINKD_ADMIN"], "LINKD_ADMIN_USER": _linkd_env()["LINKD_ADMIN_USER"]}
        ok = subprocess.run([sys.executable, "-m", "linkd", "link", "list", "--json"], capture_output=True, text=True, timeout=30, env={**cli_env, "LINKD_ADMIN_PASSWORD": password})
        assert ok.returncode == 0, ok.stderr
        no = subprocess.run([sys.executable, "-m", "linkd", "link", "list", "--json"], capture_output=True, text=True, timeout=30, env={**cli_env, "LINKD_ADMIN_PASSWORD": "not-it"})
        assert no.returncode != 0 and "authentication failed for user 'admin'" in no.stderr, no.stderr
        # The health check needs no credentials.
        rest = next(rest for ins, rest in dockerfile() if ins == "HEALTHCHECK")
        command = json.loads(rest[rest.index("CMD") + 3 :].strip())
        probe = [sys.executable, *[part.replace("127.0.0.1:8090", env["LINKD_ADMIN"]) for part in command[1:]]]
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
        assert password not in log.read_text()
    finally:
        terminate(process, 20)
