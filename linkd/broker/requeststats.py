"""Request counts and latency per API key on the Kafka listener, read by /metrics.

Plain counters and fixed histogram buckets updated in the connection task (one dict lookup, one bisect,
three additions per request), so the hot path pays no lock and no label lookup; the scrape turns them
into ``linkd_requests_total{api}`` and ``linkd_request_duration_seconds{api}``. The duration is Kafka's
"total time": from the whole request frame read to its answer written (a long-polling Fetch counts its
wait). An API key linkd does not know is counted as ``unknown``, so a hostile client cannot make series.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from protocol.messages import API_SPECS

# Seconds; Fetch long polls wait up to fetch.max.wait (500 ms by default, 30 s at most here).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNKNOWN = -1


def api_key_of(frame) -> int:
    """The API key of a request frame (its first two bytes), or UNKNOWN."""
    if len(frame) < 2:
        return UNKNOWN
    key = (frame[0] << 8) | frame[1]
    return key if key in API_SPECS else UNKNOWN


def api_name(key: int) -> str:
    return API_SPECS[key].name if key in API_SPECS else "unknown"


@dataclass
class _Series:
    requests: int = 0  # arrived
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # answered, per bucket (last: +Inf)
    seconds: float = 0.0
    answered: int = 0


class RequestStats:
    def __init__(self) -> None:
        self._series: dict[int, _Series] = {}

    def _get(self, key: int) -> _Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        return series

    def arrived(self, key: int) -> None:
        self._get(key).requests += 1

    def answered(self, key: int, seconds: float) -> None:
        series = self._get(key)
        series.buckets[bisect_left(BUCKETS, seconds)] += 1
        series.seconds += seconds
        series.answered += 1

    def snapshot(self) -> list[tuple[str, int, list[tuple[str, int]], float, int]]:
        """(api name, requests arrived, cumulative buckets with "+Inf", seconds summed, answered), by API name."""
        out = []
        for key, s in self._series.items():
            running, cumulative = 0, []
            for bound, count in zip((*(repr(b) for b in BUCKETS), "+Inf"), s.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            out.append((api_name(key), s.requests, cumulative, s.seconds, s.answered))
        return sorted(out)
