"""Prompt templates: Markdown files shipped in `aiorch/agents/prompts/`, overridable per file.

Set `AIORCH_PROMPTS_DIR` (or pass `--prompts-dir`) to a directory holding any of `ba.md`,
`dev.md` and `qa.md`; a file found there replaces the shipped one, the others stay as shipped.
Templates use `$name` placeholders (Python's `string.Template`), so JSON braces in the text need
no escaping; a `$` not followed by a name (`$5`) stays as written. Each template is checked once
when loaded: a missing required placeholder or an unknown one is a `ConfigError` naming the file,
not a surprise in the middle of a flow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

from aiorch.errors import ConfigError
from aiorch.types import AgentType

PROMPTS_DIR_ENV = "AIORCH_PROMPTS_DIR"
PLACEHOLDERS = frozenset({"request", "requirements", "criteria", "code"})
# What each stage cannot do without: the input it works on.
REQUIRED: Mapping[AgentType, frozenset[str]] = {
    AgentType.BA: frozenset({"request"}),
    AgentType.DEV: frozenset({"requirements"}),
    AgentType.QA: frozenset({"code"}),
}


def file_name(stage: AgentType) -> str:
    return f"{stage.value}.md"


class Prompts:
    """One template per stage, loaded and checked once."""

    def __init__(self, templates: Mapping[AgentType, Template], sources: Mapping[AgentType, str]):
        self._templates = dict(templates)
        self.sources = dict(sources)  # stage -> where its template came from, for humans

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Prompts:
        override = Path(directory).expanduser() if directory else None
        if override is not None and not override.is_dir():
            raise ConfigError(f"{PROMPTS_DIR_ENV}: {override} is not a directory")
        shipped = resources.files("aiorch.agents") / "prompts"
        templates: dict[AgentType, Template] = {}
        sources: dict[AgentType, str] = {}
        for stage in REQUIRED:
            name = file_name(stage)
            candidate = override / name if override is not None else None
            if candidate is not None and candidate.is_file():
                text, source = _read(candidate), str(candidate)
            else:
                text, source = (shipped / name).read_text(encoding="utf-8"), f"(built-in) {name}"
            templates[stage] = _check(stage, Template(text), source)
            sources[stage] = source
        return cls(templates, sources)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Prompts:
        env = os.environ if environ is None else environ
        return cls.load(env.get(PROMPTS_DIR_ENV, "").strip() or None)

    def render(self, stage: AgentType, values: Mapping[str, str]) -> str:
        return self._templates[stage].safe_substitute(values)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read prompt file {path}: {error}") from None


def _check(stage: AgentType, template: Template, source: str) -> Template:
    names = set(template.get_identifiers())
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ConfigError(
            f"prompt {source}: unknown placeholder(s) {', '.join(sorted(unknown))}; "
            f"available: {', '.join(sorted(PLACEHOLDERS))}"
        )
    missing = REQUIRED[stage] - names
    if missing:
        raise ConfigError(
            f"prompt {source}: the {stage.value} prompt must contain "
            + ", ".join(f"${m}" for m in sorted(missing))
        )
    return template
