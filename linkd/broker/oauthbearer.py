"""SASL/OAUTHBEARER on the listener with Kafka's *unsecured* validator (RFC 7628 framing).

Kafka's default server callback for OAUTHBEARER (``OAuthBearerUnsecuredValidatorCallbackHandler``)
accepts unsigned JWTs (``alg: none``) and checks only their claims: the principal claim (``sub`` unless
``unsecuredValidatorPrincipalClaimName``), ``exp`` in the future and ``iat`` not in the future (within
``unsecuredValidatorAllowableClockSkewMs``), and ``unsecuredValidatorRequiredScope`` within the scope
claim (``scope`` unless ``unsecuredValidatorScopeClaimName``). Anyone can mint such a token: it is for
test and development clusters, and linkd logs a WARNING when a listener enables it. Options come from
the listener's ``oauthbearer.sasl.jaas.config`` (``OAuthBearerLoginModule``), as in Kafka. Validating
signed tokens against a JWKS endpoint is not supported yet.

A refused token is answered with RFC 7628's JSON error; the client acknowledges with a lone 0x01 and the
exchange then fails with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass

from .sasl import AuthenticationFailed

LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
OPTIONS = {"unsecuredValidatorPrincipalClaimName", "unsecuredValidatorScopeClaimName", "unsecuredValidatorRequiredScope", "unsecuredValidatorAllowableClockSkewMs"}


@dataclass(frozen=True)
class UnsecuredValidatorOptions:
    principal_claim: str = "sub"
    scope_claim: str = "scope"
    required_scope: tuple[str, ...] = ()
    clock_skew_ms: int = 0

    @classmethod
    def from_jaas(cls, text: str | None) -> UnsecuredValidatorOptions:
        if not text:
            return cls()
        from ..link.jaas import JaasConfigError, parse_jaas

        try:
            modules = parse_jaas(text)
        except JaasConfigError as exc:
            raise ValueError(f"oauthbearer.sasl.jaas.config: {exc}") from None
        if len(modules) != 1 or modules[0].name != LOGIN_MODULE:
            raise ValueError(f"oauthbearer.sasl.jaas.config must name {LOGIN_MODULE}")
        options = modules[0].options
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ValueError(f"oauthbearer.sasl.jaas.config: option(s) {', '.join(unknown)} not supported yet (supported: {', '.join(sorted(OPTIONS))})")
        try:
            skew = int(options.get("unsecuredValidatorAllowableClockSkewMs", "0"))
        except ValueError:
            raise ValueError("unsecuredValidatorAllowableClockSkewMs must be a number of milliseconds") from None
        return cls(
            options.get("unsecuredValidatorPrincipalClaimName", "sub"),
            options.get("unsecuredValidatorScopeClaimName", "scope"),
            tuple(options.get("unsecuredValidatorRequiredScope", "").split()),
            skew,
        )


def _b64json(part: str, what: str) -> dict:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise AuthenticationFailed(f"the token's {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed(f"the token's {what} is not a JSON object")
    return value


class OAuthBearerUnsecuredServer:
    name = "OAUTHBEARER"

    def __init__(self, options: UnsecuredValidatorOptions, now=time.time) -> None:
        self._options = options
        self._now = now
        self._failure: str | None = None
        self.complete = False
        self.principal: str | None = None
        self.token_expires_ms: int | None = None

    def step(self, message: bytes) -> bytes:
        if self._failure is not None:
            # The client's acknowledgement (0x01) of our error: the exchange ends with it.
            raise AuthenticationFailed(self._failure)
        try:
            self._validate(message)
        except AuthenticationFailed as exc:
            self._failure = f"Authentication failed: {exc}"
            return json.dumps({"status": "invalid_token"}).encode()
        self.complete = True
        return b""

    def _validate(self, message: bytes) -> None:
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise AuthenticationFailed("the OAUTHBEARER message is not UTF-8") from None
        header, sep, rest = text.partition("\x01")
        if not sep or not header.startswith(("n,", "y,")):
            raise AuthenticationFailed("malformed OAUTHBEARER client message")
        pairs = dict(item.partition("=")[::2] for item in rest.split("\x01") if item)
        auth = pairs.get("auth", "")
        if not auth.startswith("Bearer "):
            raise AuthenticationFailed("no bearer token in the OAUTHBEARER message")
        parts = auth[len("Bearer "):].strip().split(".")
        if len(parts) != 3:
            raise AuthenticationFailed("the bearer token is not a JWS (three dot-separated parts)")
        jose = _b64json(parts[0], "header")
        if jose.get("alg") != "none" or parts[2]:
            raise AuthenticationFailed("the unsecured validator accepts only unsigned tokens (alg none)")
        claims = _b64json(parts[1], "claims")
        o = self._options
        now_ms = self._now() * 1000
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise AuthenticationFailed("the token has no numeric exp claim")
        if exp * 1000 + o.clock_skew_ms <= now_ms:
            raise AuthenticationFailed("the token has expired")
        iat = claims.get("iat")
        # iat to the millisecond, rounded down: a token read within the millisecond it was issued in is not
        # from the future (the float product may land a hair above the millisecond the claim names).
        if iat is not None and (not isinstance(iat, (int, float)) or isinstance(iat, bool) or math.floor(iat * 1000 + 1e-3) - o.clock_skew_ms > now_ms):
            raise AuthenticationFailed("the token's iat claim is in the future")
        subject = claims.get(o.principal_claim)
        if not isinstance(subject, str) or not subject.strip():
            raise AuthenticationFailed(f"the token has no {o.principal_claim} claim naming the principal")
        scope = claims.get(o.scope_claim, [])
        granted = set(scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else [])
        missing = [s for s in o.required_scope if s not in granted]
        if missing:
            raise AuthenticationFailed(f"the token lacks the required scope {' '.join(missing)}")
        self.principal = f"User:{subject.strip()}"
        self.token_expires_ms = round(exp * 1000)
