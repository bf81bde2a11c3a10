"""The guide's "the AI is slow" checklist (section 6) as checks over one `Observation`.

`diagnose` runs them all and ranks the findings. Each check returns findings for problems and an
`ok` finding when it passed, so the report shows what was looked at, not only what failed.
"""

from __future__ import annotations

from aiorch.doctor import latency, outcomes, phases
from aiorch.doctor.findings import Finding, Json, Report, Severity, percent, rank, seconds
from aiorch.doctor.latency import name, span
from aiorch.doctor.observation import Observation, Thresholds


def metrics(obs: Observation) -> list[Finding]:
    findings: list[Finding] = []
    source = "Prometheus" if obs.window.source == "prometheus" else "/metrics"
    if obs.metrics_error is not None:
        return [
            Finding(
                "metrics",
                Severity.CRITICAL,
                f"Cannot read aiorch's metrics: {obs.metrics_error}",
                next_step=(
                    f"Check that it is running and reachable from here: `curl -s {obs.window.url}`."
                    " Without metrics every other check is blind."
                ),
                evidence={"url": obs.window.url},
                runbook="aiorchmetricsdown",
                panel="Metrics Targets Up",
            )
        ]
    targets = obs.targets
    if targets is not None and targets.down:
        findings.append(
            Finding(
                "metrics.targets",
                Severity.CRITICAL,
                f"Prometheus cannot scrape {len(targets.down)} of "
                f"{len(targets.down) + len(targets.up)} aiorch instances (job {targets.job!r}): "
                + ", ".join(targets.down),
                next_step="Check those instances: `curl -s http://<instance>/metrics | head`.",
                evidence={"up": list(targets.up), "down": list(targets.down)},
                runbook="aiorchmetricsdown",
                panel="Metrics Targets Up",
            )
        )
    missing = obs.missing_families
    if missing and len(missing) >= obs.expected_families:
        findings.append(
            Finding(
                "metrics",
                Severity.CRITICAL,
                f"{source} answers, but with none of aiorch's metric families: this is not "
                "aiorch, or not the aiorch you meant.",
                next_step="Check the URL and port (AIORCH_PORT, default 8000).",
                evidence={"missing": list(missing)},
            )
        )
    elif missing:
        findings.append(
            Finding(
                "metrics",
                Severity.WARNING,
                f"{source} lacks {len(missing)} of aiorch's {obs.expected_families} metric "
                f"families: {', '.join(missing)}. Dashboards and alerts on them are blind.",
                next_step=(
                    "Check that the running aiorch is the version you expect; in multiprocess "
                    "mode, that PROMETHEUS_MULTIPROC_DIR is shared by all workers."
                ),
                evidence={"missing": list(missing)},
            )
        )
    if not findings:
        findings.append(
            Finding(
                "metrics",
                Severity.OK,
                f"{source} answers with all {obs.expected_families} expected metric families.",
                evidence={"expected_families": obs.expected_families},
            )
        )
    return findings


