"""SCRAM users of linkd's listeners: the credential store and Kafka's APIs that manage it.

A credential is what Kafka's ``ScramCredential`` holds: salt, stored key, server key and iteration
count per (user, mechanism), in the control store's ``scram_credentials`` table. The password is never
stored, nor seen: AlterUserScramCredentials carries the client-side salted password (``kafka-configs
--add-config 'SCRAM-SHA-256=[password=...]'`` salts it before sending), from which the two keys are
derived here and the salted password dropped. ``linkd user add`` salts locally and writes the same row.

PLAIN users are the same users: a PLAIN password is checked by deriving the stored key from it with the
user's salt and iterations (SCRAM-SHA-512 first, then SCRAM-SHA-256) and comparing, so one ``linkd user
add`` serves PLAIN, both SCRAM mechanisms and, later, the admin API's HTTP Basic.

The store is read on every authentication (no cache), so a user added by another process writing the
same control.db (``linkd user add --data-dir``) counts from the next connection on.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from protocol.errors import ErrorCode

from .. import scram
from ..controlstore import ControlStore
from .context import Body, RequestContext

SCHEMA = """
CREATE TABLE IF NOT EXISTS scram_credentials (
    user TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    salt BLOB NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    PRIMARY KEY (user, mechanism)
)
"""
MECHANISM_CODES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}  # Kafka's ScramMechanism type codes
MECHANISM_NAMES = {v: k for k, v in MECHANISM_CODES.items()}
DEFAULT_ITERATIONS = scram.DEFAULT_ITERATIONS



class CredentialError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def credential_from_salted(mechanism: str, salt: bytes, salted_password: bytes, iterations: int) -> ScramCredential:
    h = scram.HASHES[mechanism]
    return ScramCredential(salt, scram.stored_key(h, salted_password), scram.server_key(h, salted_password), iterations)


def credential_from_password(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> ScramCredential:
    salt = os.urandom(32)
    salted = scram.salted_password(scram.HASHES[mechanism], password.encode(), salt, iterations)
    return credential_from_salted(mechanism, salt, salted, iterations)


def check_user_name(name: str | None) -> None:
    if not name:
        raise CredentialError(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")


def check_iterations(mechanism: str, iterations: int) -> None:
    if iterations < scram.MIN_ITERATIONS:
        raise CredentialError(ErrorCode.UNACCEPTABLE_CREDENTIAL, f"Too few iterations: {iterations} (the minimum for {mechanism} is {scram.MIN_ITERATIONS})")
    if iterations > scram.MAX_ITERATIONS:
        raise CredentialError(ErrorCode.UNACCEPTABLE_CREDENTIAL, f"Too many iterations: {iterations} (the maximum for {mechanism} is {scram.MAX_ITERATIONS})")


class UserStore:
    def __init__(self, store: ControlStore) -> None:
        self.store = store
        store.ensure_schema(SCHEMA)

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        rows = self.store.query("SELECT salt, stored_key, server_key, iterations FROM scram_credentials WHERE user = ? AND mechanism = ?", (user, mechanism))
        if not rows:
            return None
        r = rows[0]
        return ScramCredential(bytes(r["salt"]), bytes(r["stored_key"]), bytes(r["server_key"]), int(r["iterations"]))

    def users(self) -> dict[str, dict[str, int]]:
        """user -> {mechanism: iterations}, sorted by user."""
        out: dict[str, dict[str, int]] = {}
        for r in self.store.query("SELECT user, mechanism, iterations FROM scram_credentials ORDER BY user, mechanism"):
            out.setdefault(r["user"], {})[r["mechanism"]] = int(r["iterations"])
        return out

    def upsert(self, user: str, mechanism: str, credential: ScramCredential) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO scram_credentials (user, mechanism, salt, stored_key, server_key, iterations) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (user, mechanism) DO UPDATE SET salt = excluded.salt, stored_key = excluded.stored_key, "
                "server_key = excluded.server_key, iterations = excluded.iterations",
                (user, mechanism, credential.salt, credential.stored_key, credential.server_key, credential.iterations),
            )

    def delete(self, user: str, mechanism: str | None = None) -> int:
        """Remove one mechanism's credential (or all of the user's); the number of rows removed."""
        with self.store.transaction() as db:
            if mechanism is None:
                return db.execute("DELETE FROM scram_credentials WHERE user = ?", (user,)).rowcount
            return db.execute("DELETE FROM scram_credentials WHERE user = ? AND mechanism = ?", (user, mechanism)).rowcount

    def password_check(self, user: str, password: str) -> PasswordCheck | None:
        """PLAIN: the check of ``password`` against the user's credential (SCRAM-SHA-512 first), or None
        for a user without one. The check itself is CPU work (PBKDF2): the caller runs it off the loop."""
        for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            cred = self.credential(user, mechanism)
            if cred is not None:
                return PasswordCheck(scram.HASHES[mechanism], password.encode(), cred)
        return None

    def check_password(self, user: str, password: str) -> bool:
        check = self.password_check(user, password)
        return check is not None and check.verify()


@dataclass(frozen=True)
class PasswordCheck:
    hash_name: str
    password: bytes
    credential: ScramCredential

    def verify(self) -> bool:
        """Does the password derive the stored key? Pure; blocking for milliseconds."""
        salted = scram.salted_password(self.hash_name, self.password, self.credential.salt, self.credential.iterations)
        return hmac.compare_digest(scram.stored_key(self.hash_name, salted), self.credential.stored_key)


# -- Kafka's APIs --------------------------------------------------------------------------------

CLUSTER_RESOURCE = "kafka-cluster"


def _store(ctx: RequestContext) -> UserStore:
    users = ctx.broker.users
    if users is None:
        raise RuntimeError("this broker has no user store")
    return users


async def describe_user_scram_credentials(ctx: RequestContext, body: Body) -> Body:
    if not ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_RESOURCE):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "results": []}
    known = _store(ctx).users()
    requested = body.get("users")
    results = []
    if requested is None or not requested:
        names = list(known)
        duplicates: set[str] = set()
    else:
        names = [u["name"] for u in requested]
        duplicates = {n for n in names if names.count(n) > 1}
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if name in duplicates:
            results.append({"user": name, "error_code": ErrorCode.DUPLICATE_RESOURCE, "error_message": f"Cannot describe SCRAM credentials for the same user twice in a single request: {name}", "credential_infos": []})
        elif name not in known:
            results.append({"user": name, "error_code": ErrorCode.RESOURCE_NOT_FOUND, "error_message": f"Attempt to describe a user credential that does not exist: {name}", "credential_infos": []})
        else:
            infos = [{"mechanism": MECHANISM_CODES[m], "iterations": i} for m, i in known[name].items()]
            results.append({"user": name, "error_code": ErrorCode.NONE, "error_message": None, "credential_infos": infos})
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None, "results": results}


async def alter_user_scram_credentials(ctx: RequestContext, body: Body) -> Body:
    deletions = body.get("deletions") or []
    upsertions = body.get("upsertions") or []
    users_in_request = [d["name"] for d in deletions] + [u["name"] for u in upsertions]
    if not ctx.authorized("ALTER", "CLUSTER", CLUSTER_RESOURCE):
        return {"throttle_time_ms": 0, "results": [{"user": u, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None} for u in dict.fromkeys(users_in_request)]}
    store = _store(ctx)
    errors: dict[str, tuple[ErrorCode, str]] = {}
    pairs = [(d["name"], d["mechanism"]) for d in deletions] + [(u["name"], u["mechanism"]) for u in upsertions]
    for user, mech in pairs:
        if pairs.count((user, mech)) > 1:
            errors.setdefault(user, (ErrorCode.DUPLICATE_RESOURCE, f"A user credential cannot be altered twice in the same request: {user}"))
    # Validate everything first: one user's bad entry fails that user only, and nothing of it is applied.
    for d in deletions:
        try:
            check_user_name(d["name"])
            mechanism = MECHANISM_NAMES.get(d["mechanism"])
            if mechanism is None:
                raise CredentialError(ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"Unknown SCRAM mechanism code {d['mechanism']}")
            if store.credential(d["name"], mechanism) is None:
                raise CredentialError(ErrorCode.RESOURCE_NOT_FOUND, f"Attempt to delete a user credential that does not exist: {d['name']} {mechanism}")
        except CredentialError as exc:
            errors.setdefault(d["name"], (exc.code, str(exc)))
    for u in upsertions:
        try:
            check_user_name(u["name"])
            mechanism = MECHANISM_NAMES.get(u["mechanism"])
            if mechanism is None:
                raise CredentialError(ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"Unknown SCRAM mechanism code {u['mechanism']}")
            check_iterations(mechanism, u["iterations"])
            if not u.get("salt") or not u.get("salted_password"):
                raise CredentialError(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt and salted password must not be empty")
        except CredentialError as exc:
            errors.setdefault(u["name"], (exc.code, str(exc)))
    with store.store.transaction():
        for d in deletions:
            if d["name"] not in errors:
                store.delete(d["name"], MECHANISM_NAMES[d["mechanism"]])
        for u in upsertions:
            if u["name"] not in errors:
                mechanism = MECHANISM_NAMES[u["mechanism"]]
                store.upsert(u["name"], mechanism, credential_from_salted(mechanism, bytes(u["salt"]), bytes(u["salted_password"]), u["iterations"]))
    results = []
    for user in dict.fromkeys(users_in_request):
        code, message = errors.get(user, (ErrorCode.NONE, None))
        results.append({"user": user, "error_code": code, "error_message": message})
    return {"throttle_time_ms": 0, "results": results}


async def describe_client_quotas(ctx: RequestContext, body: Body) -> Body:
    """linkd enforces no client quotas, so every filter matches nothing. ``kafka-configs --describe
    --entity-type users`` asks for these before the user's SCRAM credentials."""
    if not ctx.authorized("DESCRIBE_CONFIGS", "CLUSTER", CLUSTER_RESOURCE):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "entries": None}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None, "entries": []}
