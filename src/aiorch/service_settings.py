"""The settings of one service (an upstream endpoint) and of the models it serves.

A service is data: a protocol, a URL, a key, time limits and the models it serves. `kimi` and
`qwen` are the two defaults, read from the guide's environment variables (`KIMI_*`, `QWEN_*`) and
the `[kimi]`/`[qwen]` sections of the configuration file; further services come from
`[services.NAME]` sections. What selects the protocol is what is set: an API key or a base URL
means the OpenAI-compatible API, an Ollama URL means Ollama, neither means the offline backend.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiorch.models import Capabilities, ModelRules, Protocol, builtin_rules
from aiorch.types import BackendKind

# The two default services' built-in facts: where they live and what they serve by default.
DEFAULT_BASE_URLS = {
    "kimi": "https://api.moonshot.ai/v1",
    "qwen": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
DEFAULT_MODELS = {"kimi": "kimi-k2-thinking", "qwen": "qwen3-coder-plus"}
DEFAULT_OLLAMA_MODELS = {"kimi": "kimi-k2-thinking:cloud", "qwen": "qwen2.5-coder:7b"}
DEFAULT_TITLES = {"kimi": "Kimi-K2-Thinking", "qwen": "Qwen Coder"}


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BreakerSettings(_Struct, frozen=True, kw_only=True):
    """One service's circuit breaker; docs/reliability.md says why these numbers."""

    enabled: bool = True
    window_seconds: float = 10.0  # outcomes are counted over this sliding window
    minimum_calls: int = 20  # no verdict on fewer calls than this in the window
    failure_rate: float = 0.5  # open when at least this share of them failed
    slow_call_seconds: float = 0.0  # a call this long or longer is slow; 0: not counted
    slow_call_rate: float = 1.0  # open when at least this share of them were slow
    consecutive_failures: int = 0  # also open after this many failures in a row; 0: off
    reset_seconds: float = 30.0  # open -> half-open after this long, whatever the probes say
    half_open_calls: int = 3  # trial successes (calls or probes) that close it again
    probe_interval: float = 2.0  # seconds between active probes while not closed; 0: none
    probe_jitter: float = 0.2  # each probe interval varies by up to this share either way

    def problems(self, where: str) -> list[str]:
        """What is wrong with these settings, each naming its key under `where`."""
        found = []
        for name in ("failure_rate", "slow_call_rate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                found.append(f"{where}.{name} must be in (0, 1], got {value}")
        for name in ("window_seconds", "minimum_calls", "half_open_calls"):
            if getattr(self, name) <= 0:
                found.append(f"{where}.{name} must be > 0, got {getattr(self, name)}")
        for name in ("slow_call_seconds", "consecutive_failures", "reset_seconds"):
            if getattr(self, name) < 0:
                found.append(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if self.probe_interval < 0:
            found.append(f"{where}.probe_interval must be >= 0, got {self.probe_interval}")
        if not 0 <= self.probe_jitter < 1:
            found.append(f"{where}.probe_jitter must be in [0, 1), got {self.probe_jitter}")
        return found


class ModelSettings(_Struct, frozen=True, kw_only=True):
    """One `[[services.NAME.models]]` entry: a model's names, its fallback chain, and any rule
    that differs from the built-in table (`aiorch.models.BUILTIN`)."""

    id: str
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] | None = None  # None: the service's chain
    # An upstream's refusal of a request (a 4xx) is passed on, never retried, unless its code
    # names models to try instead here: {context_length_exceeded = ["kimi/kimi-k2.6"]}.
    fallbacks_on: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    thinking: bool | None = None
    thinking_control: Literal["none", "moonshot", "ollama", "enable_thinking"] | None = None
    fixed: tuple[str, ...] | None = None
    max_temperature: float | None = None
    token_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    context_window: int | None = None
    capabilities: dict[str, Any] = msgspec.field(default_factory=dict)
    max_tokens: int | None = None
    temperature: float | None = None
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None

    def rules(self, protocol: Protocol) -> ModelRules:
        """The built-in rules for this id with this entry's overrides on top."""
        base = builtin_rules(self.id, protocol)
        changes: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "thinking",
                "thinking_control",
                "fixed",
                "max_temperature",
                "token_field",
                "context_window",
            )
            if getattr(self, name) is not None
        }
        if self.capabilities:
            merged = {**msgspec.to_builtins(base.capabilities), **self.capabilities}
            changes["capabilities"] = msgspec.convert(merged, Capabilities)
        return msgspec.structs.replace(base, **changes) if changes else base


class ServiceSettings(_Struct, frozen=True, kw_only=True):
    """One upstream endpoint. `kind`, `url` and `model_id` are derived, not set."""

    name: str
    protocol: Literal["openai", "ollama", "offline"] | None = None  # None: from what is set
    title: str = ""
    api_key: str | None = None
    api_key_env: str | None = None  # read the key from this variable (extra services)
    base_url: str | None = None
    model: str | None = None
    ollama_url: str | None = None
    ollama_model: str | None = None
    timeout: float = 120.0  # a plain call, first attempt to last byte, seconds
    stream_timeout: float = 1800.0  # a stream's whole life; silence is bounded by idle_timeout
    connect_timeout: float = 5.0
    first_token_timeout: float | None = None  # streams: None means the default for the model
    idle_timeout: float = 60.0  # streams: the longest silence between two events
    max_tokens: int = 4096
    temperature: float = 0.7
    thinking: bool = False
    max_connections: int = 256
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens
    price_output_per_mtok: float = 0.0  # USD per million completion tokens
    fallbacks: tuple[str, ...] | None = None  # None: the other default service
    fallbacks_on: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)  # per code
    models: tuple[ModelSettings, ...] = ()
    breaker: BreakerSettings | None = None  # None: the top-level [breaker]

    def __repr__(self) -> str:  # never show the key
        return f"ServiceSettings(name={self.name}, kind={self.kind.value}, model={self.model_id})"

    @property
    def kind(self) -> BackendKind:
        if self.protocol is not None:
            return BackendKind(self.protocol)
        if self.api_key or self.base_url:
            return BackendKind.OPENAI
        if self.ollama_url:
            return BackendKind.OLLAMA
        return BackendKind.OFFLINE

    @property
    def url(self) -> str | None:
        kind = self.kind
        if kind is BackendKind.OPENAI:
            url = self.base_url or DEFAULT_BASE_URLS.get(self.name)
            return None if url is None else url.rstrip("/")
        if kind is BackendKind.OLLAMA:
            return (self.ollama_url or "").rstrip("/") or None
        return None

    @property
    def model_id(self) -> str:
        """The service's default model: what `model: "<service name>"` asks for."""
        kind = self.kind
        if kind is BackendKind.OPENAI:
            return self.model or DEFAULT_MODELS.get(self.name) or self._first_model()
        if kind is BackendKind.OLLAMA:
            return self.ollama_model or DEFAULT_OLLAMA_MODELS.get(self.name) or self._first_model()
        return f"offline-{self.name}"

    @property
    def display_name(self) -> str:
        return self.title or DEFAULT_TITLES.get(self.name, self.name)

    def _first_model(self) -> str:
        return self.models[0].id if self.models else ""

    def model_settings(self, model_id: str) -> ModelSettings:
        """The configured entry for a model id, or an empty one (built-in rules only)."""
        for entry in self.models:
            if entry.id == model_id:
                return entry
        return ModelSettings(id=model_id)
