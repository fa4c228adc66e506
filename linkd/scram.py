"""SCRAM's pure pieces (RFC 5802, RFC 7677), shared by the link's client and the listener's server.

No I/O and no state: key derivation, the message attribute syntax and the proof arithmetic. As Kafka's
``ScramFormatter`` does, passwords are UTF-8 without SASLprep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MIN_ITERATIONS = 4096
# Kafka's own bound for SCRAM credentials; more would only stall the event loop in PBKDF2.
MAX_ITERATIONS = 16384
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
DEFAULT_ITERATIONS = 4096  # kafka-configs' default


class ScramSyntaxError(ValueError):
    """A SCRAM message that does not follow RFC 5802's attribute syntax."""


def saslname(name: str) -> str:
    """RFC 5802's escaping of a user name inside a message."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(value: str) -> str:
    if "=" in value.replace("=3D", "").replace("=2C", ""):
        raise ScramSyntaxError(f"invalid escape in SCRAM user name {value!r}")
    return value.replace("=2C", ",").replace("=3D", "=")


def attributes(message: str) -> dict[str, str]:
    """``k=v,k=v`` -> dict; the first occurrence of a key wins."""
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramSyntaxError(f"malformed SCRAM message attribute {key!r}")
        out.setdefault(key, value)
    return out


def hmac_digest(hash_name: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hash_name).digest()


def salted_password(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)


def client_key(hash_name: str, salted: bytes) -> bytes:
    return hmac_digest(hash_name, salted, b"Client Key")


def stored_key(hash_name: str, salted: bytes) -> bytes:
    return hashlib.new(hash_name, client_key(hash_name, salted)).digest()


def server_key(hash_name: str, salted: bytes) -> bytes:
    return hmac_digest(hash_name, salted, b"Server Key")


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
