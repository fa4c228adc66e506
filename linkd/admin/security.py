"""The admin API's front door: an ASGI layer in front of the REST routes that decides who may ask what.

Order of checks for every request (the first that fails answers, and the routes never run):

1. ``/health``, ``/v3/health``, ``/readyz`` (ready: the Kafka listener is bound and the links are loaded) and
   ``/livez`` (the event loop answers) are answered here, to anyone: load balancers and container health
   checks carry no credentials and may use any ``Host``. They reveal nothing but up/down.
2. ``Host`` must name this API: a loopback name, the bound address, or one given with
   ``--admin-allowed-host`` (port ignored). A browser tricked by DNS rebinding sends the attacker's name.
3. ``Origin``, when present, must be ``http(s)://`` one of those same hosts: a cross-site page's request is
   refused before it can change anything (CSRF). Non-browser clients send no ``Origin``.
4. Authentication, when configured: HTTP Basic checked by an ``Authenticator`` callable (the
   ``--admin-basic-auth-file``, or linkd's own SCRAM users with ``--admin-auth users``), and/or mTLS (hypercorn requires a client
   certificate signed by ``--admin-tls-ca`` during the handshake, so every request on such a connection is
   from a certificate holder).
5. Permission: ``GET``/``HEAD`` and ``POST .../mirrors:verify`` (which only reads) need any authenticated
   principal; every other method changes state and needs an ``admin`` principal (Kafka's ALTER on CLUSTER).
   With ``--admin-auth users`` the daemon's authorizer decides instead, per request: ``User:<name>`` needs
   DESCRIBE on CLUSTER to read and ALTER on CLUSTER to change anything (super users pass).
6. ``POST``/``PUT``/``PATCH`` (and any request carrying a body) must say ``Content-Type: application/json``:
   a browser's cross-site "simple" request can only send form or text types.
7. The body is limited while it streams: a ``Content-Length`` over the limit is refused before a byte is
   read, and a chunked body is cut off as soon as it passes the limit.

Every refusal answers ``{"error_code": <REST v3 code>, "message": ...}`` (the code is the HTTP status times
100 plus 1, as Kafka REST's ``40101``), so the CLI shows one line whatever went wrong.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

AUTH_THREADS = 2  # credential checks at once; more wait
CACHE_SECONDS = 60.0  # a changed auth file needs a restart anyway
CACHE_ENTRIES = 1024

ADMIN, VIEWER = "admin", "viewer"
ROLES = (ADMIN, VIEWER)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
HEALTH_PATHS = frozenset({"/health", "/v3/health", "/readyz", "/livez"})
JSON_TYPES = frozenset({"application/json"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Principal:
    """Who is asking: ``name`` for the audit log, ``role`` for permission (``admin`` or ``viewer``)."""

    name: str
    role: str
    mechanism: str  # "basic", "mtls" or "none" (no authentication configured)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# (username, password) -> the principal, or None when the credentials are wrong. The users store wires
# linkd's SCRAM users in through this; BasicAuthFile is the one that works today.
Authenticator = Callable[[str, str], Principal | None]

ANONYMOUS = Principal("anonymous", ADMIN, "none")

# (principal, operation, client host) -> allowed? With ``--admin-auth users``: the daemon's ACLs on CLUSTER.
AdminAuthorizer = Callable[[Principal, str, str], bool]
USER_ROLE = "user"  # a linkd user's principal: what it may do is the authorizer's answer, not a role


# -- the --admin-basic-auth-file --------------------------------------------------------------------

SCRAPHASH_PREFIX = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and tens of ms per check: slow for a guesser


class AuthFileError(ValueError):
    """The auth file cannot be used; the message names the file and line."""


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$SALT$KEY`` (base64): the hash field of an auth file line."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join([SCRAPHASH_PREFIX, str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(key).decode()])


def _verify_hash(stored: str, password: str) -> bool:
    _, n, r, p, salt, key = stored.split("$")
    expected = base64.b64decode(key)
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(expected), maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(got, expected)


def _check_hash_field(value: str) -> None:
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != SCRAPHASH_PREFIX or not all(x.isdigit() for x in parts[1:4]):
        raise ValueError("the hash must be scrypt$N$r$p$SALT$KEY (make one with `linkd admin-password USER`)")
    try:
        base64.b64decode(parts[4], validate=True)
        base64.b64decode(parts[5], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the hash's salt or key is not base64 ({exc})") from None


@dataclass
class BasicAuthFile:
    """An htpasswd-like file, one ``USER:ROLE:HASH`` a line (``#`` comments, blank lines ignored); ROLE is
    ``admin`` (may change things) or ``viewer`` (may read). Only scrypt hashes are stored, never passwords.
    The file is read once at startup: restart linkd after editing it."""

    path: Path
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role, hash)

    @classmethod
    def load(cls, path: Path) -> BasicAuthFile:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthFileError(f"cannot read --admin-basic-auth-file {path}: {exc.strerror or exc}") from exc
        users: dict[str, tuple[str, str]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            where = f"{path} line {number}"
            if len(parts) != 3 or not parts[0]:
                raise AuthFileError(f"{where}: expected USER:ROLE:HASH")
            name, role, hashed = parts
            if role not in ROLES:
                raise AuthFileError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
            if name in users:
                raise AuthFileError(f"{where}: user {name!r} appears twice")
            try:
                _check_hash_field(hashed)
            except ValueError as exc:
                raise AuthFileError(f"{where}: {exc}") from None
            users[name] = (role, hashed)
        if not users:
            raise AuthFileError(f"--admin-basic-auth-file {path} has no users: nobody could use the admin API")
        return cls(Path(path), users)

    def __call__(self, username: str, password: str) -> Principal | None:
        entry = self.users.get(username)
        if entry is None:
            _verify_hash(_dummy_hash(), password)  # same cost as a known user: names cannot be probed by timing
            return None
        role, hashed = entry
        return Principal(username, role, "basic") if _verify_hash(hashed, password) else None


@functools.cache
def _dummy_hash() -> str:
    return hash_password(os.urandom(8).hex())


def auth_file_line(username: str, role: str, password: str) -> str:
    if not username or ":" in username:
        raise ValueError("the user name must be non-empty and contain no ':'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return f"{username}:{role}:{hash_password(password)}"


# -- linkd's own users (--admin-auth users) ----------------------------------------------------------


class UsersAuthenticator:
    """HTTP Basic against linkd's SCRAM users (``linkd user add``, Kafka's AlterUserScramCredentials), the
    check SASL/PLAIN makes: the password salted with the user's SCRAM-SHA-512 (else -256) salt must derive
    the stored key. ``prepare`` reads the credential (a control-store query, on the event loop); the
    callable it returns does the PBKDF2 work (in a worker thread). Its token changes whenever the
    credential does, so a changed or deleted user is not let in from the guard's cache."""

    def __init__(self, users) -> None:  # a linkd.broker.users.UserStore
        self.users = users

    def prepare(self, username: str, password: str) -> tuple[bytes, Callable[[], Principal | None]]:
        check = self.users.password_check(username, password)
        if check is None:
            dummy = _dummy_scram_check(password)
            return b"", lambda: (dummy.verify(), None)[1]  # same cost as a known user: no probing by timing
        token = check.credential.salt + check.credential.stored_key
        return token, lambda: Principal(username, USER_ROLE, "basic") if check.verify() else None

    def __call__(self, username: str, password: str) -> Principal | None:
        return self.prepare(username, password)[1]()


