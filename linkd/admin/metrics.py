"""Prometheus exposition of the components' ``statistics()`` and mirror progress.

A custom collector reads live state at scrape time, so there is no second copy of any number to keep
in step with the code that owns it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..link.states import MirrorState


class DaemonCollector:
    def __init__(self, daemon) -> None:
        self._daemon = daemon

    def collect(self):
        d = self._daemon
        mirrors = d.links.mirrors if d.links else {}
        lag = GaugeMetricFamily("linkd_mirror_partition_lag", "Source high watermark minus mirror log end offset", labels=["topic", "partition", "link"])
        leo = GaugeMetricFamily("linkd_partition_log_end_offset", "Log end offset of a hosted partition", labels=["topic", "partition"])
        state = GaugeMetricFamily("linkd_mirror_state", "1 for the mirror's current state", labels=["topic", "link", "state"])
        for topic in d.topics.all():
            for p, plog in enumerate(topic.logs):
                leo.add_metric([topic.name, str(p)], plog.log_end_offset)
        for name, mirror in mirrors.items():
            for s in MirrorState:
                state.add_metric([name, mirror.link, s.value], 1.0 if mirror.state == s else 0.0)
            local = d.topics.get(name)
            for progress in mirror.partitions:
                if local is None or progress.partition >= len(local.logs) or progress.source_high_watermark < 0:
                    continue
                lag.add_metric([name, str(progress.partition), mirror.link], max(progress.source_high_watermark - local.logs[progress.partition].log_end_offset, 0))
        yield lag
        yield leo
        yield state
        fetched = CounterMetricFamily("linkd_link_fetched_bytes", "Record bytes fetched from the source and appended", labels=["link"])
        requests = CounterMetricFamily("linkd_link_fetch_requests", "Fetch requests sent to the source", labels=["link"])
        incremental = CounterMetricFamily("linkd_link_incremental_fetch_requests", "Fetch requests sent inside a fetch session (changed partitions only)", labels=["link"])
        link_error = GaugeMetricFamily("linkd_link_error", "1 for the link's current error (NO_ERROR, SOURCE_UNAVAILABLE, AUTHENTICATION_ERROR, ...)", labels=["link", "error"])
        for name, entry in (d.links.links.items() if d.links else []):
            link_error.add_metric([name, entry.runtime.link_error], 1.0)
            fetched.add_metric([name], entry.runtime.fetched_bytes)
            requests.add_metric([name], entry.runtime.fetch_requests)
            incremental.add_metric([name], entry.runtime.incremental_fetch_requests)
        yield fetched
        yield requests
        yield incremental
        yield link_error
        if d.listener is not None:
            st = d.listener.statistics()
            yield GaugeMetricFamily("linkd_connections_open", "Open Kafka client connections", value=st.connections_open)
            yield CounterMetricFamily("linkd_requests", "Kafka requests handled", value=st.requests_total)
            yield CounterMetricFamily("linkd_protocol_errors", "Connections closed for protocol errors", value=st.protocol_errors)
            rejected = CounterMetricFamily("linkd_connections_rejected", "Kafka connections closed at accept by a limit", labels=["limit"])
            for limit, count in sorted((st.connections_rejected or {}).items()):
                rejected.add_metric([limit], count)
            yield rejected
            yield CounterMetricFamily("linkd_connections_idle_closed", "Connections closed after connections.max.idle.ms", value=st.idle_closed)
            yield CounterMetricFamily("linkd_request_arrival_timeouts", "Connections closed because a request did not arrive whole in time", value=st.request_arrival_timeouts)
            yield GaugeMetricFamily("linkd_request_bytes_in_use", "Request bytes reserved from queued.max.request.bytes", value=st.request_bytes_in_use)


class Metrics:
    def __init__(self, daemon) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DaemonCollector(daemon))

    def render(self) -> bytes:
        return generate_latest(self.registry)
