"""Security of the link, pure parts: JAAS parsing, SCRAM and PLAIN messages, the ssl/sasl key schema,
TLS contexts from PEM/PKCS12/inline material, and sealed secrets."""

from __future__ import annotations

import base64
import json
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkd.link import secrets
from linkd.link.config import LinkConfigError, LinkSettings, validate
from linkd.link.jaas import JaasConfigError, parse_jaas
from linkd.link.sasl import OAuthBearerClient, PlainClient, SaslError, ScramClient, unsecured_jws
from linkd.link.security import HIDDEN, SENSITIVE_KEYS, SecurityConfigError, build_ssl_context, redact
from tests.peers.securekafka import STORE_PASSWORD, make_pki

PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
OAUTH_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
TOKEN_HANDLER = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"


# -- JAAS -------------------------------------------------------------------------------------


def test_jaas_confluent_cloud_style_plain_config():
    (module,) = parse_jaas(f"{PLAIN_MODULE} required username='ABCDEFGH12345678' password='s3cr3t+/=';")
    assert module.name == PLAIN_MODULE and module.flag == "required"
    assert module.options == {"username": "ABCDEFGH12345678", "password": "s3cr3t+/="}


def test_jaas_escapes_comments_and_words():
    text = f'/* c */ {SCRAM_MODULE} Required // line\n username=bob password="a\\"b\\\\c\\n;d" tokenauth=true;'
    (module,) = parse_jaas(text)
    assert module.flag == "required"
    assert module.options == {"username": "bob", "password": 'a"b\\c\n;d', "tokenauth": "true"}


@pytest.mark.parametrize(
    "text,message",
    [
        (f'{PLAIN_MODULE} required username="u" password="p"', "does not end with ';'"),
        (f'{PLAIN_MODULE} mandatory username="u";', "invalid control flag"),
        (f'{PLAIN_MODULE} required username="u;', "unterminated quoted value"),
        (f"{PLAIN_MODULE} required username;", "'=' after option username"),
        ("", "no login module"),
    ],
)
def test_jaas_errors_say_where_without_quoting_secrets(text, message):
    with pytest.raises(JaasConfigError, match=message) as info:
        parse_jaas(text)
    assert '"p"' not in str(info.value) and "password" not in str(info.value)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30))
def test_jaas_quoted_values_round_trip_any_text(value):
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    (module,) = parse_jaas(f'{PLAIN_MODULE} required username="u" password="{quoted}";')
    assert module.options["password"] == value


# -- SASL messages ------------------------------------------------------------------------------


