"""Secured listeners with real clients on real sockets: TLS (PKCS12 and PEM keystores), mTLS, SASL PLAIN and
SCRAM-SHA-256/512 over SASL_PLAINTEXT and SASL_SSL, KIP-368 session expiry, and SCRAM users managed with
``linkd user`` and Kafka's own ``kafka-configs`` (ConfigCommand).

One daemon for the module, with one listener per case (names as a Kafka operator would write them):

    PLAINTEXT       the test's own door (topics, kafka-configs)
    SSL             TLS, PKCS12 keystore, no client certificate
    MTLS            TLS, PEM keystore, ssl.client.auth=required against the test CA
    SASL_PLAINTEXT  PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    SASL_SSL        the same over TLS
    REAUTH          SASL_PLAINTEXT with connections.max.reauth.ms=1500
    OAUTH           SASL_PLAINTEXT OAUTHBEARER, Kafka's unsecured validator requiring scope "kafka"
    REQUESTED       TLS, ssl.client.auth=requested: a certificate is checked if sent
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from linkd.link.sasl import ScramClient
from protocol.messages import ApiKey
from tests.broker.clients import create_topic, produce, record
from tests.broker.wire import ConnectionClosed, WireConnection
from tests.peers import LOOPBACK
from tests.peers.linkd import LinkdProcess
from tests.peers.securekafka import MTLS_CN, STORE_PASSWORD, make_pki

USER = "alice"
PASSWORD = "alice-" + secrets.token_hex(6)
REAUTH_MS = 1500
COUNT = 40


def _pem_keystore(pki, path: Path) -> Path:
    """The server's certificate and key as one PEM file (Kafka's ssl.keystore.type=PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    store = pkcs12.load_pkcs12(pki.server_p12.read_bytes(), STORE_PASSWORD.encode())
    pem = serialization.Encoding.PEM
    path.write_bytes(
        store.cert.certificate.public_bytes(pem)
        + store.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    work = tmp_path_factory.mktemp("secured-linkd")
    pki = make_pki(work / "pki")
    data = work / "data"
    data.mkdir()
    added = subprocess.run([sys.executable, "-m", "linkd", "user", "add", USER, "--data-dir", str(data)], input=PASSWORD + "\n", capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    props = work / "listeners.properties"
    props.write_text(
        f"ssl.keystore.location={pki.server_p12}\n"
        f"ssl.keystore.password={STORE_PASSWORD}\n"
        "listener.name.mtls.ssl.keystore.type=PEM\n"
        f"listener.name.mtls.ssl.keystore.location={_pem_keystore(pki, work / 'server.pem')}\n"
        "listener.name.mtls.ssl.client.auth=required\n"
        f"listener.name.mtls.ssl.truststore.location={pki.ca_pem}\n"
        f"listener.name.reauth.connections.max.reauth.ms={REAUTH_MS}\n"
        "listener.name.requested.ssl.client.auth=requested\n"
        f"listener.name.requested.ssl.truststore.location={pki.ca_pem}\n"
        "listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER\n"
        "listener.name.oauth.connections.max.reauth.ms=60000\n"
        'listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredValidatorRequiredScope="kafka";\n'
    )
    listeners = [f"{n}://{LOOPBACK}:0" for n in ("SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL", "REAUTH", "OAUTH", "REQUESTED")]
    args = [a for listener in listeners for a in ("--listener", listener)]
    args += ["--listener-security-protocol-map", "MTLS:SSL,REAUTH:SASL_PLAINTEXT,OAUTH:SASL_PLAINTEXT,REQUESTED:SSL", "--listener-config-file", str(props)]
    with LinkdProcess(data_dir=data, extra_args=args) as process:
        process.pki = pki
        yield process


def _confluent_security(linkd, listener: str, mechanism: str | None, password: str = PASSWORD) -> dict:
    pki = linkd.pki
    protocol = {"MTLS": "SSL", "REAUTH": "SASL_PLAINTEXT"}.get(listener, listener)
    conf = {"bootstrap.servers": linkd.address(listener), "security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = str(pki.ca_pem)
    if listener == "MTLS":
        conf["ssl.certificate.location"] = str(pki.client_cert_pem)
        conf["ssl.key.location"] = str(pki.client_key_pem)
    if mechanism:
        conf.update({"sasl.mechanisms": mechanism, "sasl.username": USER, "sasl.password": password})
    return conf


CASES = [
    ("SSL", None),
    ("MTLS", None),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_SSL", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
]


def _ids(case) -> str:
    return f"{case[0]}-{case[1] or 'cert'}".lower()


def _new_topic(linkd, partitions: int = 2) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    create_topic(linkd.bootstrap, name, partitions)
    return name


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_confluent_kafka_produces_and_consumes_over_a_secured_listener(secured, case):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    listener, mechanism = case
    conf = _confluent_security(secured, listener, mechanism)
    topic = _new_topic(secured)
    # Metadata on this listener names this listener's address, not the PLAINTEXT one.
    cluster = AdminClient(conf).list_topics(timeout=20)
    assert [(b.host, b.port) for b in cluster.brokers.values()] == [(LOOPBACK, secured.listener_ports[listener])]
    sent = [record(i, listener) for i in range(COUNT)]
    acks = produce(secured.address(listener), topic, sent, **{k: v for k, v in conf.items() if k != "bootstrap.servers"})
    assert len(set(acks)) == COUNT
    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
    finally:
        consumer.close()
    expected = {ack: (s.key, s.value) for ack, s in zip(acks, sent, strict=True)}
    assert got == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("listener,mechanism", [("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512")])
def test_confluent_kafka_with_a_wrong_password_gets_an_authentication_error(secured, listener, mechanism):
    from confluent_kafka import KafkaError, Producer

    errors = []
    conf = {**_confluent_security(secured, listener, mechanism, password="wrong-" + PASSWORD), "error_cb": errors.append}
    producer = Producer(conf)
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("invalid credentials" in e.str() or "Invalid username or password" in e.str() for e in errors), errors


@pytest.mark.timeout(60)
def test_mtls_listener_refuses_a_client_without_a_certificate(secured):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": secured.address("MTLS"), "security.protocol": "SSL", "ssl.ca.location": str(secured.pki.ca_pem)}
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)


def test_the_principal_of_a_client_certificate_is_its_subject_as_kafka_prints_it(secured):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from linkd.broker.tls import principal_of

    cert = x509.load_pem_x509_certificates(secured.pki.client_cert_pem.read_bytes())[0]
    assert principal_of(cert.public_bytes(Encoding.DER)) == f"User:CN={MTLS_CN}"
    assert principal_of(None) == "User:ANONYMOUS"


KAFKA_PYTHON_CASES = [("SSL", None), ("MTLS", None), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-512")]


def _kafka_python_security(linkd, listener: str, mechanism: str | None, password: str = PASSWORD) -> dict:
    protocol = {"MTLS": "SSL", "REAUTH": "SASL_PLAINTEXT"}.get(listener, listener)
    conf: dict = {"bootstrap_servers": linkd.address(listener), "security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl_cafile"] = str(linkd.pki.ca_pem)
    if listener == "MTLS":
        conf.update(ssl_certfile=str(linkd.pki.client_cert_pem), ssl_keyfile=str(linkd.pki.client_key_pem))
    if mechanism:
        conf.update(sasl_mechanism=mechanism, sasl_plain_username=USER, sasl_plain_password=password)
    return conf


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", KAFKA_PYTHON_CASES, ids=_ids)
def test_kafka_python_produces_and_consumes_over_a_secured_listener(secured, case):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    conf = _kafka_python_security(secured, *case)
    topic = _new_topic(secured, partitions=1)
    producer = KafkaProducer(**conf, acks="all")
    futures = [producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0) for i in range(COUNT)]
    producer.flush(30)
    offsets = [f.get(30).offset for f in futures]
    producer.close(10)
    assert offsets == list(range(COUNT))
    consumer = KafkaConsumer(**conf, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15_000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got = []
        for msg in consumer:
            got.append((msg.offset, msg.key, msg.value))
            if len(got) == COUNT:
                break
    finally:
        consumer.close()
    assert got == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(COUNT)]


@pytest.mark.timeout(60)
def test_kafka_python_with_a_wrong_password_gets_an_authentication_error(secured, caplog):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError):
        KafkaProducer(**_kafka_python_security(secured, "SASL_PLAINTEXT", "SCRAM-SHA-256", password="nope"), max_block_ms=5000)
    # kafka-python reports the broker's SaslAuthenticationFailedError on the connection, then gives up on it.
    assert "SaslAuthenticationFailedError" in caplog.text and "invalid credentials" in caplog.text, caplog.text[-2000:]


AIOKAFKA_CASES = [("SSL", None), ("MTLS", None), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")]


def _aiokafka_security(linkd, listener: str, mechanism: str | None, password: str = PASSWORD) -> dict:
    from aiokafka.helpers import create_ssl_context

    protocol = {"MTLS": "SSL", "REAUTH": "SASL_PLAINTEXT"}.get(listener, listener)
    conf: dict = {"bootstrap_servers": linkd.address(listener), "security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        mtls = {"certfile": str(linkd.pki.client_cert_pem), "keyfile": str(linkd.pki.client_key_pem)} if listener == "MTLS" else {}
        conf["ssl_context"] = create_ssl_context(cafile=str(linkd.pki.ca_pem), **mtls)
    if mechanism:
        conf.update(sasl_mechanism=mechanism, sasl_plain_username=USER, sasl_plain_password=password)
    return conf


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", AIOKAFKA_CASES, ids=_ids)
def test_aiokafka_produces_and_consumes_over_a_secured_listener(secured, case):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = _new_topic(secured, partitions=1)

    async def run() -> list:
        producer = AIOKafkaProducer(**_aiokafka_security(secured, *case), acks="all")
        await producer.start()
        try:
            offsets = [(await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=0)).offset for i in range(COUNT)]
        finally:
            await producer.stop()
        assert offsets == list(range(COUNT))
        consumer = AIOKafkaConsumer(**_aiokafka_security(secured, *case), auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_beginning()
            got = []
            async with asyncio.timeout(30):
                while len(got) < COUNT:
                    batch = await consumer.getmany(timeout_ms=1000)
                    got += [(m.offset, m.key, m.value) for msgs in batch.values() for m in msgs]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(COUNT)]


@pytest.mark.timeout(60)
def test_aiokafka_with_a_wrong_password_gets_an_authentication_error(secured, caplog):
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, KafkaError

    async def run() -> None:
        producer = AIOKafkaProducer(**_aiokafka_security(secured, "SASL_SSL", "SCRAM-SHA-512", password="nope"), request_timeout_ms=5000)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises((KafkaError, KafkaConnectionError)):
        asyncio.run(run())
    # aiokafka logs the broker's answer on the connection and raises "Unable to bootstrap".
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text, caplog.text[-2000:]


def _java_properties(linkd, path: Path, listener: str, mechanism: str | None, password: str = PASSWORD) -> Path:
    pki = linkd.pki
    protocol = {"MTLS": "SSL", "OAUTH": "SASL_PLAINTEXT"}.get(listener, listener)
    lines = [f"security.protocol={protocol}"]
    if protocol in ("SSL", "SASL_SSL"):
        # PEM: a PKCS12 store made by ``cryptography`` has no trusted-certificate entries the JDK would read.
        lines += [f"ssl.truststore.location={pki.ca_pem}", "ssl.truststore.type=PEM"]
    if listener == "MTLS":
        lines += [f"ssl.keystore.location={pki.client_p12}", "ssl.keystore.type=PKCS12", f"ssl.keystore.password={STORE_PASSWORD}"]
    if mechanism == "OAUTHBEARER":  # Kafka's unsecured login makes the unsigned token
        module = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
        lines += [f"sasl.mechanism={mechanism}", f'sasl.jaas.config={module} required unsecuredLoginStringClaim_sub="{USER}" unsecuredLoginListClaim_scope=",kafka";']
    elif mechanism:
        module = "org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN" else "org.apache.kafka.common.security.scram.ScramLoginModule"
        lines += [f"sasl.mechanism={mechanism}", f'sasl.jaas.config={module} required username="{USER}" password="{password}";']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", [("SASL_SSL", "SCRAM-SHA-512"), ("MTLS", None), ("SASL_PLAINTEXT", "PLAIN"), ("OAUTH", "OAUTHBEARER")], ids=_ids)
def test_java_client_produces_and_consumes_over_a_secured_listener(secured, java_client, tmp_path, case):
    from tests.peers.java import java_consume, java_produce

    props = _java_properties(secured, tmp_path / "client.properties", *case)
    topic = _new_topic(secured)
    produced = java_produce(secured.address(case[0]), topic, 200, properties=props)
    assert len(set(produced.acks)) == 200
    consumed = java_consume(secured.address(case[0]), topic, f"g-{topic}", 200, timeout_ms=60_000, properties=props)
    assert consumed.consumed == 200
    assert {(p, o) for p, o, *_ in consumed.records} == set(produced.acks)


@pytest.mark.timeout(120)
def test_java_client_with_a_wrong_password_fails_with_an_authentication_error(secured, java_client, tmp_path):
    from tests.peers.java import run_java_client

    props = _java_properties(secured, tmp_path / "client.properties", "SASL_PLAINTEXT", "SCRAM-SHA-256", password="nope")
    result = run_java_client("produce", secured.address("SASL_PLAINTEXT"), _new_topic(secured), "1", "none", properties=props, timeout=90)
    assert result.returncode != 0
    assert "SaslAuthenticationException" in result.stderr, result.stderr[-3000:]


@pytest.mark.timeout(240)
def test_java_client_re_authenticates_before_its_session_expires(secured, java_client, tmp_path):
    """KIP-368: the Java client re-authenticates on its own within session_lifetime_ms; a consume lasting
    several lifetimes keeps its connections (and its records) instead of being cut off."""
    from tests.peers.java import java_consume, java_produce

    props = _java_properties(secured, tmp_path / "client.properties", "SASL_PLAINTEXT", "SCRAM-SHA-256")
    topic = _new_topic(secured, partitions=1)
    bootstrap = secured.address("REAUTH")
    before = secured.log_path.read_text().count("re-authenticated User:alice")
    java_produce(bootstrap, topic, 50, properties=props)
    # Asks for more than there is, so it polls for the whole timeout: about 5 session lifetimes.
    consumed = java_consume(bootstrap, topic, f"g-{topic}", 51, timeout_ms=4 * REAUTH_MS + 2000, properties=props)
    assert consumed.consumed == 50
    assert secured.log_path.read_text().count("re-authenticated User:alice") - before >= 2, secured.logs(60)


def _scram_login(conn: WireConnection, mechanism: str, password: str = PASSWORD, handshake_version: int = 1) -> dict:
    shake = conn.request(ApiKey.SASL_HANDSHAKE, handshake_version, {"mechanism": mechanism})
    assert shake["error_code"] == 0, shake
    client = ScramClient(mechanism, USER, password)
    answer = conn.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client.start()})
    assert answer["error_code"] == 0, answer
    final = conn.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client.respond(answer["auth_bytes"])})
    if final["error_code"] == 0:
        client.respond(final["auth_bytes"])  # checks the server's signature: linkd knows the credential
        assert client.complete
    return final


