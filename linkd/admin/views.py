"""REST (and CLI ``--json``) JSON of links and mirrors, built from the link layer's status records.

The field names are the contract (Confluent's Cluster Linking REST v3 where it has one); this module is
the only place that spells them for describe and list. ``include_tasks`` follows Confluent: a link's
``tasks`` are in its describe only when asked for (the CLI asks).
"""

from __future__ import annotations

from ..link.loss import lost_offsets
from ..link.manager import LinkManager
from ..link.mirror import Mirror


def link_view(manager: LinkManager, name: str, include_tasks: bool = True) -> dict:
    st = manager.link_status(name)
    out = {
        "link_name": st.name,
        "link_id": st.link_id,
        "source_cluster_id": st.source_cluster_id,
        "bootstrap_servers": st.bootstrap_servers,
        "link_state": st.state,
        "link_error": st.error,
        "link_error_message": st.error_message,
        "topic_names": st.topic_names,
        "configs": [{"name": k, "value": v, "sensitive": sensitive} for k, v, sensitive in st.configs],
        "statistics": {
            "fetch_requests": st.statistics.fetch_requests,
            "incremental_fetch_requests": st.statistics.incremental_fetch_requests,
            "fetched_bytes": st.statistics.fetched_bytes,
            "appended_batches": st.statistics.appended_batches,
        },
        "consumer_offset_sync": st.consumer_offset_sync,
        "topic_config_sync": st.topic_config_sync,
        "auto_create": st.auto_create,
        "acl_sync": st.acl_sync,
    }
    if include_tasks:
        out["tasks"] = st.tasks
    return out


def links_view(manager: LinkManager, include_tasks: bool = True) -> list[dict]:
    return [link_view(manager, name, include_tasks) for name in sorted(manager.links)]


def mirror_view(manager: LinkManager, mirror: Mirror | str) -> dict:
    if isinstance(mirror, str):
        mirror = manager.mirror(mirror)
    partitions = [p.as_dict() for p in manager.partition_status(mirror)]
    lags = [p["lag"] for p in partitions]
    local = manager.topics.get(mirror.topic)
    for p in partitions:
        # How far the log cleaner compacted this mirror's log: below it the bytes are no longer the
        # source's (keys' older values and tombstones removed); None when it was never cleaned.
        plog = local.logs[p["partition"]] if local and p["partition"] < len(local.logs) else None
        p["cleaned_up_to"] = plog.statistics().cleaned_up_to if plog else None
    return {
        "mirror_topic_name": mirror.topic,
        "link_name": mirror.link,
        "source_topic_name": mirror.source_topic,
        "mirror_status": mirror.state.reported,
        "mirror_topic_error": mirror.error.value,
        "mirror_topic_error_message": mirror.error_message,
        "state_time_ms": mirror.state_time_ms,
        "num_partitions": len(partitions),
        "max_per_partition_mirror_lag": None if None in lags else max(lags, default=0),
        "mirror_lags": partitions,
        "partitions": partitions,  # the old name, kept for one release
        "gaps": manager.mirror_gaps(mirror.topic),
        "stop_info": {k: v for k, v in (mirror.stop_info or {}).items() if k not in ("phase", "reconciled")} or None,
        "lost_offsets": lost_offsets(mirror.stop_info),
    }


def mirrors_view(manager: LinkManager, link: str | None = None) -> list[dict]:
    return [mirror_view(manager, m) for m in manager.mirrors_of(link)]
