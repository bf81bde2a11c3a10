"""Caller input to closed types, names to models, and models to routes (`aiorch.catalog`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.catalog import UNLISTED, Catalog
from aiorch.config import load_settings
from aiorch.errors import ConfigError, ModelNotFound, RequestError
from aiorch.orchestrator import parse_agent_type, parse_query_type
from aiorch.types import AgentType, QueryType

CONFIGURED = {"KIMI_API_KEY": "k", "QWEN_OLLAMA_URL": "http://gpu:11434"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("code", QueryType.CODE),
        (" Reasoning ", QueryType.REASONING),
        ("TESTING", QueryType.TESTING),
        (QueryType.UNKNOWN, QueryType.UNKNOWN),
    ],
)
def test_parse_query_type(value: str | QueryType | None, expected: QueryType | None) -> None:
    assert parse_query_type(value) is expected


def test_unknown_query_type_names_the_field_and_the_choices() -> None:
    with pytest.raises(RequestError) as caught:
        parse_query_type("poetry")

    assert caught.value.param == "query_type"
    assert caught.value.status_code == 400
    for valid in QueryType:
        assert valid.value in caught.value.message


def test_a_huge_bad_value_is_clipped_in_the_message() -> None:
    with pytest.raises(RequestError) as caught:
        parse_query_type("x" * 10_000)

    assert len(caught.value.message) < 300
    assert "..." in caught.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, AgentType.DIRECT), ("ba", AgentType.BA), (" QA", AgentType.QA)],
)
def test_parse_agent_type(value: str | None, expected: AgentType) -> None:
    assert parse_agent_type(value) is expected


def test_unknown_agent_type_names_the_field() -> None:
    with pytest.raises(RequestError) as caught:
        parse_agent_type("ceo")
    assert caught.value.param == "agent_type"


def chain(catalog: Catalog, query_type: QueryType) -> list[str]:
    return [f"{m.service}/{m.id}" for m in catalog.route(query_type).targets]


@pytest.mark.parametrize(
    ("query_type", "selected", "services"),
    [
        (QueryType.CODE, "qwen", ["qwen", "kimi"]),
        (QueryType.TESTING, "qwen", ["qwen", "kimi"]),
        (QueryType.GENERAL, "qwen", ["qwen", "kimi"]),
        (QueryType.REASONING, "kimi", ["kimi", "qwen"]),
        (QueryType.REQUIREMENTS, "kimi", ["kimi", "qwen"]),
        (QueryType.UNKNOWN, "multi", ["kimi", "qwen"]),
    ],
)
def test_default_routes(query_type: QueryType, selected: str, services: list[str]) -> None:
    route = Catalog(load_settings({})).route(query_type)

    assert route.selected == selected
    assert [m.service for m in route.targets] == services
    assert route.multi is (selected == "multi")


def test_names_a_request_may_use() -> None:
    catalog = Catalog(load_settings(CONFIGURED))

    assert catalog.resolve("kimi").id == "kimi-k2-thinking"
    assert catalog.resolve("qwen").id == "qwen2.5-coder:7b"
    assert catalog.resolve("kimi-k2-thinking").service == "kimi"
    assert catalog.resolve("qwen2.5-coder:7b").service == "qwen"
    assert set(catalog.names()) == {"kimi", "qwen", "kimi-k2-thinking", "qwen2.5-coder:7b"}


def test_service_slash_model_names_an_unlisted_model_of_that_service() -> None:
    catalog = Catalog(load_settings(CONFIGURED))

    model = catalog.resolve("kimi/kimi-k2.6")

    assert (model.service, model.id) == ("kimi", "kimi-k2.6")
    assert model.label == UNLISTED  # never a label value the client chose
    assert model.rules.thinking_control == "moonshot"  # the built-in rules still apply
    assert catalog.resolve("kimi/kimi-k2-thinking").label == "kimi-k2-thinking"


def test_unknown_model_is_model_not_found_naming_the_field() -> None:
    catalog = Catalog(load_settings({}))
    with pytest.raises(ModelNotFound) as caught:
        catalog.resolve("gpt-4o")

    assert caught.value.param == "model"
    assert caught.value.status_code == 404
    assert "gpt-4o" in caught.value.message


def test_a_named_model_keeps_its_chain_unless_fallback_is_off() -> None:
    catalog = Catalog(load_settings({}))

    assert [m.service for m in catalog.named("kimi").targets] == ["kimi", "qwen"]
    assert [m.service for m in catalog.named("kimi", fallback=False).targets] == ["kimi"]
    assert catalog.named("multi").multi


def test_names_cannot_be_changed_from_outside() -> None:
    catalog = Catalog(load_settings({}))
    catalog.names()["gpt-4o"] = catalog.resolve("kimi")

    with pytest.raises(ModelNotFound):
        catalog.resolve("gpt-4o")


def test_routes_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "aiorch.toml"
    path.write_text(
        """
