"""Kafka's ACL model: bindings, filters, and an authorizer with the StandardAuthorizer's semantics.

An ACL binding says: ``principal`` from ``host`` is ALLOWed or DENYed ``operation`` on resources of
``resource_type`` whose name matches ``resource_name`` LITERALly (``*`` = every name) or as a PREFIX.

Deciding one action (principal, host, operation, resource):
1. a super user (``super.users``) may do everything;
2. the ACLs whose resource pattern matches the resource are considered; among them, those whose principal
   is the session's or ``User:*``, whose host is the client's address or ``*``, and whose operation
   matches. An ALLOW ACL for READ, WRITE, DELETE or ALTER also grants DESCRIBE, and ALTER_CONFIGS grants
   DESCRIBE_CONFIGS; a DENY ACL denies exactly its operation (ALL denies everything);
3. any matching DENY denies; else any matching ALLOW allows;
4. else, if some ACL exists for the resource at all, the action is denied; only a resource without any
   ACL gets ``allow.everyone.if.no.acl.found`` (default false).

Bindings live in the control store (table ``acls``) and in memory, indexed by resource type and name.
The module does no I/O beyond the store and is used from the trio thread only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol.errors import ErrorCode

from ..controlstore import ControlStore
from .session import Session

# Kafka's enum codes, as on the wire (org.apache.kafka.common.acl / .resource).
OPERATIONS = {
    "UNKNOWN": 0, "ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7,
    "DESCRIBE": 8, "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11, "IDEMPOTENT_WRITE": 12,
    "CREATE_TOKENS": 13, "DESCRIBE_TOKENS": 14, "TWO_PHASE_COMMIT": 15,
}
RESOURCE_TYPES = {"UNKNOWN": 0, "ANY": 1, "TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5, "DELEGATION_TOKEN": 6, "USER": 7}
PATTERN_TYPES = {"UNKNOWN": 0, "ANY": 1, "MATCH": 2, "LITERAL": 3, "PREFIXED": 4}
PERMISSIONS = {"UNKNOWN": 0, "ANY": 1, "DENY": 2, "ALLOW": 3}
OPERATION_NAMES = {v: k for k, v in OPERATIONS.items()}
RESOURCE_TYPE_NAMES = {v: k for k, v in RESOURCE_TYPES.items()}
PATTERN_TYPE_NAMES = {v: k for k, v in PATTERN_TYPES.items()}
PERMISSION_NAMES = {v: k for k, v in PERMISSIONS.items()}

WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
CLUSTER_NAME = "kafka-cluster"
# The resource types linkd's handlers authorize against; DELEGATION_TOKEN and USER have no API here.
SUPPORTED_RESOURCE_TYPES = ("TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID")

IMPLIES_DESCRIBE = frozenset({"DESCRIBE", "READ", "WRITE", "DELETE", "ALTER"})
IMPLIES_DESCRIBE_CONFIGS = frozenset({"DESCRIBE_CONFIGS", "ALTER_CONFIGS"})

# What ``authorized_operations`` reports per resource type (Kafka's supportedOperations).
SUPPORTED_OPERATIONS = {
    "TOPIC": ("READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"),
    "GROUP": ("READ", "DESCRIBE", "DELETE"),
    "CLUSTER": ("CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "ALTER", "DESCRIBE"),
    "TRANSACTIONAL_ID": ("DESCRIBE", "WRITE"),
}


class AclError(Exception):
    """A binding or filter that cannot be used, with the Kafka error code the ACL APIs answer."""

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


@dataclass(frozen=True, order=True)
class AclBinding:
    resource_type: str  # TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID
    resource_name: str
    pattern_type: str  # LITERAL or PREFIXED
    principal: str  # Type:name, e.g. User:alice or User:*
    host: str  # * or an IP address
    operation: str
    permission: str  # ALLOW or DENY

    def pattern_matches(self, resource_type: str, name: str) -> bool:
        """Whether this binding's resource pattern covers the resource ``resource_type``/``name``."""
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == "LITERAL":
            return self.resource_name == WILDCARD or self.resource_name == name
        return name.startswith(self.resource_name)

    def decides(self, principal: str, host: str, operation: str) -> str | None:
        """ALLOW or DENY when this binding applies to the action (its pattern assumed to match), else None."""
        if self.principal != WILDCARD_PRINCIPAL and self.principal != principal:
            return None
        if self.host != WILDCARD and self.host != host:
            return None
        if self.operation != "ALL":
            if self.permission == "ALLOW":
                if operation == "DESCRIBE":
                    if self.operation not in IMPLIES_DESCRIBE:
                        return None
                elif operation == "DESCRIBE_CONFIGS":
                    if self.operation not in IMPLIES_DESCRIBE_CONFIGS:
                        return None
                elif operation != self.operation:
                    return None
            elif operation != self.operation:
                return None
        return self.permission

    def to_wire(self) -> dict:
        return {
            "resource_type": RESOURCE_TYPES[self.resource_type], "resource_name": self.resource_name,
            "pattern_type": PATTERN_TYPES[self.pattern_type], "principal": self.principal, "host": self.host,
            "operation": OPERATIONS[self.operation], "permission_type": PERMISSIONS[self.permission],
        }

    def __str__(self) -> str:
        return (f"(principal={self.principal}, host={self.host}, operation={self.operation}, permissionType={self.permission}) "
                f"on {self.resource_type}:{self.pattern_type}:{self.resource_name}")


