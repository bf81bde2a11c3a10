"""The Prometheus and Alertmanager configuration: promtool and amtool accept it, the rule unit
tests pass and cover every alert both ways, and every alert carries what on-call needs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.exprs import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    REPO,
    RULE_TESTS_DIR,
    RUNBOOK,
    alert_rules,
    all_exprs,
    files_matched_by_rule_files,
    rule_files,
    runbook_anchors,
)

RULE_TESTS = sorted(RULE_TESTS_DIR.glob("*_test.yml"))


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.mark.prometheus
def test_promtool_accepts_the_prometheus_config(promtool: str) -> None:
    run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    # The glob in rule_files must find our files, not silently match nothing.
    assert files_matched_by_rule_files(PROMETHEUS_CONFIG) == [p.resolve() for p in rule_files()]
    assert rule_files()


@pytest.mark.prometheus
def test_promtool_accepts_the_rule_files(promtool: str) -> None:
    run([promtool, "check", "rules", *map(str, rule_files())])


@pytest.mark.prometheus
@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(promtool: str, test_file: Path) -> None:
    run([promtool, "test", "rules", test_file.name], cwd=test_file.parent)


@pytest.mark.prometheus
def test_every_shipped_expression_parses(promtool: str, tmp_path: Path) -> None:
    # promtool has no bare "parse" command: wrap each dashboard and runbook expression in a
    # recording rule and let `check rules` parse them all.
    exprs = [e for e in all_exprs() if e.source != "rules"]
    rules = [{"record": f"check:expr_{i}", "expr": e.for_prometheus()} for i, e in enumerate(exprs)]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        index = {f"check:expr_{i}": str(e) for i, e in enumerate(exprs)}
        named = "\n".join(
            f"{k} = {v}" for k, v in index.items() if k in result.stdout + result.stderr
        )
        pytest.fail(f"{result.stdout}\n{result.stderr}\n{named}")


@pytest.mark.prometheus
def test_amtool_accepts_the_alertmanager_config(amtool: str) -> None:
    run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "service=kimi"], "page"),
        (["severity=ticket", "service=qwen"], "ticket"),
        (["alertname=Unlabelled"], "ticket"),
    ],
)
def test_alertmanager_routes_by_severity(amtool: str, labels: list[str], receiver: str) -> None:
    result = run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels]
    )
    assert result.stdout.split() == [receiver]


def test_alertmanager_groups_and_inhibits_tickets_by_page_of_the_same_service() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert set(config["route"]["group_by"]) == {"alertname", "service"}
    receivers = {r["name"] for r in config["receivers"]}
    assert {"page", "ticket"} <= receivers
    assert {
        "source_matchers": ['severity="page"'],
        "target_matchers": ['severity="ticket"'],
        "equal": ["service"],
    } in config["inhibit_rules"]


def _rule_test_cases() -> list[tuple[str, list[Any]]]:
    cases = []
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.append((case["alertname"], case.get("exp_alerts") or []))
    return cases


def test_rule_unit_tests_cover_every_alert_firing_and_silent() -> None:
    names = {r["alert"] for r in alert_rules()}
    cases = _rule_test_cases()
    fired = {name for name, expected in cases if expected}
    silent = {name for name, expected in cases if not expected}
    assert names - fired == set(), "alerts never shown to fire in monitoring/prometheus/tests"
    assert names - silent == set(), "alerts never shown to stay silent"
    assert (fired | silent) - names == set(), "tests for alerts that do not exist"


def test_every_firing_alert_in_the_unit_tests_has_severity_and_service() -> None:
    # The service label of some alerts comes from the data (label_replace, by (service)):
    # the unit tests prove it is there.
    for name, expected in _rule_test_cases():
        for alert in expected:
            labels = alert.get("exp_labels", {})
            assert labels.get("severity") in {"page", "ticket"}, name
            assert labels.get("service") in {"kimi", "qwen", "aiorch"}, name


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_severity_annotations_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert path == RUNBOOK.relative_to(REPO).as_posix()
    assert anchor == rule["alert"].lower()
    assert anchor in runbook_anchors()


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
