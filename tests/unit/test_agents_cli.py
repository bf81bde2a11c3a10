"""`aiorch flow` in-process, offline (no model configured): output, exit status, overrides."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aiorch.agents.cli import flow
from aiorch.config import ENV_KEYS

# No key or URL from the developer's shell may reach the test: empty values are ignored.
OFFLINE_ENV = {**dict.fromkeys(ENV_KEYS, ""), "AIORCH_CONFIG": "", "AIORCH_PROMPTS_DIR": ""}


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(flow, list(args), env=OFFLINE_ENV, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_offline_flow_prints_every_stage_and_says_offline() -> None:
    code, out, err = run("Users can reset their password")
    assert code == 0
    assert out.startswith("# Flow ba-dev-qa: completed, verdict skipped")
    assert "OFFLINE" in out
    assert all(f"## {stage}:" in out for stage in ("ba", "dev", "qa"))
    assert "flow ba-dev-qa: ba -> dev -> qa" in err
    assert err.count("done ") == 3


def test_json_output_is_the_flow_result() -> None:
    code, out, _ = run("-", "--flow", "dev-qa", "--json", stdin="Add a search box\n")
    assert code == 0
    result = json.loads(out)
    assert result["flow"] == "dev-qa"
    assert result["offline"] is True
    assert [s["stage"] for s in result["stages"]] == ["dev", "qa"]


def test_an_unknown_flow_exits_non_zero_with_the_flows_listed() -> None:
    code, out, err = run("x", "--flow", "nope")
    assert code == 1
    assert out == ""
    assert "configured flows: ba-dev-qa, dev-qa" in err


def test_a_bad_prompt_directory_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "qa.md").write_text("Review this.", encoding="utf-8")
    code, _, err = run("x", "--prompts-dir", str(tmp_path))
    assert code == 1
    assert "must contain $code" in err


def test_an_unreachable_service_exits_non_zero() -> None:
    code, _, err = run("x", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach http://127.0.0.1:9/api/ai/flows/ba-dev-qa" in err
