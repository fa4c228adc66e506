"""OAUTHBEARER tokens from an OAuth 2 token endpoint (client credentials grant, RFC 6749 section 4.4).

What Kafka's ``OAuthBearerLoginCallbackHandler`` does for a client with ``sasl.oauthbearer.token.endpoint.url``:
POST ``grant_type=client_credentials`` (and ``scope`` when given) with the client id and secret as HTTP
Basic credentials, and use the ``access_token`` of the answer. A token is shared by every connection of
a link and fetched again once ``sasl.login.refresh.window.factor`` (0.8) of its lifetime has passed, so
each (re-)authentication before the broker's session lifetime ends carries a token that is still valid.
The lifetime is the answer's ``expires_in``, else the token's own ``exp`` claim.

Errors name the endpoint and the HTTP status, never the secret.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass, field

import trio

REQUEST_TIMEOUT_S = 10.0
# httpx logs every request at INFO; one line per token refresh of every link is noise in the daemon's log.
logging.getLogger("httpx").setLevel(logging.WARNING)


class TokenError(Exception):
    """No token could be obtained from the endpoint."""


@dataclass
class TokenCache:
    token: str | None = None
    refresh_at: float = 0.0  # time.monotonic() after which a new token is fetched
    fetched: int = 0  # tokens obtained so far (for statistics)
    lock: trio.Lock = field(default_factory=trio.Lock)


def _lifetime_s(answer: dict, token: str) -> float:
    if isinstance(answer.get("expires_in"), int | float) and answer["expires_in"] > 0:
        return float(answer["expires_in"])
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return float(claims["exp"]) - time.time()
    except (IndexError, KeyError, ValueError, TypeError):
        raise TokenError("the token endpoint's answer has no expires_in and the token no exp claim") from None


async def bearer_token(login) -> str:
    """A valid access token for ``login`` (security.ClientCredentialsLogin), fetched when due."""
    cache: TokenCache = login.cache
    async with cache.lock:
        if cache.token is not None and time.monotonic() < cache.refresh_at:
            return cache.token
        import httpx

        form = {"grant_type": "client_credentials", **({"scope": login.scope} if login.scope else {})}
        basic = base64.b64encode(f"{urllib.parse.quote(login.client_id)}:{urllib.parse.quote(login.client_secret)}".encode()).decode()
        try:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
                response = await client.post(login.token_url, data=form, headers={"Authorization": f"Basic {basic}", "Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenError(f"token endpoint {login.token_url} unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise TokenError(f"token endpoint {login.token_url} answered HTTP {response.status_code}")
        try:
            answer = response.json()
            token = answer["access_token"]
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"token endpoint {login.token_url} answered without an access_token") from None
        if not isinstance(token, str) or not token:
            raise TokenError(f"token endpoint {login.token_url} answered an empty access_token")
        lifetime = _lifetime_s(answer, token)
        cache.token = token
        cache.refresh_at = time.monotonic() + lifetime * login.refresh_factor
        cache.fetched += 1
        return token
