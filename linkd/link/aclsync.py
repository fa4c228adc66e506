"""ACL sync (Cluster Linking's ``acl.sync.enable``, ``acl.filters``, ``acl.sync.ms``).

Every ``acl.sync.ms`` the link asks its source for the ACLs each of ``acl.filters`` selects
(DescribeAcls, one request per filter) and makes linkd's ACLs within that scope equal: what the source
has and linkd lacks is created, what linkd has in scope and the source no longer has is deleted. ACLs
outside every filter are never touched, so locally made ACLs on other resources stay.

``acl.filters`` is Cluster Linking's JSON::

    {"aclFilters": [{"resourceFilter": {"resourceType": "topic", "patternType": "prefixed", "name": "orders"},
                     "accessFilter": {"principal": "User:alice", "host": "*", "operation": "read", "permissionType": "allow"}}]}

Missing fields match anything (resourceType/patternType/operation/permissionType ``any``; name,
principal, host: any). The link's principal needs DESCRIBE on the source's CLUSTER. ACLs on resource
types linkd does not authorize (DELEGATION_TOKEN, USER) are left out and counted as skipped.
SCRAM users are not synced (Kafka has no API that reads their secrets); provision them on linkd.

Needs linkd's authorizer (``serve --authorizer standard``): a link that enables the sync on a daemon
without it reports the task IN_ERROR and changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from protocol.errors import ErrorCode
from protocol.messages import ApiKey

from ..broker.acl import (
    OPERATION_NAMES,
    OPERATIONS,
    PATTERN_TYPE_NAMES,
    PATTERN_TYPES,
    PERMISSION_NAMES,
    PERMISSIONS,
    RESOURCE_TYPE_NAMES,
    RESOURCE_TYPES,
    SUPPORTED_RESOURCE_TYPES,
    AclBinding,
    AclFilter,
    StandardAuthorizer,
)
from .client import SourceProtocolError, source_error
from .states import LinkState
from .tasks import RoundErrors, TaskState, judge, now_ms, report, run_rounds

log = logging.getLogger(__name__)

TASK_NAME = "AclSync"
DEFAULT_SYNC_MS = 5000
NOT_SET = "ACL migration is enabled but acl.filters is not set"


class AclFiltersError(ValueError):
    pass


class AclSyncError(SourceProtocolError):
    """A round that cannot sync, with the Kafka error code the task reports."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = int(error_code)


def _enum(value, table: dict[str, int], what: str, allowed: tuple[str, ...]) -> str:
    if value is None:
        return "ANY"
    name = str(value).strip().upper()
    if name not in table or name not in allowed:
        raise AclFiltersError(f"{what} {value!r} is not one of {', '.join(a.lower() for a in allowed)}")
    return name