METADATA_ALL = {"topics": None, "allow_auto_topic_creation": False}


@pytest.mark.timeout(60)
def test_nothing_but_api_versions_and_sasl_is_answered_before_authentication(secured):
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        versions = conn.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
        assert versions["error_code"] == 0
        with pytest.raises(ConnectionClosed):
            conn.request(ApiKey.METADATA, 12, METADATA_ALL)
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            conn.request(ApiKey.PRODUCE, 9, {"acks": -1, "timeout_ms": 1000, "topic_data": []})
    # The same Metadata after a SCRAM exchange is answered, with this listener's address.
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        assert _scram_login(conn, "SCRAM-SHA-512")["error_code"] == 0
        meta = conn.request(ApiKey.METADATA, 12, METADATA_ALL)
        assert [(b["host"], b["port"]) for b in meta["brokers"]] == [(LOOPBACK, secured.listener_ports["SASL_PLAINTEXT"])]


@pytest.mark.timeout(60)
def test_a_wrong_scram_proof_is_refused_and_the_connection_closed(secured):
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        final = _scram_login(conn, "SCRAM-SHA-256", password="wrong")
        assert final["error_code"] == 58, final  # SASL_AUTHENTICATION_FAILED
        assert "invalid credentials" in final["error_message"]
        conn.expect_closed()
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        shake = conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
        assert shake["error_code"] == 33 and shake["mechanisms"] == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], shake
        conn.expect_closed()