def test_scram_sha256_matches_rfc7677_example():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.start() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.respond(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    assert client.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") is None
    assert client.complete


def test_scram_refuses_a_server_that_does_not_know_the_password():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    client.start()
    client.respond(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(SaslError, match="server signature does not match"):
        client.respond(b"v=" + base64.b64encode(b"\0" * 32))
    assert not client.complete


@pytest.mark.parametrize(
    "server_first,message",
    [
        (b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=abcXYZ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000", "iterations"),
        (b"r=abcXYZ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100000000", "iterations"),
        (b"e=unknown-user", "server refused"),
        (b"r=abcXYZ", "salt"),
    ],
)
def test_scram_rejects_bad_server_first_messages(server_first, message):
    client = ScramClient("SCRAM-SHA-512", "u", "p", nonce="abc")
    client.start()
    with pytest.raises(SaslError, match=message):
        client.respond(server_first)


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_scram_client_on_any_server_bytes_answers_or_raises_sasl_error(first, final):
    client = ScramClient("SCRAM-SHA-256", "u", "p", nonce="abc")
    client.start()
    try:
        client.respond(b"r=abcXYZ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096" if first[:1] == b"!" else first)
        client.respond(final)
    except SaslError:
        return
    assert client.complete is False or final.startswith(b"v=")


@given(st.text(max_size=200))
def test_jaas_parser_on_any_text_returns_or_raises_its_error(text):
    try:
        parse_jaas(text)
    except JaasConfigError:
        pass


def test_scram_escapes_the_user_name_and_adds_tokenauth():
    assert ScramClient("SCRAM-SHA-256", "a=b,c", "p", token_auth=True, nonce="n").start() == b"n,,n=a=3Db=2Cc,r=n,tokenauth=true"


def test_plain_message():
    assert PlainClient("user", "pw").start() == b"\0user\0pw"


def test_oauthbearer_unsecured_token_and_message():
    settings = LinkSettings.from_config(
        {
            "bootstrap.servers": "h:1",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.jaas.config": f'{OAUTH_MODULE} required unsecuredLoginStringClaim_sub="alice" unsecuredLoginListClaim_scope=",read,write" '
            'unsecuredLoginNumberClaim_n="7" unsecuredLoginLifetimeSeconds="60" unsecuredLoginExtension_traceId="abc";',
        }
    )
    login = settings.security.credentials
    token = unsecured_jws(login.claims, login.lifetime_s, now=1000.0)
    header, body, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert decode(header) == {"alg": "none"} and signature == ""
    assert decode(body) == {"sub": "alice", "scope": ["read", "write"], "n": 7, "iat": 1000.0, "exp": 1060.0}
    client = OAuthBearerClient(token, login.extensions)
    assert client.start() == f"n,,\x01auth=Bearer {token}\x01traceId=abc\x01\x01".encode()
    assert client.respond(b'{"status":"invalid_token"}') == b"\x01" and not client.complete
    assert client.respond(b"") is None and client.complete


# -- the config schema ----------------------------------------------------------------------------


def _jaas(module=PLAIN_MODULE, user="u", password="p"):
    return f'{module} required username="{user}" password="{password}";'


def test_sasl_ssl_plain_config_validates_into_settings():
    settings = LinkSettings.from_config(
        {"bootstrap.servers": "h:9092", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.jaas.config": _jaas(password="pw-x")}
    )
    sec = settings.security
    assert sec.protocol == "SASL_SSL" and sec.tls and sec.mechanism == "PLAIN"
    assert sec.credentials.username == "u" and sec.credentials.password == "pw-x"
    assert "pw-x" not in repr(settings) and "pw-x" not in repr(sec.credentials)


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.jaas.config": _jaas()}, "GSSAPI .*not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": _jaas()}, "PlainLoginModule is not supported yet for sasl.mechanism OAUTHBEARER"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": f"{OAUTH_MODULE} required;"}, "needs unsecuredLoginStringClaim_sub"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": f'{OAUTH_MODULE} required unsecuredLoginStringClaim_sub="a" clientSecret="x";'}, "clientSecret of OAuthBearerLoginModule is not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": f'{OAUTH_MODULE} required clientId="c" clientSecret="s";',
          "sasl.oauthbearer.token.endpoint.url": "https://idp/token"}, "sasl.login.callback.handler.class  is not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": f'{OAUTH_MODULE} required clientId="c";',
          "sasl.login.callback.handler.class": TOKEN_HANDLER, "sasl.oauthbearer.token.endpoint.url": "https://idp/token"}, "needs clientSecret"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.jaas.config": f'{OAUTH_MODULE} required clientId="c" clientSecret="s";',
          "sasl.login.callback.handler.class": TOKEN_HANDLER, "sasl.oauthbearer.token.endpoint.url": "file:///tmp/token"}, "file: token files are not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.jwks.endpoint.url": "https://idp/jwks"}, "sasl.oauthbearer.jwks.endpoint.url is not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "sasl.jaas.config is required"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": "com.sun.security.auth.module.Krb5LoginModule required;"}, "not supported yet"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": f"{PLAIN_MODULE} required username=u;"}, "needs password"),
        ({"security.protocol": "SSL", "ssl.truststore.type": "JKS", "ssl.truststore.location": "/x"}, "JKS is not supported yet"),
        ({"security.protocol": "SSL", "ssl.engine.factory.class": "x.Y"}, "ssl.engine.factory.class is not supported yet"),
        ({"security.protocol": "SSL", "sasl.login.class": "x.Y"}, "sasl.login.class is not supported yet"),
        ({"security.protocol": "SSL", "sasl.mechanism": "PLAIN"}, "sasl.mechanism not used with security.protocol SSL"),
        ({"security.protocol": "SASL_PLAINTEXT", "ssl.truststore.location": "/ca.pem"}, "ssl.truststore.location not used with security.protocol SASL_PLAINTEXT"),
        ({"security.protocol": "SSL", "ssl.enabled.protocols": "TLSv1.1"}, "TLSv1.1 not supported"),
        ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "ldap"}, "https or empty"),
        ({"security.protocol": "SSL", "ssl.cipher.suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, "set ssl.enabled.protocols=TLSv1.2"),
        ({"security.protocol": "SSL", "ssl.enabled.protocols": "TLSv1.2", "ssl.cipher.suites": "TLS_AES_128_GCM_SHA256"}, "TLS 1.3 suite"),
        ({"security.protocol": "SSL", "ssl.truststore.location": "/nonexistent/ca.pem", "ssl.truststore.type": "PEM"}, "No such file"),
        ({"security.protocol": "SSL", "ssl.keystore.key": "-----BEGIN PRIVATE KEY-----"}, "go together"),
    ],
)
def test_security_problems_are_named(extra, message):
    with pytest.raises(LinkConfigError, match=message):
        validate({"bootstrap.servers": "h:1", **extra})


def test_tls12_cipher_suites_in_java_names_are_accepted():
    context = build_ssl_context({"ssl.enabled.protocols": "TLSv1.2", "ssl.cipher.suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,ECDHE-ECDSA-AES256-GCM-SHA384"})
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"}
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2


