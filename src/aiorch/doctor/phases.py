"""Which phase of a request grew: aiorch's own (queue, parse, classify, cache, gateway) or the
upstream's (connect, first byte, stream), from `aiorch_phase_duration_seconds`.

Each phase is read as the mean seconds it adds to one request: its sum over the number of
requests (the `total` phase's count). A phase only some requests go through (a new connection,
a classification) then counts for what it costs the average request, and the phases add up to
the mean total, as the Server-Timing header's do for one request. When the observation has a
baseline (the totals before a two-scrape window), "grew" is measured against it; otherwise
against what each phase should cost: aiorch's own phases a few milliseconds at most.
"""

from __future__ import annotations

from aiorch.doctor.findings import Finding, Json, Severity, rounded, seconds
from aiorch.doctor.latency import name, span
from aiorch.doctor.observation import Observation, Thresholds
from aiorch.doctor.series import View

FAMILY = "aiorch_phase_duration_seconds"
SHARE = 0.25  # an own phase is named when it grew at least this share of the largest one
OWN = ("queue", "parse", "classify", "cache", "gateway")  # the gateway's own work
UPSTREAM = ("connect", "first_byte", "stream")  # waiting on a model
WORDS = {
    "queue": "waiting before the handler (queue): the event loop was busy",
    "parse": "reading and decoding request bodies (parse: large bodies, a busy event loop, or "
    "slow uploads)",
    "classify": "classifying queries (classify)",
    "cache": "cache lookups and stores (cache)",
    "gateway": "its own work between the phases (gateway: routing, assembling answers)",
}
UPSTREAM_WORDS = {  # {who}: the service waited on
    "connect": "connecting to {who} is slow (connect)",
    "first_byte": "{who}'s first token is slow (first_byte)",
    "stream": "{who} streams its answers slowly (stream)",
}


def per_request(view: View) -> dict[str, float] | None:
    """Mean seconds per request of each phase, or None without requests."""
    requests = view.total(f"{FAMILY}_count", {"phase": "total"})
    if requests <= 0:
        return None
    sums = view.by(f"{FAMILY}_sum", ("phase",))
    return {phase: sums.get((phase,), 0.0) / requests for phase in (*OWN, *UPSTREAM, "total")}


def waited_on(view: View) -> str | None:
    """The service whose calls took the most time in the view."""
    spent = view.by("ai_backend_call_duration_seconds_sum", ("service",))
    spent = {key: value for key, value in spent.items() if value > 0}
    if not spent:
        return None
    (service,), _ = max(spent.items(), key=lambda item: item[1])
    return service


def phases(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    means = per_request(view)
    if means is None:
        return []
    before = per_request(obs.baseline) if obs.baseline is not None else None
    own = sum(means[p] for p in OWN)
    growth = {p: means[p] - (before[p] if before else 0.0) for p in (*OWN, *UPSTREAM)}
    evidence: dict[str, Json] = {
        "requests": rounded(view.total(f"{FAMILY}_count", {"phase": "total"}), 2),
        "seconds_per_request": {p: rounded(v, 6) for p, v in means.items()},
        "gateway_seconds_per_request": rounded(own, 6),
    }
    if before is not None:
        evidence["baseline_seconds_per_request"] = {p: rounded(v, 6) for p, v in before.items()}
    compared = f" (from {seconds(sum(before[p] for p in OWN))} before the window)" if before else ""
    if own > thresholds.gateway_seconds:
        # A busy event loop delays whatever awaits it: the wait before the handler (queue), and
        # reading bodies and the rest of aiorch's work too. Every own phase that carries a real
        # share of the growth is named, the largest first.
        key = {p: growth[p] if before else means[p] for p in OWN}
        ranked = sorted(OWN, key=lambda p: -key[p])
        named = [p for p in ranked if key[p] >= SHARE * key[ranked[0]]][:3]
        evidence.update({"phase": named[0], "phases": list(named), "owner": "gateway"})
        parts = [f"{WORDS[p]}, {seconds(means[p])}" for p in named]
        return [
            Finding(
                "phases",
                Severity.WARNING,
                f"The gateway itself adds {seconds(own)} to each request{compared}, of "
                f"{seconds(means['total'])} in all {span(obs)}: mostly "
                + "; then ".join(parts)
                + " per request.",
                next_step=_own_next_step(named[0] if "queue" not in named else "queue"),
                evidence=evidence,
                runbook="aiorchgatewayslow",
                panel="Request Phases",
            )
        ]
    phase = max(UPSTREAM, key=lambda p: growth[p] if before else means[p])
    service = waited_on(view)
    evidence.update({"phase": phase, "owner": "upstream", "service": service})
    what = UPSTREAM_WORDS[phase].format(who=name(service) if service else "the upstream")
    grew = (
        f", up {seconds(growth[phase])} per request from before the window"
        if before and growth[phase] > 0
        else ""
    )
    return [
        Finding(
            "phases",
            Severity.INFO,
            f"Most of each request's {seconds(means['total'])} {span(obs)} is upstream: {what}, "
            f"{seconds(means[phase])} per request{grew}. The gateway's own phases add "
            f"{seconds(own)}.",
            next_step=(
                "Open the Request Phases panel; the service's latency and time-to-first-token "
                "findings say more about the model's side."
            ),
            evidence=evidence,
            panel="Request Phases",
        )
    ]


def _own_next_step(phase: str) -> str:
    if phase == "queue":
        return (
            "The event loop is busy: check the host's CPU and in-flight requests, add workers "
            "(`aiorch serve --workers N`) or replicas, and look for very large request bodies."
        )
    if phase == "parse":
        return (
            "Look for very large request bodies (or slow uploads); more workers spread the "
            "decoding over more cores."
        )
    if phase == "cache":
        return "Check Redis (AIORCH_REDIS_URL): its latency and orchestrator_cache_errors_total."
    return (
        "Compare with orchestrator_overhead_seconds and the host's CPU; profile aiorch if this "
        "grew after a deploy."
    )