@pytest.mark.timeout(60)
def test_legacy_handshake_v0_carries_bare_sasl_tokens(secured):
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        shake = conn.request(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"})
        assert shake["error_code"] == 0
        token = f"\0{USER}\0{PASSWORD}".encode()
        conn.send_bytes(len(token).to_bytes(4, "big") + token)
        assert conn.receive_frame() == b""
        meta = conn.request(ApiKey.METADATA, 12, METADATA_ALL)
        assert meta["brokers"][0]["port"] == secured.listener_ports["SASL_PLAINTEXT"]


@pytest.mark.timeout(60)
def test_session_lifetime_is_announced_and_an_expired_session_is_closed(secured):
    with WireConnection(secured.address("REAUTH")) as conn:
        final = _scram_login(conn, "SCRAM-SHA-256")
        assert final["session_lifetime_ms"] == REAUTH_MS
        conn.request(ApiKey.METADATA, 12, METADATA_ALL)
        time.sleep(REAUTH_MS / 1000 * 0.6)
        # Re-authenticating on the same connection renews the session.
        assert _scram_login(conn, "SCRAM-SHA-256")["session_lifetime_ms"] == REAUTH_MS
        time.sleep(REAUTH_MS / 1000 * 0.6)
        conn.request(ApiKey.METADATA, 12, METADATA_ALL)  # past the first session's end, within the second's
        time.sleep(REAUTH_MS / 1000 * 0.6)
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            conn.request(ApiKey.METADATA, 12, METADATA_ALL)


@pytest.mark.timeout(60)
def test_sasl_requests_on_a_listener_without_sasl_get_illegal_sasl_state(secured):
    with WireConnection(secured.bootstrap) as conn:
        assert conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 34
        assert conn.request(ApiKey.METADATA, 12, METADATA_ALL)["brokers"][0]["port"] == secured.port


def _config_command(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    from tests.peers.kafka import ensure_kafka_libs, java_binary

    argv = [java_binary(), "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{ensure_kafka_libs()}/*", "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(240)
def test_kafka_configs_adds_describes_and_deletes_scram_users(secured, java_client):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    user, password = f"bob-{uuid.uuid4().hex[:6]}", "bob-" + secrets.token_hex(6)
    entity = ["--entity-type", "users", "--entity-name", user]
    added = _config_command(secured.bootstrap, "--alter", "--add-config", f"SCRAM-SHA-256=[iterations=8192,password={password}],SCRAM-SHA-512=[password={password}]", *entity)
    assert added.returncode == 0, added.stderr
    assert f"Completed updating config for user {user}." in added.stdout, added.stdout
    described = _config_command(secured.bootstrap, "--describe", *entity)
    assert described.returncode == 0, described.stderr
    assert f"SCRAM credential configs for user-principal '{user}' are SCRAM-SHA-256=iterations=8192, SCRAM-SHA-512=iterations=4096" in described.stdout, described.stdout
    listed = subprocess.run([sys.executable, "-m", "linkd", "user", "list", "--data-dir", str(secured.data_dir), "--json"], capture_output=True, text=True, timeout=30)
    assert {"mechanism": "SCRAM-SHA-256", "iterations": 8192} in next(u for u in __import__("json").loads(listed.stdout) if u["user"] == user)["mechanisms"]
    assert password not in (secured.data_dir / "control.db").read_bytes().decode("latin-1")

    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"):
        conf = {"bootstrap.servers": secured.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password}
        assert AdminClient(conf).list_topics(timeout=20).brokers

    deleted = _config_command(secured.bootstrap, "--alter", "--delete-config", "SCRAM-SHA-256,SCRAM-SHA-512", *entity)
    assert deleted.returncode == 0, deleted.stderr
    conf = {"bootstrap.servers": secured.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": password}
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)
    again = _config_command(secured.bootstrap, "--alter", "--delete-config", "SCRAM-SHA-256", *entity)
    assert again.returncode != 0 and "does not exist" in (again.stderr + again.stdout)


def test_linkd_user_commands_manage_credentials_offline(tmp_path):
    data = tmp_path / "data"
    data.mkdir()

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "linkd", "user", *args, "--data-dir", str(data)], input=stdin, capture_output=True, text=True, timeout=30)

    assert cli("add", "carol", "--mechanism", "SCRAM-SHA-512", stdin="pw-carol\n").returncode == 0
    assert cli("add", "dave", stdin="pw-dave\n").returncode == 0
    listed = cli("list", "--json")
    assert __import__("json").loads(listed.stdout) == [
        {"user": "carol", "mechanisms": [{"mechanism": "SCRAM-SHA-512", "iterations": 4096}]},
        {"user": "dave", "mechanisms": [{"mechanism": "SCRAM-SHA-256", "iterations": 4096}, {"mechanism": "SCRAM-SHA-512", "iterations": 4096}]},
    ]
    assert "pw-" not in listed.stdout
    too_few = cli("add", "erin", "--iterations", "100", stdin="x\n")
    assert too_few.returncode != 0 and "iterations" in too_few.stderr
    assert cli("delete", "dave").returncode == 0
    missing = cli("delete", "dave")
    assert missing.returncode != 0 and "no SCRAM" in missing.stderr
    assert [u["user"] for u in __import__("json").loads(cli("list", "--json").stdout)] == ["carol"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("listener,mechanism", [("SASL_SSL", "SCRAM-SHA-512"), ("REAUTH", "SCRAM-SHA-256")])
def test_a_linkd_mirrors_from_a_secured_linkd_byte_for_byte(secured, tmp_path, listener, mechanism):
    """linkd-to-linkd: the link's own client against the listener, over SASL_SSL (SCRAM-SHA-512, the
    truststore a PEM CA), and over a listener whose sessions last 1.5 s (KIP-368): the link re-authenticates
    its connections and keeps mirroring what is produced after several session lifetimes."""
    from tests.link.mirroring import FAST_LINK, admin, assert_bytes_identical, produce_confluent, wait_mirrored
    from tests.link.test_security_kafka_integration import write_properties

    topic = _new_topic(secured)
    produce_confluent(secured.bootstrap, topic, [(n % 2, b"k%d" % n, b"v%d" % n * 20) for n in range(300)], **{"compression.type": "zstd"})
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{USER}" password="{PASSWORD}";'
    security = {"security.protocol": "SASL_SSL", "ssl.truststore.location": str(secured.pki.ca_pem)} if listener == "SASL_SSL" else {"security.protocol": "SASL_PLAINTEXT"}
    props = write_properties(tmp_path / "link.properties", {
        **FAST_LINK, "bootstrap.servers": secured.address(listener), "sasl.mechanism": mechanism, "sasl.jaas.config": jaas, **security,
    })
    key = tmp_path / "secrets.key"
    assert subprocess.run([sys.executable, "-m", "linkd", "secrets", "generate-key", str(key)], capture_output=True, timeout=30).returncode == 0
    with LinkdProcess(extra_args=["--secrets-key-file", str(key)]) as dest:
        created = dest.cli("link", "create", "from-secured", "--config-file", str(props), "--json", timeout=60)
        assert created.returncode == 0, created.stderr
        client = admin(dest)
        client.create_mirror(topic, "from-secured")
        ends = {0: 150, 1: 150}
        wait_mirrored(client, topic, ends, timeout=60)
        if listener == "REAUTH":
            before = secured.log_path.read_text().count("re-authenticated User:alice")
            time.sleep(3 * REAUTH_MS / 1000)
            produce_confluent(secured.bootstrap, topic, [(n % 2, b"k%d" % n, b"late%d" % n) for n in range(100)])
            ends = {0: 200, 1: 200}
            wait_mirrored(client, topic, ends, timeout=60)
            assert secured.log_path.read_text().count("re-authenticated User:alice") - before >= 2, secured.logs(40)
        for partition in range(2):
            assert_bytes_identical(secured.bootstrap, topic, dest.bootstrap, topic, partition, 0, ends[partition])


@pytest.mark.timeout(90)
def test_confluent_kafka_logs_in_with_an_unsecured_oauthbearer_token(secured):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    base = {"bootstrap.servers": secured.address("OAUTH"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True}
    cluster = AdminClient({**base, "sasl.oauthbearer.config": "principal=alice scope=kafka"}).list_topics(timeout=20)
    assert [b.port for b in cluster.brokers.values()] == [secured.listener_ports["OAUTH"]]
    topic = _new_topic(secured, partitions=1)
    acks = produce(secured.address("OAUTH"), topic, [record(i) for i in range(10)], **{k: v for k, v in base.items() if k != "bootstrap.servers"}, **{"sasl.oauthbearer.config": "principal=alice scope=kafka"})
    assert sorted(acks) == [(0, i) for i in range(10)]
    # Without the required scope: refused with the client's authentication error.
    errors = []
    producer = Producer({**base, "sasl.oauthbearer.config": "principal=alice scope=other", "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION and "required scope kafka" in e.str() for e in errors), errors


@pytest.mark.timeout(60)
def test_oauthbearer_session_lifetime_ends_with_the_token(secured):
    from linkd.link.sasl import OAuthBearerClient, unsecured_jws

    with WireConnection(secured.address("OAUTH")) as conn:
        assert conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "OAUTHBEARER"})["error_code"] == 0
        # 20 s: well below connections.max.reauth.ms (60 s), and long enough that a loaded machine cannot let
        # the token expire before the broker reads it (a 3 s token did, once, and was answered invalid_token).
        client = OAuthBearerClient(unsecured_jws({"sub": "tok-user", "scope": "kafka"}, lifetime_s=20))
        answer = conn.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": client.start()})
        assert answer["error_code"] == 0 and b"invalid_token" not in answer["auth_bytes"], answer
        assert 0 < answer["session_lifetime_ms"] <= 20_000  # the token's exp, not connections.max.reauth.ms (60 s)
    with WireConnection(secured.address("OAUTH")) as conn:
        conn.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "OAUTHBEARER"})
        expired = OAuthBearerClient(unsecured_jws({"sub": "tok-user", "scope": "kafka"}, lifetime_s=-10))
        challenge = conn.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": expired.start()})
        assert challenge["error_code"] == 0 and b"invalid_token" in challenge["auth_bytes"]
        final = conn.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": expired.respond(challenge["auth_bytes"])})
        assert final["error_code"] == 58 and "expired" in final["error_message"], final
        conn.expect_closed()


@pytest.mark.timeout(60)
def test_a_garbled_sasl_request_closes_only_its_connection(secured):
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        # SaslHandshake v9 (unknown) and then a truncated one: closed, nothing else affected.
        conn.send_bytes(b"\x00\x00\x00\x06\x00\x11\x00\x09\x00\x00")
        conn.expect_closed()
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        assert _scram_login(conn, "SCRAM-SHA-256")["error_code"] == 0
    assert "unexpected error" not in secured.log_path.read_text()


@pytest.mark.timeout(90)
def test_confluent_admin_client_alters_and_describes_scram_credentials(secured):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": secured.bootstrap})
    user = f"erin-{uuid.uuid4().hex[:6]}"
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"erin-pw")
    admin.alter_user_scram_credentials([upsert])[user].result(20)
    described = admin.describe_user_scram_credentials([user])[user].result(20)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_512, 4096)]
    too_few = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"x")
    with pytest.raises(KafkaException, match="Too few iterations"):
        admin.alter_user_scram_credentials([too_few])[user].result(20)
    with pytest.raises(KafkaException, match="does not exist"):
        admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)])[user].result(20)
    # The upserted salted password logs in over SCRAM-SHA-512 (librdkafka salts the password client-side).
    conf = {"bootstrap.servers": secured.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": "erin-pw"}
    assert AdminClient(conf).list_topics(timeout=20).brokers
    admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)])[user].result(20)
    with pytest.raises(KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials([user])[user].result(20)


@pytest.mark.timeout(60)
def test_requested_client_auth_admits_clients_with_and_without_a_trusted_certificate(secured, tmp_path):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from tests.peers.securekafka import _cert, _key

    pki = secured.pki
    base = {"bootstrap.servers": secured.address("REQUESTED"), "security.protocol": "SSL", "ssl.ca.location": str(pki.ca_pem)}
    assert AdminClient(base).list_topics(timeout=20).brokers
    assert AdminClient({**base, "ssl.certificate.location": str(pki.client_cert_pem), "ssl.key.location": str(pki.client_key_pem)}).list_topics(timeout=20).brokers
    # A certificate from a CA the listener does not trust is checked, and refused.
    from cryptography.hazmat.primitives import serialization

    rogue_key = _key()
    rogue = _cert("rogue", rogue_key, "rogue", rogue_key, client=True)
    (tmp_path / "rogue.pem").write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(rogue_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KafkaException):
        AdminClient({**base, "ssl.certificate.location": str(tmp_path / "rogue.pem"), "ssl.key.location": str(tmp_path / "rogue.key")}).list_topics(timeout=5)


@pytest.mark.timeout(60)
def test_an_unauthenticated_client_cannot_send_a_large_frame(secured):
    """Before authentication only frames up to sasl.server.max.receive.size (Kafka's 512 KiB) are read: a
    larger size prefix closes the connection before any of its body is buffered."""
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        conn.send_bytes((1_000_000).to_bytes(4, "big"))
        conn.expect_closed()
    with WireConnection(secured.address("SASL_PLAINTEXT")) as conn:
        assert _scram_login(conn, "SCRAM-SHA-256")["error_code"] == 0
        conn.send_bytes((1_000_000).to_bytes(4, "big") + b"\x00" * 1000)  # allowed now; the rest never comes
        conn.sock.close()
    with WireConnection(secured.bootstrap) as conn:  # the PLAINTEXT listener keeps its own limit
        assert conn.request(ApiKey.METADATA, 12, METADATA_ALL)["brokers"]
    assert "frame size 1000000 is outside 0..524288" in secured.log_path.read_text()


@pytest.mark.timeout(120)
def test_the_authenticated_principal_is_what_the_authorizer_judges(tmp_path):
    """With ``--authorizer standard``: a SASL user and an mTLS client are judged by their own principals
    (``User:bob``, ``User:CN=linkd-mtls``), so an ACL for each lets exactly that one write."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    pki = make_pki(tmp_path / "pki")
    data = tmp_path / "data"
    data.mkdir()
    for user in ("admin", "bob"):
        assert subprocess.run([sys.executable, "-m", "linkd", "user", "add", user, "--data-dir", str(data)], input=f"{user}-pw\n", text=True, capture_output=True, timeout=30).returncode == 0
    props = tmp_path / "l.properties"
    props.write_text(f"ssl.keystore.location={pki.server_p12}\nssl.keystore.password={STORE_PASSWORD}\nssl.client.auth=required\nssl.truststore.location={pki.ca_pem}\n")
    args = ["--listener", f"SASL_PLAINTEXT://{LOOPBACK}:0", "--listener", f"MTLS://{LOOPBACK}:0", "--listener-security-protocol-map", "MTLS:SSL",
            "--listener-config-file", str(props), "--authorizer", "standard", "--super-users", "User:admin"]
    with LinkdProcess(data_dir=data, extra_args=args) as daemon:
        def sasl(user: str) -> dict:
            return {"bootstrap.servers": daemon.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": f"{user}-pw"}

        mtls = {"bootstrap.servers": daemon.address("MTLS"), "security.protocol": "SSL", "ssl.ca.location": str(pki.ca_pem),
                "ssl.certificate.location": str(pki.client_cert_pem), "ssl.key.location": str(pki.client_key_pem)}
        admin = AdminClient(sasl("admin"))
        for f in admin.create_topics([NewTopic("t-bob", 1, 1), NewTopic("t-cert", 1, 1)]).values():
            f.result(20)

        def write(conf: dict, topic: str) -> KafkaError | None:
            errors: list = []
            producer = Producer({**conf, "enable.idempotence": False, "message.timeout.ms": 10_000, "retries": 0})
            producer.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(err))
            producer.flush(15)
            return errors[0] if errors else None

        assert write(sasl("bob"), "t-bob").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert write(mtls, "t-cert").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        bindings = [
            AclBinding(ResourceType.TOPIC, "t-bob", ResourcePatternType.LITERAL, "User:bob", "*", AclOperation.WRITE, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, "t-cert", ResourcePatternType.LITERAL, f"User:CN={MTLS_CN}", "*", AclOperation.WRITE, AclPermissionType.ALLOW),
        ]
        for f in admin.create_acls(bindings).values():
            f.result(20)
        assert write(sasl("bob"), "t-bob") is None
        assert write(mtls, "t-cert") is None
        assert write(sasl("bob"), "t-cert").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED  # bob's ACL is for t-bob only
        with pytest.raises(KafkaException):  # bob may not manage ACLs; admin (a super user) could
            for f in AdminClient(sasl("bob")).create_acls(bindings[:1]).values():
                f.result(20)