@dataclass(frozen=True)
class AclFilter:
    """Kafka's AclBindingFilter: None / ANY fields match everything; pattern MATCH selects the bindings
    that would apply to the named resource (literal, ``*`` and covering prefixes)."""

    resource_type: str = "ANY"
    resource_name: str | None = None
    pattern_type: str = "ANY"
    principal: str | None = None
    host: str | None = None
    operation: str = "ANY"
    permission: str = "ANY"

    def matches(self, b: AclBinding) -> bool:
        if self.resource_type != "ANY" and self.resource_type != b.resource_type:
            return False
        if self.pattern_type == "MATCH":
            if self.resource_name is not None and not b.pattern_matches(b.resource_type, self.resource_name):
                return False
        else:
            if self.pattern_type != "ANY" and self.pattern_type != b.pattern_type:
                return False
            if self.resource_name is not None and self.resource_name != b.resource_name:
                return False
        if self.principal is not None and self.principal != b.principal:
            return False
        if self.host is not None and self.host != b.host:
            return False
        if self.operation != "ANY" and self.operation != b.operation:
            return False
        return self.permission == "ANY" or self.permission == b.permission


def _name(table: dict[int, str], code: int, what: str) -> str:
    name = table.get(code)
    if name is None or name == "UNKNOWN":
        raise AclError(f"Unknown {what} {code}")
    return name


def binding_from_wire(c: dict) -> AclBinding:
    """A CreateAcls creation as a validated binding (AclError when Kafka would refuse it)."""
    binding = AclBinding(
        _name(RESOURCE_TYPE_NAMES, c["resource_type"], "resource type"),
        c["resource_name"],
        _name(PATTERN_TYPE_NAMES, c.get("resource_pattern_type", 3), "pattern type"),
        c["principal"],
        c["host"],
        _name(OPERATION_NAMES, c["operation"], "operation"),
        _name(PERMISSION_NAMES, c["permission_type"], "permission type"),
    )
    validate(binding)
    return binding


def filter_from_wire(f: dict) -> AclFilter:
    return AclFilter(
        _name(RESOURCE_TYPE_NAMES, f["resource_type_filter"], "resource type"),
        f.get("resource_name_filter"),
        _name(PATTERN_TYPE_NAMES, f.get("pattern_type_filter", 3), "pattern type"),
        f.get("principal_filter"),
        f.get("host_filter"),
        _name(OPERATION_NAMES, f["operation"], "operation"),
        _name(PERMISSION_NAMES, f["permission_type"], "permission type"),
    )