def _dummy_scram_check(password: str):
    from ..broker.users import PasswordCheck

    return PasswordCheck("sha512", password.encode(), _dummy_scram_credential())


@functools.cache
def _dummy_scram_credential():
    from .. import scram
    from ..broker.users import ScramCredential

    salt = os.urandom(16)
    salted = scram.salted_password("sha512", os.urandom(8), salt, 4096)
    return ScramCredential(salt, scram.stored_key("sha512", salted), b"", 4096)


# -- the policy -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminSecurity:
    """What the front door checks. ``authenticate`` None and ``mtls`` False: no authentication (every caller
    is the anonymous admin, as before), which linkd refuses to pair with a non-loopback bind silently."""

    bound_host: str
    allowed_hosts: frozenset[str] = frozenset()
    authenticate: Authenticator | None = None
    mtls: bool = False
    max_body: int = 1024 * 1024
    authorize: AdminAuthorizer | None = None  # set with --admin-auth users: ACLs decide, not roles

    @property
    def authenticated(self) -> bool:
        return self.authenticate is not None or self.mtls

    def host_names(self) -> frozenset[str]:
        names = set(LOOPBACK_HOSTS) | {h.lower() for h in self.allowed_hosts}
        if self.bound_host.lower() not in WILDCARD_HOSTS:
            names.add(self.bound_host.lower())
        return frozenset(names)

    def exposure_warning(self) -> str | None:
        """The WARNING to log when the API listens beyond loopback with nobody checked, else None."""
        if self.authenticated or _is_loopback(self.bound_host):
            return None
        return (f"the admin API listens on {self.bound_host or '*'} without authentication: anyone who can reach it can "
                "promote, fail over and delete links (use --admin-auth users, --admin-basic-auth-file or --admin-tls-ca, or bind 127.0.0.1)")


