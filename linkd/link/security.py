"""How a link reaches a secured source: ``security.protocol``, the ``ssl.*`` and ``sasl.*`` keys.

The keys keep the Kafka client's names and meanings, so a Cluster Linking ``link.config`` or a Java client's
properties file works as it is. This module owns three things:

* the schema of the security keys: which are known, which are secrets (Kafka's ``Type.PASSWORD`` ones,
  hidden in every output and encrypted at rest), and which Kafka keys we do not implement yet (rejected by
  name, never accepted and ignored);
* ``check``: every problem of a config's security keys, as messages naming the key;
* ``SecuritySettings``: the validated view a connection uses, with the TLS context built once per link.

Trust and key material (PEM or PKCS12 files, inline PEM) are loaded by ``tlsconfig``, which linkd's own
TLS listeners share.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass, field

from . import tlsconfig
from .jaas import JaasConfigError, JaasModule, parse_jaas
from .tlsconfig import SecurityConfigError

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


def is_security_key(key: str) -> bool:
    """A key this module judges (known or not): every ``ssl.*`` and ``sasl.*`` key."""
    return key.startswith("ssl.") or key.startswith("sasl.")


def redact(config: dict[str, str]) -> dict[str, str]:
    """``config`` with every secret's value replaced by ``[hidden]``."""
    return {k: (HIDDEN if k in SENSITIVE_KEYS else v) for k, v in config.items()}


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
    tlsconfig.set_protocols(context, merged)
    if merged.get("ssl.cipher.suites", "").strip():
        tlsconfig.set_ciphers(context, merged["ssl.cipher.suites"])
    tlsconfig.load_trust(context, merged)
    tlsconfig.load_identity(context, merged)
    return context


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
