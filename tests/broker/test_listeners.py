"""Listener flags as Kafka names them (linkd/broker/listeners.py, endpoints.py) and the CLI's refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from linkd.broker.endpoints import build_endpoints
from linkd.broker.listeners import ListenerConfigError, ListenerSpec, parse_listeners, parse_properties
from tests.peers.linkd import LinkdProcess


def test_named_listeners_take_their_protocol_from_the_map_or_their_name():
    specs = parse_listeners(["PLAINTEXT://127.0.0.1:9092", "INTERNAL://0.0.0.0:9093", "SASL_SSL://:9094"], "INTERNAL:SASL_PLAINTEXT")
    assert specs == [
        ListenerSpec("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT"),
        ListenerSpec("INTERNAL", "0.0.0.0", 9093, "SASL_PLAINTEXT"),
        ListenerSpec("SASL_SSL", "0.0.0.0", 9094, "SASL_SSL"),
    ]


def test_the_bare_host_port_form_is_the_plaintext_listener_and_its_advertised_address():
    assert parse_listeners(["127.0.0.1:9092"], None, ["kafka.example:29092"]) == [ListenerSpec("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT", "kafka.example", 29092)]


def test_advertised_listeners_go_by_name():
    specs = parse_listeners(["A://127.0.0.1:1", "B://127.0.0.1:2"], "A:PLAINTEXT,B:SSL", ["B://b.example:22"])
    assert [(s.name, s.advertised_host, s.advertised_port) for s in specs] == [("A", None, None), ("B", "b.example", 22)]


@pytest.mark.parametrize(
    "listeners,protocol_map,advertised,message",
    [
        (["EXTERNAL://127.0.0.1:1"], None, None, "listener EXTERNAL has no security protocol"),
        (["A://127.0.0.1:1", "A://127.0.0.1:2"], "A:SSL", None, "the name A is used twice"),
        (["A://127.0.0.1:1"], "A:KERBEROS", None, "KERBEROS for A is not a security protocol"),
        (["PLAINTEXT://127.0.0.1:1"], None, ["OTHER://h:1"], "no --listener is named OTHER"),
        (["A://127.0.0.1:1", "B://127.0.0.1:2"], "A:SSL,B:SSL", ["h:1"], "must be NAME://HOST:PORT"),
        (["PLAINTEXT://127.0.0.1:port"], None, None, "must be [NAME://]HOST:PORT"),
    ],
)
def test_listener_mistakes_are_refused_by_name(listeners, protocol_map, advertised, message):
    with pytest.raises(ListenerConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_listeners(listeners, protocol_map, advertised)


def test_security_settings_use_kafka_names_with_the_listener_prefix_winning():
    props = parse_properties(["ssl.client.auth=requested", "listener.name.mtls.ssl.client.auth=required"])
    assert props.get("SSL", "ssl.client.auth") == "requested"
    assert props.get("MTLS", "ssl.client.auth") == "required"
    with pytest.raises(ListenerConfigError, match="unknown listener setting.*ssl.keystore.locaton"):
        parse_properties(["ssl.keystore.locaton=/x"])


@pytest.mark.parametrize(
    "protocol,settings,message",
    [
        ("SSL", [], "has no ssl.keystore.location"),
        ("SASL_PLAINTEXT", ["sasl.enabled.mechanisms=GSSAPI"], "GSSAPI is not supported yet"),
        ("SASL_PLAINTEXT", ["sasl.oauthbearer.jwks.endpoint.url=https://idp/jwks"], "not supported yet"),
        ("SASL_PLAINTEXT", ["sasl.enabled.mechanisms=PLAIN,FOO"], "unknown mechanism FOO"),
        ("SSL", ["ssl.keystore.location=/nonexistent.p12", "ssl.client.auth=sometimes"], "ssl.client.auth must be none, requested or required"),
        ("SSL", ["ssl.keystore.location=/nonexistent.p12"], "/nonexistent.p12"),
        ("PLAINTEXT", ["listener.name.other.ssl.client.auth=required"], "no listener is named OTHER"),
        ("SSL", ["ssl.keystore.location=/x", "ssl.principal.mapping.rules=RULE:^CN=(.*)$/$1/"], "not supported yet"),
    ],
)
def test_security_mistakes_are_refused_before_binding(protocol, settings, message):
    specs = [ListenerSpec("L", "127.0.0.1", 0, protocol)]
    with pytest.raises(ListenerConfigError, match=message):
        build_endpoints(specs, parse_properties(settings))


def test_linkd_serve_refuses_a_tls_listener_without_a_keystore(tmp_path):
    result = subprocess.run([sys.executable, "-m", "linkd", "serve", "--data-dir", str(tmp_path), "--listener", "SSL://127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "listener SSL speaks TLS but has no ssl.keystore.location" in result.stderr


@pytest.mark.timeout(60)
def test_a_plaintext_listener_beyond_loopback_logs_a_warning_and_loopback_does_not():
    with LinkdProcess() as quiet:
        assert "beyond loopback" not in quiet.log_path.read_text()
    with LinkdProcess(extra_args=["--listener", "WIDE://0.0.0.0:0", "--listener-security-protocol-map", "WIDE:PLAINTEXT"]) as wide:
        text = wide.log_path.read_text()
    assert "WARNING" in text and "listener WIDE binds 0.0.0.0" in text and "without authenticating" in text


@pytest.mark.timeout(60)
def test_metadata_find_coordinator_and_describe_cluster_answer_with_the_clients_listener():
    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    args = ["--listener", "EXT://127.0.0.1:0", "--listener-security-protocol-map", "EXT:PLAINTEXT", "--advertised-listener", "EXT://ext.example:19092"]
    with LinkdProcess(extra_args=args) as daemon:
        answers = {}
        for name, address in (("PLAINTEXT", daemon.bootstrap), ("EXT", daemon.address("EXT"))):
            with WireConnection(address) as conn:
                meta = conn.request(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
                coord = conn.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g"]})
                cluster = conn.request(ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": False, "endpoint_type": 1})
                answers[name] = {
                    (b["host"], b["port"]) for b in meta["brokers"]
                } | {(c["host"], c["port"]) for c in coord["coordinators"]} | {(b["host"], b["port"]) for b in cluster["brokers"]}
        configs = None
        with WireConnection(daemon.bootstrap) as conn:
            configs = conn.request(ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 4, "resource_name": "1", "configuration_keys": ["advertised.listeners"]}], "include_synonyms": False, "include_documentation": False})
    assert answers == {"PLAINTEXT": {("127.0.0.1", daemon.port)}, "EXT": {("ext.example", 19092)}}
    value = configs["results"][0]["configs"][0]["value"]
    assert value == f"PLAINTEXT://127.0.0.1:{daemon.port},EXT://ext.example:19092"


def test_a_kafka_style_config_file_sets_listeners_and_tls_keys_and_hides_the_password(tmp_path):
    config = tmp_path / "server.properties"
    config.write_text("listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0\nssl.keystore.location=/etc/linkd/ks.p12\nssl.keystore.password=hunter2-secret\n")
    shown = subprocess.run([sys.executable, "-m", "linkd", "serve", "--config", str(config), "--print-config"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0" in shown.stdout
    assert "ssl.keystore.location=/etc/linkd/ks.p12" in shown.stdout
    assert "hunter2-secret" not in shown.stdout and "ssl.keystore.password=********" in shown.stdout