def validate(b: AclBinding) -> None:
    """The broker's checks on a new ACL (Kafka's AclControlManager), plus linkd's supported resource types.
    As in Kafka, an operation a resource type never asks for, or a host that is no IP address, is
    accepted and simply never matches (kafka-acls refuses those before sending)."""
    if b.resource_type == "ANY":
        raise AclError("Invalid resourceType ANY")
    if b.resource_type not in SUPPORTED_RESOURCE_TYPES:
        raise AclError(f"ACLs on resource type {b.resource_type} are not supported yet by linkd")
    if b.pattern_type not in ("LITERAL", "PREFIXED"):
        raise AclError(f"Invalid patternType {b.pattern_type}")
    if b.operation in ("ANY", "UNKNOWN"):
        raise AclError(f"Invalid operation {b.operation}")
    if b.permission not in ("ALLOW", "DENY"):
        raise AclError(f"Invalid permissionType {b.permission}")
    if not b.resource_name:
        raise AclError("Resource name should not be empty")
    kind, sep, who = b.principal.partition(":")
    if not sep or not kind or not who:
        raise AclError(f"Could not parse principal from `{b.principal}` (no colon is present separating the principal type from the principal name)")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS acls (
    resource_type TEXT NOT NULL, resource_name TEXT NOT NULL, pattern_type TEXT NOT NULL,
    principal TEXT NOT NULL, host TEXT NOT NULL, operation TEXT NOT NULL, permission TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation, permission)
)
"""
_COLUMNS = "resource_type, resource_name, pattern_type, principal, host, operation, permission"


class StandardAuthorizer:
    """linkd's authorizer: Kafka's StandardAuthorizer decisions over ACLs kept in the control store."""

    def __init__(self, store: ControlStore | None = None, super_users: Iterable[str] = (), allow_everyone_if_no_acl_found: bool = False) -> None:
        self.store = store
        self.super_users = frozenset(super_users)
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found
        self._literal: dict[tuple[str, str], set[AclBinding]] = {}
        self._prefixed: dict[tuple[str, str], set[AclBinding]] = {}
        self._acls: set[AclBinding] = set()
        if store is not None:
            store.ensure_schema(_SCHEMA)
            for row in store.query(f"SELECT {_COLUMNS} FROM acls"):
                self._index(AclBinding(*row))

    # -- decisions ---------------------------------------------------------------------------

    def authorize(self, session: Session, operation: str, resource_type: str, name: str) -> bool:
        if session.principal in self.super_users:
            return True
        found_resource_acl = False
        allowed = False
        for b in self._candidates(resource_type, name):
            found_resource_acl = True
            decision = b.decides(session.principal, session.host, operation)
            if decision == "DENY":
                return False
            if decision == "ALLOW":
                allowed = True
        if allowed:
            return True
        return not found_resource_acl and self.allow_everyone_if_no_acl_found

    def authorize_by_resource_type(self, session: Session, operation: str, resource_type: str) -> bool:
        """Whether the principal may do ``operation`` on at least one resource of the type (Kafka's
        authorizeByResourceType: an ALLOW not dominated by a DENY for the same principal and host)."""
        if session.principal in self.super_users:
            return True
        deny_literal: set[str] = set()
        deny_prefixed: set[str] = set()
        allow: list[AclBinding] = []
        for b in self._acls:
            if b.resource_type != resource_type or b.host not in (WILDCARD, session.host):
                continue
            if b.principal not in (session.principal, WILDCARD_PRINCIPAL) or b.operation not in (operation, "ALL"):
                continue
            if b.permission == "DENY":
                if b.pattern_type == "LITERAL" and b.resource_name == WILDCARD:
                    return False
                (deny_literal if b.pattern_type == "LITERAL" else deny_prefixed).add(b.resource_name)
            else:
                allow.append(b)
        for b in allow:
            if b.pattern_type == "LITERAL" and b.resource_name == WILDCARD:
                return True
            if b.pattern_type == "LITERAL" and b.resource_name in deny_literal:
                continue
            if not any(b.resource_name[:i] in deny_prefixed for i in range(1, len(b.resource_name) + 1)):
                return True
        return False

    def authorized_operations(self, session: Session, resource_type: str, name: str) -> int:
        """The bit field Metadata/DescribeGroups/DescribeCluster answer (bit = AclOperation code)."""
        return sum(1 << OPERATIONS[op] for op in SUPPORTED_OPERATIONS[resource_type] if self.authorize(session, op, resource_type, name))

    def _candidates(self, resource_type: str, name: str) -> Iterable[AclBinding]:
        yield from self._literal.get((resource_type, name), ())
        if name != WILDCARD:
            yield from self._literal.get((resource_type, WILDCARD), ())
        for i in range(1, len(name) + 1):
            yield from self._prefixed.get((resource_type, name[:i]), ())

    # -- the ACL APIs ----------------------------------------------------------------------------

    def acls(self, acl_filter: AclFilter | None = None) -> list[AclBinding]:
        return sorted(b for b in self._acls if acl_filter is None or acl_filter.matches(b))

    def create(self, bindings: Iterable[AclBinding]) -> None:
        """Add bindings (already validated); adding one that exists is a no-op, as in Kafka."""
        new = [b for b in bindings if b not in self._acls]
        if not new:
            return
        if self.store is not None:
            with self.store.transaction() as db:
                db.executemany(f"INSERT OR IGNORE INTO acls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", [_row(b) for b in new])
        for b in new:
            self._index(b)

    def delete(self, filters: Iterable[AclFilter]) -> list[list[AclBinding]]:
        """Remove every binding each filter matches; one list of removed bindings per filter."""
        matched = [self.acls(f) for f in filters]
        gone = {b for group in matched for b in group}
        if gone:
            if self.store is not None:
                with self.store.transaction() as db:
                    db.executemany(
                        "DELETE FROM acls WHERE resource_type=? AND resource_name=? AND pattern_type=? AND principal=? "
                        "AND host=? AND operation=? AND permission=?",
                        [_row(b) for b in gone],
                    )
            for b in gone:
                self._unindex(b)
        return matched

    def _index(self, b: AclBinding) -> None:
        self._acls.add(b)
        table = self._literal if b.pattern_type == "LITERAL" else self._prefixed
        table.setdefault((b.resource_type, b.resource_name), set()).add(b)

    def _unindex(self, b: AclBinding) -> None:
        self._acls.discard(b)
        table = self._literal if b.pattern_type == "LITERAL" else self._prefixed
        key = (b.resource_type, b.resource_name)
        bucket = table.get(key)
        if bucket is not None:
            bucket.discard(b)
            if not bucket:
                del table[key]


def _row(b: AclBinding) -> tuple[str, ...]:
    return (b.resource_type, b.resource_name, b.pattern_type, b.principal, b.host, b.operation, b.permission)


def parse_super_users(value: str | None) -> list[str]:
    """Kafka's ``super.users``: principals separated by ``;`` (``User:admin;User:linkd``)."""
    if not value:
        return []
    users = [u.strip() for u in value.split(";") if u.strip()]
    for u in users:
        kind, sep, who = u.partition(":")
        if not sep or not kind or not who:
            raise ValueError(f"--super-users: {u!r} is not a principal of the form Type:name (User:alice)")
    return users