[routes.code]
primary = "kimi"
fallbacks = ["qwen"]
[routes.reasoning]
primary = "kimi"
fallbacks = []
[routes.unknown]
primary = "qwen"
"""
    )
    catalog = Catalog(load_settings({}, config_path=path))

    assert [m.service for m in catalog.route(QueryType.CODE).targets] == ["kimi", "qwen"]
    assert [m.service for m in catalog.route(QueryType.REASONING).targets] == ["kimi"]
    unknown = catalog.route(QueryType.UNKNOWN)
    assert (unknown.selected, unknown.multi) == ("qwen", False)
    assert [m.service for m in catalog.route(QueryType.TESTING).targets] == ["qwen", "kimi"]


THREE_SERVICES = """
[kimi]
base_url = "http://kimi.invalid/v1"
api_key = "k"
[[kimi.models]]
id = "kimi-k2.6"
aliases = ["k26"]
fallbacks = ["deepseek", "qwen"]

[qwen]
ollama_url = "http://qwen.invalid"

[services.deepseek]
base_url = "http://deepseek.invalid/v1"
model = "deepseek-chat"
fallbacks = ["kimi/kimi-k2.6"]
[[services.deepseek.models]]
id = "deepseek-chat"
aliases = ["ds"]
context_window = 128000
[[services.deepseek.models]]
id = "deepseek-reasoner"
thinking = true
fallbacks = []

[routes.requirements]
primary = "ds"
"""


def test_a_third_service_with_aliases_and_per_model_chains(tmp_path: Path) -> None:
    path = tmp_path / "aiorch.toml"
    path.write_text(THREE_SERVICES)
    catalog = Catalog(load_settings({}, config_path=path))

    assert catalog.resolve("deepseek").id == "deepseek-chat"
    assert catalog.resolve("ds").id == "deepseek-chat"
    assert catalog.resolve("k26").id == "kimi-k2.6"
    assert chain(catalog, QueryType.REQUIREMENTS) == [
        "deepseek/deepseek-chat",
        "kimi/kimi-k2.6",
    ]
    assert [f"{m.service}/{m.id}" for m in catalog.named("k26").targets] == [
        "kimi/kimi-k2.6",
        "deepseek/deepseek-chat",
        "qwen/qwen2.5-coder:7b",
    ]
    assert [m.id for m in catalog.named("deepseek-reasoner").targets] == ["deepseek-reasoner"]
    assert catalog.resolve("ds").rules.context_window == 128000
    assert catalog.resolve("deepseek-reasoner").thinking is True


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('[routes.code]\nprimary = "gpt"\n', "gpt"),
        ('[kimi]\nfallbacks = ["nowhere"]\n', "nowhere"),
        ('[[kimi.models]]\nid = "a"\naliases = ["qwen"]\n', "alias 'qwen'"),
        ('[services.bad]\nprotocol = "openai"\n', "services.bad.base_url"),
        ('multi = ["kimi", "ghost"]\n', "ghost"),
    ],
)
def test_configuration_that_names_nothing_stops_start_up(
    tmp_path: Path, extra: str, says: str
) -> None:
    path = tmp_path / "aiorch.toml"
    path.write_text(extra)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_path=path)
    assert says in caught.value.message
