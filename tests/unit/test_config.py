"""Settings from the environment and the TOML file: backend selection, precedence, and errors
that name the key (and its environment variable) that is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aiorch.config import Settings, hash_api_key, load_settings
from aiorch.errors import ConfigError
from aiorch.service_settings import ModelSettings
from aiorch.types import BackendKind, QueryType


def test_no_keys_and_no_urls_is_offline() -> None:
    settings = load_settings({})

    assert settings.offline is True
    for name, service in settings.services.items():
        assert service.kind is BackendKind.OFFLINE
        assert service.url is None
        assert service.model_id == f"offline-{name}"


def test_api_key_selects_moonshot_with_its_defaults() -> None:
    settings = load_settings({"KIMI_API_KEY": "sk-1"})

    kimi = settings.kimi
    assert kimi.kind is BackendKind.OPENAI
    assert kimi.url == "https://api.moonshot.ai/v1"
    assert kimi.model_id == "kimi-k2-thinking"
    assert settings.qwen.kind is BackendKind.OFFLINE
    assert settings.offline is False


def test_kimi_defaults_suit_a_thinking_model() -> None:
    kimi, qwen = load_settings({}).kimi, load_settings({}).qwen

    assert kimi.temperature == 1.0
    assert kimi.thinking is True
    assert kimi.max_tokens >= 16_000  # reasoning and answer share the budget
    assert kimi.timeout > qwen.timeout


def test_base_url_and_model_from_the_environment() -> None:
    settings = load_settings(
        {
            "KIMI_BASE_URL": "http://127.0.0.1:8900/v1/",
            "KIMI_MODEL": "kimi-k2.6",
            "QWEN_BASE_URL": "http://vllm:8000/v1",
            "QWEN_MODEL": "qwen3-coder-30b",
        }
    )

    assert settings.kimi.url == "http://127.0.0.1:8900/v1"  # trailing slash dropped
    assert settings.kimi.model_id == "kimi-k2.6"
    assert settings.qwen.kind is BackendKind.OPENAI
    assert settings.qwen.model_id == "qwen3-coder-30b"


def test_ollama_urls_select_ollama() -> None:
    settings = load_settings(
        {
            "KIMI_OLLAMA_URL": "http://gpu:11434",
            "QWEN_OLLAMA_URL": "http://gpu:11434/",
            "QWEN_OLLAMA_MODEL": "qwen3-coder:30b",
        }
    )

    assert settings.kimi.kind is BackendKind.OLLAMA
    assert settings.kimi.model_id == "kimi-k2-thinking:cloud"
    assert settings.qwen.url == "http://gpu:11434"
    assert settings.qwen.model_id == "qwen3-coder:30b"


def test_an_api_key_wins_over_an_ollama_url() -> None:
    settings = load_settings({"KIMI_API_KEY": "sk-1", "KIMI_OLLAMA_URL": "http://gpu:11434"})
    assert settings.kimi.kind is BackendKind.OPENAI


def test_blank_values_are_ignored_and_values_are_trimmed() -> None:
    settings = load_settings({"KIMI_API_KEY": "   ", "QWEN_TIMEOUT": " 45 ", "KIMI_TIMEOUT": ""})

    assert settings.kimi.kind is BackendKind.OFFLINE
    assert settings.qwen.timeout == 45.0
    assert settings.kimi.timeout == load_settings({}).kimi.timeout


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("KIMI_TIMEOUT", "abc", ("kimi.timeout", "KIMI_TIMEOUT")),
        ("QWEN_TIMEOUT", "1s", ("qwen.timeout", "QWEN_TIMEOUT")),
        ("AIORCH_PORT", "http", ("server.port", "AIORCH_PORT")),
        ("AIORCH_RATE_LIMIT_PER_MINUTE", "lots", ("server.rate_limit_per_minute",)),
        ("AIORCH_LOG_PROMPTS", "perhaps", ("server.log_prompts", "AIORCH_LOG_PROMPTS")),
        ("KIMI_TIMEOUT", "0", ("kimi.timeout", "KIMI_TIMEOUT")),
        ("QWEN_TIMEOUT", "-5", ("qwen.timeout", "QWEN_TIMEOUT")),
        ("AIORCH_PORT", "70000", ("server.port", "AIORCH_PORT")),
        ("KIMI_BASE_URL", "api.moonshot.ai/v1", ("kimi.base_url", "KIMI_BASE_URL", "http://")),
        ("QWEN_OLLAMA_URL", "gpu:11434", ("qwen.ollama_url", "QWEN_OLLAMA_URL", "http://")),
    ],
)
def test_bad_values_name_the_key(variable: str, value: str, names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})

    for name in names:
        assert name in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"KIMI_TIMEOUT": "0", "QWEN_TIMEOUT": "-1"})

    assert "kimi.timeout" in caught.value.message
    assert "qwen.timeout" in caught.value.message


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aiorch.toml"
    path.write_text(text)
    return path


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[kimi]
timeout = 30
max_tokens = 1000
[cache]
ttl_seconds = 5
""",
    )
    from_file = load_settings({}, config_path=path)
    env_wins = load_settings({"KIMI_TIMEOUT": "45", "AIORCH_CONFIG": str(path)})

    assert (from_file.kimi.timeout, from_file.kimi.max_tokens) == (30.0, 1000)
    assert from_file.cache.ttl_seconds == 5.0
    assert env_wins.kimi.timeout == 45.0  # read from AIORCH_CONFIG, then overridden
    assert env_wins.kimi.max_tokens == 1000
    # Defaults the file does not mention are kept.
    assert from_file.kimi.temperature == 1.0


