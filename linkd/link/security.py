"""How a link reaches a secured source: ``security.protocol``, the ``ssl.*`` and ``sasl.*`` keys.

The keys keep the Kafka client's names and meanings, so a Cluster Linking ``link.config`` or a Java client's
properties file works as it is. This module owns three things:

* the schema of the security keys: which are known, which are secrets (Kafka's ``Type.PASSWORD`` ones,
  hidden in every output and encrypted at rest), and which Kafka keys we do not implement yet (rejected by
  name, never accepted and ignored);
* ``check``: every problem of a config's security keys, as messages naming the key;
* ``SecuritySettings``: the validated view a connection uses, with the TLS context built once per link.

Trust and key material come from files (PEM or PKCS12) or inline PEM, as Kafka allows. PKCS12 is read with
``cryptography`` and handed to ``ssl`` as PEM in memory (the stdlib reads PEM only, and a key only from a
file, so the client key goes through a private temporary file that is removed at once).
"""

from __future__ import annotations

import os
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .jaas import JaasConfigError, JaasModule, parse_jaas

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
OAUTHBEARER_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
LOGIN_MODULES = {
    "PLAIN": ("org.apache.kafka.common.security.plain.PlainLoginModule", "org.apache.kafka.common.security.scram.ScramLoginModule"),
    "SCRAM-SHA-256": ("org.apache.kafka.common.security.scram.ScramLoginModule", "org.apache.kafka.common.security.plain.PlainLoginModule"),
    "SCRAM-SHA-512": ("org.apache.kafka.common.security.scram.ScramLoginModule", "org.apache.kafka.common.security.plain.PlainLoginModule"),
    "OAUTHBEARER": (OAUTHBEARER_MODULE,),
}

SSL_KEYS = {
    "ssl.protocol",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "ssl.endpoint.identification.algorithm",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
}
SASL_KEYS = {"sasl.mechanism", "sasl.jaas.config", "sasl.login.callback.handler.class", "sasl.oauthbearer.token.endpoint.url", "sasl.login.refresh.window.factor"}
# The client-credentials flow, as Kafka names its handler (the second one is the pre-3.7 name).
TOKEN_ENDPOINT_HANDLERS = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerLoginCallbackHandler",
)
# Kafka's Type.PASSWORD client keys (SslConfigs, SaslConfigs): shown as [hidden], encrypted at rest.
SENSITIVE_KEYS = frozenset(
    {
        "sasl.jaas.config",
        "ssl.truststore.password",
        "ssl.truststore.certificates",
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.keystore.certificate.chain",
        "ssl.keystore.key",
    }
)
HIDDEN = "[hidden]"
DEFAULTS = {
    "sasl.mechanism": "GSSAPI",  # Kafka's default; rejected below with the supported list
    "ssl.protocol": "TLSv1.3",
    "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
    "ssl.endpoint.identification.algorithm": "https",
}
_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_STORE_TYPES = ("PEM", "PKCS12")


def is_security_key(key: str) -> bool:
    """A key this module judges (known or not): every ``ssl.*`` and ``sasl.*`` key."""
    return key.startswith("ssl.") or key.startswith("sasl.")


def redact(config: dict[str, str]) -> dict[str, str]:
    """``config`` with every secret's value replaced by ``[hidden]``."""
    return {k: (HIDDEN if k in SENSITIVE_KEYS else v) for k, v in config.items()}


class SecurityConfigError(ValueError):
    pass


def check(config: dict[str, str]) -> list[str]:
    """Every problem of ``config``'s security keys (defaults applied by the caller or here)."""
    merged = {**DEFAULTS, **config}
    problems = []
    for key in sorted(k for k in config if is_security_key(k) and k not in SSL_KEYS and k not in SASL_KEYS):
        problems.append(f"{key} is not supported yet")
    protocol = merged.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        problems.append(f"security.protocol must be one of {', '.join(PROTOCOLS)}, got {merged.get('security.protocol')!r}")
        return problems
    # Keys the protocol would not use are refused rather than ignored (a SASL login set up with
    # security.protocol=SSL would otherwise silently never happen).
    unused = sorted(k for k in config if (k in SASL_KEYS and not protocol.startswith("SASL_")) or (k in SSL_KEYS and protocol not in ("SSL", "SASL_SSL")))
    if unused:
        problems.append(f"{', '.join(unused)} not used with security.protocol {protocol}")
    if protocol.startswith("SASL_"):
        problems.extend(_check_sasl(merged))
    if protocol in ("SSL", "SASL_SSL"):
        try:
            build_ssl_context(merged)
        except SecurityConfigError as exc:
            problems.append(str(exc))
    return problems