def parse_filters(text: str) -> list[AclFilter]:
    """Cluster Linking's ``acl.filters`` JSON as AclFilters; AclFiltersError names what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AclFiltersError(f"acl.filters is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("aclFilters"), list):
        raise AclFiltersError('acl.filters must be {"aclFilters": [{"resourceFilter": {...}, "accessFilter": {...}}, ...]}')
    if not doc["aclFilters"]:
        raise AclFiltersError("acl.filters has no filter in aclFilters")
    out = []
    for i, item in enumerate(doc["aclFilters"]):
        if not isinstance(item, dict):
            raise AclFiltersError(f"acl.filters aclFilters[{i}] must be an object")
        unknown = sorted(set(item) - {"resourceFilter", "accessFilter"})
        if unknown:
            raise AclFiltersError(f"acl.filters aclFilters[{i}] has unknown field(s) {', '.join(unknown)}")
        resource, access = item.get("resourceFilter") or {}, item.get("accessFilter") or {}
        if not isinstance(resource, dict) or not isinstance(access, dict):
            raise AclFiltersError(f"acl.filters aclFilters[{i}]: resourceFilter and accessFilter must be objects")
        for fields, known in ((resource, {"resourceType", "patternType", "name"}), (access, {"principal", "host", "operation", "permissionType"})):
            extra = sorted(set(fields) - known)
            if extra:
                raise AclFiltersError(f"acl.filters aclFilters[{i}] has unknown field(s) {', '.join(extra)}")
        out.append(AclFilter(
            resource_type=_enum(resource.get("resourceType"), RESOURCE_TYPES, "resourceType", ("ANY", *SUPPORTED_RESOURCE_TYPES)),
            resource_name=resource.get("name"),
            pattern_type=_enum(resource.get("patternType"), PATTERN_TYPES, "patternType", ("ANY", "MATCH", "LITERAL", "PREFIXED")),
            principal=access.get("principal"),
            host=access.get("host"),
            operation=_enum(access.get("operation"), OPERATIONS, "operation", tuple(k for k in OPERATIONS if k != "UNKNOWN")),
            permission=_enum(access.get("permissionType"), PERMISSIONS, "permissionType", ("ANY", "ALLOW", "DENY")),
        ))
    return out


def config_problems(merged: Mapping[str, str | None]) -> list[str]:
    """What is wrong with a link config's ACL sync keys (linkd.link.config.validate calls this)."""
    problems = []
    enabled = (merged.get("acl.sync.enable") or "false").strip().lower() == "true"
    filters = merged.get("acl.filters")
    if filters:
        try:
            parse_filters(filters)
        except AclFiltersError as exc:
            problems.append(str(exc))
    elif enabled:
        problems.append(NOT_SET)
    interval = merged.get("acl.sync.ms")
    if interval is not None:
        try:
            if int(interval) < 1:
                raise ValueError
        except ValueError:
            problems.append(f"acl.sync.ms must be a positive integer, got {interval!r}")
    if enabled and merged.get("cluster.link.prefix"):
        problems.append("acl.sync.enable=true with cluster.link.prefix is not supported yet (synced ACLs would need the prefix on topic and group names)")
    return problems


@dataclass
class AclSyncStatus(RoundErrors):
    enabled: bool = False
    interval_ms: int = DEFAULT_SYNC_MS
    last_sync_ms: int | None = None
    last_error: str | None = None
    last_error_code: int | None = None
    last_error_ms: int | None = None
    syncs: int = 0
    errors: int = 0
    acls_in_scope: int = 0  # linkd's ACLs the filters select, after the last round
    created: int = 0  # since start
    deleted: int = 0
    skipped: int = 0  # source ACLs on resource types linkd does not authorize (last round)


def _binding(resource: dict, acl: dict) -> AclBinding | None:
    """A DescribeAcls entry of the source as a binding; None for a resource type linkd does not authorize."""
    rtype = RESOURCE_TYPE_NAMES.get(resource["resource_type"])
    if rtype not in SUPPORTED_RESOURCE_TYPES:
        return None
    return AclBinding(
        rtype, resource["resource_name"], PATTERN_TYPE_NAMES.get(resource.get("pattern_type", 3), "UNKNOWN"),
        acl["principal"], acl["host"], OPERATION_NAMES.get(acl["operation"], "UNKNOWN"), PERMISSION_NAMES.get(acl["permission_type"], "UNKNOWN"),
    )


def _wire_filter(f: AclFilter) -> dict:
    return {
        "resource_type_filter": RESOURCE_TYPES[f.resource_type], "resource_name_filter": f.resource_name,
        "pattern_type_filter": PATTERN_TYPES[f.pattern_type], "principal_filter": f.principal, "host_filter": f.host,
        "operation": OPERATIONS[f.operation], "permission_type": PERMISSIONS[f.permission],
    }


