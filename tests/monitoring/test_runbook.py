"""The runbook (monitoring/AI_SERVICES_MONITORING.md): the guide's queries verbatim, every metric
family and alert documented, every link to a section resolving."""

from __future__ import annotations

import re

import pytest

from tests.monitoring.exprs import RUNBOOK, alert_rules, recording_rule_names, runbook_anchors
from tests.monitoring.test_metric_names import exported_families

# Section 5 of the guide, character for character.
GUIDE_QUERIES = [
    "rate(orchestrator_cache_hits_total[5m])\n"
    "/\n"
    "(rate(orchestrator_cache_hits_total[5m]) + rate(orchestrator_cache_misses_total[5m]))\n"
    "* 100",
    "histogram_quantile(\n  0.50,\n  rate(kimi_response_duration_seconds_bucket[5m])\n)",
    "histogram_quantile(\n  0.95,\n  rate(ai_response_duration_seconds_bucket[5m])\n)",
]
GUIDE_PANELS = ["Kimi Response Duration", "AIHighResponseTime", "Orchestrator Fallbacks"]


def runbook() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


@pytest.mark.parametrize("query", GUIDE_QUERIES, ids=["cache_hit_rate", "kimi_p50", "ai_p95"])
def test_the_guides_queries_are_there_verbatim(query: str) -> None:
    assert query in runbook()


def test_every_metric_family_and_recording_rule_is_documented() -> None:
    text = runbook()
    for family in exported_families():
        assert f"`{family}`" in text, f"{family} is not in the runbook's metric tables"
    for rule in recording_rule_names():
        # Listed either by full name or as `..._rateNN` after its first sibling.
        suffix = rule.rsplit(":", 1)[1]
        assert rule in text or f"..._{suffix.split('_')[-1]}" in text, rule


def test_every_alert_has_a_section_and_a_row_in_the_alert_table() -> None:
    text = runbook()
    for rule in alert_rules():
        name = rule["alert"]
        assert f"\n### {name}\n" in text
        assert f"| [{name}](#{name.lower()}) | {rule['labels']['severity']} |" in text


def test_every_internal_link_resolves() -> None:
    anchors = runbook_anchors()
    links = re.findall(r"\]\(#([^)]+)\)", runbook())
    assert links
    assert sorted(set(links) - anchors) == []


def test_the_slow_ai_checklist_follows_the_guide_and_points_to_doctor() -> None:
    text = runbook()
    checklist = text[text.index('## 6. "The AI is slow" checklist') :]
    assert "aiorch doctor" in checklist
    assert "/metrics" in checklist
    for panel in GUIDE_PANELS:
        assert f"`{panel}`" in checklist
    assert "tests/system/test_e2e_ba_dev_qa.py tests/system/test_e2e_flows.py -q" in checklist
