"""Latency checks: each service and each agent against its SLO, time to first token, overhead.

Every configured service is checked: kimi and qwen on the guide's families
(`kimi_/qwen_response_duration_seconds`, by mode), any other on the shared
`ai_backend_call_duration_seconds{service}`; the services are those the metrics and `/readyz` name.

A breached SLO is critical. Its finding carries what usually explains it, in the order an
on-call engineer would look: thinking mode, where the time goes (before the first token or while
generating), timeouts, fallbacks away from the service, answer size, a model not loaded.
"""

from __future__ import annotations

from aiorch.doctor.findings import Finding, Json, Severity, count, percent, rounded, seconds
from aiorch.doctor.observation import Observation, Thresholds
from aiorch.doctor.series import Histogram, View
from aiorch.monitoring.prometheus_metrics import GUIDE_FAMILIES

NAMES = {"kimi": "Kimi", "qwen": "Qwen"}
HIGH_RESPONSE_RUNBOOK = {"kimi": "kimihighresponsetime", "qwen": "qwenhighresponsetime"}
TIMEOUT_VARIABLE = {"kimi": "KIMI_TIMEOUT", "qwen": "QWEN_TIMEOUT"}
GENERIC_NEXT_STEP = (
    "Open the Backend Call Duration panel for this service; compare its time to first token and "
    "tokens per call (`ai_backend_tokens_total`) with earlier, and call the upstream directly "
    "from this host to tell it from aiorch."
)
NEXT_STEP = {
    "kimi": (
        "Open the Kimi Response Duration panel and split it by mode; compare time to first token "
        "and tokens per call. To tell the provider from aiorch, call Kimi directly: "
        "`python scripts/testing/kimi_benchmark.py --requests 10 --concurrency 2`."
    ),
    "qwen": (
        "Open the Qwen Response Duration panel. If Qwen runs on Ollama, check that the model is "
        "loaded and on the GPU (`ollama ps`); compare its load (`qwen_queries_total`, in-flight "
        "requests, fallbacks from Kimi to Qwen) with what one local model can serve."
    ),
}


def span(obs: Observation) -> str:
    if obs.window.since_start:
        return "since aiorch started"
    return f"in the last {obs.window.length or seconds(obs.window.seconds)}"


def name(service: str) -> str:
    return NAMES.get(service, service)


def services(obs: Observation, view: View) -> list[str]:
    """Every service the metrics or `/readyz` name, the guide's two first."""
    found = dict.fromkeys(GUIDE_FAMILIES)
    for (service,) in view.by("ai_backend_call_duration_seconds_count", ("service",)):
        found.setdefault(service)
    if obs.readiness is not None:
        for backend in obs.readiness.backends:
            found.setdefault(backend.service)
    return [service for service in found if service]


def call_histogram(view: View, service: str) -> Histogram | None:
    """A service's call latency: the guide's family for kimi and qwen, the shared one otherwise."""
    if service in GUIDE_FAMILIES:
        return view.histogram(f"{service}_response_duration_seconds").get(())
    return view.histogram("ai_backend_call_duration_seconds", ("service",)).get((service,))


def panel(service: str) -> str:
    return (
        f"{name(service)} Response Duration"
        if service in GUIDE_FAMILIES
        else ("Backend Call Duration")
    )


def _quantiles(histogram: Histogram) -> dict[str, Json]:
    return {
        "calls": rounded(histogram.count, 2),
        "p50_seconds": rounded(histogram.quantile(0.5)),
        "p95_seconds": rounded(histogram.quantile(0.95)),
    }


