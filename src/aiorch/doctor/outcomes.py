"""What happened to the queries: fallbacks, the cache, errors, breakers and in-flight requests."""

from __future__ import annotations

from aiorch.doctor.findings import Finding, Json, Severity, count, percent, rounded
from aiorch.doctor.latency import name, span
from aiorch.doctor.observation import Observation, Thresholds
from aiorch.doctor.series import View

# What a fallback reason usually means, for the next step.
REASON_HINTS = {
    "timeout": "a slow service (see its latency)",
    "circuit_open": "a breaker already open (see errors just before it opened)",
    "rate_limited": "the provider's rate limits",
    "quota_exceeded": "the account's quota (will not recover by waiting)",
    "overloaded": "the provider pushing back under load",
    "connection_error": "the network, or a stopped Ollama",
    "upstream_error": "the provider answering with server errors (check its status page)",
    "authentication": "a wrong or revoked API key (will not recover by waiting)",
}
ACCOUNT_ERRORS = ("authentication", "quota_exceeded")


def fallbacks(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    pairs = view.by("orchestrator_fallback_total", ("from_service", "to_service", "reason"))
    pairs = {key: value for key, value in pairs.items() if value > 0}
    queries = view.total("orchestrator_queries_total")
    if not pairs:
        return [Finding("fallback", Severity.OK, f"No fallbacks {span(obs)}.")]
    total = sum(pairs.values())
    by_source: dict[str, float] = {}
    for (source, _, _), value in pairs.items():
        by_source[source] = by_source.get(source, 0.0) + value
    shares = {s: (v / queries if queries > 0 else None) for s, v in by_source.items()}
    surge = any(share is None or share > thresholds.fallback_share for share in shares.values())
    ranked = sorted(pairs.items(), key=lambda item: -item[1])
    parts = []
    for source, moved in sorted(by_source.items(), key=lambda item: -item[1]):
        reasons = [(t, r, v) for (s, t, r), v in ranked if s == source]
        targets = sorted({name(t) for t, _, _ in reasons})
        share = shares[source]
        head = (
            f"{percent(share)} of queries ({count(moved)} of {count(queries)})"
            if share is not None
            else f"{count(moved)} queries"
        )
        parts.append(
            f"{head} fell back from {name(source)} to {' and '.join(targets)}: "
            + ", ".join(f"{r} {count(v)}" for _, r, v in reasons)
            + "."
        )
    states = view.by("orchestrator_circuit_breaker_state", ("service",), combine=max)
    for source in by_source:
        if states.get((source,), 0.0) >= 2:
            parts.append(f"{name(source)}'s circuit breaker is open.")
    top_reasons = list(dict.fromkeys(r for (_, _, r), _ in ranked))
    hints = [f"{r} means {REASON_HINTS[r]}" for r in top_reasons if r in REASON_HINTS]
    evidence: dict[str, Json] = {
        "queries": rounded(queries, 2),
        "fallbacks": rounded(total, 2),
        "share_by_source": {s: rounded(v) for s, v in shares.items()},
        "top": [
            {"from": s, "to": t, "reason": r, "count": rounded(v, 2)} for (s, t, r), v in ranked[:5]
        ],
    }
    return [
        Finding(
            "fallback",
            Severity.WARNING if surge else Severity.INFO,
            " ".join(parts)
            + (
                " Users still get answers, but from the other model and later."
                if surge
                else f" Below the {percent(thresholds.fallback_share)} surge line."
            ),
            next_step=(
                "Open the Orchestrator Fallbacks panel. "
                + (_sentence("; ".join(hints)) + " " if hints else "")
                + "Check the other service can take the extra load."
            ),
            evidence=evidence,
            runbook="orchestratorfallbacksurge",
            panel="Orchestrator Fallbacks",
        )
    ]


def cache(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    hits = view.total("orchestrator_cache_hits_total")
    misses = view.total("orchestrator_cache_misses_total")
    lookups = hits + misses
    errors = view.by("orchestrator_cache_errors_total", ("operation",))
    errors = {op: v for op, v in errors.items() if v > 0}
    rate = hits / lookups if lookups > 0 else None
    evidence: dict[str, Json] = {
        "hits": rounded(hits, 2),
        "misses": rounded(misses, 2),
        "hit_rate": rounded(rate),
        "target": thresholds.cache_target,
        "coalesced": rounded(view.total("orchestrator_coalesced_total"), 2),
        "errors": {op: rounded(v, 2) for (op,), v in errors.items()},
    }
    findings: list[Finding] = []
    if errors:
        findings.append(
            Finding(
                "cache.errors",
                Severity.WARNING,
                f"The cache failed {count(sum(errors.values()))} times {span(obs)} ("
                + ", ".join(f"{op} {count(v)}" for (op,), v in errors.items())
                + "): those queries went on without it.",
                next_step="Check Redis (AIORCH_REDIS_URL): reachable, not slow, not full.",
                evidence=evidence,
                runbook="orchestratorlowcachehitrate",
                panel="Cache Hit Rate",
            )
        )
    figures = f"{count(hits)} hits of {count(lookups)} lookups {span(obs)}"
    if lookups <= 0:
        findings.append(
            Finding(
                "cache",
                Severity.OK,
                f"No cache lookups {span(obs)}: the cache is off or clients asked for no cache.",
                evidence=evidence,
            )
        )
    elif lookups < thresholds.min_cache_lookups:
        findings.append(
            Finding(
                "cache",
                Severity.INFO,
                f"Cache hit rate is {percent(rate)} ({figures}): too few lookups to judge "
                f"(at least {thresholds.min_cache_lookups} needed).",
                evidence=evidence,
                panel="Cache Hit Rate",
            )
        )
    elif rate is not None and rate < thresholds.cache_target:
        findings.append(
            Finding(
                "cache",
                Severity.WARNING,
                f"Cache hit rate is {percent(rate)} ({figures}), under the guide's 60-70 % "
                "target for repeated queries: every miss is a full model call.",
                next_step=(
                    "Open the Cache Hit Rate panel. If this traffic does not repeat (new clients, "
                    "one-off questions) the number is right and nothing is broken; otherwise "
                    "check for a restart that emptied the in-process cache, cache errors, and "
                    "changes to prompts or cache settings (TTL, size) in AIORCH_CONFIG."
                ),
                evidence=evidence,
                runbook="orchestratorlowcachehitrate",
                panel="Cache Hit Rate",
            )
        )
    else:
        findings.append(
            Finding(
                "cache",
                Severity.OK,
                f"Cache hit rate is {percent(rate)} ({figures}), at or above the 60-70 % target.",
                evidence=evidence,
                panel="Cache Hit Rate",
            )
        )
    return findings


def errors(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    findings: list[Finding] = []
    answered = view.total("ai_queries_total")
    failed = view.by("ai_queries_total", ("agent_type", "model"), {"status": "error"})
    failed_total = sum(failed.values())
    if failed_total > 0:
        share = failed_total / answered if answered > 0 else 1.0
        severe = share > thresholds.failing_share
        findings.append(
            Finding(
                "user_errors",
                Severity.CRITICAL if severe else Severity.WARNING,
                f"{percent(share)} of queries failed for the user ({count(failed_total)} of "
                f"{count(answered)} {span(obs)}), after every retry and fallback.",
                next_step=(
                    "Find the failing backends below (errors by type) and both breakers; "
                    "check keys, URLs and AIORCH_CONFIG for a recent change."
                ),
                evidence={
                    "failed": rounded(failed_total, 2),
                    "queries": rounded(answered, 2),
                    "share": rounded(share),
                    "by_agent_model": {f"{a}/{m}": rounded(v, 2) for (a, m), v in failed.items()},
                },
                runbook="aiqueriesfailing",
                panel="AI Queries by Agent and Status",
            )
        )
    by_type = view.by("ai_errors_total", ("service", "error_type"))
    by_type = {key: value for key, value in by_type.items() if value > 0}
    queries = max(view.total("orchestrator_queries_total"), answered)
    services = sorted({service for service, _ in by_type})
    for service in services:
        types = sorted(
            ((t, v) for (s, t), v in by_type.items() if s == service), key=lambda tv: -tv[1]
        )
        total = sum(v for _, v in types)
        error_share = total / queries if queries > 0 else None
        high = error_share is None or error_share > thresholds.error_share
        account = [t for t, _ in types if t in ACCOUNT_ERRORS]
        findings.append(
            Finding(
                f"errors.{service}",
                Severity.WARNING if high else Severity.INFO,
                f"{name(service)} failed {count(total)} calls {span(obs)} ("
                + ", ".join(f"{t} {count(v)}" for t, v in types)
                + (f"), {percent(error_share)} of queries." if error_share is not None else ").")
                + (f" {', '.join(account)} will not recover by waiting." if account else ""),
                next_step="Open the Errors by Type panel. "
                + _sentence(
                    "; ".join(f"{t} means {REASON_HINTS[t]}" for t, _ in types if t in REASON_HINTS)
                ),
                evidence={
                    "errors": rounded(total, 2),
                    "queries": rounded(queries, 2),
                    "share": rounded(error_share),
                    "by_type": {t: rounded(v, 2) for t, v in types},
                },
                runbook="aihigherrorrate",
                panel="Errors by Type",
            )
        )
    if not findings:
        findings.append(Finding("errors", Severity.OK, f"No failed calls {span(obs)}."))
    return findings


def saturation(obs: Observation, view: View, thresholds: Thresholds) -> list[Finding]:
    """Breakers and in-flight requests: current values, whatever the window."""
    findings: list[Finding] = []
    states = view.by("orchestrator_circuit_breaker_state", ("service",), combine=max)
    for (service,), state in sorted(states.items()):
        if state >= 2:
            findings.append(
                Finding(
                    f"breaker.{service}",
                    Severity.WARNING,
                    f"{name(service)}'s circuit breaker is open: aiorch skips {name(service)} "
                    "and sends its queries to the fallback.",
                    next_step=(
                        f"See why in {name(service)}'s errors just before it opened; check the "
                        "service is reachable from this host (/readyz below)."
                    ),
                    evidence={"state": state},
                    runbook="orchestratorcircuitbreakeropen",
                    panel="Circuit Breaker State",
                )
            )
        elif state >= 1:
            findings.append(
                Finding(
                    f"breaker.{service}",
                    Severity.INFO,
                    f"{name(service)}'s circuit breaker is half-open: it is probing whether "
                    f"{name(service)} recovered.",
                    evidence={"state": state},
                    panel="Circuit Breaker State",
                )
            )
    if states and not findings:
        findings.append(Finding("breaker", Severity.OK, "Every circuit breaker is closed."))
    if "orchestrator_in_flight_requests" in view.names():
        in_flight = view.total("orchestrator_in_flight_requests")
        busy = in_flight >= thresholds.in_flight
        findings.append(
            Finding(
                "in_flight",
                Severity.WARNING if busy else Severity.OK,
                f"{count(in_flight)} queries in flight now"
                + (": aiorch or its backends are saturated." if busy else "."),
                next_step="Compare with the backends' capacity; open the In-flight panel."
                if busy
                else "",
                evidence={"in_flight": in_flight},
                panel="In-flight Requests",
            )
        )
    return findings


def _sentence(text: str) -> str:
    """`text` as a sentence: capitalised (only its first letter) and with a full stop."""
    return f"{text[:1].upper()}{text[1:]}." if text else ""
