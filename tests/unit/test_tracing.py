"""Spans per backend call with GenAI attributes, and trace ids as exemplars (in-memory exporter)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from aiorch.config import load_settings
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.monitoring.tracing import TracedBackend, provider_from_env
from aiorch.orchestrator import AIOrchestrator


def traced_orchestrator() -> tuple[AIOrchestrator, InMemorySpanExporter, CollectorRegistry]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    orchestrator = AIOrchestrator(
        load_settings({}), metrics=Metrics(registry), tracer_provider=provider
    )
    return orchestrator, exporter, registry


async def test_backend_calls_are_spans_with_gen_ai_attributes() -> None:
    orchestrator, exporter, _ = traced_orchestrator()
    result = await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")

    spans = {span.name: span for span in exporter.get_finished_spans()}
    chat = spans["chat offline-kimi"]
    query = spans["aiorch query"]
    assert chat.parent is not None
    assert chat.parent.span_id == query.context.span_id
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "aiorch.offline"
    assert chat.attributes["gen_ai.request.model"] == "offline-kimi"
    assert chat.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert chat.attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert chat.attributes["gen_ai.usage.reasoning_tokens"] == 0
    assert query.attributes is not None
    assert query.attributes["aiorch.query_type"] == "reasoning"
    await orchestrator.close()


async def test_streamed_calls_are_spans_too() -> None:
    orchestrator, exporter, _ = traced_orchestrator()
    from aiorch.orchestrator import query_request
    from aiorch.planning import Options
    from aiorch.types import QueryType

    options = Options(query_type=QueryType.CODE, cache="off")
    request = query_request("def f(): pass", stream=True)
    events = [e async for e in orchestrator.stream(request, options)]

    assert events
    (chat,) = [s for s in exporter.get_finished_spans() if s.name == "chat offline-qwen"]
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    await orchestrator.close()


async def test_latency_histograms_carry_the_trace_id_as_exemplar() -> None:
    orchestrator, exporter, registry = traced_orchestrator()
    await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")

    (query,) = [s for s in exporter.get_finished_spans() if s.name == "aiorch query"]
    trace_id = format(query.context.trace_id, "032x")
    exposition = generate_latest(registry).decode()
    for family in ("ai_response_duration_seconds_bucket", "kimi_response_duration_seconds_bucket"):
        exemplars = [
            line for line in exposition.splitlines() if line.startswith(family) and "# {" in line
        ]
        assert exemplars, family
        assert all(f'trace_id="{trace_id}"' in line for line in exemplars)
    await orchestrator.close()


def test_tracing_is_off_without_an_otlp_endpoint() -> None:
    assert provider_from_env({}) is None
    orchestrator = AIOrchestrator(load_settings({}), metrics=Metrics(CollectorRegistry()))
    assert not any(isinstance(s.backend, TracedBackend) for s in orchestrator.services.all())


def test_an_otlp_endpoint_turns_tracing_on() -> None:
    provider = provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert provider is not None
    provider.shutdown()  # type: ignore[attr-defined]
