"""A secured Apache Kafka broker: TLS, mTLS and SASL listeners, SCRAM and PLAIN users, ACLs on.

The same KRaft broker as ``kafka.KafkaBroker`` (same jars), with more listeners:

    PLAINTEXT       the test's own door (produce, admin, ACLs): principal ANONYMOUS, a super user
    SSL             TLS, server certificate for 127.0.0.1 / localhost, no client certificate
    MTLS            TLS that requires a client certificate signed by the test CA (principal CN=...)
    SASL_PLAINTEXT  SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (unsecured JWS) without TLS
    SASL_SSL        the same over TLS
    BADHOST         TLS with a certificate for another host name (hostname verification must refuse it)
    EXPIRED         TLS with a certificate for 127.0.0.1 that expired yesterday
    OAUTH           SASL_PLAINTEXT OAUTHBEARER validating RS256 JWTs against ``TokenServer``'s JWKS

Certificates come from a throwaway CA made here with ``cryptography``. SCRAM users are created when the
log dir is formatted (``kafka-storage format --add-scram``), PLAIN users in the listener's JAAS config.
``StandardAuthorizer`` is on: ``LINK_USER`` and the mTLS client get only the read-side permissions a
link needs (through ``grant_link_read``), ``NOACL_USER`` authenticates but may do nothing.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from . import LOOPBACK, free_port
from .kafka import KafkaBroker

LINK_USER = "linkd-link"
NOACL_USER = "linkd-noacl"
MTLS_CN = "linkd-mtls"
STORE_PASSWORD = "store-pw-0"
LISTENERS = ("SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL", "BADHOST", "OAUTH", "EXPIRED")
OAUTH_CLIENT_ID = "linkd-client"


@dataclass
class Pki:
    """PEM files and PKCS12 stores in ``directory``; the client key is PKCS8 (an encrypted copy too)."""

    directory: Path
    ca_pem: Path
    other_ca_pem: Path  # a CA nobody uses: trusting only it must fail the handshake
    server_p12: Path
    badhost_p12: Path
    expired_p12: Path
    client_cert_pem: Path
    client_key_pem: Path
    client_key_encrypted_pem: Path
    client_key_password: str
    client_p12: Path
    truststore_p12: Path


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject_cn: str, key, issuer_cn: str, issuer_key, *, ca: bool = False, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), client: bool = False, expired: bool = False
):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(_name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3 if expired else 0, hours=1))
        .not_valid_after(now + datetime.timedelta(days=-1 if expired else 2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns or ips:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key, other_key = _key(), _key()
    ca = _cert("linkd-test-ca", ca_key, "linkd-test-ca", ca_key, ca=True)
    other = _cert("some-other-ca", other_key, "some-other-ca", other_key, ca=True)
    server_key, bad_key, client_key, old_key = _key(), _key(), _key(), _key()
    expired = _cert("localhost", old_key, "linkd-test-ca", ca_key, dns=("localhost",), ips=(LOOPBACK,), expired=True)
    server = _cert("localhost", server_key, "linkd-test-ca", ca_key, dns=("localhost",), ips=(LOOPBACK,))
    badhost = _cert("not-this-host.invalid", bad_key, "linkd-test-ca", ca_key, dns=("not-this-host.invalid",))
    client = _cert(MTLS_CN, client_key, "linkd-test-ca", ca_key, client=True)
    enc = serialization.BestAvailableEncryption(STORE_PASSWORD.encode())

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    key_password = "client-key-pw-" + secrets.token_hex(4)
    return Pki(
        directory=directory,
        ca_pem=write("ca.pem", ca.public_bytes(pem)),
        other_ca_pem=write("other-ca.pem", other.public_bytes(pem)),
        server_p12=write("server.p12", pkcs12.serialize_key_and_certificates(b"server", server_key, server, [ca], enc)),
        badhost_p12=write("badhost.p12", pkcs12.serialize_key_and_certificates(b"badhost", bad_key, badhost, [ca], enc)),
        expired_p12=write("expired.p12", pkcs12.serialize_key_and_certificates(b"expired", old_key, expired, [ca], enc)),
        client_cert_pem=write("client.pem", client.public_bytes(pem) + ca.public_bytes(pem)),
        client_key_pem=write("client.key", client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        client_key_encrypted_pem=write(
            "client-encrypted.key", client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(key_password.encode()))
        ),
        client_key_password=key_password,
        client_p12=write("client.p12", pkcs12.serialize_key_and_certificates(b"client", client_key, client, [ca], enc)),
        truststore_p12=write("truststore.p12", pkcs12.serialize_key_and_certificates(None, None, None, [ca], enc)),
    )


class TokenServer:
    """A small OAuth 2 authorization server on loopback: ``POST /token`` (client credentials, HTTP Basic)
    issues RS256 JWTs whose ``sub`` is the client id's user; ``GET /jwks`` publishes the key. ``lifetime_s``
    is each token's lifetime; ``issued`` counts the tokens handed out."""

    def __init__(self, client_id: str, client_secret: str, subject: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_id, self.client_secret, self.subject = client_id, client_secret, subject
        self.lifetime_s = 3600
        self.issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/jwks":
                    self._answer(200, {"keys": [server.jwk()]})
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                expected = "Basic " + base64.b64encode(f"{server.client_id}:{server.client_secret}".encode()).decode()
                if self.path != "/token" or form.get("grant_type") != ["client_credentials"]:
                    self._answer(400, {"error": "unsupported_grant_type"})
                elif self.headers.get("Authorization") != expected:
                    self._answer(401, {"error": "invalid_client"})
                else:
                    server.issued += 1
                    self._answer(200, {"access_token": server.token(), "token_type": "bearer", "expires_in": server.lifetime_s})

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="token-server").start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
        return {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": self._b64(as_bytes(numbers.n)), "e": self._b64(as_bytes(numbers.e))}

    def token(self) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = self._b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
        claims = self._b64(json.dumps({"sub": self.subject, "iat": now, "exp": now + self.lifetime_s, "scope": "kafka"}).encode())
        signature = self.key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{claims}.{self._b64(signature)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SecuredKafkaBroker(KafkaBroker):
    """``KafkaBroker`` plus the secured listeners above. ``password`` is the link users' password (random
    per broker, so a test can grep every output for it); ``ports[name]`` is each listener's port."""

    def __init__(self, extra_config: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(extra_config=extra_config, **kwargs)
        self.password = "pw-" + secrets.token_hex(8)
        self.pki = make_pki(self.workdir / "pki")
        self.ports: dict[str, int] = {}
        self.oauth_secret = "oauth-secret-" + secrets.token_hex(8)
        self.token_server = TokenServer(OAUTH_CLIENT_ID, self.oauth_secret, LINK_USER)
        # Kafka 4 fetches JWKS only from URLs the JVM allows.
        self.jvm_opts = (*self.jvm_opts, f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={self.token_server.url}/jwks")

    def close(self) -> None:
        super().close()
        self.token_server.close()

    def address(self, listener: str) -> str:
        return f"{LOOPBACK}:{self.ports[listener]}"

    def _write_config(self) -> None:
        self.ports = {name: free_port() for name in LISTENERS}
        pki = self.pki
        listeners = [f"PLAINTEXT://{LOOPBACK}:{self.port}", f"CONTROLLER://{LOOPBACK}:{self.controller_port}"]
        listeners += [f"{n}://{LOOPBACK}:{self.ports[n]}" for n in LISTENERS]
        protocol = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", "SSL": "SSL", "MTLS": "SSL", "BADHOST": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL", "OAUTH": "SASL_PLAINTEXT", "EXPIRED": "SSL"}
        plain_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{LINK_USER}="{self.password}" user_{NOACL_USER}="{self.password}";'
        )
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        # Kafka's unsecured JWS validator (the default server callback for OAUTHBEARER): test clusters only.
        oauth_jaas = 'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";'
        secured = {
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(x for x in listeners if not x.startswith("CONTROLLER")),
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocol.items()),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(pki.server_p12),
            "ssl.keystore.password": STORE_PASSWORD,
            "ssl.key.password": STORE_PASSWORD,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca_pem),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.badhost.ssl.keystore.location": str(pki.badhost_p12),
            "listener.name.expired.ssl.keystore.location": str(pki.expired_p12),
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
            "listener.name.oauth.oauthbearer.sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class": "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
            "listener.name.oauth.oauthbearer.sasl.oauthbearer.jwks.endpoint.url": f"{self.token_server.url}/jwks",
        }
        for listener in ("sasl_plaintext", "sasl_ssl"):
            secured[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain_jaas
            secured[f"listener.name.{listener}.scram-sha-256.sasl.jaas.config"] = scram_jaas
            secured[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = scram_jaas
            secured[f"listener.name.{listener}.oauthbearer.sasl.jaas.config"] = oauth_jaas
        # The parent writes its defaults plus extra_config; secured keys go in between, tests' extras win.
        extra, self.extra_config = self.extra_config, {**secured, **self.extra_config}
        try:
            super()._write_config()
        finally:
            self.extra_config = extra

    def _format(self) -> None:
        scram = []
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            for user in (LINK_USER, NOACL_USER):
                scram += ["--add-scram", f"{mechanism}=[name={user},password={self.password}]"]
        argv = self._java_argv("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(self.workdir / "server.properties"), *scram)
        import subprocess

        from . import PeerStartError

        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PeerStartError(f"kafka-storage format failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        self._formatted = True

    # -- ACLs ----------------------------------------------------------------------------------

    def grant(self, principal: str, resource: str, name: str, operations: tuple[str, ...], prefixed: bool = True, timeout: float = 30.0) -> None:
        """ALLOW ``operations`` (AclOperation names) on a TOPIC/GROUP/BROKER resource to ``principal``."""
        from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

        pattern = ResourcePatternType.PREFIXED if prefixed and resource != "BROKER" else ResourcePatternType.LITERAL
        bindings = [
            AclBinding(getattr(ResourceType, resource), name, pattern, principal, "*", getattr(AclOperation, op), AclPermissionType.ALLOW) for op in operations
        ]
        for future in self.admin().create_acls(bindings, request_timeout=timeout).values():
            future.result(timeout)

    def grant_link_read(self, principal: str, topic_prefix: str, group_prefix: str) -> None:
        """What a cluster link needs on its source, and nothing more."""
        self.grant(principal, "TOPIC", topic_prefix, ("READ", "DESCRIBE", "DESCRIBE_CONFIGS"))
        self.grant(principal, "GROUP", group_prefix, ("READ", "DESCRIBE"))
        self.grant(principal, "BROKER", "kafka-cluster", ("DESCRIBE",), prefixed=False)
