"""OpenTelemetry GenAI client metrics: the semantic conventions' names, attributes and buckets,
fed from the same call records as the Prometheus families (equal counts and sums, not a second
measurement). Read with the SDK's in-memory reader; the calls go over real HTTP to the mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry

from aiorch.config import load_settings
from aiorch.monitoring.genai import GenAIMetrics, meter_provider_from_env
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator, query_request
from aiorch.planning import Options
from tests.unit.backend_support import API_KEY

# Semantic conventions v1.41.1, docs/gen-ai/gen-ai-metrics.md (ExplicitBucketBoundaries).
SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
          67108864]  # fmt: skip


class Setup:
    def __init__(self, mock_url: str) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        settings = load_settings(
            {
                "KIMI_BASE_URL": f"{mock_url}/v1",
                "KIMI_API_KEY": API_KEY,
                "QWEN_OLLAMA_URL": mock_url,
            }
        )
        self.metrics = Metrics(CollectorRegistry())
        self.metrics.observers.append(GenAIMetrics(self.provider, settings))
        self.orchestrator = AIOrchestrator(settings, metrics=self.metrics)
        self.port = int(mock_url.rsplit(":", 1)[1])

    def points(self, name: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points  # type: ignore[union-attr]
        ]

    def prometheus(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value


@pytest.fixture
async def setup(mock_url: str) -> AsyncIterator[Setup]:
    s = Setup(mock_url)
    yield s
    await s.orchestrator.close()
    s.provider.shutdown()


def attributes(point: HistogramDataPoint) -> dict[str, Any]:
    return dict(point.attributes or {})


async def test_a_call_is_recorded_with_the_conventions_names_attributes_and_buckets(
    setup: Setup,
) -> None:
    await setup.orchestrator.process_query("why is the sky blue", "reasoning", use_cache=False)

    [duration] = setup.points("gen_ai.client.operation.duration")
    assert list(duration.explicit_bounds) == SECONDS
    assert attributes(duration) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai_compatible",
        "gen_ai.request.model": "kimi-k2-thinking",
        "server.address": "127.0.0.1",
        "server.port": setup.port,
    }
    tokens = {
        attributes(p)["gen_ai.token.type"]: p for p in setup.points("gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    assert list(tokens["input"].explicit_bounds) == TOKENS
    # A plain call has no first chunk to time.
    assert setup.points("gen_ai.client.operation.time_to_first_chunk") == []

    # The Prometheus families got the very same record.
    labels = {"service": "kimi", "model": "kimi-k2-thinking"}
    assert duration.count == setup.prometheus("ai_backend_call_duration_seconds_count", **labels)
    assert duration.sum == setup.prometheus("ai_backend_call_duration_seconds_sum", **labels)
    prompt = setup.prometheus("ai_backend_tokens_total", **labels, token_type="prompt")
    completion = setup.prometheus("ai_backend_tokens_total", **labels, token_type="completion")
    assert (tokens["input"].sum, tokens["output"].sum) == (prompt, completion)
    assert completion > 0


async def test_time_to_first_chunk_is_recorded_for_streamed_calls_only(setup: Setup) -> None:
    request = query_request("write a sort function", stream=True, model="qwen")
    async for _ in setup.orchestrator.stream(request, Options(cache="off")):
        pass
    await setup.orchestrator.process_query("write a merge function", "code", use_cache=False)

    [first] = setup.points("gen_ai.client.operation.time_to_first_chunk")
    assert list(first.explicit_bounds) == SECONDS
    assert attributes(first)["gen_ai.provider.name"] == "ollama"
    assert first.count == 1
    labels = {"service": "qwen", "model": "qwen2.5-coder:7b"}
    assert first.sum == setup.prometheus("ai_time_to_first_token_seconds_sum", **labels)
    [duration] = setup.points("gen_ai.client.operation.duration")
    assert duration.count == 2


async def test_a_failed_call_carries_its_error_type(setup: Setup) -> None:
    answer = await setup.orchestrator.process_query(
        "why [[mock: fault=http_503 fault_models=kimi]]", "reasoning", use_cache=False
    )
    assert answer.selected_service == "qwen"  # Kimi failed, Qwen answered
    failed = [
        p for p in setup.points("gen_ai.client.operation.duration") if "error.type" in attributes(p)
    ]
    assert {attributes(p)["error.type"] for p in failed} == {"overloaded"}  # an HTTP 503
    assert sum(p.count for p in failed) == setup.prometheus(
        "ai_errors_total", service="kimi", model="kimi-k2-thinking", error_type="overloaded"
    )


def test_the_meter_provider_is_built_only_when_otlp_is_configured() -> None:
    assert meter_provider_from_env({}) is None
    provider = meter_provider_from_env(
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert isinstance(provider, MeterProvider)
    provider.shutdown(timeout_millis=100)
