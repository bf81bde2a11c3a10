"""The report for people (rich) and for machines (JSON)."""

from __future__ import annotations

import json

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from aiorch.doctor.findings import RUNBOOK, Finding, Json, Report, Severity

STYLES = {
    Severity.CRITICAL: "bold white on red",
    Severity.WARNING: "bold black on yellow",
    Severity.INFO: "bold white on blue",
    Severity.OK: "bold white on green",
}
VERDICT = {
    0: ("HEALTHY", "green", "no warnings"),
    1: ("WARNINGS", "yellow", "something to fix soon"),
    2: ("CRITICAL", "red", "an SLO is breached or an endpoint is down"),
}


def to_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)


def _evidence(evidence: dict[str, Json]) -> str:
    def show(value: Json) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return str(value)

    return "  ".join(f"{k}={show(v)}" for k, v in evidence.items() if v not in (None, {}, []))


def _finding(finding: Finding, verbose: bool) -> Group:
    head = Text()
    head.append(f" {finding.severity.value.upper():8} ", style=STYLES[finding.severity])
    head.append(f" {finding.summary}")
    parts: list[Text] = [head]
    if finding.next_step:
        parts.append(Text.assemble(("   next: ", "bold"), finding.next_step))
    where = []
    if finding.panel:
        where.append(f'panel "{finding.panel}"')
    if finding.runbook:
        where.append(f"{RUNBOOK}#{finding.runbook}")
    if where and (verbose or finding.severity is not Severity.OK):
        parts.append(Text("   see: " + "; ".join(where), style="dim"))
    if verbose and finding.evidence:
        parts.append(Text("   evidence: " + _evidence(finding.evidence), style="dim"))
    return Group(*parts)


def render(report: Report, console: Console, *, verbose: bool = False) -> None:
    """Problems in full, passed checks as one line each (their numbers with --verbose)."""
    window = report.window
    title, colour, meaning = VERDICT[report.exit_code]
    console.print(
        Panel(
            Text.assemble(
                (f"{title}", f"bold {colour}"),
                f" ({meaning}; exit code {report.exit_code})\n",
                ("source: ", "bold"),
                window.url,
                "\n",
                ("window: ", "bold"),
                window.note,
            ),
            title="aiorch doctor",
            expand=False,
        )
    )
    # The verdict of a healthy run leads; then problems in full; passed checks last.
    verdict = [f for f in report.findings if f.check == "healthy"]
    problems = verdict + [
        f
        for f in report.findings
        if f.severity is not Severity.OK and f.summary != window.note  # already in the header
    ]
    passed = [f for f in report.findings if f.severity is Severity.OK and f.check != "healthy"]
    for finding in problems:
        console.print(_finding(finding, verbose=True))
    if passed:
        console.print(Text("Checks that passed:", style="bold"))
        for finding in passed:
            console.print(_finding(finding, verbose=verbose))
