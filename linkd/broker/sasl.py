"""SASL server mechanisms for the listener, sans-IO: PLAIN (RFC 4616) and SCRAM-SHA-256/512
(RFC 5802, RFC 7677).

A mechanism has one verb, ``step(client_message) -> server_message``; once ``complete`` is true,
``principal`` names the authenticated user (``User:alice``). A refusal raises ``AuthenticationFailed``
whose message is what the client is told: as Kafka does, it does not say whether the user exists.
Credentials come from ``users.UserStore`` (PLAIN users are its SCRAM users, see there).

SCRAM here takes no channel binding (``n,,`` or ``y,,``), refuses an authorization id other than the
user, and refuses ``tokenauth`` (delegation tokens are not supported).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from .. import scram
from .users import PasswordCheck, ScramCredential, UserStore

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
OPTIONAL = ("OAUTHBEARER",)  # only when listed: its validator is Kafka's unsecured one (oauthbearer.py)
NOT_YET = ("GSSAPI",)


class AuthenticationFailed(Exception):
    """The client proved nothing; the message goes back to it in SaslAuthenticate's error_message."""


class PlainServer:
    name = "PLAIN"

    def __init__(self, users: UserStore) -> None:
        self._users = users
        self.complete = False
        self.principal: str | None = None
        # Set by ``step``: the PBKDF2 check the caller must run (off the loop) and hand to ``finish``.
        self.pending: PasswordCheck | None = None
        self._user = ""

    def step(self, message: bytes) -> bytes:
        if self.complete:
            raise AuthenticationFailed("PLAIN authentication is already complete")
        parts = message.split(b"\0")
        if len(parts) != 3:
            raise AuthenticationFailed("Invalid SASL/PLAIN response: expected 3 tokens")
        try:
            authzid, user, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid SASL/PLAIN response: not UTF-8") from None
        if not user:
            raise AuthenticationFailed("Authentication failed: username not specified")
        if not password:
            raise AuthenticationFailed("Authentication failed: password not specified")
        if authzid and authzid != user:
            raise AuthenticationFailed("Authentication failed: Client requested an authorization id that is different from username")
        check = self._users.password_check(user, password)
        if check is None:
            raise AuthenticationFailed("Authentication failed: Invalid username or password")
        self._user, self.pending = user, check
        return b""

    def finish(self, verified: bool) -> None:
        """The outcome of ``pending.verify()``."""
        self.pending = None
        if not verified:
            raise AuthenticationFailed("Authentication failed: Invalid username or password")
        self.complete = True
        self.principal = f"User:{self._user}"


class ScramServer:
    def __init__(self, mechanism: str, users: UserStore, nonce: str | None = None) -> None:
        self.name = mechanism
        self._hash = scram.HASHES[mechanism]
        self._users = users
        self._server_nonce = nonce or secrets.token_urlsafe(24)
        self._state = "first"
        self._user = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""
        self._credential: ScramCredential | None = None
        self.complete = False
        self.principal: str | None = None

    def step(self, message: bytes) -> bytes:
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise AuthenticationFailed(f"Invalid {self.name} message: not UTF-8") from None
        try:
            if self._state == "first":
                return self._first(text)
            if self._state == "final":
                return self._final(text)
        except scram.ScramSyntaxError as exc:
            raise AuthenticationFailed(f"Invalid {self.name} message: {exc}") from None
        raise AuthenticationFailed(f"{self.name} authentication is already complete")

    def _first(self, text: str) -> bytes:
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or flag not in ("n", "y"):
            raise AuthenticationFailed(f"Invalid {self.name} client-first-message (channel binding is not supported)")
        # Kafka's SCRAM extensions (``tokenauth=true``) follow the nonce as multi-letter attributes.
        parts = bare.split(",")
        extensions = dict(p.partition("=")[::2] for p in parts if len(p.partition("=")[0]) > 1)
        attrs = scram.attributes(",".join(p for p in parts if len(p.partition("=")[0]) <= 1))
        if extensions.get("tokenauth", "").lower() == "true":
            raise AuthenticationFailed("Authentication failed: delegation tokens are not supported")
        if "n" not in attrs or "r" not in attrs:
            raise AuthenticationFailed(f"Invalid {self.name} client-first-message: no user name or nonce")
        if attrs.get("m"):
            raise AuthenticationFailed(f"Invalid {self.name} client-first-message: mandatory extension not supported")
        user = scram.unescape_saslname(attrs["n"])
        if authzid and authzid != f"a={scram.saslname(user)}":
            raise AuthenticationFailed("Authentication failed: Client requested an authorization id that is different from username")
        self._credential = self._users.credential(user, self.name)
        if self._credential is None:
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        self._user, self._client_first_bare, self._gs2_header = user, bare, f"{flag},{authzid},"
        self._nonce = attrs["r"] + self._server_nonce
        self._server_first = f"r={self._nonce},s={scram.b64(self._credential.salt)},i={self._credential.iterations}"
        self._state = "final"
        return self._server_first.encode()

    def _final(self, text: str) -> bytes:
        without_proof, sep, proof_attr = text.rpartition(",p=")
        attrs = scram.attributes(without_proof) if sep else {}
        if not sep or "c" not in attrs or "r" not in attrs:
            raise AuthenticationFailed(f"Invalid {self.name} client-final-message")
        if attrs["r"] != self._nonce:
            raise AuthenticationFailed("Invalid client nonce in the final client message")
        if attrs["c"] != scram.b64(self._gs2_header.encode()):
            raise AuthenticationFailed("Invalid channel binding in the final client message")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except (binascii.Error, ValueError):
            raise AuthenticationFailed(f"Invalid {self.name} client proof") from None
        cred = self._credential
        assert cred is not None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = scram.hmac_digest(self._hash, cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthenticationFailed(f"Authentication failed during authentication due to invalid credentials with SASL mechanism {self.name}")
        claimed_client_key = scram.xor(proof, signature)
        if not hmac.compare_digest(hashlib.new(self._hash, claimed_client_key).digest(), cred.stored_key):
            raise AuthenticationFailed(f"Authentication failed during authentication due to invalid credentials with SASL mechanism {self.name}")
        self._state = "done"
        self.complete = True
        self.principal = f"User:{self._user}"
        return f"v={scram.b64(scram.hmac_digest(self._hash, cred.server_key, auth_message))}".encode()


def server_for(mechanism: str, users: UserStore, oauth=None):
    if mechanism == "PLAIN":
        return PlainServer(users)
    if mechanism == "OAUTHBEARER":
        from .oauthbearer import OAuthBearerUnsecuredServer, UnsecuredValidatorOptions

        return OAuthBearerUnsecuredServer(oauth or UnsecuredValidatorOptions())
    return ScramServer(mechanism, users)


def enabled_mechanisms(value: str | None) -> tuple[str, ...]:
    """``sasl.enabled.mechanisms``; Kafka's default is GSSAPI, which linkd does not have: its default is
    PLAIN plus both SCRAM mechanisms."""
    if value is None:
        return MECHANISMS
    names = tuple(dict.fromkeys(m.strip().upper() for m in value.split(",") if m.strip()))
    if not names:
        raise ValueError("sasl.enabled.mechanisms is empty")
    for name in names:
        if name in NOT_YET:
            raise ValueError(f"sasl.enabled.mechanisms: {name} is not supported yet (supported: {', '.join(MECHANISMS + OPTIONAL)})")
        if name not in MECHANISMS + OPTIONAL:
            raise ValueError(f"sasl.enabled.mechanisms: unknown mechanism {name} (supported: {', '.join(MECHANISMS + OPTIONAL)})")
    return names
