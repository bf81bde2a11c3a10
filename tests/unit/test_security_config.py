"""Start-up refuses what would silently weaken the service: a key list that parses to no key,
and credentials in an upstream URL that cannot be sent (issue 17, findings 3, 4 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.config import load_settings
from aiorch.errors import ConfigError


@pytest.mark.parametrize("value", [",", " , ", ",,,", " ,\t, "])
def test_a_key_list_with_no_key_refuses_to_start(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"AIORCH_API_KEYS": value})

    assert "AIORCH_API_KEYS" in raised.value.message


@pytest.mark.parametrize("value", ["", "  "])
def test_an_unset_or_blank_key_list_means_no_keys(value: str) -> None:
    assert load_settings({"AIORCH_API_KEYS": value}).server.api_key_hashes == ()


def test_empty_entries_beside_real_keys_are_ignored() -> None:
    settings = load_settings({"AIORCH_API_KEYS": "sk-1,, sk-2 ,"})

    assert len(settings.server.api_key_hashes) == 2


def test_a_bad_url_error_does_not_show_its_password() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"QWEN_OLLAMA_URL": "ftp://user:pw-secret-1@host:11434"})

    assert "qwen.ollama_url" in raised.value.message
    assert "pw-secret-1" not in raised.value.message
    assert "ftp://***@host:11434" in raised.value.message


def test_credentials_in_the_base_url_beside_an_api_key_refuse_to_start() -> None:
    env = {"KIMI_BASE_URL": "https://user:pw-secret-2@api.example/v1", "KIMI_API_KEY": "sk-k"}

    with pytest.raises(ConfigError) as raised:
        load_settings(env)

    message = raised.value.message
    assert "kimi.base_url" in message
    assert "KIMI_API_KEY" in message
    assert "pw-secret-2" not in message


@pytest.mark.parametrize(
    "env",
    [
        {"KIMI_BASE_URL": "https://user:pw@api.example/v1"},  # basic auth, no key: sent as such
        {"QWEN_OLLAMA_URL": "http://user:pw@ollama:11434"},
    ],
)
def test_credentials_in_a_url_alone_are_accepted(env: dict[str, str]) -> None:
    load_settings(env)


@pytest.mark.parametrize(
    "url",
    ["http://", "http://:11434", "http://host:99999", "http://host:port", "http://[::1"],
)
def test_a_url_that_cannot_be_called_refuses_to_start(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"QWEN_OLLAMA_URL": url})

    assert "qwen.ollama_url" in raised.value.message


def test_server_settings_repr_masks_the_redis_url() -> None:
    settings = load_settings({"AIORCH_REDIS_URL": "redis://user:pw-secret-3@redis:6379/0"})

    assert "pw-secret-3" not in repr(settings.server)
    assert "redis://***@redis:6379/0" in repr(settings.server)


def test_trusted_proxies_default_to_none_and_come_from_the_environment() -> None:
    assert load_settings({}).server.trusted_proxies == ()
    settings = load_settings({"AIORCH_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7 ,"})
    assert settings.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.7")


def test_a_trusted_proxy_that_is_not_an_address_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"AIORCH_TRUSTED_PROXIES": "proxy.example"})

    assert "AIORCH_TRUSTED_PROXIES" in raised.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_header_bytes", 0),
        ("max_headers", 0),
        ("max_connections", 0),
        ("header_timeout_seconds", 0),
        ("body_timeout_seconds", -1),
    ],
)
def test_connection_limits_must_be_positive(tmp_path: Path, key: str, value: int) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text(f"[server]\n{key} = {value}\n")

    with pytest.raises(ConfigError) as raised:
        load_settings({}, config)

    assert f"server.{key}" in raised.value.message
