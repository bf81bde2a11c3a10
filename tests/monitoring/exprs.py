"""Every PromQL expression aiorch ships, and the metric names each one reads.

Three sources: the Grafana dashboard's targets, the Prometheus rule files (alerts and recording
rules) and the runbook's ```promql blocks. The offline tests check names and syntax; the live
test runs every expression against a real Prometheus scraping a real aiorch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana/dashboards/ai_services.json"
RULES_DIR = MONITORING / "prometheus/rules"
RULE_TESTS_DIR = MONITORING / "prometheus/tests"
PROMETHEUS_CONFIG = MONITORING / "prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = MONITORING / "alertmanager/alertmanager.yml"
RUNBOOK = MONITORING / "AI_SERVICES_MONITORING.md"

# Grafana's interval variables, and what stands in for them outside Grafana.
GRAFANA_VARIABLES = ("$__rate_interval",)


@dataclass(frozen=True)
class Expr:
    source: str  # "dashboard", "rules" or "runbook"
    where: str  # panel title and refId, rule name, or runbook section
    expr: str
    kind: str = ""  # rules only: "alert" or "record"

    def for_prometheus(self, rate_interval: str = "1m") -> str:
        """The expression as Prometheus accepts it, with Grafana's variables filled in."""
        return self.expr.replace("$__rate_interval", rate_interval)

    def __str__(self) -> str:
        return f"{self.source}: {self.where}"


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[Expr]:
    return [
        Expr("dashboard", f"{panel['title']} [{t['refId']}]", t["expr"])
        for panel in panels(load_dashboard())
        for t in panel.get("targets", [])
    ]


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def files_matched_by_rule_files(config: Path) -> list[Path]:
    """The files a Prometheus config's `rule_files` globs name; relative globs are read from the
    config's own directory, as Prometheus reads them."""
    patterns = yaml.safe_load(config.read_text(encoding="utf-8")).get("rule_files") or []
    found: set[Path] = set()
    for pattern in patterns:
        base = Path(pattern) if Path(pattern).is_absolute() else config.parent / pattern
        found.update(Path(base.anchor).glob(str(base.relative_to(base.anchor))))
    return sorted(p.resolve() for p in found)


def rules() -> list[dict[str, Any]]:
    """Every rule of every group, each with its group's name under `_group`."""
    out = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out += [{**rule, "_group": group["name"]} for rule in group["rules"]]
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recording_rule_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def rule_exprs() -> list[Expr]:
    return [
        Expr(
            "rules",
            r.get("alert") or r["record"],
            r["expr"].strip(),
            "alert" if "alert" in r else "record",
        )
        for r in rules()
    ]


def runbook_exprs() -> list[Expr]:
    """Expressions in the runbook's ```promql blocks, split at blank lines and comment lines."""
    out: list[Expr] = []
    section = ""
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(Expr("runbook", section, "\n".join(current)))
            current.clear()

    fence = ""  # the language of the fenced block we are in, "" outside blocks
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not fence:
            if stripped.startswith("```"):
                fence = stripped[3:] or "text"
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif stripped == "```":
            flush()
            fence = ""
        elif fence != "promql":
            continue
        elif not stripped or stripped.startswith("#"):
            flush()
        else:
            current.append(line)
    return out


def github_anchor(heading: str) -> str:
    """GitHub's fragment for a heading: lower case, punctuation dropped, hyphens for spaces."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    in_code = False
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


def all_exprs() -> list[Expr]:
    return dashboard_exprs() + rule_exprs() + runbook_exprs()


_NOT_METRICS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names an expression selects.

    A small tokenizer, enough for the expressions we write: strings, label matchers, range
    windows, grouping clauses and function calls are not metric names.
    """
    text = re.sub(r"#[^\n]*", "", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\boffset\s+\S+", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _NOT_METRICS:
            names.add(name)
    return names


def range_windows(expr: str) -> list[str]:
    """The contents of every [...] in an expression: range and subquery windows."""
    return re.findall(r"\[([^\]]*)\]", expr)
