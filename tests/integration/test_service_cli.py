"""`aiorch serve` and `aiorch query` as a user runs them: real processes, real exit codes."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.service_support import UPSTREAM_KEY, Mock, Service, service_env, unique
from tests.support.procs import AIORCH, REPO, free_port

RUN_TIMEOUT = 60  # seconds; only so that a hang fails instead of blocking the suite


def aiorch(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIORCH, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
        env={**os.environ, **service_env(**env)},
        check=False,
    )


def test_serve_help() -> None:
    result = aiorch("serve", "--help")

    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--workers", "--config", "AIORCH_PORT"):
        assert option in result.stdout


def test_query_offline_prints_an_answer() -> None:
    result = aiorch("query", "Prove that the square root of 2 is irrational.")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[offline: no model is configured for kimi]")
    assert "[OFFLINE]" in result.stderr
    assert "reasoning -> kimi" in result.stderr


def test_query_through_the_mock_streams_the_model_answer(mock_upstream: Mock) -> None:
    result = aiorch(
        "query",
        unique("Write a Python function that reverses a list"),
        "--no-cache",
        KIMI_BASE_URL=f"{mock_upstream.url}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        QWEN_OLLAMA_URL=mock_upstream.url,
    )

    assert result.returncode == 0, result.stderr
    assert "code -> qwen (qwen2.5-coder:7b)" in result.stderr
    assert "[offline" not in result.stdout
    assert len(result.stdout.split()) > 5
    assert "# tokens:" in result.stderr


def test_query_that_fails_exits_non_zero(mock_upstream: Mock) -> None:
    result = aiorch(
        "query",
        unique("Why? [[mock: fault=http_500]]"),
        "--type",
        "reasoning",
        KIMI_OLLAMA_URL=mock_upstream.url,
        QWEN_OLLAMA_URL=mock_upstream.url,
    )

    assert result.returncode == 1
    assert "all_backends_failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_query_with_a_bad_type_exits_non_zero() -> None:
    result = aiorch("query", "hi", "--type", "poetry")

    assert result.returncode != 0
    assert "query_type" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("KIMI_TIMEOUT", "abc", "kimi.timeout"),
        ("QWEN_TIMEOUT", "soon", "qwen.timeout"),
        ("KIMI_BASE_URL", "api.moonshot.ai/v1", "kimi.base_url"),
        ("AIORCH_PORT", "eighty", "AIORCH_PORT"),
        ("AIORCH_PROMPTS_DIR", "/no/such/prompts", "is not a directory"),
    ],
)
def test_serve_with_a_bad_env_value_exits_naming_the_key(
    variable: str, value: str, key: str
) -> None:
    # If validation were missing, serve would start and run until the timeout: a failure too.
    port = [] if variable == "AIORCH_PORT" else ["--port", str(free_port())]
    result = aiorch("serve", *port, **{variable: value})

    assert result.returncode != 0
    assert key in result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_says_which_backend_each_model_uses(kimi_api_service: Service) -> None:
    log = kimi_api_service.server.output()
    assert kimi_api_service.mock is not None
    mock = kimi_api_service.mock.url
    assert f"kimi: openai backend, model kimi-k2-thinking ({mock}/v1)" in log
    assert f"qwen: ollama backend, model qwen2.5-coder:7b ({mock})" in log
    assert "OFFLINE" not in log
