"""Prometheus exposition of the components' ``statistics()`` and mirror progress.

A custom collector reads live state at scrape time, so there is no second copy of any number to keep
in step with the code that owns it. Mirror lag comes from ``LinkManager.partition_status``, the formula
describe and list use too; a lag linkd cannot know is left out of the scrape (absent, not 0).
Process and Python metrics (``process_*``, ``python_*``) are prometheus_client's own collectors: they
read /proc correctly for us.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .. import __version__
from ..link.states import LinkState, MirrorState
from ..link.tasks import TaskState, link_tasks

REPORTED_STATES = list(dict.fromkeys(s.reported for s in MirrorState))  # FINALIZING reads as PENDING_STOPPED


class DaemonCollector:
    def __init__(self, daemon) -> None:
        self._daemon = daemon

    def collect(self):
        d = self._daemon
        yield _build_info(__version__)
        yield from self._mirrors(d)
        yield from self._links(d)
        store = getattr(d, "store", None)
        if store is not None:
            yield CounterMetricFamily("linkd_control_store_commits", "control.db write transactions committed (one WAL fsync each)", value=store.statistics().commits)
        if d.listener is not None:
            st = d.listener.statistics()
            yield GaugeMetricFamily("linkd_connections_open", "Open Kafka client connections", value=st.connections_open)
            yield from _requests(d.listener.request_stats)
            yield CounterMetricFamily("linkd_protocol_errors", "Connections closed for protocol errors", value=st.protocol_errors)
            rejected = CounterMetricFamily("linkd_connections_rejected", "Kafka connections closed at accept by a limit", labels=["limit"])
            for limit, count in sorted((st.connections_rejected or {}).items()):
                rejected.add_metric([limit], count)
            yield rejected
            yield CounterMetricFamily("linkd_connections_idle_closed", "Connections closed after connections.max.idle.ms", value=st.idle_closed)
            yield CounterMetricFamily("linkd_request_arrival_timeouts", "Connections closed because a request did not arrive whole in time", value=st.request_arrival_timeouts)
            yield GaugeMetricFamily("linkd_request_bytes_in_use", "Request bytes reserved from queued.max.request.bytes", value=st.request_bytes_in_use)
            # Secured listeners: refused TLS handshakes and SASL exchanges (each closed the connection).
            yield CounterMetricFamily("linkd_tls_handshake_failures", "TLS handshakes on SSL/SASL_SSL listeners that failed", value=st.tls_handshake_failures)
            yield CounterMetricFamily("linkd_authentication_failures", "SASL exchanges refused (wrong credentials, bad mechanism or message)", value=st.authentication_failures)

    def _mirrors(self, d):
        manager = d.links
        mirrors = manager.mirrors if manager else {}
        lag = GaugeMetricFamily("linkd_mirror_partition_lag", "Offsets the mirror is behind the source's end as last seen (absent when unknown)", labels=["topic", "partition", "link"])
        lag_seconds = GaugeMetricFamily(
            "linkd_mirror_partition_lag_seconds",
            "Seconds the mirror has been behind the source (0 when caught up); with the lag unknown, seconds since the last successful fetch",
            labels=["topic", "partition", "link"],
        )
        last_fetch = GaugeMetricFamily("linkd_mirror_partition_last_fetch_timestamp_seconds", "When a Fetch answer for the partition last arrived (unix time)", labels=["topic", "partition", "link"])
        leo = GaugeMetricFamily("linkd_partition_log_end_offset", "Log end offset of a hosted partition", labels=["topic", "partition"])
        state = GaugeMetricFamily("linkd_mirror_state", "1 for the mirror's current state", labels=["topic", "link", "state"])
        for topic in d.topics.all():
            for p, plog in enumerate(topic.logs):
                leo.add_metric([topic.name, str(p)], plog.log_end_offset)
        for name, mirror in mirrors.items():
            for s in REPORTED_STATES:
                state.add_metric([name, mirror.link, s], 1.0 if mirror.state.reported == s else 0.0)
            if mirror.state == MirrorState.STOPPED:
                continue  # no longer a mirror: nothing to lag behind
            for p in manager.partition_status(mirror):
                labels = [name, str(p.partition), mirror.link]
                if p.lag is not None:
                    lag.add_metric(labels, p.lag)
                if p.lag_seconds is not None:
                    lag_seconds.add_metric(labels, p.lag_seconds)
                if p.last_fetch_time_ms is not None:
                    last_fetch.add_metric(labels, p.last_fetch_time_ms / 1000)
        yield lag
        yield lag_seconds
        yield last_fetch
        yield leo
        yield state

    def _links(self, d):
        links = d.links.links.items() if d.links else []
        link_state = GaugeMetricFamily("linkd_link_state", "1 for the link's current state", labels=["link", "state"])
        task_state = GaugeMetricFamily("linkd_link_task_state", "1 for each link task's current state", labels=["link", "task", "state"])
        task_last = GaugeMetricFamily("linkd_link_task_last_success_timestamp_seconds", "When the link task's last round ran to the end (unix time)", labels=["link", "task"])
        task_errors = CounterMetricFamily("linkd_link_task_errors", "Link task rounds that failed or refused some item", labels=["link", "task"])
        fetched = CounterMetricFamily("linkd_link_fetched_bytes", "Record bytes fetched from the source and appended", labels=["link"])
        requests = CounterMetricFamily("linkd_link_fetch_requests", "Fetch requests sent to the source", labels=["link"])
        incremental = CounterMetricFamily("linkd_link_incremental_fetch_requests", "Fetch requests sent inside a fetch session (changed partitions only)", labels=["link"])
        link_error = GaugeMetricFamily("linkd_link_error", "1 for the link's current error (NO_ERROR, SOURCE_UNAVAILABLE, AUTHENTICATION_ERROR, ...)", labels=["link", "error"])
        sync_runs = CounterMetricFamily("linkd_offset_sync_runs", "Consumer offset sync rounds that completed", labels=["link"])
        sync_errors = CounterMetricFamily("linkd_offset_sync_errors", "Consumer offset sync rounds that failed", labels=["link"])
        sync_offsets = CounterMetricFamily("linkd_offset_sync_offsets", "Group offsets stored by consumer offset sync", labels=["link"])
        sync_clamped = CounterMetricFamily("linkd_offset_sync_offsets_clamped", "Synced offsets lowered to the mirror's high watermark", labels=["link"])
        sync_last = GaugeMetricFamily("linkd_offset_sync_last_success_timestamp_seconds", "When the last consumer offset sync round completed (unix time)", labels=["link"])
        for name, entry in links:
            rt = entry.runtime
            for ls in LinkState:
                link_state.add_metric([name, ls.value], 1.0 if rt.state == ls else 0.0)
            for task in link_tasks(entry):
                for ts in TaskState:
                    task_state.add_metric([name, task["task_name"], ts.value], 1.0 if task["state"] == ts.value else 0.0)
                if task["last_success_ms"]:
                    task_last.add_metric([name, task["task_name"]], task["last_success_ms"] / 1000)
                task_errors.add_metric([name, task["task_name"]], task["errors"])
            link_error.add_metric([name, rt.link_error], 1.0)
            fetched.add_metric([name], rt.fetched_bytes)
            requests.add_metric([name], rt.fetch_requests)
            incremental.add_metric([name], rt.incremental_fetch_requests)
            st = entry.offset_sync.status
            sync_runs.add_metric([name], st.syncs)
            sync_errors.add_metric([name], st.errors)
            sync_offsets.add_metric([name], st.offsets_synced)
            sync_clamped.add_metric([name], st.offsets_clamped)
            if st.last_sync_ms:
                sync_last.add_metric([name], st.last_sync_ms / 1000)
        yield from (link_state, link_error, task_state, task_last, task_errors, fetched, requests, incremental, sync_runs, sync_errors, sync_offsets, sync_clamped, sync_last)


def _requests(stats):
    total = CounterMetricFamily("linkd_requests", "Kafka requests received, by API", labels=["api"])
    duration = HistogramMetricFamily("linkd_request_duration_seconds", "Kafka requests answered, by API: seconds from the whole request read to its answer written", labels=["api"])
    for api, arrived, buckets, seconds, _answered in stats.snapshot():
        total.add_metric([api], arrived)
        duration.add_metric([api], buckets, seconds)
    return total, duration


def _build_info(version: str) -> GaugeMetricFamily:
    info = GaugeMetricFamily("linkd_build_info", "Always 1; the running linkd's version", labels=["version"])
    info.add_metric([version], 1)
    return info


class Metrics:
    def __init__(self, daemon) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DaemonCollector(daemon))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
