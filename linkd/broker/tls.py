"""TLS on a listener: the server context from Kafka's broker ``ssl.*`` settings, and the principal a
client certificate names.

Key and trust stores are read exactly as the link reads its own (PEM or PKCS12 files, or inline PEM
in ``ssl.keystore.certificate.chain`` / ``ssl.keystore.key`` / ``ssl.truststore.certificates``), by
the same loaders in ``linkd.link.security``. ``ssl.client.auth`` is Kafka's: ``none`` (the default),
``requested`` (a certificate is checked if sent) or ``required``. The principal of a TLS client with a
certificate is ``User:`` + the subject as RFC 2253 prints it (``CN=alice,OU=ops,O=example``), which
is what Kafka's default principal builder produces; without a certificate it is ``User:ANONYMOUS``.
"""

from __future__ import annotations

import ssl

from ..link import tlsconfig
from .listeners import ListenerConfigError
from .session import ANONYMOUS

CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
SERVER_DEFAULTS = {"ssl.protocol": "TLSv1.3", "ssl.enabled.protocols": "TLSv1.2,TLSv1.3", "ssl.client.auth": "none"}


def server_context(listener: str, settings: dict[str, str]) -> ssl.SSLContext:
    """The TLS context of ``listener`` from its (unprefixed) ``ssl.*`` settings."""
    merged = {**SERVER_DEFAULTS, **{k: v for k, v in settings.items() if k.startswith("ssl.")}}
    where = f"listener {listener}"
    client_auth = merged["ssl.client.auth"].strip().lower()
    if client_auth not in CLIENT_AUTH:
        raise ListenerConfigError(f"{where}: ssl.client.auth must be none, requested or required, got {merged['ssl.client.auth']!r}")
    rules = merged.get("ssl.principal.mapping.rules", "DEFAULT").strip()
    if rules != "DEFAULT":
        raise ListenerConfigError(f"{where}: ssl.principal.mapping.rules other than DEFAULT is not supported yet")
    if not (merged.get("ssl.keystore.location") or merged.get("ssl.keystore.certificate.chain")):
        raise ListenerConfigError(f"{where} speaks TLS but has no ssl.keystore.location (or ssl.keystore.certificate.chain + ssl.keystore.key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        tlsconfig.set_protocols(context, merged)
        if merged.get("ssl.cipher.suites", "").strip():
            tlsconfig.set_ciphers(context, merged["ssl.cipher.suites"])
        tlsconfig.load_identity(context, merged)
        context.verify_mode = CLIENT_AUTH[client_auth]
        if client_auth != "none":
            tlsconfig.load_trust(context, merged)
    except tlsconfig.SecurityConfigError as exc:
        raise ListenerConfigError(f"{where}: {str(exc).replace('the client ', 'the ')}") from None
    return context


def principal_of(der: bytes | None) -> str:
    """Kafka's default principal for a peer certificate (DER), ANONYMOUS without one."""
    if not der:
        return ANONYMOUS
    from cryptography import x509

    return "User:" + x509.load_der_x509_certificate(der).subject.rfc4514_string()
