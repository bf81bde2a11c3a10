"""The curated public API: every exported name resolves, and nothing heavy loads on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import aiorch

EXPECTED = {
    "AIOrchestrator", "AgentType", "AiorchError", "AllBackendsFailed", "Answer", "Backend",
    "BackendError", "Cache", "Call", "ChatMessage", "ChatRequest", "ConfigError", "Delta",
    "End", "FlowError", "KimiClient", "KimiConfig", "MemoryCache", "Metrics", "ModelSettings",
    "Options", "QueryResult", "QueryType", "QwenClient", "QwenConfig", "Readiness",
    "RequestError", "ServiceSettings", "Settings", "StreamStart", "UnsupportedParameter",
    "UpstreamRequestError", "Usage", "load_settings", "metrics_endpoint", "query_request",
}  # fmt: skip


def test_the_public_names_are_the_curated_list() -> None:
    assert set(aiorch.__all__) == EXPECTED
    assert set(aiorch._EXPORTS) == EXPECTED  # every public name knows where it lives


def test_every_public_name_resolves() -> None:
    for name in aiorch.__all__:
        assert getattr(aiorch, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        aiorch.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_package_loads_neither_metrics_nor_http_clients() -> None:
    code = (
        "import sys, aiorch, aiorch.cli; "
        "heavy = ('prometheus_client', 'aiohttp', 'starlette'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
