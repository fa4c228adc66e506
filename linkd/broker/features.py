"""UpdateFeatures: linkd has no feature flags to finalize (ApiVersions advertises none), so every update is
refused as Apache Kafka 4.1's controller refuses a feature it does not support, with its error code and
message; ``kafka-features describe`` reads the (empty) lists ApiVersions carries."""

from __future__ import annotations

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME
from .context import Body, RequestContext


async def update_features(ctx: RequestContext, body: Body) -> Body:
    updates = body.get("feature_updates") or []
    if not ctx.authorized("ALTER", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "error_message": None, "results": []}
    if not updates:
        code, message = ErrorCode.INVALID_REQUEST, "No feature updates were specified."
    else:
        first = updates[0]
        code = ErrorCode.INVALID_UPDATE_VERSION
        message = (f"The update failed for all features since the following feature had an error: Invalid update version "
                   f"{first['max_version_level']} for feature {first['feature']}. Local controller "
                   f"{ctx.broker.identity.node_id} does not support this feature.")
    return {"throttle_time_ms": 0, "error_code": code, "error_message": message, "results": []}
