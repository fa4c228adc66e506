"""DescribeLogDirs: linkd has one log directory (the topic registry's data dir) holding every partition.

Sizes are the bytes of each partition's segment files as its current log view sees them; the offset lag
is 0 because linkd is the only replica (Kafka reports a future replica's lag behind the current one,
and linkd has no future replicas). From v4 the directory's total and usable bytes come from statvfs.
"""

from __future__ import annotations

import os

from protocol.errors import ErrorCode

from .acl import CLUSTER_NAME
from .context import Body, RequestContext


def _disk_bytes(path: str) -> tuple[int, int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1, -1
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _partition(index: int, plog) -> Body:
    return {"partition_index": index, "partition_size": plog.statistics().size_bytes, "offset_lag": 0, "is_future_key": False}


async def describe_log_dirs(ctx: RequestContext, body: Body) -> Body:
    registry = ctx.broker.topics
    if not ctx.authorized("DESCRIBE", "CLUSTER", CLUSTER_NAME):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "results": []}
    requested = body.get("topics")
    topics: list[Body] = []
    if requested is None:
        for topic in sorted(registry.all(), key=lambda t: t.name):
            topics.append({"name": topic.name, "partitions": [_partition(i, p) for i, p in enumerate(topic.logs)]})
    else:
        for item in requested:
            hosted = registry.get(item["topic"])
            if hosted is None:
                continue  # Kafka leaves out what it does not host
            parts = [_partition(i, hosted.logs[i]) for i in item.get("partitions") or [] if 0 <= i < len(hosted.logs)]
            if parts:
                topics.append({"name": hosted.name, "partitions": parts})
    log_dir = str(registry.data_dir.resolve())
    total, usable = _disk_bytes(log_dir)
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "results": [{"error_code": ErrorCode.NONE, "log_dir": log_dir, "topics": topics, "total_bytes": total,
                     "usable_bytes": usable, "is_cordoned": False}],
    }