def service_latency(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    findings = []
    for service in services(obs, view):
        histogram = call_histogram(view, service)
        slo = thresholds.slo(service)
        if histogram is None or histogram.count <= 0:
            findings.append(
                Finding(
                    f"latency.{service}",
                    Severity.OK,
                    f"No {name(service)} calls {span(obs)}: nothing to judge its latency by.",
                    evidence={"calls": 0, "slo_seconds": slo},
                )
            )
            continue
        p50, p95 = histogram.quantile(0.5), histogram.quantile(0.95)
        within = histogram.share_within(slo)
        evidence: dict[str, Json] = {
            **_quantiles(histogram),
            "slo_seconds": slo,
            "share_within_slo": rounded(within),
            "share_within_slo_exact": histogram.is_boundary(slo),
        }
        figures = f"p50 {seconds(p50)}, {count(histogram.count)} calls {span(obs)}"
        if p95 is None or p95 <= slo:
            findings.append(
                Finding(
                    f"latency.{service}",
                    Severity.OK,
                    f"{name(service)} p95 is {seconds(p95)}, within its {seconds(slo)} SLO "
                    f"({figures}).",
                    evidence=evidence,
                    panel=panel(service),
                )
            )
            continue
        reasons, context = _explain(obs, view, service, histogram)
        evidence.update(context)
        few = " Few calls: one slow call decides the p95." if histogram.count < 5 else ""
        findings.append(
            Finding(
                f"latency.{service}",
                Severity.CRITICAL,
                f"{name(service)} p95 is {seconds(p95)}, above its {seconds(slo)} SLO ({figures}; "
                f"{percent(within)} within the SLO).{few}"
                + "".join(f" {reason}" for reason in reasons),
                next_step=NEXT_STEP.get(service, GENERIC_NEXT_STEP),
                evidence=evidence,
                runbook=HIGH_RESPONSE_RUNBOOK.get(service),
                panel=panel(service),
            )
        )
    return findings


def _explain(
    obs: Observation, view: View, service: str, histogram: Histogram
) -> tuple[list[str], dict[str, Json]]:
    """Sentences that explain a slow service, with their numbers."""
    reasons: list[str] = []
    context: dict[str, Json] = {}
    guide = service in GUIDE_FAMILIES
    modes = view.histogram(f"{service}_response_duration_seconds", ("mode",)) if guide else {}
    modes = {key: h for key, h in modes.items() if h.count > 0}
    if len(modes) > 1:
        by_mode = {mode: h.quantile(0.95) for (mode,), h in modes.items()}
        context["p95_seconds_by_mode"] = {m: rounded(v) for m, v in by_mode.items()}
        reasons.append(
            "By mode, p95 is "
            + ", ".join(f"{seconds(v)} ({m})" for m, v in sorted(by_mode.items()))
            + "."
        )
    first_token = view.histogram("ai_time_to_first_token_seconds", where={"service": service})
    merged = _merge(list(first_token.values()))
    if merged is not None and merged.count > 0:
        ttft, total = merged.quantile(0.5), histogram.quantile(0.5)
        context["first_token_p50_seconds"] = rounded(ttft)
        if ttft is not None and total:
            share = min(1.0, ttft / total)
            context["first_token_share"] = rounded(share)
            where = (
                "before the first token (queueing at the provider, the network, or a model load)"
                if share >= 0.5
                else "while generating (long answers or a slow model)"
            )
            reasons.append(
                f"Time to first token p50 is {seconds(ttft)} of {seconds(total)}: "
                f"the time goes {where}."
            )
    timeouts = view.total("ai_errors_total", {"service": service, "error_type": "timeout"})
    if timeouts > 0:
        context["timeouts"] = rounded(timeouts, 2)
        deadline = TIMEOUT_VARIABLE.get(service, f"services.{service}.timeout")
        reasons.append(f"{count(timeouts)} calls hit the {deadline} deadline (they count as slow).")
    queries = view.total("orchestrator_queries_total")
    away = view.by(
        "orchestrator_fallback_total", ("to_service", "reason"), {"from_service": service}
    )
    if away and queries > 0:
        moved = sum(away.values())
        (target, reason), _ = max(away.items(), key=lambda item: item[1])
        context["fallback_share"] = rounded(moved / queries)
        reasons.append(
            f"{percent(moved / queries)} of queries fall back from {name(service)} to "
            f"{name(target)}, mostly on {reason}."
        )
    if guide:
        calls = view.total(f"{service}_queries_total", {"status": "success"})
        completion = view.total(f"{service}_tokens_used_total", {"token_type": "completion"})
    else:
        mine = {"service": service}
        calls = view.total("ai_backend_calls_total", {**mine, "status": "success"})
        completion = view.total("ai_backend_tokens_total", {**mine, "token_type": "completion"})
    if calls > 0 and completion > 0:
        context["completion_tokens_per_call"] = rounded(completion / calls, 1)
        reasons.append(f"Answers average {completion / calls:.0f} completion tokens.")
    if obs.readiness is not None:
        for backend in obs.readiness.backends:
            if backend.service == service and backend.model_loaded is False:
                context["model_loaded"] = False
                reasons.append(
                    f"Ollama reports {backend.model} not loaded: a cold start makes the next "
                    "call slow."
                )
    return reasons, context


def _merge(histograms: list[Histogram]) -> Histogram | None:
    if not histograms:
        return None
    buckets: dict[float, float] = {}
    for histogram in histograms:
        for bound, value in histogram.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + value
    return Histogram(tuple(sorted(buckets.items())))


def service_of_model(obs: Observation, model: str, view: View | None = None) -> str | None:
    """The service a model id belongs to: from the metrics' labels, /readyz, else the name."""
    if view is not None:
        owners = view.by("ai_backend_call_duration_seconds_count", ("service",), {"model": model})
        if len(owners) == 1:
            return next(iter(owners))[0]
    if obs.readiness is not None:
        for backend in obs.readiness.backends:
            if backend.model == model:
                return backend.service
    lowered = model.lower()
    return next((s for s in GUIDE_FAMILIES if s in lowered), None)


def agent_latency(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    """The guide's AIHighResponseTime, per agent and model, against the model's service SLO."""
    groups = view.histogram("ai_response_duration_seconds", ("agent_type", "model"))
    findings: list[Finding] = []
    within: list[str] = []
    for (agent, model), histogram in sorted(groups.items()):
        if histogram.count <= 0:
            continue
        service = service_of_model(obs, model, view)
        ceiling = thresholds.slo(service or "")
        p95 = histogram.quantile(0.95)
        label = f"{agent} on {model}"
        if p95 is None or p95 <= ceiling:
            within.append(f"{label} {seconds(p95)}")
            continue
        whose = f"{name(service)}'s" if service else "the"
        findings.append(
            Finding(
                f"agent_latency.{agent}.{model}",
                Severity.WARNING,
                f"Agent {agent!r} answers from {model} take p95 {seconds(p95)}, above {whose} "
                f"{seconds(ceiling)} SLO (p50 {seconds(histogram.quantile(0.5))}, "
                f"{count(histogram.count)} answers {span(obs)}). This is end-to-end time: "
                "retries and fallbacks before the answer count too.",
                next_step=(
                    "Compare the AIHighResponseTime panel with the service's Response Duration "
                    "panel: if the model is slow too, follow its latency finding; if not, look at "
                    "Orchestrator Fallbacks and Retries (each adds a full call)."
                ),
                evidence={
                    "agent_type": agent,
                    "model": model,
                    "service": service,
                    "slo_seconds": ceiling,
                    **_quantiles(histogram),
                },
                runbook="aihighresponsetime",
                panel="AIHighResponseTime",
            )
        )
    if within:
        findings.append(
            Finding(
                "agent_latency",
                Severity.OK,
                "Agents within their SLOs (p95): " + "; ".join(within) + ".",
                panel="AIHighResponseTime",
            )
        )
    return findings


def first_token(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    """Time to first token against the whole call: a slow model, or waiting before it starts."""
    findings = []
    by_service = view.histogram("ai_time_to_first_token_seconds", ("service",))
    for (service,), ttft in sorted(by_service.items()):
        total = call_histogram(view, service)
        if ttft.count <= 0 or total is None or total.count <= 0:
            continue
        ttft_p50, total_p50 = ttft.quantile(0.5), total.quantile(0.5)
        ttft_p95 = ttft.quantile(0.95)
        share = min(1.0, ttft_p50 / total_p50) if ttft_p50 is not None and total_p50 else None
        evidence: dict[str, Json] = {
            "streamed_calls": rounded(ttft.count, 2),
            "first_token_p50_seconds": rounded(ttft_p50),
            "first_token_p95_seconds": rounded(ttft_p95),
            "total_p50_seconds": rounded(total_p50),
            "first_token_share": rounded(share),
        }
        slow_start = share is not None and share >= thresholds.first_token_share
        where = (
            "waiting before the first token: queueing at the provider, the network, or a model "
            "being loaded"
            if slow_start
            else "generating the answer: the model's token rate and the answer's length"
        )
        breached = ttft_p95 is not None and ttft_p95 > thresholds.slo(service)
        findings.append(
            Finding(
                f"first_token.{service}",
                Severity.WARNING if breached else Severity.INFO,
                f"{name(service)} time to first token p50 is {seconds(ttft_p50)} of a "
                f"{seconds(total_p50)} call: most of the time goes {where}."
                + (f" Its p95 alone ({seconds(ttft_p95)}) exceeds the SLO." if breached else ""),
                next_step=(
                    "Open the Time to First Token panel; for Ollama check `ollama ps` (a model "
                    "reload shows as a jump), for Moonshot the provider's status page."
                    if slow_start
                    else "Check tokens per call (Kimi Tokens / Qwen Tokens panels) and max_tokens."
                ),
                evidence=evidence,
                runbook=HIGH_RESPONSE_RUNBOOK.get(service),
                panel="Time to First Token",
            )
        )
    if not findings and view.total("ai_queries_total") > 0:
        findings.append(
            Finding(
                "first_token",
                Severity.OK,
                f"No streamed calls {span(obs)}: time to first token was not measured.",
            )
        )
    return findings


def overhead(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    histogram = view.histogram("orchestrator_overhead_seconds").get(())
    if histogram is None or histogram.count <= 0:
        return []
    p99 = histogram.quantile(0.99)
    evidence: dict[str, Json] = {"p99_seconds": rounded(p99, 6), "queries": histogram.count}
    if p99 is not None and p99 > thresholds.overhead_p99_seconds:
        return [
            Finding(
                "overhead",
                Severity.WARNING,
                f"aiorch's own overhead p99 is {seconds(p99)} per query (it should stay under a "
                "millisecond): the process itself is slow, not the models.",
                next_step=(
                    "Check the host's CPU and the event loop (a blocking call); open the "
                    "Orchestrator Overhead panel."
                ),
                evidence=evidence,
                panel="Orchestrator Overhead",
            )
        ]
    return [
        Finding(
            "overhead",
            Severity.OK,
            f"aiorch's own overhead p99 is {seconds(p99)} per query.",
            evidence=evidence,
        )
    ]