def _is_loopback(host: str) -> bool:
    return host.lower() in LOOPBACK_HOSTS or host.startswith("127.")


def _host_part(value: str) -> str:
    """``name[:port]`` or ``[v6]:port`` -> the name, lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def rest_error_code(status: int) -> int:
    return status * 100 + 1


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error_code": rest_error_code(status), "message": message}).encode()


# -- the ASGI layer -------------------------------------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


class AdminGuard:
    """Wraps the REST app. ``ready`` says whether the daemon is ready (for ``/readyz`` and ``/health``).
    The principal of an admitted request is at ``scope["linkd.principal"]`` for the audit log."""

    def __init__(self, app, security: AdminSecurity, ready: Callable[[], bool]) -> None:
        self.app, self.security, self.ready = app, security, ready
        self._hosts = security.host_names()
        self._limiter = trio.CapacityLimiter(AUTH_THREADS)
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in HEALTH_PATHS:
            await self._health(scope, send)
            return
        headers = _headers(scope)
        try:
            self._check_host_and_origin(headers)
            principal = await self._authenticate(headers)
            self._check_permission_and_type(scope, headers, principal)
        except _Refused as refused:
            log.warning("admin API refused %s %s from %s: %s", scope["method"], scope["path"], _client(scope), refused.message)
            await _answer(send, refused.status, refused.message, refused.headers)
            return
        scope["linkd.principal"] = principal
        await self._limited(scope, receive, send, headers)

    def _check_host_and_origin(self, headers: dict[str, str]) -> None:
        host = headers.get("host")
        if host is None or _host_part(host) not in self._hosts:
            raise _Refused(403, f"Host {host!r} is not this admin API (allowed: {', '.join(sorted(self._hosts))}; add names with --admin-allowed-host)")
        origin = headers.get("origin")
        if origin is not None:
            scheme, sep, rest = origin.partition("://")
            if not sep or scheme.lower() not in ("http", "https") or _host_part(rest.split("/", 1)[0]) not in self._hosts:
                raise _Refused(403, f"Origin {origin!r} may not use this admin API (cross-site requests are refused)")

    def _check_permission_and_type(self, scope: Scope, headers: dict[str, str], principal: Principal) -> None:
        method = scope["method"]
        reads = method in READ_METHODS or (method == "POST" and scope["path"].endswith("/mirrors:verify"))
        if self.security.authorize is not None and principal.role == USER_ROLE:
            operation = "DESCRIBE" if reads else "ALTER"
            if not self.security.authorize(principal, operation, (scope.get("client") or ("",))[0]):
                raise _Refused(403, f"principal User:{principal.name} may not {method} {scope['path']}: needs {operation} on CLUSTER "
                                    f"(kafka-acls --add --allow-principal User:{principal.name} --operation {operation.title()} --cluster)")
        elif not reads and not principal.is_admin:
            raise _Refused(403, f"principal {principal.name!r} (role {principal.role}) may not {method} {scope['path']}: needs role admin")
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if method in BODY_METHODS or has_body:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media not in JSON_TYPES:
                raise _Refused(415, f"request bodies must be Content-Type application/json, got {media or 'none'!r}")

    async def _authenticate(self, headers: dict[str, str]) -> Principal:
        security = self.security
        if security.authenticate is None:
            # mTLS alone: the handshake already required a certificate signed by --admin-tls-ca.
            return Principal("tls-client", ADMIN, "mtls") if security.mtls else ANONYMOUS
        challenge = [(b"www-authenticate", b'Basic realm="linkd admin", charset="UTF-8"')]
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not credentials:
            raise _Refused(401, "authentication required: HTTP Basic (--admin-user and LINKD_ADMIN_PASSWORD in the CLI)", challenge)
        try:
            username, sep, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _Refused(401, "the Authorization header is not valid Basic credentials", challenge) from None
        principal = await self._check_credentials(username, password) if sep else None
        if principal is None:
            raise _Refused(401, f"authentication failed for user {username!r}", challenge)
        return principal

    async def _check_credentials(self, username: str, password: str) -> Principal | None:
        """The authenticator, off the event loop: a slow hash (scrypt: tens of ms) must not stall the Kafka
        listener, and a flood of guesses queues behind a small limiter instead of spawning threads.
        Successes are remembered briefly (keyed by an HMAC, never the password) so a runbook's burst of
        calls pays for one check."""
        authenticate = self.security.authenticate
        assert authenticate is not None  # only called when the front door has an authenticator
        prepare = getattr(authenticate, "prepare", None)
        token, check = prepare(username, password) if prepare else (b"", functools.partial(authenticate, username, password))
        key = hmac.new(self._cache_key, f"{username}\0{password}\0".encode() + token, hashlib.sha256).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await trio.to_thread.run_sync(check, limiter=self._limiter)
        if principal is not None:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (principal, now + CACHE_SECONDS)
        return principal

    async def _limited(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        limit = self.security.max_body
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413 if declared.isdigit() else 400,
                          f"request body of {declared} bytes is larger than {limit} bytes" if declared.isdigit() else f"Content-Length {declared!r} is not a number")
            return
        seen = 0
        overflow = False
        started = False

        async def limited_receive() -> dict:
            nonlocal seen, overflow
            if overflow:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflow = True  # the app sees a disconnect; the client gets the 413 below
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if overflow and not started:
                if message["type"] == "http.response.start":
                    started = True
                    await _answer(send, 413, f"request body larger than {limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if overflow and not started:
            await _answer(send, 413, f"request body larger than {limit} bytes")

    async def _health(self, scope: Scope, send: Send) -> None:
        body: dict[str, str | bool]
        if scope["path"] == "/livez":
            status, body = 200, {"status": "UP"}
        else:
            ready = self.ready()
            status, body = (200, {"status": "UP", "ready": True}) if ready else (503, {"status": "STARTING", "ready": False})
        await _raw(send, status, json.dumps(body).encode() if scope["method"] != "HEAD" else b"", [])


def _headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased; a repeated Host, Origin or Authorization is refused by keeping a marker."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in out and name in ("host", "origin", "authorization", "content-type", "content-length"):
            value = "\x00repeated"  # matches nothing allowed
        out[name] = value
    return out


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown peer"


async def _answer(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _raw(send, status, error_body(status, message), headers or [])


async def _raw(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


def json_http_exception(request, exc) -> Any:
    """Starlette exception handler: 404/405 and any other HTTPException in the JSON error shape."""
    from starlette.responses import Response

    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or ""
    message = f"no route for {request.method} {request.url.path}" if status == 404 else (
        f"method {request.method} is not allowed on {request.url.path}" if status == 405 else detail)
    headers = dict(getattr(exc, "headers", None) or {})
    return Response(error_body(status, message), status_code=status, media_type="application/json", headers=headers)


def json_server_error(request, exc) -> Any:
    """Starlette's last-resort handler (an exception outside the routes' own handling) in the JSON shape;
    Starlette re-raises afterwards, so the traceback still reaches the daemon log."""
    from starlette.responses import Response

    message = f"internal error in linkd ({type(exc).__name__}); see the daemon log"
    return Response(error_body(500, message), status_code=500, media_type="application/json")