def _check_sasl(merged: dict[str, str]) -> list[str]:
    mechanism = merged["sasl.mechanism"].upper()
    if mechanism not in MECHANISMS:
        extra = " (Kafka's default; set sasl.mechanism)" if mechanism == "GSSAPI" else ""
        return [f"sasl.mechanism {merged['sasl.mechanism']}{extra} is not supported yet (supported: {', '.join(MECHANISMS)})"]
    try:
        credentials(merged)
    except SecurityConfigError as exc:
        return [str(exc)]
    return []


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    token_auth: bool = False  # ScramLoginModule tokenauth=true: the password is a delegation token's HMAC


@dataclass(frozen=True)
class UnsecuredLogin:
    """OAuthBearerLoginModule's unsecured options: the claims of the unsigned token minted at each
    (re-)authentication, its lifetime, and the SASL extensions sent with it."""

    claims: dict = field(repr=False)
    lifetime_s: int = 3600
    extensions: dict = field(default_factory=dict, repr=False)


def _unsecured_login(options: dict[str, str]) -> UnsecuredLogin:
    claims: dict = {}
    extensions: dict[str, str] = {}
    lifetime = 3600
    principal_claim = options.get("unsecuredLoginPrincipalClaimName", "sub")
    for key, value in options.items():
        if key.startswith("unsecuredLoginStringClaim_"):
            claims[key.removeprefix("unsecuredLoginStringClaim_")] = value
        elif key.startswith("unsecuredLoginNumberClaim_"):
            try:
                claims[key.removeprefix("unsecuredLoginNumberClaim_")] = float(value) if "." in value else int(value)
            except ValueError:
                raise SecurityConfigError(f"sasl.jaas.config {key} must be a number") from None
        elif key.startswith("unsecuredLoginListClaim_"):
            # Kafka's convention: the first character is the delimiter of the rest.
            claims[key.removeprefix("unsecuredLoginListClaim_")] = [v for v in value[1:].split(value[:1])] if value else []
        elif key.startswith("unsecuredLoginExtension_"):
            name = key.removeprefix("unsecuredLoginExtension_")
            if not name.isalpha() or name == "auth":
                raise SecurityConfigError(f"sasl.jaas.config {key}: an extension name is letters only and not 'auth'")
            extensions[name] = value
        elif key == "unsecuredLoginLifetimeSeconds":
            try:
                lifetime = int(value)
            except ValueError:
                raise SecurityConfigError("sasl.jaas.config unsecuredLoginLifetimeSeconds must be an integer") from None
        elif key != "unsecuredLoginPrincipalClaimName":
            raise SecurityConfigError(f"sasl.jaas.config option {key} of OAuthBearerLoginModule is not supported yet")
    if not isinstance(claims.get(principal_claim), str) or not claims[principal_claim]:
        raise SecurityConfigError(f"sasl.jaas.config for OAUTHBEARER needs unsecuredLoginStringClaim_{principal_claim} (the principal)")
    if lifetime < 1:
        raise SecurityConfigError("sasl.jaas.config unsecuredLoginLifetimeSeconds must be positive")
    return UnsecuredLogin(claims, lifetime, extensions)


