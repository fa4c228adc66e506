"""CreateAcls, DescribeAcls and DeleteAcls (what ``kafka-acls`` / Kafka's AclCommand sends).

Without an authorizer Kafka answers SECURITY_DISABLED ("No Authorizer is configured"); so does linkd.
Creating and deleting ACLs needs ALTER on the cluster, listing them DESCRIBE on the cluster.
"""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME, AclBinding, AclError, StandardAuthorizer, binding_from_wire, filter_from_wire
from .context import Body, RequestContext

log = logging.getLogger(__name__)

NO_AUTHORIZER = "No Authorizer is configured."


def _authorizer(ctx: RequestContext) -> StandardAuthorizer | None:
    authorizer = ctx.broker.authorizer
    return authorizer if isinstance(authorizer, StandardAuthorizer) else None


async def create_acls(ctx: RequestContext, body: Body) -> Body:
    creations = body.get("creations") or []
    authorizer = _authorizer(ctx)
    if authorizer is None:
        return {"throttle_time_ms": 0, "results": [{"error_code": ErrorCode.SECURITY_DISABLED, "error_message": NO_AUTHORIZER} for _ in creations]}
    if not ctx.authorized("ALTER", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "results": [{"error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None} for _ in creations]}
    results: list[Body] = []
    valid: list[AclBinding] = []
    for c in creations:
        try:
            binding = binding_from_wire(c)
        except AclError as exc:
            results.append({"error_code": exc.error_code, "error_message": exc.message})
            continue
        valid.append(binding)
        results.append({"error_code": ErrorCode.NONE, "error_message": None})
    authorizer.create(valid)
    for b in valid:
        log.info("ACL created by %s from %s: %s", ctx.session.principal, ctx.session.host, b)
    return {"throttle_time_ms": 0, "results": results}


def _grouped(bindings: list[AclBinding]) -> list[Body]:
    """DescribeAcls groups ACLs by resource pattern."""
    resources: dict[tuple[str, str, str], list[AclBinding]] = {}
    for b in bindings:
        resources.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(b)
    out = []
    for group in resources.values():
        wire = [b.to_wire() for b in group]
        out.append({
            "resource_type": wire[0]["resource_type"], "resource_name": wire[0]["resource_name"], "pattern_type": wire[0]["pattern_type"],
            "acls": [{"principal": w["principal"], "host": w["host"], "operation": w["operation"], "permission_type": w["permission_type"]} for w in wire],
        })
    return out


async def describe_acls(ctx: RequestContext, body: Body) -> Body:
    authorizer = _authorizer(ctx)
    if authorizer is None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.SECURITY_DISABLED, "error_message": NO_AUTHORIZER, "resources": []}
    if not ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "resources": []}
    try:
        acl_filter = filter_from_wire(body)
    except AclError as exc:
        return {"throttle_time_ms": 0, "error_code": exc.error_code, "error_message": exc.message, "resources": []}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None, "resources": _grouped(authorizer.acls(acl_filter))}


async def delete_acls(ctx: RequestContext, body: Body) -> Body:
    filters = body.get("filters") or []
    authorizer = _authorizer(ctx)
    if authorizer is None:
        return {"throttle_time_ms": 0, "filter_results": [{"error_code": ErrorCode.SECURITY_DISABLED, "error_message": NO_AUTHORIZER, "matching_acls": []} for _ in filters]}
    if not ctx.authorized("ALTER", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "filter_results": [{"error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "matching_acls": []} for _ in filters]}
    parsed: list = []
    for f in filters:
        try:
            parsed.append(filter_from_wire(f))
        except AclError as exc:
            parsed.append(exc)
    removed = iter(authorizer.delete([f for f in parsed if not isinstance(f, AclError)]))
    results = []
    for f in parsed:
        if isinstance(f, AclError):
            results.append({"error_code": f.error_code, "error_message": f.message, "matching_acls": []})
            continue
        matching = next(removed)
        for b in matching:
            log.info("ACL deleted by %s from %s: %s", ctx.session.principal, ctx.session.host, b)
        results.append({
            "error_code": ErrorCode.NONE, "error_message": None,
            "matching_acls": [{"error_code": ErrorCode.NONE, "error_message": None, **b.to_wire()} for b in matching],
        })
    return {"throttle_time_ms": 0, "filter_results": results}

