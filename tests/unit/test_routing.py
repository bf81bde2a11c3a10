"""Caller input to closed types, and query types to chains of services."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.config import load_settings
from aiorch.errors import RequestError
from aiorch.routing import Router, parse_agent_type, parse_query_type
from aiorch.types import AgentType, QueryType, SelectedService, Service

KIMI, QWEN = Service.KIMI, Service.QWEN


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


@pytest.mark.parametrize(
    ("query_type", "selected", "services"),
    [
        (QueryType.CODE, SelectedService.QWEN, (QWEN, KIMI)),
        (QueryType.TESTING, SelectedService.QWEN, (QWEN, KIMI)),
        (QueryType.GENERAL, SelectedService.QWEN, (QWEN, KIMI)),
        (QueryType.REASONING, SelectedService.KIMI, (KIMI, QWEN)),
        (QueryType.REQUIREMENTS, SelectedService.KIMI, (KIMI, QWEN)),
        (QueryType.UNKNOWN, SelectedService.MULTI, (KIMI, QWEN)),
    ],
)
def test_default_routes(
    query_type: QueryType, selected: SelectedService, services: tuple[Service, ...]
) -> None:
    route = Router(load_settings({})).route(query_type)

    assert route.selected is selected
    assert route.services == services
    assert route.multi is (selected is SelectedService.MULTI)


def test_a_pinned_service_has_no_fallback() -> None:
    route = Router(load_settings({})).pinned(KIMI)

    assert route.services == (KIMI,)
    assert route.selected is SelectedService.KIMI
    assert not route.multi


def test_model_names() -> None:
    router = Router(load_settings({"KIMI_API_KEY": "k", "QWEN_OLLAMA_URL": "http://gpu:11434"}))

    assert router.service_for_model("auto") is None
    assert router.service_for_model("kimi") is KIMI
    assert router.service_for_model("qwen") is QWEN
    assert router.service_for_model("kimi-k2-thinking") is KIMI
    assert router.service_for_model("qwen2.5-coder:7b") is QWEN
    assert router.model_ids == {
        "kimi": KIMI,
        "qwen": QWEN,
        "kimi-k2-thinking": KIMI,
        "qwen2.5-coder:7b": QWEN,
    }


def test_unknown_model_names_the_field_and_the_choices() -> None:
    router = Router(load_settings({}))
    with pytest.raises(RequestError) as caught:
        router.service_for_model("gpt-4o")

    assert caught.value.param == "model"
    for valid in ("auto", "kimi", "qwen", "offline-kimi", "offline-qwen"):
        assert valid in caught.value.message


def test_model_ids_cannot_be_changed_from_outside() -> None:
    router = Router(load_settings({}))
    router.model_ids["gpt-4o"] = KIMI

    with pytest.raises(RequestError):
        router.service_for_model("gpt-4o")


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
    router = Router(load_settings({}, config_path=path))

    assert router.route(QueryType.CODE).services == (KIMI, QWEN)
    assert router.route(QueryType.REASONING).services == (KIMI,)
    unknown = router.route(QueryType.UNKNOWN)
    assert (unknown.selected, unknown.services) == (SelectedService.QWEN, (QWEN,))
    assert router.route(QueryType.TESTING).services == (QWEN, KIMI)  # default kept
