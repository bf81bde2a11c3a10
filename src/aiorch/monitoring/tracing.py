"""OpenTelemetry traces (the optional `otel` extra): a span per backend call with the GenAI
semantic-convention attributes, and the trace id as an exemplar on latency histograms.

Tracing is off unless a tracer provider is passed in or `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and the `otel` extra is installed. When off, nothing
here runs on the hot path: backends are not wrapped and exemplars are `None`.

Backends are wrapped by `TracedBackend`, a decorator implementing the same `Backend` protocol, so
neither the orchestrator's call path nor the backends know about tracing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aiorch.answer import Delta, End, Event
from aiorch.backends.base import Backend, Call, Readiness
from aiorch.errors import AiorchError, UnsupportedParameter
from aiorch.redact import redact_url
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import BackendKind, Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SCOPE = "aiorch"


def provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An SDK tracer provider exporting over OTLP/HTTP, when the environment asks for one."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in OTLP_VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise AiorchError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the tracing extra is missing: "
            "pip install 'aiorch[otel]'"
        ) from error
    service_name = env.get("OTEL_SERVICE_NAME", "aiorch")
    provider = SdkTracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def provider_name(settings: ServiceSettings) -> str:
    """`gen_ai.provider.name`: who serves the model, from the configured transport."""
    if settings.kind is BackendKind.OLLAMA:
        return "ollama"
    if settings.kind is BackendKind.OFFLINE:
        return "aiorch.offline"
    url = settings.url or ""
    if "moonshot" in url:
        return "moonshot"
    if "dashscope" in url:
        return "dashscope"
    return "openai" if "openai.com" in url else "openai_compatible"


def trace_exemplar() -> dict[str, str] | None:
    """The current trace id as a Prometheus exemplar, when a span is recording."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


class TracedBackend:
    """A backend whose every call is a `chat {model}` client span."""

    def __init__(self, inner: Backend, tracer: Tracer) -> None:
        self.inner = inner
        self.settings = inner.settings
        self._tracer = tracer
        self._attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(inner.settings),
            "aiorch.service": inner.settings.name,
        }
        if inner.settings.url:
            self._attributes["server.address"] = redact_url(inner.settings.url)

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return self.inner.refusal(request)

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return self.inner.notes(request)

    def _start(self, call: Call) -> Span:
        from opentelemetry.trace import SpanKind

        request = call.request
        attributes = dict(
            self._attributes,
            **{
                "gen_ai.request.model": call.model.id,
                "gen_ai.request.stream": call.stream,
                "gen_ai.request.max_tokens": call.max_tokens,
            },
        )
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        return self._tracer.start_span(
            f"chat {call.model.id}", kind=SpanKind.CLIENT, attributes=attributes
        )

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        from opentelemetry import trace

        span = self._start(call)
        reasons: list[str] = []
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                async for event in self.inner.generate(call):
                    if isinstance(event, Delta) and event.finish_reason:
                        reasons.append(event.finish_reason)
                    elif isinstance(event, End):
                        span.set_attribute("gen_ai.response.model", event.model or call.model.id)
                        if reasons:
                            span.set_attribute("gen_ai.response.finish_reasons", reasons)
                        _usage(span, event.usage)
                    yield event
        except AiorchError as error:
            _failed(span, error)
            raise
        finally:
            span.end()

    async def probe(self) -> Readiness:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


def traced(backends: Mapping[str, Backend], provider: TracerProvider | None) -> dict[str, Backend]:
    """Wrap every backend when tracing is on; hand them back untouched otherwise."""
    if provider is None:
        return dict(backends)
    tracer = provider.get_tracer(SCOPE)
    return {name: TracedBackend(backend, tracer) for name, backend in backends.items()}


def _usage(span: Span, usage: Usage) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    span.set_attribute("gen_ai.usage.reasoning_tokens", usage.reasoning_tokens)


def _failed(span: Span, error: AiorchError) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error.error_type)
    span.set_status(Status(StatusCode.ERROR, error.message))
