"""The SASL exchange of the link client (``client.Connection``): at connect and at KIP-368 re-authentication."""

from __future__ import annotations

from protocol.errors import ErrorCode
from protocol.messages import ApiKey

from .oauth import TokenError, bearer_token
from .sasl import OAuthBearerClient, PlainClient, SaslError, ScramClient, client_for
from .security import ClientCredentialsLogin
from .sourceerrors import AuthenticationFailed, SourceProtocolError, source_error


async def sasl_exchange(conn) -> int:
    """SaslHandshake then SaslAuthenticate until the mechanism is done, on ``conn`` (a ``client.Connection``
    with nothing else in flight); returns the session lifetime the broker set (ms, 0: none)."""
    assert conn.security is not None and conn.security.credentials is not None
    mechanism, creds = conn.security.mechanism or "", conn.security.credentials
    try:
        handshake_version = conn.version_for(ApiKey.SASL_HANDSHAKE)
        auth_version = conn.version_for(ApiKey.SASL_AUTHENTICATE)
    except SourceProtocolError as exc:
        raise AuthenticationFailed("ILLEGAL_SASL_STATE", f"{conn.host}:{conn.port} does not offer SASL: {exc}") from exc
    answer = await conn._exchange(ApiKey.SASL_HANDSHAKE, handshake_version, {"mechanism": mechanism})
    if answer["error_code"] != ErrorCode.NONE:
        offered = ", ".join(answer.get("mechanisms") or []) or "none"
        raise AuthenticationFailed(source_error(answer["error_code"]).name, f"{conn.host}:{conn.port} does not accept SASL mechanism {mechanism} (it offers {offered})")
    client: PlainClient | ScramClient | OAuthBearerClient
    if isinstance(creds, ClientCredentialsLogin):
        try:
            client = OAuthBearerClient(await bearer_token(creds))
        except TokenError as exc:
            raise AuthenticationFailed("SASL_AUTHENTICATION_FAILED", f"no OAUTHBEARER token for {conn.host}:{conn.port}: {exc}") from exc
    else:
        client = client_for(mechanism, creds)  # a fresh one each time: the unsecured login mints a new token
    message: bytes | None = client.start()
    lifetime_ms = 0
    while message is not None:
        answer = await conn._exchange(ApiKey.SASL_AUTHENTICATE, auth_version, {"auth_bytes": message})
        if answer["error_code"] != ErrorCode.NONE:
            reason = answer.get("error_message") or "no reason given"
            raise AuthenticationFailed(source_error(answer["error_code"]).name, f"{conn.host}:{conn.port}: {reason}")
        lifetime_ms = answer.get("session_lifetime_ms", 0) or 0
        try:
            message = client.respond(bytes(answer.get("auth_bytes") or b""))
        except SaslError as exc:
            raise AuthenticationFailed("SASL_AUTHENTICATION_FAILED", f"{conn.host}:{conn.port}: {exc}") from exc
    return lifetime_ms
