"""Findings, their ranking, and the exit code they add up to.

Ranking: the most severe first; among equals, the guide's checklist order (metrics, latency,
time to first token, fallbacks, cache, errors, saturation, readiness), because earlier items in
that list are the likelier causes of the later ones (a slow Kimi causes fallbacks, not the reverse).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from aiorch.doctor.observation import Window

Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"

RUNBOOK = "monitoring/AI_SERVICES_MONITORING.md"


class Severity(enum.StrEnum):
    CRITICAL = "critical"  # an SLO breached, users failing, or an endpoint down: exit 2
    WARNING = "warning"  # something to fix soon: exit 1
    INFO = "info"  # context that explains other findings
    OK = "ok"  # a check that passed

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


# Checks in the guide's order; a finding's `check` starts with one of these.
CHECK_ORDER: tuple[str, ...] = (
    "healthy",
    "metrics",
    "latency",
    "agent_latency",
    "first_token",
    "phases",
    "fallback",
    "cache",
    "user_errors",
    "errors",
    "breaker",
    "in_flight",
    "overhead",
    "readiness",
    "offline",
    "traffic",
)


@dataclass(frozen=True)
class Finding:
    check: str  # stable id, e.g. "latency.kimi", "fallback", "readiness.qwen"
    severity: Severity
    summary: str  # one or two sentences in plain words, with the numbers
    next_step: str = ""
    evidence: dict[str, Json] = field(default_factory=dict)
    runbook: str | None = None  # a section anchor of monitoring/AI_SERVICES_MONITORING.md
    panel: str | None = None  # a panel of the Grafana "AI Services" dashboard

    @property
    def order(self) -> int:
        base = self.check.split(".", 1)[0]
        return CHECK_ORDER.index(base) if base in CHECK_ORDER else len(CHECK_ORDER)

    def to_json(self) -> dict[str, Json]:
        return {
            "check": self.check,
            "severity": self.severity.value,
            "summary": self.summary,
            "next_step": self.next_step,
            "evidence": _finite(self.evidence),
            "runbook": f"{RUNBOOK}#{self.runbook}" if self.runbook else None,
            "panel": self.panel,
        }


def _finite(value: Json) -> Json:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then the guide's order; stable within a check."""
    return sorted(findings, key=lambda f: (f.severity.rank, f.order))


@dataclass(frozen=True)
class Report:
    window: Window
    findings: list[Finding]  # ranked

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings, 2 an SLO breached or an endpoint down."""
        severities = {f.severity for f in self.findings}
        if Severity.CRITICAL in severities:
            return 2
        if Severity.WARNING in severities:
            return 1
        return 0

    @property
    def status(self) -> str:
        return {0: "healthy", 1: "warning", 2: "critical"}[self.exit_code]

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_json(self) -> dict[str, Json]:
        w = self.window
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "source": {
                "kind": w.source,
                "url": w.url,
                "window_seconds": w.seconds,
                "since_start": w.since_start,
                "note": w.note,
                "queries": w.queries,
            },
            "findings": [f.to_json() for f in self.findings],
        }


# Numbers in words.


def seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "unbounded"
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else f"{value * 1e6:.0f} µs"
    if value < 10:
        return f"{value:.1f} s"
    return f"{value:.0f} s"


def percent(share: float | None) -> str:
    if share is None or math.isnan(share):
        return "n/a"
    value = share * 100
    return f"{value:.1f} %" if 0 < value < 10 else f"{value:.0f} %"


def count(value: float) -> str:
    """Counts from `increase()` are fractional; whole numbers read better."""
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 or value >= 10 else f"{value:.1f}"


def rounded(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
