"""SASL on a connection: SaslHandshake v0/v1, SaslAuthenticate v0-v2 and KIP-368 re-authentication.

Theory of operation. On a SASL listener a connection starts unauthenticated: only ApiVersions,
SaslHandshake and SaslAuthenticate are answered; any other request closes the connection, as Kafka's
``SaslServerAuthenticator`` does. SaslHandshake names the mechanism (an unknown one gets
UNSUPPORTED_SASL_MECHANISM with the enabled list, then the connection closes). After a v1 handshake
the mechanism's messages travel in SaslAuthenticate; after a v0 handshake they travel as bare
size-prefixed frames (Kafka's legacy framing). A failed exchange is answered with
SASL_AUTHENTICATION_FAILED and the connection closes.

With ``connections.max.reauth.ms`` > 0 a successful SaslAuthenticate (v1+) carries
``session_lifetime_ms``; the client must re-authenticate on the same connection (SaslHandshake +
SaslAuthenticate, same mechanism and principal) before it runs out. A request other than those that
arrives after the session expired closes the connection (KIP-368), as Kafka's broker does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from protocol import messages
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import ApiKey

from .. import cpu
from .dispatch import CloseConnection
from .sasl import AuthenticationFailed, server_for
from .session import Session
from .users import UserStore

log = logging.getLogger(__name__)

SASL_APIS = (ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE)


@dataclass(frozen=True)
class SaslSettings:
    mechanisms: tuple[str, ...]
    reauth_ms: int = 0  # connections.max.reauth.ms; 0: sessions do not expire
    oauth: object | None = None  # oauthbearer.UnsecuredValidatorOptions when OAUTHBEARER is enabled
    # Kafka's sasl.server.max.receive.size: the largest frame an unauthenticated client may send.
    max_receive_size: int = 524_288


class SaslConnection:
    """The SASL state of one connection; ``session`` is updated in place when it authenticates."""

    def __init__(self, settings: SaslSettings, users: UserStore, session: Session, clock: Callable[[], float] = trio.current_time) -> None:
        self.settings = settings
        self.users = users
        self.session = session
        self.clock = clock
        self.raw_tokens = False  # after a v0 handshake: the next frames are bare SASL tokens
        self._server = None
        self._expires_at: float | None = None
        self.authentications = 0
        self.lifetime_ms = 0

    def _lifetime_ms(self, server) -> int:
        """KIP-368: connections.max.reauth.ms, cut to the credential's own end (an OAuth token's exp)."""
        if self.settings.reauth_ms <= 0:
            return 0
        expires = getattr(server, "token_expires_ms", None)
        if expires is None:
            return self.settings.reauth_ms
        return max(1, min(self.settings.reauth_ms, expires - int(time.time() * 1000)))

    def wants(self, frame: bytes | memoryview, api_key: int) -> bool:
        """Is this frame ours (a SASL request or a bare token)? Raises CloseConnection for a request that
        may not be answered now."""
        if self.raw_tokens:
            return True
        if api_key in SASL_APIS:
            return True
        if api_key == ApiKey.API_VERSIONS:
            return False
        if not self.session.authenticated:
            name = ApiKey(api_key).name if api_key in ApiKey._value2member_map_ else str(api_key)
            raise CloseConnection(f"unexpected {name} request before SASL authentication on listener {self.session.listener}")
        if self._expires_at is not None and self.clock() >= self._expires_at:
            raise CloseConnection(f"SASL session of {self.session.principal} expired (connections.max.reauth.ms {self.settings.reauth_ms}) without re-authentication")
        return False

    async def answer(self, frame: bytes | memoryview) -> tuple[bytes | list, bool]:
        """The answer to one of our frames and whether the connection closes after sending it."""
        if self.raw_tokens:
            return await self._raw_token(bytes(frame))
        try:
            request = messages.decode_request(frame)
        except RemoteProtocolError as exc:  # UnsupportedVersion included
            raise CloseConnection(f"undecodable SASL request: {exc}") from exc
        header = request.header
        version, cid = header.api_version, header.correlation_id
        if header.api_key == ApiKey.SASL_HANDSHAKE:
            body, close = self._handshake(request.body.get("mechanism") or "", version)
            return messages.encode_response_chunks(ApiKey.SASL_HANDSHAKE, version, cid, body), close
        body, close = await self._authenticate(bytes(request.body.get("auth_bytes") or b""), version)
        return messages.encode_response_chunks(ApiKey.SASL_AUTHENTICATE, version, cid, body), close

    def _handshake(self, mechanism: str, version: int) -> tuple[dict, bool]:
        enabled = list(self.settings.mechanisms)
        if self._server is not None:
            return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": enabled}, True
        if mechanism not in enabled:
            log.info("client %s asked for SASL mechanism %r on listener %s (enabled: %s)", self.session.host, mechanism, self.session.listener, ", ".join(enabled))
            return {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": enabled}, True
        if self.session.authenticated and self.session.mechanism not in (None, mechanism):
            log.warning("closing %s: re-authentication with %s after %s", self.session.host, mechanism, self.session.mechanism)
            return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": enabled}, True
        if version == 0 and self.session.authenticated:
            return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": enabled}, True
        self._server = server_for(mechanism, self.users, self.settings.oauth)
        self.raw_tokens = version == 0
        return {"error_code": ErrorCode.NONE, "mechanisms": enabled}, False

    async def _step(self, token: bytes) -> bytes:
        server = self._server
        if server is None:
            raise AuthenticationFailed("SaslAuthenticate before SaslHandshake")
        reply = server.step(token)
        pending = getattr(server, "pending", None)
        if pending is not None:
            server.finish(await cpu.run(pending.verify))  # PBKDF2: milliseconds of CPU, off the loop
        if server.complete:
            principal = server.principal or ""
            if self.session.authenticated and self.session.mechanism is not None and principal != self.session.principal:
                raise AuthenticationFailed(f"Cannot change principals during re-authentication from {self.session.principal}: {principal}")
            reauth = self.session.authenticated and self.session.mechanism is not None
            self.session.principal = principal
            self.session.mechanism = server.name
            self.session.authenticated = True
            self.authentications += 1
            self._server = None
            self.lifetime_ms = self._lifetime_ms(server)
            self._expires_at = self.clock() + self.lifetime_ms / 1000 if self.lifetime_ms else None
            log.info("%s %s from %s on listener %s with %s", "re-authenticated" if reauth else "authenticated", principal, self.session.host, self.session.listener, server.name)
        return reply

    async def _authenticate(self, token: bytes, version: int) -> tuple[dict, bool]:
        if self._server is None:
            message = "SaslAuthenticate request received after successful authentication" if self.session.authenticated else "SaslAuthenticate request received before SaslHandshake"
            return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "error_message": message, "auth_bytes": b"", "session_lifetime_ms": 0}, True
        try:
            reply = await self._step(token)
        except AuthenticationFailed as exc:
            self._server = None
            log.warning("SASL authentication of %s on listener %s failed: %s", self.session.host, self.session.listener, exc)
            return {"error_code": ErrorCode.SASL_AUTHENTICATION_FAILED, "error_message": str(exc), "auth_bytes": b"", "session_lifetime_ms": 0}, True
        lifetime = self.lifetime_ms if self.session.authenticated and self._server is None else 0
        return {"error_code": ErrorCode.NONE, "error_message": None, "auth_bytes": reply, "session_lifetime_ms": lifetime}, False

    async def _raw_token(self, token: bytes) -> tuple[bytes, bool]:
        try:
            reply = await self._step(token)
        except AuthenticationFailed as exc:
            raise CloseConnection(f"SASL authentication (legacy framing) failed: {exc}") from None
        if self._server is None:
            self.raw_tokens = False
        return len(reply).to_bytes(4, "big") + reply, False
