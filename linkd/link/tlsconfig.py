"""TLS material for a Kafka connection, with the Kafka client's ``ssl.*`` names: protocol versions, cipher
suites, trust (``ssl.truststore.*``) and identity (``ssl.keystore.*``, ``ssl.key.password``), from PEM or
PKCS12 files or inline PEM. Used by the link's client contexts (``security.build_ssl_context``) and by
linkd's own TLS listeners (``linkd/broker/tls.py``).

PKCS12 is read with ``cryptography`` and handed to ``ssl`` as PEM in memory (the stdlib reads PEM only, and a
key only from a file, so a key goes through a private temporary file that is removed at once).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
STORE_TYPES = ("PEM", "PKCS12")


class SecurityConfigError(ValueError):
    pass


def set_protocols(context: ssl.SSLContext, merged: dict[str, str]) -> None:
    names = [p.strip() for p in merged["ssl.enabled.protocols"].split(",") if p.strip()]
    bad = [p for p in names if p not in TLS_VERSIONS]
    if bad or not names:
        raise SecurityConfigError(f"ssl.enabled.protocols: {', '.join(bad) or 'empty'} not supported (use TLSv1.2 and/or TLSv1.3)")
    # ssl.protocol picks the context's protocol; as in the JDK it caps the versions enabled below it.
    protocol = merged["ssl.protocol"].strip()
    if protocol not in ("TLS", "TLSv1.2", "TLSv1.3"):
        raise SecurityConfigError(f"ssl.protocol must be TLSv1.3, TLSv1.2 or TLS, got {protocol!r}")
    cap = ssl.TLSVersion.TLSv1_2 if protocol == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    versions = sorted(v for v in (TLS_VERSIONS[n] for n in names) if v <= cap)
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


def set_ciphers(context: ssl.SSLContext, suites: str) -> None:
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
    if given and given not in STORE_TYPES:
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


def load_trust(context: ssl.SSLContext, merged: dict[str, str]) -> None:
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


def load_identity(context: ssl.SSLContext, merged: dict[str, str]) -> None:
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
