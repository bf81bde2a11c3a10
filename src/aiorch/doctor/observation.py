"""What the doctor saw (`Observation`) and what it judges against (`Thresholds`).

A source (two scrapes of `/metrics`, or Prometheus) produces an `Observation`; the checks read
only this, so they run the same on either source and on recorded fixtures in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from aiorch.doctor.series import View


class BackendReadiness(msgspec.Struct, frozen=True):
    """One backend as `/readyz` reports it (without a credential: service, kind and ready)."""

    service: str
    kind: str
    model: str = ""
    url: str | None = None
    ready: bool = False
    detail: str = ""
    model_loaded: bool | None = None  # Ollama only: the model is in memory


class Readiness(msgspec.Struct, frozen=True):
    """`GET /readyz`: ready, degraded, offline or unavailable, and each backend."""

    status: str
    offline: bool = False
    backends: tuple[BackendReadiness, ...] = ()


def decode_readiness(body: bytes) -> Readiness:
    """Raises `msgspec.DecodeError` (a `ValueError`) on anything but the `/readyz` shape."""
    return msgspec.json.decode(body, type=Readiness)


@dataclass(frozen=True)
class Window:
    """Where the figures come from and over what time."""

    source: str  # "metrics" (two scrapes of /metrics) or "prometheus"
    url: str
    seconds: float  # the window's length; 0 when only one scrape was taken
    since_start: bool  # the figures are totals since aiorch started, not the window's
    note: str  # the window in words, including why totals are used when they are
    queries: float = 0.0  # queries answered in the figures' span
    length: str = ""  # the window's length as the user gave it ("5 s", "5m")


@dataclass(frozen=True)
class Targets:
    """Prometheus only: the scrape targets of the aiorch job and which are up."""

    job: str
    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    window: Window
    view: View | None  # None when the metrics could not be read
    metrics_error: str | None = None
    missing_families: tuple[str, ...] = ()
    expected_families: int = 0
    readiness: Readiness | None = None
    readiness_error: str | None = None
    targets: Targets | None = None
    # Totals before the window (two scrapes of /metrics): what "grew" is measured against.
    baseline: View | None = None


@dataclass(frozen=True)
class Thresholds:
    """The lines the checks draw. SLOs are the guide's: p95 within 60 s (Kimi), 15 s (Qwen)."""

    slo_seconds: dict[str, float] = field(default_factory=lambda: {"kimi": 60.0, "qwen": 15.0})
    fallback_share: float = 0.10  # of queries leaving one service (OrchestratorFallbackSurge)
    error_share: float = 0.05  # failed backend calls per query (AIHighErrorRate)
    failing_share: float = 0.05  # queries that failed for the user (AIQueriesFailing)
    cache_target: float = 0.60  # the low end of the guide's 60-70 % target
    min_cache_lookups: int = 20  # fewer lookups say nothing about a hit rate
    first_token_share: float = 0.5  # time to first token above this share of the total: a wait
    overhead_p99_seconds: float = 0.1  # aiorch's own time; it should stay under a millisecond
    gateway_seconds: float = 0.05  # aiorch's own phases per request (AiorchGatewaySlow)
    in_flight: float = 100.0  # queries in flight that suggest saturation

    def slo(self, service: str) -> float:
        # An unknown service is held to the loosest SLO, as AIHighResponseTime does.
        return self.slo_seconds.get(service, max(self.slo_seconds.values()))
