"""OpenTelemetry GenAI client metrics beside the Prometheus families, when OTLP is configured.

Semantic conventions v1.41.1 (`docs/gen-ai/gen-ai-metrics.md`, the last release of the
GenAI conventions in open-telemetry/semantic-conventions; they now live in
semantic-conventions-genai):

    gen_ai.client.operation.duration             s        every upstream call
    gen_ai.client.token.usage                    {token}  input and output tokens of a call
    gen_ai.client.operation.time_to_first_chunk  s        streamed calls only

with `gen_ai.operation.name` (`chat`), `gen_ai.provider.name`, `gen_ai.request.model`,
`server.address` and `server.port`, `error.type` on a failed call (our closed `error_type`),
`gen_ai.token.type` (`input`, `output`) on token usage, and the conventions' advisory bucket
boundaries.

Nothing is measured twice: `GenAIMetrics` is an observer of `Metrics.record_call`, the one place
`GuardedService` records an upstream call (its `Attempt`), and records the same seconds, tokens
and first-token time that the Prometheus families get. `gen_ai.request.model` is the model's
metric label (the configured id, `other` for an unlisted one), for the same reason as there:
no client input becomes an attribute value.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiorch.config import Settings
from aiorch.errors import AiorchError
from aiorch.monitoring.tracing import SCOPE, provider_name
from aiorch.types import Mode, Usage

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
# The conventions' ExplicitBucketBoundaries advice.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip


def meter_provider_from_env(environ: Mapping[str, str] | None = None) -> MeterProvider | None:
    """An SDK meter provider exporting over OTLP/HTTP, when the environment asks for one."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in OTLP_VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
    except ImportError as error:
        raise AiorchError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is missing: "
            "pip install 'aiorch[otel]'"
        ) from error
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "aiorch")})
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    return SdkMeterProvider(resource=resource, metric_readers=[reader])


def _server(url: str | None) -> dict[str, Any]:
    if not url:
        return {}
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return {}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname, "server.port": port}


class GenAIMetrics:
    """The GenAI client instruments, fed by `Metrics.record_call` (a `CallObserver`)."""

    def __init__(self, provider: MeterProvider, settings: Settings) -> None:
        meter = provider.get_meter(SCOPE)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk, measured from when the client issues "
            "the generation request to when the first chunk is received in the response stream.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Per service, what every record carries: computed once, not per call.
        self._attributes: dict[str, dict[str, Any]] = {
            name: {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_name(service),
                **_server(service.url),
            }
            for name, service in settings.services.items()
        }

    def call(
        self,
        service: str,
        model: str,
        mode: Mode,
        seconds: float,
        *,
        error_type: str | None,
        usage: Usage | None,
        first_token_seconds: float | None,
    ) -> None:
        attributes = {
            **self._attributes.get(service, {"gen_ai.operation.name": "chat"}),
            "gen_ai.request.model": model,
        }
        if error_type is not None:
            attributes["error.type"] = error_type
        self.duration.record(seconds, attributes)
        if usage is not None:
            self.tokens.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.tokens.record(
                usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"}
            )
        if first_token_seconds is not None:  # streamed calls only, as the conventions ask
            self.first_chunk.record(first_token_seconds, attributes)
