"""SASL client mechanisms, sans-IO: PLAIN (RFC 4616), SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and
OAUTHBEARER (RFC 7628) with Kafka's unsecured JWS login.

A mechanism is a small object with two verbs: ``start()`` gives the first message, ``respond(challenge)``
the next one for a server message (``None`` once the exchange is complete). The connection carries the
messages in SaslAuthenticate requests; nothing here does I/O.

SCRAM checks the server's signature in its final message, so a server that does not know the password
(an impostor the TLS layer did not stop) fails the exchange rather than being trusted. As Kafka's
``ScramFormatter`` does, the password is used as UTF-8 without SASLprep, and a server asking for fewer
iterations than the mechanism's minimum (4096), or more than Kafka's maximum (16384), is refused.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from .. import scram
from ..scram import MAX_ITERATIONS, MIN_ITERATIONS

__all__ = ["MAX_ITERATIONS", "MIN_ITERATIONS", "SaslError", "PlainClient", "ScramClient", "OAuthBearerClient", "client_for", "unsecured_jws"]
_HASHES = scram.HASHES


class SaslError(Exception):
    """The exchange cannot go on: the server's message is malformed, or it proved nothing."""


class PlainClient:
    name = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self._message = b"\0" + username.encode() + b"\0" + password.encode()
        self.complete = False

    def start(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> bytes | None:
        self.complete = True  # PLAIN is one message; the server's answer is empty
        return None


_saslname = scram.saslname


def _attributes(message: str) -> dict[str, str]:
    try:
        return scram.attributes(message)
    except scram.ScramSyntaxError as exc:
        raise SaslError(str(exc)) from None


class ScramClient:
    def __init__(self, mechanism: str, username: str, password: str, token_auth: bool = False, nonce: str | None = None) -> None:
        if mechanism not in _HASHES:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        self.name = mechanism
        self._hash = _HASHES[mechanism]
        self._password = password.encode()
        self._nonce = nonce or secrets.token_urlsafe(24)
        extensions = ",tokenauth=true" if token_auth else ""
        self._client_first_bare = f"n={_saslname(username)},r={self._nonce}{extensions}"
        self._server_signature: bytes | None = None
        self.complete = False

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return scram.hmac_digest(self._hash, key, message)

    def start(self) -> bytes:
        return ("n,," + self._client_first_bare).encode()

    def respond(self, challenge: bytes) -> bytes | None:
        if self._server_signature is None:
            return self._client_final(challenge)
        self._verify_server_final(challenge)
        return None

    def _client_final(self, challenge: bytes) -> bytes:
        try:
            server_first = challenge.decode()
        except UnicodeDecodeError:
            raise SaslError("SCRAM server-first-message is not UTF-8") from None
        attrs = _attributes(server_first)
        if "e" in attrs:
            raise SaslError(f"server refused: {attrs['e']}")
        if not {"r", "s", "i"} <= attrs.keys():
            raise SaslError("SCRAM server-first-message lacks its nonce, salt or iteration count")
        nonce = attrs["r"]
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("SCRAM server nonce does not extend the client's")
        try:
            salt = base64.b64decode(attrs["s"], validate=True)
            iterations = int(attrs["i"])
        except ValueError:
            raise SaslError("SCRAM server-first-message has a malformed salt or iteration count") from None
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise SaslError(f"SCRAM server asked for {iterations} iterations, outside {MIN_ITERATIONS}..{MAX_ITERATIONS}")
        salted = scram.salted_password(self._hash, self._password, salt, iterations)
        client_key = scram.client_key(self._hash, salted)
        stored_key = scram.stored_key(self._hash, salted)
        without_proof = f"c=biws,r={nonce}"  # biws: base64 of the gs2 header "n,," (no channel binding)
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = scram.xor(client_key, signature)
        self._server_signature = self._hmac(scram.server_key(self._hash, salted), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def _verify_server_final(self, challenge: bytes) -> None:
        attrs = _attributes(challenge.decode("utf-8", "replace"))
        if "e" in attrs:
            raise SaslError(f"server refused: {attrs['e']}")
        try:
            theirs = base64.b64decode(attrs.get("v", ""), validate=True)
        except ValueError:
            theirs = b""
        if not theirs or not hmac.compare_digest(theirs, self._server_signature or b""):
            raise SaslError("SCRAM server signature does not match: the server does not know the credentials")
        self.complete = True
        return None


class OAuthBearerClient:
    """RFC 7628's client initial response carrying a bearer token (and SASL extensions). A server that
    refuses answers with a JSON error; the client then sends a lone 0x01 and the server ends the exchange
    with its error, which the connection reports."""

    name = "OAUTHBEARER"

    def __init__(self, token: str, extensions: dict[str, str] | None = None) -> None:
        extra = "".join(f"{k}={v}\x01" for k, v in sorted((extensions or {}).items()))
        self._message = f"n,,\x01auth=Bearer {token}\x01{extra}\x01".encode()
        self.complete = False

    def start(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> bytes | None:
        if challenge:
            return b"\x01"
        self.complete = True
        return None


def unsecured_jws(claims: dict, lifetime_s: int, now: float | None = None) -> str:
    """An unsigned JWT (``alg: none``), as Kafka's OAuthBearerUnsecuredLoginCallbackHandler makes one
    from the login module's options: the given claims plus ``iat`` and ``exp``. For test and development
    clusters whose brokers run Kafka's unsecured validator; it proves nothing to anyone else."""
    import json
    import math
    import time

    issued = time.time() if now is None else now

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).rstrip(b"=").decode()

    # Whole milliseconds, rounded down, as Kafka's unsecured login writes them: a validator reading the token
    # within the same millisecond must not find its iat in the future (rounding to nearest could move it up
    # by half a millisecond, and a broker answering that fast refused the token).
    issued_ms = math.floor(issued * 1000)
    body = {**claims, "iat": issued_ms / 1000, "exp": (issued_ms + lifetime_s * 1000) / 1000}
    return f"{part({'alg': 'none'})}.{part(body)}."


def client_for(mechanism: str, credentials) -> PlainClient | ScramClient | OAuthBearerClient:
    """The mechanism's client for ``credentials`` (security.Credentials or security.UnsecuredLogin)."""
    if mechanism == "OAUTHBEARER":
        return OAuthBearerClient(unsecured_jws(credentials.claims, credentials.lifetime_s), credentials.extensions)
    if mechanism == "PLAIN":
        return PlainClient(credentials.username, credentials.password)
    return ScramClient(mechanism, credentials.username, credentials.password, credentials.token_auth)
