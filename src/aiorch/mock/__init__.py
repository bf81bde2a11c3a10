"""A protocol-faithful simulator of the upstream LLM APIs (Moonshot/OpenAI and Ollama).

Used by the integration tests, load tests and benchmarks; run it with `aiorch mock-upstream`, or
embed it with `create_app(MockConfig(...))`. The control surface is described in
docs/mock-upstream.md.
"""

from __future__ import annotations

from aiorch.mock.app import create_app
from aiorch.mock.serve import ServeSettings, run_worker
from aiorch.mock.settings import FAULT_NAMES, Behaviour, ConfigError, MockConfig, Rule

__all__ = [
    "FAULT_NAMES",
    "Behaviour",
    "ConfigError",
    "MockConfig",
    "Rule",
    "ServeSettings",
    "create_app",
    "run_worker",
]
