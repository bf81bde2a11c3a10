"""Every label combination the configuration can produce exists at zero before the first request,
and no more than those: the series count of a fresh service stays small and is printed here."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from aiorch.config import Settings, load_settings
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.server.app import create_app

# The two default services with real upstreams (Kimi on Moonshot, Qwen on Ollama), HTTP included.
CONFIGURED = {"KIMI_API_KEY": "sk-test", "QWEN_OLLAMA_URL": "http://127.0.0.1:9"}
# A fresh service's whole exposition, `_created` samples included, must stay under this. Most of
# it is histograms (about 20 series per label set): per-query latency by query type, service and
# cached (720), the request phases (225) and HTTP latency per route (220).
SERIES_BOUND = 2_000
# What one more service with one model may add (its models' histograms, its fallback pairs).
PER_SERVICE_BOUND = 500
THIRD_SERVICE = """
[services.local]
protocol = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "llama3"
fallbacks = []
"""


def exposition(settings: Settings, *, http: bool = True) -> list[str]:
    metrics = Metrics(CollectorRegistry())
    if http:
        create_app(settings, metrics=metrics)
    else:
        AIOrchestrator(settings, metrics=metrics)
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def samples(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if line.startswith(name + "{")]


def test_the_series_count_of_a_fresh_service_is_small() -> None:
    lines = exposition(load_settings(CONFIGURED))
    print(f"\nseries of a fresh aiorch (kimi + qwen, HTTP included): {len(lines)}")
    assert len(lines) <= SERIES_BOUND


def test_a_further_service_adds_a_bounded_number_of_series(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text(THIRD_SERVICE)
    two = exposition(load_settings(CONFIGURED), http=False)
    three = exposition(load_settings(CONFIGURED, config), http=False)
    print(f"\nseries: {len(two)} with two services, {len(three)} with three")
    assert 0 < len(three) - len(two) <= PER_SERVICE_BOUND


def test_every_labelled_family_has_its_series_before_the_first_request(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text("[kimi]\nprice_input_per_mtok = 0.6\n")  # cost is counted for priced models
    metrics = Metrics(CollectorRegistry())
    create_app(load_settings(CONFIGURED, config), metrics=metrics)
    empty = [
        family.name
        for family in metrics.registry.collect()
        if not [s for s in family.samples if not s.name.endswith("_created")]
    ]
    assert empty == []


def test_the_guides_families_start_at_zero_for_the_modes_their_models_run_in() -> None:
    lines = exposition(load_settings(CONFIGURED))
    # kimi-k2-thinking always thinks; qwen2.5-coder never does: one mode each.
    assert samples(lines, "kimi_queries_total") == [
        'kimi_queries_total{mode="thinking",status="success"} 0.0',
        'kimi_queries_total{mode="thinking",status="error"} 0.0',
    ]
    assert {
        line.split('"')[1] for line in samples(lines, "qwen_response_duration_seconds_count")
    } == {"instant"}
    # A model whose thinking a request may switch runs in both.
    switchable = load_settings({**CONFIGURED, "KIMI_MODEL": "kimi-k2.6"})
    modes = {line.split('"')[1] for line in samples(exposition(switchable), "kimi_queries_total")}
    assert modes == {"thinking", "instant"}


def test_fallback_series_follow_the_configured_chains_only(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text(THIRD_SERVICE)
    lines = exposition(load_settings(CONFIGURED, config), http=False)
    pairs = {
        (line.split('from_service="')[1].split('"')[0], line.split('to_service="')[1].split('"')[0])
        for line in samples(lines, "orchestrator_fallback_total")
    }
    # `local` has no fallbacks and no chain names it.
    assert pairs == {("kimi", "qwen"), ("qwen", "kimi")}
    reasons = {
        line.split('reason="')[1].split('"')[0]
        for line in samples(lines, "orchestrator_fallback_total")
    }
    assert {"timeout", "circuit_open", "stream_cut", "stream_stall"} <= reasons
    assert "hedged" not in reasons  # hedging is off by default
    assert "upstream_request_error" not in reasons  # no model is named for a refusal


def test_a_refusal_fallback_is_created_only_where_the_configuration_names_one(
    tmp_path: Path,
) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text('[qwen]\nfallbacks_on = {context_length_exceeded = ["kimi"]}\n')
    lines = exposition(load_settings(CONFIGURED, config), http=False)
    refusals = [
        line for line in samples(lines, "orchestrator_fallback_total") if "upstream_request" in line
    ]
    assert refusals == [
        'orchestrator_fallback_total{from_service="qwen",reason="upstream_request_error",'
        'to_service="kimi"} 0.0'
    ]


def test_cost_series_exist_only_for_priced_models(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text("[kimi]\nprice_input_per_mtok = 0.6\nprice_output_per_mtok = 2.5\n")
    lines = exposition(load_settings(CONFIGURED, config), http=False)
    assert [line.split("{")[1].split("}")[0] for line in samples(lines, "ai_cost_usd_total")] == [
        'model="kimi-k2-thinking",service="kimi"'
    ]


def test_a_query_counts_on_the_series_that_already_existed() -> None:
    import asyncio

    metrics = Metrics(CollectorRegistry())
    orchestrator = AIOrchestrator(Settings(), metrics=metrics)
    registry = metrics.registry
    labels = {"query_type": "code", "selected_service": "qwen"}
    assert registry.get_sample_value("orchestrator_queries_total", labels) == 0.0

    async def ask() -> None:
        await orchestrator.process_query("write a sort function", "code")
        await orchestrator.close()

    asyncio.run(ask())
    assert registry.get_sample_value("orchestrator_queries_total", labels) == 1.0