def readiness(obs: Observation) -> list[Finding]:
    if obs.readiness is None:
        # Through Prometheus the doctor may run where aiorch itself is out of reach.
        severe = obs.window.source != "prometheus"
        return [
            Finding(
                "readiness",
                Severity.CRITICAL if severe else Severity.WARNING,
                f"Cannot read backend readiness: {obs.readiness_error or 'no answer'}",
                next_step=(
                    "Check aiorch is running and reachable (`curl -s <url>/readyz`)."
                    if severe
                    else "Pass --url with an aiorch address reachable from here to check it."
                ),
            )
        ]
    ready = obs.readiness
    findings: list[Finding] = []
    if ready.offline:
        findings.append(
            Finding(
                "offline",
                Severity.WARNING,
                "aiorch runs in OFFLINE mode: no model is configured, answers are labelled "
                "placeholders, and latency figures measure aiorch alone.",
                next_step=(
                    "Configure a backend: KIMI_API_KEY (or KIMI_OLLAMA_URL) and QWEN_OLLAMA_URL "
                    "(or QWEN_BASE_URL), then restart."
                ),
                evidence={"status": ready.status},
            )
        )
        return findings
    if ready.status == "unavailable":
        findings.append(
            Finding(
                "readiness",
                Severity.CRITICAL,
                "/readyz says no backend is ready: every query will fail.",
                next_step="See each backend's detail below.",
                evidence={"status": ready.status},
                runbook="aiqueriesfailing",
            )
        )
    for backend in ready.backends:
        label = f"{name(backend.service)} ({backend.kind} {backend.model}"
        label += f" at {backend.url})" if backend.url else ")"
        evidence: dict[str, Json] = {
            "kind": backend.kind,
            "model": backend.model,
            "url": backend.url,
            "ready": backend.ready,
            "model_loaded": backend.model_loaded,
            "detail": backend.detail,
        }
        if backend.kind == "offline":
            findings.append(
                Finding(
                    f"readiness.{backend.service}",
                    Severity.WARNING,
                    f"{name(backend.service)} has no upstream configured: its answers are "
                    "offline placeholders.",
                    next_step=f"Set {backend.service.upper()}_API_KEY or the Ollama URL.",
                    evidence=evidence,
                )
            )
        elif not backend.ready:
            findings.append(
                Finding(
                    f"readiness.{backend.service}",
                    Severity.WARNING,
                    f"{label} is not ready: {backend.detail}.",
                    next_step=f"`curl {backend.url or ''}` from this host; check keys and URLs.",
                    evidence=evidence,
                    runbook="orchestratorcircuitbreakeropen",
                )
            )
        elif backend.model_loaded is False:
            findings.append(
                Finding(
                    f"readiness.{backend.service}",
                    Severity.INFO,
                    f"{label} is ready but its model is not loaded: the next call pays the load "
                    "time (a cold start explains a slow first call).",
                    next_step="`ollama ps` shows what is loaded; keep_alive keeps it there.",
                    evidence=evidence,
                )
            )
        else:
            loaded = ", model loaded" if backend.model_loaded else ""
            findings.append(
                Finding(
                    f"readiness.{backend.service}",
                    Severity.OK,
                    f"{label} is ready{loaded}.",
                    evidence=evidence,
                )
            )
    return findings


def traffic(obs: Observation) -> list[Finding]:
    w = obs.window
    if obs.view is None:
        return []
    if w.since_start and w.queries <= 0:
        return [
            Finding(
                "traffic",
                Severity.INFO,
                "aiorch has answered no queries since it started: there is no latency, fallback "
                "or cache figure to judge.",
                next_step="Send traffic (or wait for it) and run the doctor again.",
            )
        ]
    if w.since_start:
        return [Finding("traffic", Severity.INFO, w.note, evidence={"queries": w.queries})]
    return []


def diagnose(obs: Observation, thresholds: Thresholds | None = None) -> Report:
    """Every check, ranked; a `healthy` verdict on top when nothing is wrong."""
    thresholds = thresholds or Thresholds()
    findings = metrics(obs)
    view = obs.view
    if view is not None:
        for check in (
            latency.service_latency,
            latency.agent_latency,
            latency.first_token,
            phases.phases,
            outcomes.fallbacks,
            outcomes.cache,
            outcomes.errors,
            outcomes.saturation,
            latency.overhead,
        ):
            findings += check(obs, view, thresholds)
    findings += readiness(obs)
    findings += traffic(obs)
    ranked = rank(findings)
    if not any(f.severity in (Severity.CRITICAL, Severity.WARNING) for f in findings):
        # Nothing to fix: the verdict goes first, above the informational notes.
        ranked.insert(0, _verdict(obs, findings))
    return Report(obs.window, ranked)


def _verdict(obs: Observation, findings: list[Finding]) -> Finding:
    figures = []
    for finding in findings:
        evidence = finding.evidence
        p95, slo = evidence.get("p95_seconds"), evidence.get("slo_seconds")
        if finding.check.startswith("latency.") and isinstance(p95, float):
            service = name(finding.check.split(".", 1)[1])
            figures.append(f"{service} p95 {seconds(p95)} (SLO {seconds(_number(slo))})")
        rate = evidence.get("hit_rate")
        if finding.check == "cache" and isinstance(rate, float):
            figures.append(f"cache hit rate {percent(rate)}")
    detail = ", ".join(figures) if figures else "no model calls to judge latency by"
    return Finding(
        "healthy",
        Severity.OK,
        f"No problem found {span(obs)}: {detail}.",
        next_step="If users still find it slow, measure from their side: the network, or the "
        "client's own timeouts.",
    )


def _number(value: Json) -> float | None:
    return float(value) if isinstance(value, int | float) else None
