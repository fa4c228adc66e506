"""Links to a secured Apache Kafka: TLS, mTLS, SASL PLAIN/SCRAM over both transports, least-privilege ACLs,
typed authentication and authorization errors, re-authentication, and secrets that never show.

One ``SecuredKafkaBroker`` per module (see tests/peers/securekafka.py); the session's plain broker is not
touched. The link users hold only read-side ACLs on ``sec-ok-*`` topics and ``sec-*`` groups. The broker
sets ``connections.max.reauth.ms`` short, so every SASL connection of every test here re-authenticates.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.link.mirroring import FAST_LINK, admin, assert_bytes_identical, cli_json, produce_confluent, wait_for, wait_mirrored
from tests.peers import PeerUnavailable
from tests.peers.securekafka import LINK_USER, MTLS_CN, NOACL_USER, STORE_PASSWORD, SecuredKafkaBroker

pytestmark = pytest.mark.kafka

REAUTH_MS = 2000
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
OAUTH = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"


@pytest.fixture(scope="module")
def secured_kafka():
    from tests.conftest import peer_unavailable
    from tests.peers.kafka import ensure_kafka_libs

    try:
        ensure_kafka_libs()
        broker = SecuredKafkaBroker(extra_config={"connections.max.reauth.ms": str(REAUTH_MS)})
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    try:
        broker.start()
        for principal in (f"User:{LINK_USER}", f"User:CN={MTLS_CN}"):
            broker.grant_link_read(principal, "sec-ok-", "sec-")
        # Describe and DescribeConfigs (a mirror is created with its source's configs) but no Read.
        broker.grant(f"User:{LINK_USER}", "TOPIC", "sec-noread-", ("DESCRIBE", "DESCRIBE_CONFIGS"))
        broker.grant(f"User:{LINK_USER}", "TOPIC", "sec-noconfigs-", ("DESCRIBE", "READ"))
    except Exception:
        broker.close()
        raise
    yield broker
    broker.close()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "secrets.key"
    subprocess.run([sys.executable, "-m", "linkd", "secrets", "generate-key", str(path)], check=True, capture_output=True, timeout=30)
    return path


@pytest.fixture
def linkd(linkd_factory, key_file):
    """The daemon under test, with a secrets key (a link with secrets cannot be stored without one)."""
    return linkd_factory(extra_args=["--secrets-key-file", str(key_file)])


def topic_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def jaas(module: str, user: str, password: str) -> str:
    return f'{module} required username="{user}" password="{password}";'


def listener_configs(broker: SecuredKafkaBroker) -> dict[str, dict[str, str]]:
    """One link config per way in: each listener, each mechanism, each kind of trust/key material."""
    pki, pw = broker.pki, broker.password
    ca = str(pki.ca_pem)
    return {
        "ssl-pem": {"bootstrap.servers": broker.address("SSL"), "security.protocol": "SSL", "ssl.truststore.location": ca},
        "mtls-p12": {
            "bootstrap.servers": broker.address("MTLS"),
            "security.protocol": "SSL",
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(pki.truststore_p12),
            "ssl.truststore.password": STORE_PASSWORD,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(pki.client_p12),
            "ssl.keystore.password": STORE_PASSWORD,
        },
        "mtls-inline": {
            "bootstrap.servers": broker.address("MTLS"),
            "security.protocol": "SSL",
            "ssl.truststore.certificates": pki.ca_pem.read_text(),
            "ssl.keystore.certificate.chain": pki.client_cert_pem.read_text(),
            "ssl.keystore.key": pki.client_key_encrypted_pem.read_text(),
            "ssl.key.password": pki.client_key_password,
        },
        "plain": {"bootstrap.servers": broker.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": jaas(PLAIN, LINK_USER, pw)},
        "scram256": {"bootstrap.servers": broker.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256", "sasl.jaas.config": jaas(SCRAM, LINK_USER, pw)},
        "oauthbearer": {
            "bootstrap.servers": broker.address("SASL_PLAINTEXT"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.jaas.config": f'{OAUTH} required unsecuredLoginStringClaim_sub="{LINK_USER}";',
        },
        "ssl-plain": {
            "bootstrap.servers": broker.address("SASL_SSL"),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": jaas(PLAIN, LINK_USER, pw),
            "ssl.truststore.location": ca,
        },
        "ssl-scram512": {
            "bootstrap.servers": broker.address("SASL_SSL"),
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": jaas(SCRAM, LINK_USER, pw),
            "ssl.truststore.location": ca,
        },
    }


def write_properties(path, config: dict[str, str]):
    # Java .properties: newlines in PEM values as \n escapes, backslashes doubled.
    path.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n" for k, v in config.items()))
    return path


def cli_create_link(daemon, name: str, config: dict[str, str], tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """``linkd link create`` with the secrets in a properties file, as an operator would (never on argv)."""
    props = write_properties(tmp_path / f"{name}.properties", {**FAST_LINK, **config})
    return daemon.cli("link", "create", name, "--config-file", str(props), *extra, "--json", timeout=60)


def http_get(daemon, path: str) -> str:
    with urllib.request.urlopen(f"{daemon.admin_url}{path}", timeout=10) as response:
        return response.read().decode()


def secrets_of(config: dict[str, str]) -> list[str]:
    """The secret strings in a config: passwords, and the key material of inline PEM values."""
    out = []
    for key, value in config.items():
        if key == "sasl.jaas.config":
            out.extend(re.findall(r'password="([^"]+)"', value))
        elif key.endswith("password"):
            out.append(value)
        elif key == "ssl.keystore.key":
            out.append(value.splitlines()[1])  # a line of the encrypted key body
    return out


@pytest.mark.timeout(150)
def test_every_listener_and_mechanism_mirrors_byte_for_byte_and_secrets_never_show(secured_kafka, linkd_factory, key_file, tmp_path):
    daemon = linkd_factory(extra_args=["--secrets-key-file", str(key_file)])
    client = admin(daemon)
    configs = listener_configs(secured_kafka)
    topics = {}
    for name, config in configs.items():
        topic = topics[name] = secured_kafka.create_topic(topic_name("sec-ok-"), partitions=2)
        produce_confluent(secured_kafka.bootstrap, topic, [(n % 2, b"k%d" % n, b"%s-%d" % (name.encode(), n) * 30) for n in range(400)], **{"compression.type": "lz4"})
        result = cli_create_link(daemon, name, config, tmp_path)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        created = json.loads(result.stdout)
        assert created["link_state"] == "ACTIVE", created
        client.create_mirror(topic, name)
    for topic in topics.values():
        ends = {p: secured_kafka.list_offsets(topic, p)[1] for p in range(2)}
        wait_mirrored(client, topic, ends, timeout=60)
        for partition in range(2):
            assert_bytes_identical(secured_kafka.bootstrap, topic, daemon.bootstrap, topic, partition, 0, ends[partition])
    for name in configs:
        described = client.describe_link(name)
        assert described["link_error"] == "NO_ERROR", described
    for name in configs:  # an update stores the config again: its secrets must stay sealed
        updated = daemon.cli("link", "update", name, "--config", "consumer.offset.sync.ms=12345")
        assert updated.returncode == 0, updated.stderr

    # Secrets: hidden in every CLI and REST output and in metrics and logs; sealed in control.db.
    outputs = [
        daemon.cli("link", "list").stdout,
        daemon.cli("link", "list", "--json").stdout,
        *(daemon.cli("link", "describe", n).stdout + daemon.cli("link", "describe", n, "--json").stdout for n in configs),
        http_get(daemon, f"{client.cluster}/links"), http_get(daemon, f"{client.cluster}/links/mtls-inline"),
        http_get(daemon, "/metrics"),
        *(http_get(daemon, f"{client.cluster}/links/{n}/configs") for n in configs),
    ]
    hidden = {c["name"]: c["value"] for c in client.describe_link("mtls-inline")["configs"]}
    assert hidden["ssl.keystore.key"] == hidden["ssl.key.password"] == hidden["ssl.keystore.certificate.chain"] == "[hidden]"
    assert {c["name"]: c["value"] for c in client.describe_link("plain")["configs"]}["sasl.jaas.config"] == "[hidden]"
    daemon.stop()
    log = daemon.log_path.read_text()
    assert "re-authenticated" in log  # the broker's session lifetime was honoured (see the reauth test)
    stored = b"".join(p.read_bytes() for p in daemon.data_dir.glob("control.db*"))
    assert (daemon.data_dir / "control.db").stat().st_mode & 0o777 == 0o600
    for name, config in configs.items():
        for secret in secrets_of(config):
            for text in outputs + [log]:
                assert secret not in text, f"a secret of link {name} shows in an output"
            assert secret.encode() not in stored, f"a secret of link {name} is in control.db in plaintext"
    assert secured_kafka.password.encode() not in stored


@pytest.mark.timeout(120)
def test_bad_credentials_and_certificates_fail_link_create_with_typed_errors(secured_kafka, linkd, tmp_path):
    pki, pw = secured_kafka.pki, secured_kafka.password
    ca = str(pki.ca_pem)
    cases = {
        "wrong-password": (
            {"bootstrap.servers": secured_kafka.address("SASL_SSL"), "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.jaas.config": jaas(SCRAM, LINK_USER, "not-" + pw), "ssl.truststore.location": ca},
            "SASL_AUTHENTICATION_FAILED: .*invalid credentials with SASL mechanism SCRAM-SHA-256",
        ),
        "wrong-plain-password": (
            {"bootstrap.servers": secured_kafka.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": jaas(PLAIN, LINK_USER, "not-" + pw)},
            "SASL_AUTHENTICATION_FAILED: .*Invalid username or password",
        ),
        "untrusted": (
            {"bootstrap.servers": secured_kafka.address("SSL"), "security.protocol": "SSL", "ssl.truststore.location": str(pki.other_ca_pem)},
            "SSL_HANDSHAKE_FAILED: .*(self-signed|unable to get local issuer)",
        ),
        "expired": (
            {"bootstrap.servers": secured_kafka.address("EXPIRED"), "security.protocol": "SSL", "ssl.truststore.location": ca},
            "SSL_HANDSHAKE_FAILED: .*certificate has expired",
        ),
        "hostname-mismatch": (
            {"bootstrap.servers": secured_kafka.address("BADHOST"), "security.protocol": "SSL", "ssl.truststore.location": ca},
            "SSL_HANDSHAKE_FAILED: .*(mismatch|not valid for)",
        ),
        "no-client-certificate": (
            {"bootstrap.servers": secured_kafka.address("MTLS"), "security.protocol": "SSL", "ssl.truststore.location": ca},
            "SSL_HANDSHAKE_FAILED",
        ),
    }
    for name, (config, pattern) in cases.items():
        result = linkd.cli("link", "create", name, "--config-file", str(write_properties(tmp_path / f"{name}.properties", {**FAST_LINK, **config})))
        assert result.returncode != 0, name
        assert "refused authentication" in result.stderr and re.search(pattern, result.stderr), f"{name}: {result.stderr}"
        assert pw not in result.stderr
    # Turning the hostname check off (ssl.endpoint.identification.algorithm empty) lets the same listener in.
    config = {"bootstrap.servers": secured_kafka.address("BADHOST"), "security.protocol": "SSL", "ssl.truststore.location": ca, "ssl.endpoint.identification.algorithm": ""}
    result = linkd.cli("link", "create", "nohostcheck", "--config-file", str(write_properties(tmp_path / "nh.properties", {**FAST_LINK, **config})))
    assert result.returncode == 0, result.stderr
    assert cli_json(linkd, "link", "list") and not cli_json(linkd, "mirror", "list")


@pytest.mark.timeout(120)
def test_authentication_failure_is_a_typed_link_error_retried_with_backoff(secured_kafka, linkd, tmp_path, unique_topic):
    config = {
        "bootstrap.servers": secured_kafka.address("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": jaas(SCRAM, LINK_USER, "wrong-" + secured_kafka.password),
        "retry.backoff.ms": "200",
        "retry.backoff.max.ms": "2000",
    }
    props = write_properties(tmp_path / "bad.properties", {**FAST_LINK, **config})
    assert linkd.cli("link", "create", "bad", "--config-file", str(props), "--no-validate").returncode == 0
    described = wait_for(lambda: (d := cli_json(linkd, "link", "describe", "bad")) and d["link_error"] == "AUTHENTICATION_ERROR" and d, 20, "link error")
    assert described["link_state"] == "UNAVAILABLE"
    assert "SASL_AUTHENTICATION_FAILED" in described["link_error_message"] and "invalid credentials" in described["link_error_message"]
    assert 'linkd_link_error{error="AUTHENTICATION_ERROR",link="bad"} 1.0' in http_get(linkd, "/metrics")
    # A mirror cannot be created over it: nothing is fetched, nothing appended.
    result = linkd.cli("mirror", "create", "sec-ok-never", "--link", "bad")
    assert result.returncode != 0 and "SASL_AUTHENTICATION_FAILED" in result.stderr
    assert cli_json(linkd, "mirror", "list") == []
    # Back-off, not a crash loop: over 6 s a handful of attempts, and the daemon serves on.
    before = linkd.log_path.read_text().count("link bad: source unavailable")
    time.sleep(6)
    attempts = linkd.log_path.read_text().count("link bad: source unavailable") - before
    assert 1 <= attempts <= 12, attempts
    assert linkd.running and cli_json(linkd, "link", "describe", "bad")["link_error"] == "AUTHENTICATION_ERROR"


@pytest.mark.timeout(120)
def test_missing_acls_are_typed_errors_naming_the_operation(secured_kafka, linkd, tmp_path):
    pw = secured_kafka.password
    config = {"bootstrap.servers": secured_kafka.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256", "sasl.jaas.config": jaas(SCRAM, LINK_USER, pw)}
    assert cli_create_link(linkd, "acl", config, tmp_path).returncode == 0
    # No ACL at all on the topic: Describe is denied, so the mirror cannot even be created.
    hidden_topic = secured_kafka.create_topic(topic_name("sec-none-"))
    result = linkd.cli("mirror", "create", hidden_topic, "--link", "acl")
    assert result.returncode != 0 and "TOPIC_AUTHORIZATION_FAILED" in result.stderr, result.stderr
    # Describe and Read but no DescribeConfigs: the mirror is refused by name, since it would otherwise be
    # created with linkd's default retention rather than the source's.
    unconfigured = secured_kafka.create_topic(topic_name("sec-noconfigs-"))
    result = linkd.cli("mirror", "create", unconfigured, "--link", "acl")
    assert result.returncode != 0 and "DescribeConfigs" in result.stderr and "TOPIC_AUTHORIZATION_FAILED" in result.stderr, result.stderr
    assert all(m["mirror_topic_name"] != unconfigured for m in cli_json(linkd, "mirror", "list"))
    # Describe but no Read: the mirror exists and waits with the typed error; nothing is appended.
    topic = secured_kafka.create_topic(topic_name("sec-noread-"), partitions=2)
    produce_confluent(secured_kafka.bootstrap, topic, [(n % 2, None, b"r-%d" % n) for n in range(200)])
    admin(linkd).create_mirror(topic, "acl")
    described = wait_for(lambda: (d := cli_json(linkd, "mirror", "describe", topic)) and d["mirror_topic_error"] == "TOPIC_AUTHORIZATION_FAILED" and d, 20, "authorization error")
    assert described["mirror_status"] == "SOURCE_UNAVAILABLE"
    assert "Read" in described["mirror_topic_error_message"]
    assert all(p["mirror_log_end_offset"] == 0 for p in described["partitions"])
    # Granting Read is all it takes: the mirror catches up by itself.
    secured_kafka.grant(f"User:{LINK_USER}", "TOPIC", topic, ("READ",), prefixed=False)
    ends = {p: secured_kafka.list_offsets(topic, p)[1] for p in range(2)}
    wait_mirrored(admin(linkd), topic, ends, timeout=40)
    assert cli_json(linkd, "mirror", "describe", topic)["mirror_topic_error"] == "NO_ERROR"
    # A user that authenticates but holds no ACLs sees the same typed refusal.
    noacl = {**config, "sasl.jaas.config": jaas(SCRAM, NOACL_USER, pw)}
    assert cli_create_link(linkd, "noacl", noacl, tmp_path).returncode == 0
    okay_topic = secured_kafka.create_topic(topic_name("sec-ok-"))
    result = linkd.cli("mirror", "create", okay_topic, "--link", "noacl")
    assert result.returncode != 0 and "TOPIC_AUTHORIZATION_FAILED" in result.stderr


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "OAUTHBEARER"])
def test_fetch_connection_reauthenticates_through_a_long_catch_up(secured_kafka, linkd, tmp_path, mechanism):
    """The broker ends SASL sessions after REAUTH_MS; a catch-up several times longer runs on one fetch
    connection that re-authenticates (KIP-368) instead of being cut off and reconnecting. OAUTHBEARER's
    token lives 2 s, so each re-authentication must bring a fresh one (an expired token is refused)."""
    jaas_config = (
        jaas(SCRAM, LINK_USER, secured_kafka.password) if mechanism.startswith("SCRAM")
        else f'{OAUTH} required unsecuredLoginStringClaim_sub="{LINK_USER}" unsecuredLoginLifetimeSeconds="2";'
    )
    config = {
        "bootstrap.servers": secured_kafka.address("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.jaas.config": jaas_config,
        "ssl.truststore.location": str(secured_kafka.pki.ca_pem),
        # Small fetches stretch the catch-up over many seconds of one connection.
        "replica.fetch.max.bytes": "1024",
        "replica.fetch.response.max.bytes": "1024",
    }
    topic = secured_kafka.create_topic(topic_name("sec-ok-"))
    small_batches = {"batch.size": 2048, "linger.ms": 0}
    produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"x%d" % n * 20) for n in range(3000)], **small_batches)
    assert cli_create_link(linkd, "reauth", config, tmp_path).returncode == 0
    started = time.monotonic()
    admin(linkd).create_mirror(topic, "reauth")
    # The source keeps growing for several session lifetimes while the link is still behind.
    while time.monotonic() - started < 3 * REAUTH_MS / 1000:
        produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"y%d" % n * 20) for n in range(500)], **small_batches)
        time.sleep(0.3)
    end = secured_kafka.list_offsets(topic, 0)[1]
    wait_mirrored(admin(linkd), topic, {0: end}, timeout=100)
    took = time.monotonic() - started
    assert_bytes_identical(secured_kafka.bootstrap, topic, linkd.bootstrap, topic, 0, 0, end)
    log = linkd.log_path.read_text()
    assert took > 2 * REAUTH_MS / 1000, f"catch-up took only {took:.1f}s; the test needs it longer than the session lifetime"
    assert log.count("re-authenticated with") >= 2, log[-3000:]
    assert " WARNING " not in log and " ERROR " not in log, log[-3000:]  # no connection cut, no reconnect


@pytest.mark.timeout(150)
def test_links_whose_secrets_cannot_be_read_stay_stopped_and_the_key_rotates(secured_kafka, linkd_factory, key_file, tmp_path):
    daemon = linkd_factory(extra_args=["--secrets-key-file", str(key_file)])
    secured = listener_configs(secured_kafka)["ssl-scram512"]
    assert cli_create_link(daemon, "secured", secured, tmp_path).returncode == 0
    assert cli_create_link(daemon, "open", {"bootstrap.servers": secured_kafka.bootstrap}, tmp_path).returncode == 0
    # Without a key no new link with secrets can be stored (it would be plaintext).
    daemon.stop()
    daemon.extra_args = []
    daemon.start()
    locked = cli_json(daemon, "link", "describe", "secured")
    assert locked["link_state"] == "FAILED" and locked["link_error"] == "SECRETS_UNAVAILABLE"
    assert "--secrets-key-file" in locked["link_error_message"]
    assert {c["name"]: c["value"] for c in locked["configs"]}["sasl.jaas.config"] == "[hidden]"
    assert "secrets" in daemon.cli("mirror", "create", topic_name("sec-ok-"), "--link", "secured").stderr
    result = cli_create_link(daemon, "another", secured, tmp_path)
    assert result.returncode != 0 and "--secrets-key-file" in result.stderr
    # ... while the link without secrets mirrors as ever.
    topic = secured_kafka.create_topic(topic_name("sec-open-"))
    produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"v%d" % n) for n in range(100)])
    admin(daemon).create_mirror(topic, "open")
    wait_mirrored(admin(daemon), topic, {0: 100}, timeout=30)
    # Rotate offline; the old key no longer opens the link, the new one does.
    daemon.stop()
    new_key = tmp_path / "new.key"
    subprocess.run([sys.executable, "-m", "linkd", "secrets", "generate-key", str(new_key)], check=True, capture_output=True, timeout=30)
    rotated = subprocess.run(
        [sys.executable, "-m", "linkd", "secrets", "rotate-key", "--data-dir", str(daemon.data_dir), "--key-file", str(key_file), "--new-key-file", str(new_key)],
        capture_output=True, text=True, timeout=30,
    )
    assert rotated.returncode == 0 and "2 link(s)" in rotated.stdout, rotated.stderr
    daemon.extra_args = ["--secrets-key-file", str(key_file)]
    daemon.start()
    assert "another secrets key" in cli_json(daemon, "link", "describe", "secured")["link_error_message"]
    daemon.stop()
    daemon.extra_args = ["--secrets-key-file", str(new_key)]
    daemon.start()
    topic2 = secured_kafka.create_topic(topic_name("sec-ok-"))
    produce_confluent(secured_kafka.bootstrap, topic2, [(0, None, b"w%d" % n) for n in range(100)])
    admin(daemon).create_mirror(topic2, "secured")
    wait_mirrored(admin(daemon), topic2, {0: 100}, timeout=30)
    assert cli_json(daemon, "link", "describe", "secured")["link_state"] == "ACTIVE"


@pytest.mark.timeout(150)
def test_oauthbearer_tokens_from_a_token_endpoint_are_refreshed_before_they_expire(secured_kafka, linkd, tmp_path):
    """Client credentials against a local authorization server whose RS256 tokens the broker checks
    against its JWKS. Tokens live 6 s: a mirror that runs for longer needs fresh ones."""
    from tests.peers.securekafka import OAUTH_CLIENT_ID

    tokens = secured_kafka.token_server
    config = {
        "bootstrap.servers": secured_kafka.address("OAUTH"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.login.callback.handler.class": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler",
        "sasl.oauthbearer.token.endpoint.url": f"{tokens.url}/token",
        "sasl.jaas.config": f'{OAUTH} required clientId="{OAUTH_CLIENT_ID}" clientSecret="{secured_kafka.oauth_secret}" scope="kafka";',
    }
    wrong = {**config, "sasl.jaas.config": f'{OAUTH} required clientId="{OAUTH_CLIENT_ID}" clientSecret="not-the-secret";'}
    result = cli_create_link(linkd, "wrong-secret", wrong, tmp_path)
    assert result.returncode != 0 and "answered HTTP 401" in result.stderr, result.stderr
    tokens.lifetime_s = 6  # refreshed after 4.8 s, so a re-authentication always has >= 1.2 s of token left
    issued_before = tokens.issued
    topic = secured_kafka.create_topic(topic_name("sec-ok-"))
    produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"o%d" % n * 20) for n in range(2000)])
    assert cli_create_link(linkd, "oauth", config, tmp_path).returncode == 0
    started = time.monotonic()
    admin(linkd).create_mirror(topic, "oauth")
    while time.monotonic() - started < 11:
        produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"p%d" % n * 20) for n in range(300)])
        time.sleep(0.5)
    end = secured_kafka.list_offsets(topic, 0)[1]
    wait_mirrored(admin(linkd), topic, {0: end}, timeout=60)
    assert_bytes_identical(secured_kafka.bootstrap, topic, linkd.bootstrap, topic, 0, 0, end)
    # One for link create's check, then the link's own: 11 s of 6 s tokens refreshed at 80% takes 3.
    assert tokens.issued - issued_before >= 3, tokens.issued - issued_before
    linkd.stop()
    log = linkd.log_path.read_text()
    assert " WARNING " not in log.split("wrong-secret")[-1] and "re-authenticated with" in log
    assert secured_kafka.oauth_secret not in log + result.stderr


@pytest.mark.timeout(120)
def test_consumer_offsets_sync_over_sasl_ssl_with_read_side_acls_only(secured_kafka, linkd, tmp_path):
    """Offset sync lists groups, finds coordinators and fetches offsets with only Describe/Read on the
    groups: a group in the ACL'd prefix is synced; one outside it is a typed GROUP_AUTHORIZATION_FAILED
    that costs that group only."""
    from confluent_kafka import Consumer, TopicPartition

    def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3})
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        finally:
            consumer.close()

    def committed(group: str, topic: str) -> int:
        consumer = Consumer({"bootstrap.servers": linkd.bootstrap, "group.id": group, "log_level": 3})
        try:
            return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        finally:
            consumer.close()

    topic = secured_kafka.create_topic(topic_name("sec-ok-"))
    produce_confluent(secured_kafka.bootstrap, topic, [(0, None, b"g%d" % n) for n in range(100)])
    allowed, hidden = f"sec-g-{uuid.uuid4().hex[:6]}", f"other-g-{uuid.uuid4().hex[:6]}"
    commit(secured_kafka.bootstrap, allowed, topic, 60)
    commit(secured_kafka.bootstrap, hidden, topic, 61)
    config = {
        **listener_configs(secured_kafka)["ssl-scram512"],
        "consumer.offset.sync.enable": "true",
        "consumer.offset.sync.ms": "300",
        "consumer.offset.group.filters": '{"groupFilters": [{"name": "*", "patternType": "LITERAL", "filterType": "INCLUDE"}]}',
    }
    assert cli_create_link(linkd, "offsets", config, tmp_path).returncode == 0
    admin(linkd).create_mirror(topic, "offsets")
    wait_mirrored(admin(linkd), topic, {0: 100}, timeout=30)
    try:
        wait_for(lambda: committed(allowed, topic) == 60, 30, "the group the link may read is synced")
    except AssertionError:
        raise AssertionError(f"not synced; offset sync status {cli_json(linkd, 'link', 'describe', 'offsets')['consumer_offset_sync']}") from None
    status = cli_json(linkd, "link", "describe", "offsets")["consumer_offset_sync"]
    assert status["groups_synced"] >= 1, status
    # The link may list every group (Describe on the cluster) but read only its own: the others are named.
    assert status["last_error"].startswith("GROUP_AUTHORIZATION_FAILED") and hidden in status["last_error"], status
    [task] = [t for t in cli_json(linkd, "link", "describe", "offsets")["tasks"] if t["task_name"] == "ConsumerOffsetSync"]
    assert task["state"] == "IN_ERROR" and task["last_error_code"] == 30 and task["last_error_ms"] >= task["last_success_ms"] - 1000, task
    assert committed(hidden, topic) < 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [0, 1, 2])
def test_every_sasl_authenticate_version_logs_in(secured_kafka, monkeypatch, version):
    """SaslHandshake v1 then SaslAuthenticate at each version the Java client may send; only v1+ carry
    the session lifetime that schedules re-authentication."""
    import trio

    from linkd.link import client as client_module
    from linkd.link.config import validate
    from linkd.link.security import SecuritySettings
    from protocol.messages import ApiKey

    monkeypatch.setitem(client_module.PREFERRED_MAX, ApiKey.SASL_AUTHENTICATE, version)
    security = SecuritySettings.from_config(validate(listener_configs(secured_kafka)["ssl-scram512"]))
    host, port = secured_kafka.address("SASL_SSL").rsplit(":", 1)

    async def login() -> tuple[bool, list[str]]:
        conn = await client_module.Connection.open(host, int(port), "version-test", security=security)
        try:
            assert conn.version_for(ApiKey.SASL_AUTHENTICATE) == version
            body = await conn.request(ApiKey.METADATA, {"topics": None, "allow_auto_topic_creation": False})
            return conn._reauth_at is not None, [b["host"] for b in body["brokers"]]
        finally:
            await conn.aclose()

    scheduled, brokers = trio.run(login)
    assert brokers == ["127.0.0.1"]
    assert scheduled == (version >= 1)