class AclSync:
    """The ACL sync of one link, held by its link entry (``LinkEntry.acl_sync``): its status outlives the
    restarts a config update makes (``run`` again, same object) and goes with the entry when the link is
    deleted, so a link re-created under the same name starts afresh."""

    def __init__(self, entry, authorizer: StandardAuthorizer | None) -> None:
        self._entry = entry
        self.authorizer = authorizer
        self.status = AclSyncStatus()

    def settings(self) -> tuple[bool, list[AclFilter], int]:
        config = self._entry.config
        enabled = (config.get("acl.sync.enable") or "false").strip().lower() == "true"
        filters = parse_filters(config["acl.filters"]) if enabled and config.get("acl.filters") else []
        return enabled, filters, int(config.get("acl.sync.ms") or DEFAULT_SYNC_MS)

    def task(self) -> dict:
        st = self.status
        if not st.enabled:
            return report(TASK_NAME, TaskState.NOT_CONFIGURED, "acl.sync.enable is false")
        state, reason = judge(self._entry.runtime.state == LinkState.PAUSED, st.last_error)
        return report(TASK_NAME, state, reason, last_success_ms=st.last_sync_ms, last_error_code=st.last_error_code, last_error_message=st.last_error,
                      last_error_ms=st.last_error_ms, runs=st.syncs, errors=st.errors)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        enabled, filters, interval_ms = self.settings()
        self.status.enabled, self.status.interval_ms = enabled, interval_ms
        task_status.started()
        if not enabled:
            return
        await run_rounds(self._entry.name, "ACL sync", lambda: self.sync_once(filters), self.status, interval_s=lambda: interval_ms / 1000,
                         paused=lambda: self._entry.runtime.state == LinkState.PAUSED, sleep_first=False, logger=log)

    async def source_acls(self, filters: list[AclFilter]) -> tuple[set[AclBinding], int]:
        """The source's ACLs the filters select, and how many were on resource types linkd leaves out."""
        found: set[AclBinding] = set()
        skipped = 0
        for f in filters:
            body = await self._entry.runtime.source.request_any(ApiKey.DESCRIBE_ACLS, _wire_filter(f))
            if body["error_code"] != ErrorCode.NONE:
                detail = body.get("error_message") or ""
                raise AclSyncError(f"DescribeAcls on the source failed with {source_error(body['error_code']).name}" + (f": {detail}" if detail else ""), body["error_code"])
            for resource in body.get("resources") or []:
                for acl in resource.get("acls") or []:
                    binding = _binding(resource, acl)
                    if binding is None:
                        skipped += 1
                    elif "UNKNOWN" not in (binding.pattern_type, binding.operation, binding.permission):
                        found.add(binding)
        return found, skipped

    async def sync_once(self, filters: list[AclFilter]) -> tuple[int, int]:
        """One round; returns (created, deleted)."""
        authorizer = self.authorizer
        if authorizer is None:
            raise AclSyncError("ACL sync needs linkd's authorizer: start linkd with --authorizer standard", ErrorCode.SECURITY_DISABLED)
        wanted, skipped = await self.source_acls(filters)
        local = {b for f in filters for b in authorizer.acls(f)}
        create = sorted(wanted - local)
        delete = sorted(local - wanted)
        authorizer.create(create)
        authorizer.delete([AclFilter(b.resource_type, b.resource_name, b.pattern_type, b.principal, b.host, b.operation, b.permission) for b in delete])
        for b in create:
            log.info("link %s: ACL synced from the source: %s", self._entry.name, b)
        for b in delete:
            log.info("link %s: ACL deleted, gone from the source: %s", self._entry.name, b)
        st = self.status
        st.created += len(create)
        st.deleted += len(delete)
        st.skipped = skipped
        st.acls_in_scope = len(wanted)
        st.last_sync_ms, st.last_error, st.last_error_code = now_ms(), None, None
        st.syncs += 1
        return len(create), len(delete)


def task(entry) -> dict:
    """The AclSync task's health, as ``link describe`` and /metrics show it."""
    return entry.acl_sync.task()


def status(entry) -> dict:
    """The ACL sync's counters for ``link describe`` (``acl_sync``)."""
    return dict(entry.acl_sync.status.__dict__)