def test_hostname_verification_follows_endpoint_identification():
    assert build_ssl_context({}).check_hostname
    assert not build_ssl_context({"ssl.endpoint.identification.algorithm": ""}).check_hostname
    assert build_ssl_context({"ssl.endpoint.identification.algorithm": ""}).verify_mode == ssl.CERT_REQUIRED


def test_trust_and_identity_from_pem_pkcs12_and_inline(tmp_path):
    pki = make_pki(tmp_path)
    variants = [
        {"ssl.truststore.location": str(pki.ca_pem), "ssl.keystore.location": str(pki.client_p12), "ssl.keystore.password": STORE_PASSWORD},
        {"ssl.truststore.location": str(pki.truststore_p12), "ssl.truststore.type": "PKCS12", "ssl.truststore.password": STORE_PASSWORD},
        {
            "ssl.truststore.certificates": pki.ca_pem.read_text(),
            "ssl.keystore.certificate.chain": pki.client_cert_pem.read_text(),
            "ssl.keystore.key": pki.client_key_encrypted_pem.read_text(),
            "ssl.key.password": pki.client_key_password,
        },
    ]
    for config in variants:
        context = build_ssl_context(config)
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "linkd-test-ca"),),)]
    with pytest.raises(SecurityConfigError, match="ssl.key.password"):
        build_ssl_context({"ssl.keystore.certificate.chain": pki.client_cert_pem.read_text(), "ssl.keystore.key": pki.client_key_encrypted_pem.read_text(), "ssl.key.password": "wrong"})
    with pytest.raises(SecurityConfigError, match="PKCS12"):
        build_ssl_context({"ssl.keystore.location": str(pki.client_p12), "ssl.keystore.password": "wrong"})


def test_every_password_type_key_is_marked_and_hidden():
    assert SENSITIVE_KEYS == {
        "sasl.jaas.config",
        "ssl.truststore.password",
        "ssl.truststore.certificates",
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.keystore.certificate.chain",
        "ssl.keystore.key",
    }
    shown = redact({"ssl.keystore.key": "KEY", "sasl.jaas.config": "J", "ssl.truststore.location": "/ca.pem"})
    assert shown == {"ssl.keystore.key": HIDDEN, "sasl.jaas.config": HIDDEN, "ssl.truststore.location": "/ca.pem"}


# -- sealed secrets ----------------------------------------------------------------------------------


def _key(tmp_path, name="key"):
    path = tmp_path / name
    secrets.generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    return secrets.SecretsKey.from_file(path)


def test_sealed_config_holds_no_plaintext_and_opens_only_for_its_link(tmp_path):
    key = _key(tmp_path)
    config = {"bootstrap.servers": "h:1", "security.protocol": "SASL_SSL", "sasl.jaas.config": _jaas(password="very-secret-pw")}
    stored = secrets.seal_config("east", config, key)
    assert "very-secret-pw" not in json.dumps(stored) and stored["config"] == {"bootstrap.servers": "h:1", "security.protocol": "SASL_SSL"}
    assert secrets.open_config("east", stored, key) == config
    moved = {**stored, "secrets": dict(stored["secrets"])}
    with pytest.raises(secrets.SecretsUnavailable, match="does not open"):
        secrets.open_config("west", moved, key)
    assert secrets.public_view(stored)["sasl.jaas.config"] == HIDDEN


def test_no_key_or_another_key_is_a_clear_refusal(tmp_path):
    key, other = _key(tmp_path, "a"), _key(tmp_path, "b")
    config = {"bootstrap.servers": "h:1", "ssl.keystore.password": "pw"}
    with pytest.raises(secrets.SecretsKeyError, match="--secrets-key-file"):
        secrets.seal_config("l", config, None)
    stored = secrets.seal_config("l", config, key)
    with pytest.raises(secrets.SecretsUnavailable, match="started without --secrets-key-file"):
        secrets.open_config("l", stored, None)
    with pytest.raises(secrets.SecretsUnavailable, match="another secrets key"):
        secrets.open_config("l", stored, other)
    rekeyed = secrets.rekey("l", stored, key, other)
    assert secrets.open_config("l", rekeyed, other) == config
    assert secrets.seal_config("l", {"bootstrap.servers": "h:1"}, None) == {"bootstrap.servers": "h:1"}


def test_key_files_raw_base64_and_hex(tmp_path):
    raw = bytes(range(32))
    for name, data in (("raw", raw), ("b64", base64.b64encode(raw) + b"\n"), ("hex", raw.hex().encode())):
        (tmp_path / name).write_bytes(data)
        assert secrets.SecretsKey.from_file(tmp_path / name).key_id == secrets.SecretsKey(raw).key_id
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(secrets.SecretsKeyError, match="32-byte"):
        secrets.SecretsKey.from_file(tmp_path / "short")
