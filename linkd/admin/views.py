"""REST (and CLI ``--json``) JSON of links and mirrors, built from the link layer's status records.

The field names are the contract (Confluent's Cluster Linking REST v3 where it has one); this module is
the only place that spells them for describe and list. ``include_tasks`` follows Confluent: a link's
``tasks`` are in its describe only when asked for (the CLI asks).
"""

from __future__ import annotations

from protocol.errors import ErrorCode

from ..link.errors import DomainError, ErrorKind
from ..link.loss import lost_offsets
from ..link.manager import LinkManager
from ..link.mirror import Mirror
from ..link.states import MirrorState
from ..link.status import CommandResult

# Confluent's MirrorTopicStatus values. linkd's mirrors take the first six; the others (Confluent's
# reverse/restore and link-level states) are accepted as filters and match nothing here.
MIRROR_STATUSES = ("ACTIVE", "PAUSED", "STOPPED", "PENDING_STOPPED", "SOURCE_UNAVAILABLE", "FAILED",
                   "LINK_FAILED", "LINK_PAUSED", "PENDING_MIRROR", "PENDING_SYNCHRONIZE", "PENDING_SETUP_FOR_RESTORE", "PENDING_RESTORE")
assert set(MIRROR_STATUSES) >= {s.reported for s in MirrorState}


def link_view(manager: LinkManager, name: str, include_tasks: bool = True) -> dict:
    st = manager.link_status(name)
    out = {
        "link_name": st.name,
        "link_id": st.link_id,  # Confluent's older name of cluster_link_id, kept beside it
        "cluster_link_id": st.link_id,
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


def mirrors_view(manager: LinkManager, link: str | None = None, mirror_status: str | None = None) -> list[dict]:
    """``mirror_status``: only mirrors in that status (Confluent's values, any case); an unknown value is refused."""
    if mirror_status is not None and mirror_status.upper() not in MIRROR_STATUSES:
        raise DomainError(ErrorKind.INVALID, ErrorCode.INVALID_REQUEST, f"unknown mirror_status '{mirror_status}' (one of {', '.join(MIRROR_STATUSES)})")
    wanted = mirror_status.upper() if mirror_status is not None else None
    return [mirror_view(manager, m) for m in manager.mirrors_of(link) if wanted is None or m.state.reported == wanted]


def cluster_view(cluster_id: str, base_url: str) -> dict:
    """Confluent's ClusterData: this daemon is a one-broker cluster; the relationships point at the REST
    v3 paths (linkd serves the cluster-linking ones; the others answer 404 in the JSON error shape)."""
    me = f"{base_url.rstrip('/')}/kafka/v3/clusters/{cluster_id}"
    return {
        "kind": "KafkaCluster",
        "metadata": {"self": me, "resource_name": f"crn:///kafka={cluster_id}"},
        "cluster_id": cluster_id,
        "controller": {"related": f"{me}/brokers/0"},
        "acls": {"related": f"{me}/acls"},
        "brokers": {"related": f"{me}/brokers"},
        "broker_configs": {"related": f"{me}/broker-configs"},
        "consumer_groups": {"related": f"{me}/consumer-groups"},
        "topics": {"related": f"{me}/topics"},
        "partition_reassignments": {"related": f"{me}/topics/-/partitions/-/reassignment"},
    }


def command_result_view(r: CommandResult) -> dict:
    """One entry of a promote/failover/pause/resume answer (Confluent's AlterMirrorStatusResponseData plus
    linkd's fields). ``mirror_lags`` has Confluent's {partition, lag, last_source_fetch_offset} and the
    fields this answer always had beside them (``last_source_offset``: the source high watermark seen)."""
    out: dict = {"mirror_topic_name": r.topic, "error_code": r.error_code, "error_message": r.error_message}
    if r.mirror_status is not None:
        out["mirror_status"] = r.mirror_status
    out["mirror_lags"] = [
        {
            "partition": p.partition,
            "lag": p.lag,
            "last_source_fetch_offset": p.last_source_fetch_offset,
            "mirror_log_end_offset": p.mirror_log_end_offset,
            "last_source_offset": p.source_high_watermark,
            "last_fetch_time_ms": p.last_fetch_time_ms,
        }
        for p in r.partitions or ()
    ]
    # Confluent's truncate-and-restore fields: these commands never truncate a mirror.
    out["messages_truncated"] = None
    out["partition_level_truncation_data"] = []
    if r.stop is not None:
        out.update(
            stop_kind=r.stop.kind,
            stop_offsets=r.stop.offsets,
            records_possibly_lost=r.stop.records_possibly_lost,
            possible_data_loss_records=r.stop.records_possibly_lost,  # the old name, kept for one release
            aborted_transactions=r.stop.aborted_transactions,
        )
    if r.validate_only:
        out["validate_only"] = True
    return out


def command_results_view(results: list[CommandResult]) -> list[dict]:
    return [command_result_view(r) for r in results]


def resource(kind: str, self_url: str, body: dict, resource_name: str | None = None) -> dict:
    """Confluent's Resource envelope (``kind``, ``metadata``) around one answer's fields."""
    return {"kind": kind, "metadata": {"self": self_url, "resource_name": resource_name}, **body}


def collection(kind: str, self_url: str, data: list[dict]) -> dict:
    """Confluent's ResourceCollection envelope; linkd answers every list in one page (``next`` is null)."""
    return {"kind": kind, "metadata": {"self": self_url, "next": None}, "data": data}