def test_file_routes_extend_the_default_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[routes.code]
primary = "kimi"
fallbacks = ["qwen"]
""",
    )
    routes = load_settings({}, config_path=path).routes

    assert routes[QueryType.CODE].primary == "kimi"
    assert routes[QueryType.REASONING].primary == "kimi"
    assert routes[QueryType.UNKNOWN].primary == "multi"
    assert set(routes) == set(QueryType)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[kimi]\ncolour = 'blue'\n", ("kimi.colour: unknown key",)),
        ("colour = 'blue'\n", ("colour: unknown key",)),
        ("[kimi]\ntimeout = 'long'\n", ("kimi.timeout",)),
        ("[cache]\nttl_seconds = [1]\n", ("cache.ttl_seconds",)),
        ("[routes.code]\nprimary = 'gpt'\n", ("gpt", "not served")),
        ("[flows.x]\nstages = ['ba', 'ceo']\n", ("flows.x", "ceo")),
        ("[retry]\nattempts = 0\n", ("retry.attempts",)),
        ("kimi = [", ("not valid TOML",)),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, names: tuple[str, ...]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_path=path)

    for name in names:
        assert name in caught.value.message


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings({"AIORCH_CONFIG": str(missing)})

    assert str(missing) in caught.value.message


def test_api_keys_are_kept_only_as_hashes() -> None:
    settings = load_settings({"AIORCH_API_KEYS": " alpha, beta ,, "})

    assert settings.server.api_key_hashes == (hash_api_key("alpha"), hash_api_key("beta"))
    assert "alpha" not in repr(settings)


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings(
        {
            "KIMI_API_KEY": "sk-secret-123",
            "AIORCH_METRICS_TOKEN": "tok-secret-456",
            "AIORCH_REDIS_URL": "redis://user:pw-secret-789@redis:6379/0",
        }
    )

    shown = repr(settings.kimi) + repr(settings.server)
    for secret in ("sk-secret-123", "tok-secret-456", "pw-secret-789"):
        assert secret not in shown


EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "aiorch.example.toml"


def test_the_example_configuration_loads() -> None:
    settings = load_settings({}, EXAMPLE)
    assert settings.kimi.price_output_per_mtok > 0
    assert settings.hedge.enabled is False


@pytest.mark.parametrize(
    "section", ["server", "cache", "retry", "breaker", "hedge", "kimi", "kimi.models"]
)
def test_the_example_configuration_shows_every_setting(section: str) -> None:
    """A setting added to the code without a line in the example fails here."""
    text = EXAMPLE.read_text()
    if section == "kimi.models":
        kind: Any = ModelSettings
    else:
        kind = type(getattr(Settings(), section))
    fields = msgspec.structs.fields(kind)
    # Set from AIORCH_API_KEYS, or named by the table, never written by hand.
    internal = {"api_key_hashes", "name", "models", "breaker"}
    missing = [
        f.name
        for f in fields
        if f.name not in internal and not re.search(rf"^#? ?{f.name} = ", text, re.M)
    ]
    assert missing == []
