"""Agent flows: a business analyst, a developer and a QA agent over the orchestrator.

    runner = FlowRunner(orchestrator)
    result = await runner.run("ba-dev-qa", "Users can reset their password by e-mail")
    result.status, [s.stage for s in result.stages], result.verdict

Modules: `artefacts` (what each stage produces), `prompts` (the overridable prompt files),
`jsonish`, `markdown` and `parser` (the tolerant structured-output parser), `roles` (the agents),
`flow` (the runner and its result types), `cli` (`aiorch flow`). See docs/agents.md.
"""

from __future__ import annotations

from aiorch.agents.artefacts import (
    Artefact,
    CodeFile,
    Implementation,
    Requirements,
    Review,
    Story,
    TestCase,
    Verdict,
)
from aiorch.agents.flow import (
    FlowEvent,
    FlowResult,
    FlowRunner,
    FlowStarted,
    StageError,
    StageResult,
    StageStarted,
)
from aiorch.agents.parser import (
    Unparseable,
    parse_implementation,
    parse_requirements,
    parse_review,
)
from aiorch.agents.prompts import PROMPTS_DIR_ENV, Prompts
from aiorch.agents.roles import Agent, Inputs, UnparseableAnswer, default_agents

__all__ = [
    "PROMPTS_DIR_ENV",
    "Agent",
    "Artefact",
    "CodeFile",
    "FlowEvent",
    "FlowResult",
    "FlowRunner",
    "FlowStarted",
    "Implementation",
    "Inputs",
    "Prompts",
    "Requirements",
    "Review",
    "StageError",
    "StageResult",
    "StageStarted",
    "Story",
    "TestCase",
    "Unparseable",
    "UnparseableAnswer",
    "Verdict",
    "default_agents",
    "parse_implementation",
    "parse_requirements",
    "parse_review",
]
