"""Recording samples as they complete, and the summary a run ends with.

Latency percentiles are over successful requests only; failures are counted by `error_type`
instead (a fast 502 would otherwise make a broken backend look quick). Open-loop runs also record
the service time (from the actual send) and the generator's lag (actual send minus intended send),
so a reader can tell the server's queueing from the load generator falling behind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import msgspec


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Milliseconds."""

    count: int
    min: float
    avg: float
    p50: float
    p95: float
    p99: float
    p999: float
    max: float


class ServiceStats(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    cached: int
    latency_ms: LatencyStats | None


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """What one run measured; `--json` prints exactly this."""

    target: str
    mode: str  # "closed" (fixed concurrency) or "open" (constant arrival rate)
    concurrency: int | None
    target_rate: float | None  # requests/s asked for (open loop)
    requests: int
    ok: int
    errors: int
    errors_by_type: dict[str, int]
    duration_s: float
    achieved_rate: float  # completed requests per second of wall time
    cached: int
    latency_ms: LatencyStats | None  # open loop: from the intended send time
    service_time_ms: LatencyStats | None = None  # open loop: from the actual send
    generator_lag_ms: LatencyStats | None = None  # open loop: actual minus intended send
    ttft_ms: LatencyStats | None = None  # streams: time to the first text
    by_service: dict[str, ServiceStats] = {}
    latency_measured_from: str = "send"  # "send" or "intended send"


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolating linearly between ranks."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_stats(seconds: Sequence[float]) -> LatencyStats | None:
    if not seconds:
        return None
    ordered = sorted(s * 1000.0 for s in seconds)

    def at(q: float) -> float:
        return round(percentile(ordered, q), 4)

    return LatencyStats(
        count=len(ordered),
        min=round(ordered[0], 4),
        avg=round(sum(ordered) / len(ordered), 4),
        p50=at(50),
        p95=at(95),
        p99=at(99),
        p999=at(99.9),
        max=round(ordered[-1], 4),
    )


class Recorder:
    """Collects samples from many coroutines of one event loop (no locking needed)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds, successful requests
        self.service_times: list[float] = []
        self.lags: list[float] = []
        self.ttfts: list[float] = []
        self.errors: Counter[str] = Counter()
        self.by_service: dict[str, list[float]] = {}
        self.cached_by_service: Counter[str] = Counter()
        self.completed = 0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def success(
        self,
        latency: float,
        *,
        service: str | None = None,
        cached: bool = False,
        ttft: float | None = None,
        service_time: float | None = None,
        lag: float | None = None,
    ) -> None:
        self.completed += 1
        self.latencies.append(latency)
        name = service or "unknown"
        self.by_service.setdefault(name, []).append(latency)
        if cached:
            self.cached_by_service[name] += 1
        if ttft is not None:
            self.ttfts.append(ttft)
        self._open_loop(service_time, lag)

    def failure(
        self, error_type: str, *, service_time: float | None = None, lag: float | None = None
    ) -> None:
        self.completed += 1
        self.errors[error_type] += 1
        self._open_loop(None, lag)

    def _open_loop(self, service_time: float | None, lag: float | None) -> None:
        if service_time is not None:
            self.service_times.append(service_time)
        if lag is not None:
            self.lags.append(lag)

    def summary(
        self,
        *,
        target: str,
        mode: str,
        concurrency: int | None,
        target_rate: float | None,
        duration: float,
    ) -> Summary:
        by_service = {
            name: ServiceStats(
                count=len(values),
                cached=self.cached_by_service[name],
                latency_ms=latency_stats(values),
            )
            for name, values in sorted(self.by_service.items())
        }
        open_loop = mode == "open"
        return Summary(
            target=target,
            mode=mode,
            concurrency=concurrency,
            target_rate=target_rate,
            requests=self.completed,
            ok=len(self.latencies),
            errors=self.failed,
            errors_by_type=dict(self.errors.most_common()),
            duration_s=round(duration, 3),
            achieved_rate=round(self.completed / duration, 2) if duration > 0 else 0.0,
            cached=sum(self.cached_by_service.values()),
            latency_ms=latency_stats(self.latencies),
            service_time_ms=latency_stats(self.service_times) if open_loop else None,
            generator_lag_ms=latency_stats(self.lags) if open_loop else None,
            ttft_ms=latency_stats(self.ttfts),
            by_service=by_service,
            latency_measured_from="intended send" if open_loop else "send",
        )