@dataclass(frozen=True)
class ClientCredentialsLogin:
    """OAUTHBEARER with tokens from ``sasl.oauthbearer.token.endpoint.url`` (see oauth.py); the cache is
    shared by every connection of the link."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    refresh_factor: float = 0.8
    cache: object = field(default=None, repr=False, compare=False)


def _client_credentials(merged: dict[str, str], options: dict[str, str]) -> ClientCredentialsLogin:
    from .oauth import TokenCache

    handler = merged.get("sasl.login.callback.handler.class", "").strip()
    url = merged.get("sasl.oauthbearer.token.endpoint.url", "").strip()
    if handler not in TOKEN_ENDPOINT_HANDLERS:
        raise SecurityConfigError(f"sasl.login.callback.handler.class {handler} is not supported yet (use {TOKEN_ENDPOINT_HANDLERS[0]})")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SecurityConfigError("sasl.oauthbearer.token.endpoint.url must be an http(s) URL (file: token files are not supported yet)")
    unknown = sorted(set(options) - {"clientId", "clientSecret", "scope"})
    if unknown:
        raise SecurityConfigError(f"sasl.jaas.config option(s) {', '.join(unknown)} of OAuthBearerLoginModule are not supported yet with a token endpoint")
    missing = [k for k in ("clientId", "clientSecret") if not options.get(k)]
    if missing:
        raise SecurityConfigError(f"sasl.jaas.config for the token endpoint needs {' and '.join(missing)}")
    try:
        factor = float(merged.get("sasl.login.refresh.window.factor", "0.8"))
    except ValueError:
        factor = -1.0
    if not 0.5 <= factor <= 1.0:
        raise SecurityConfigError("sasl.login.refresh.window.factor must be between 0.5 and 1.0")
    return ClientCredentialsLogin(url, options["clientId"], options["clientSecret"], options.get("scope") or None, factor, TokenCache())


def credentials(merged: dict[str, str]) -> Credentials | UnsecuredLogin | ClientCredentialsLogin:
    """The SASL credentials in ``sasl.jaas.config`` (errors never quote the value: it holds the password)."""
    mechanism = merged["sasl.mechanism"].upper()
    text = merged.get("sasl.jaas.config", "")
    if not text.strip():
        raise SecurityConfigError(f"sasl.jaas.config is required for sasl.mechanism {mechanism}")
    try:
        modules = parse_jaas(text)
    except JaasConfigError as exc:
        raise SecurityConfigError(f"sasl.jaas.config: {exc}") from None
    if len(modules) != 1:
        raise SecurityConfigError(f"sasl.jaas.config must name exactly one login module, got {len(modules)}")
    module: JaasModule = modules[0]
    if module.name not in LOGIN_MODULES[mechanism]:
        raise SecurityConfigError(f"sasl.jaas.config login module {module.name} is not supported yet for sasl.mechanism {mechanism} (use {LOGIN_MODULES[mechanism][0]})")
    uses_endpoint = any(merged.get(k, "").strip() for k in ("sasl.login.callback.handler.class", "sasl.oauthbearer.token.endpoint.url"))
    if mechanism == "OAUTHBEARER" and uses_endpoint:
        return _client_credentials(merged, module.options)
    if uses_endpoint or merged.get("sasl.login.refresh.window.factor", "").strip():
        raise SecurityConfigError("sasl.login.callback.handler.class, sasl.oauthbearer.token.endpoint.url and sasl.login.refresh.window.factor go with sasl.mechanism=OAUTHBEARER and a token endpoint")
    if mechanism == "OAUTHBEARER":
        return _unsecured_login(module.options)
    missing = [k for k in ("username", "password") if k not in module.options]
    if missing:
        raise SecurityConfigError(f"sasl.jaas.config for {mechanism} needs {' and '.join(missing)}")
    token_auth = module.options.get("tokenauth", "false").lower() == "true"
    if token_auth and not mechanism.startswith("SCRAM"):
        raise SecurityConfigError("sasl.jaas.config tokenauth=true needs a SCRAM mechanism")
    return Credentials(module.options["username"], module.options["password"], token_auth)


# -- TLS -----------------------------------------------------------------------------------------


def build_ssl_context(merged: dict[str, str]) -> ssl.SSLContext:
    """The client TLS context for these ``ssl.*`` settings; SecurityConfigError names what is wrong."""
    merged = {**DEFAULTS, **merged}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname checks by default
    context.verify_mode = ssl.CERT_REQUIRED
    algorithm = merged["ssl.endpoint.identification.algorithm"].strip()
    if algorithm.lower() not in ("https", ""):
        raise SecurityConfigError(f"ssl.endpoint.identification.algorithm must be https or empty, got {algorithm!r}")
    context.check_hostname = algorithm.lower() == "https"
    _set_protocols(context, merged)
    if merged.get("ssl.cipher.suites", "").strip():
        _set_ciphers(context, merged["ssl.cipher.suites"])
    _load_trust(context, merged)
    _load_identity(context, merged)
    return context


def _set_protocols(context: ssl.SSLContext, merged: dict[str, str]) -> None:
    names = [p.strip() for p in merged["ssl.enabled.protocols"].split(",") if p.strip()]
    bad = [p for p in names if p not in _TLS_VERSIONS]
    if bad or not names:
        raise SecurityConfigError(f"ssl.enabled.protocols: {', '.join(bad) or 'empty'} not supported (use TLSv1.2 and/or TLSv1.3)")
    # ssl.protocol picks the context's protocol; as in the JDK it caps the versions enabled below it.
    protocol = merged["ssl.protocol"].strip()
    if protocol not in ("TLS", "TLSv1.2", "TLSv1.3"):
        raise SecurityConfigError(f"ssl.protocol must be TLSv1.3, TLSv1.2 or TLS, got {protocol!r}")
    cap = ssl.TLSVersion.TLSv1_2 if protocol == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    versions = sorted(v for v in (_TLS_VERSIONS[n] for n in names) if v <= cap)
    if not versions:
        raise SecurityConfigError(f"ssl.enabled.protocols {merged['ssl.enabled.protocols']} leaves nothing enabled under ssl.protocol {protocol}")
    context.minimum_version, context.maximum_version = versions[0], versions[-1]


def _openssl_cipher_name(name: str) -> str:
    """A Java/IANA TLS 1.2 suite name (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``) in OpenSSL's spelling
    (``ECDHE-RSA-AES128-GCM-SHA256``); an OpenSSL name is returned as it is."""
    if not name.startswith("TLS_"):
        return name
    if "_WITH_" not in name:
        raise SecurityConfigError(f"ssl.cipher.suites: {name} is a TLS 1.3 suite; choosing TLS 1.3 suites is not supported yet")
    exchange, _, cipher = name[4:].partition("_WITH_")
    parts = cipher.split("_")
    if parts[0] == "AES" and len(parts) == 4:  # AES_128_GCM_SHA256, AES_256_CBC_SHA384
        body = f"AES{parts[1]}-{parts[2]}-{parts[3]}" if parts[2] == "GCM" else f"AES{parts[1]}-{parts[3]}"
    elif parts[:2] == ["CHACHA20", "POLY1305"]:
        body = "CHACHA20-POLY1305"
    else:
        raise SecurityConfigError(f"ssl.cipher.suites: {name} is not supported yet")
    return f"{exchange.replace('_', '-')}-{body}"


def _set_ciphers(context: ssl.SSLContext, suites: str) -> None:
    names = [s.strip() for s in suites.split(",") if s.strip()]
    if context.maximum_version != ssl.TLSVersion.TLSv1_2:
        # Python's ssl module sets TLS 1.2 suites only; TLS 1.3 would silently negotiate any of its own.
        raise SecurityConfigError("ssl.cipher.suites chooses TLS 1.2 suites; set ssl.enabled.protocols=TLSv1.2 with it (TLS 1.3 suite selection is not supported yet)")
    openssl = [_openssl_cipher_name(n) for n in names]
    for original, name in zip(names, openssl, strict=True):
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            probe.set_ciphers(name)
        except ssl.SSLError:
            raise SecurityConfigError(f"ssl.cipher.suites: {original} is not available in this OpenSSL ({ssl.OPENSSL_VERSION})") from None
    context.set_ciphers(":".join(openssl))


def _store_type(merged: dict[str, str], prefix: str, location: str) -> str:
    given = merged.get(f"{prefix}.type", "").strip().upper()
    if given and given not in _STORE_TYPES:
        raise SecurityConfigError(f"{prefix}.type {merged[f'{prefix}.type']} is not supported yet (use PEM or PKCS12)")
    if given:
        return given
    # Kafka's default type is JKS, which we do not read: infer PEM or PKCS12 from the file instead.
    try:
        head = Path(location).read_bytes()[:64]
    except OSError as exc:
        raise SecurityConfigError(f"{prefix}.location {location}: {exc.strerror or exc}") from None
    return "PEM" if b"-----BEGIN" in head else "PKCS12"


def _read(location: str, key: str) -> bytes:
    try:
        return Path(location).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{key} {location}: {exc.strerror or exc}") from None


def _pkcs12(data: bytes, password: str | None, key: str):
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        return pkcs12.load_pkcs12(data, password.encode() if password else None)
    except ValueError as exc:
        raise SecurityConfigError(f"{key} is not a PKCS12 store readable with the given password ({exc}; JKS is not supported yet)") from None


def _load_trust(context: ssl.SSLContext, merged: dict[str, str]) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    inline = merged.get("ssl.truststore.certificates", "").strip()
    location = merged.get("ssl.truststore.location", "").strip()
    if inline and location:
        raise SecurityConfigError("set ssl.truststore.certificates or ssl.truststore.location, not both")
    if inline:
        pem = inline
    elif location:
        kind = _store_type(merged, "ssl.truststore", location)
        data = _read(location, "ssl.truststore.location")
        if kind == "PEM":
            pem = data.decode("ascii", "replace")
        else:
            store = _pkcs12(data, merged.get("ssl.truststore.password"), "ssl.truststore.location")
            certs = [c.certificate for c in store.additional_certs] + ([store.cert.certificate] if store.cert else [])
            pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)
    else:
        context.load_default_certs()  # no truststore: the system's, as the JDK uses its cacerts
        return
    try:
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise SecurityConfigError(f"{'ssl.truststore.certificates' if inline else 'ssl.truststore.location'} holds no usable certificate ({exc})") from None


def _load_identity(context: ssl.SSLContext, merged: dict[str, str]) -> None:
    from cryptography.hazmat.primitives import serialization

    chain = merged.get("ssl.keystore.certificate.chain", "").strip()
    inline_key = merged.get("ssl.keystore.key", "").strip()
    location = merged.get("ssl.keystore.location", "").strip()
    key_password = merged.get("ssl.key.password") or None
    if (chain or inline_key) and location:
        raise SecurityConfigError("set ssl.keystore.location or ssl.keystore.certificate.chain + ssl.keystore.key, not both")
    if bool(chain) != bool(inline_key):
        raise SecurityConfigError("ssl.keystore.certificate.chain and ssl.keystore.key go together")
    if chain:
        cert_pem, key_data, password = chain.encode(), inline_key.encode(), key_password
    elif location:
        kind = _store_type(merged, "ssl.keystore", location)
        data = _read(location, "ssl.keystore.location")
        if kind == "PEM":
            cert_pem, key_data, password = data, data, key_password
        else:
            store = _pkcs12(data, merged.get("ssl.keystore.password"), "ssl.keystore.location")
            if store.key is None or store.cert is None:
                raise SecurityConfigError("ssl.keystore.location holds no private key with its certificate")
            certs = [store.cert.certificate] + [c.certificate for c in store.additional_certs]
            cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
            key_data, password = store.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), None
    else:
        return
    try:
        key = serialization.load_pem_private_key(key_data, password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise SecurityConfigError(f"the client private key cannot be read (check ssl.key.password): {exc}") from None
    plain_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    certs_only = b"".join(block for block in _pem_blocks(cert_pem) if b"CERTIFICATE" in block.split(b"\n", 1)[0])
    if not certs_only:
        raise SecurityConfigError("the client keystore holds no certificate")
    _load_chain(context, certs_only, plain_key)


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN"):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith(b"-----END"):
                blocks.append(b"".join(current))
                current = []
    return blocks


def _load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` reads files only: write both to a private temporary file, load, remove."""
    fd, path = tempfile.mkstemp(prefix="linkd-key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + b"\n" + key_pem)
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise SecurityConfigError(f"the client certificate and key do not go together ({exc})") from None
    finally:
        os.unlink(path)


# -- the validated view --------------------------------------------------------------------------


@dataclass(frozen=True)
class SecuritySettings:
    protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    mechanism: str | None = None
    credentials: Credentials | UnsecuredLogin | ClientCredentialsLogin | None = None

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def sasl(self) -> bool:
        return self.mechanism is not None

    @classmethod
    def from_config(cls, merged: dict[str, str]) -> SecuritySettings:
        problems = check(merged)  # before the defaults: only keys the operator set count as set
        if problems:
            raise SecurityConfigError("; ".join(problems))
        merged = {**DEFAULTS, **merged}
        protocol = merged.get("security.protocol", "PLAINTEXT").upper()
        context = build_ssl_context(merged) if protocol in ("SSL", "SASL_SSL") else None
        if protocol.startswith("SASL_"):
            return cls(protocol, context, merged["sasl.mechanism"].upper(), credentials(merged))
        return cls(protocol, context)

    def __repr__(self) -> str:  # never the credentials
        return f"SecuritySettings(protocol={self.protocol}, mechanism={self.mechanism})"
