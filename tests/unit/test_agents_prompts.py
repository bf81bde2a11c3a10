"""Prompt files: shipped defaults, per-file overrides from a directory, checked when loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.agents.prompts import PROMPTS_DIR_ENV, Prompts
from aiorch.errors import ConfigError
from aiorch.types import AgentType

VALUES = {"request": "REQ", "requirements": "STORIES", "criteria": "CRITERIA", "code": "CODE"}


def test_builtin_prompts_fill_every_input() -> None:
    prompts = Prompts.load()
    ba = prompts.render(AgentType.BA, VALUES)
    dev = prompts.render(AgentType.DEV, VALUES)
    qa = prompts.render(AgentType.QA, VALUES)
    assert "Role: business analyst" in ba
    assert "REQ" in ba
    assert "Role: software developer" in dev
    assert "STORIES" in dev
    assert all(v in qa for v in ("CRITERIA", "CODE", "REQ"))
    assert not any("$" in text for text in (ba, dev, qa))
    assert all(source.startswith("(built-in)") for source in prompts.sources.values())


def test_a_directory_overrides_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "qa.md").write_text("Review $code costing $5 against $criteria.", encoding="utf-8")
    prompts = Prompts.load(tmp_path)
    assert prompts.render(AgentType.QA, VALUES) == "Review CODE costing $5 against CRITERIA."
    assert prompts.sources[AgentType.QA] == str(tmp_path / "qa.md")
    assert "Role: business analyst" in prompts.render(AgentType.BA, VALUES)


def test_the_directory_comes_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ba.md").write_text("Stories for: $request", encoding="utf-8")
    prompts = Prompts.from_env({PROMPTS_DIR_ENV: str(tmp_path)})
    assert prompts.render(AgentType.BA, VALUES) == "Stories for: REQ"


def test_a_prompt_without_its_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dev.md").write_text("Write code for $request", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dev prompt must contain \$requirements"):
        Prompts.load(tmp_path)


def test_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ba.md").write_text("$request for $customer", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown placeholder.*customer"):
        Prompts.load(tmp_path)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        Prompts.load(tmp_path / "nope")
