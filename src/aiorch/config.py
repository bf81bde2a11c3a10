"""Configuration: one frozen `Settings`, built once from the environment and an optional TOML file.

Precedence, lowest first: built-in defaults, the TOML file named by `AIORCH_CONFIG`, the
environment variables of SPEC sections 4 and 5. Any bad value stops start-up with a `ConfigError`
naming the key, e.g. ``kimi.timeout: Expected `float`, got `str```.

A key or a URL selects each backend's transport: an API key or a base URL means the
OpenAI-compatible API, an Ollama URL means Ollama, neither means the offline backend.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from aiorch.errors import ConfigError
from aiorch.types import AgentType, BackendKind, QueryType, SelectedService, Service

DEFAULT_BASE_URLS = {
    Service.KIMI: "https://api.moonshot.ai/v1",
    Service.QWEN: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
DEFAULT_MODELS = {Service.KIMI: "kimi-k2-thinking", Service.QWEN: "qwen3-coder-plus"}
DEFAULT_OLLAMA_MODELS = {Service.KIMI: "kimi-k2-thinking:cloud", Service.QWEN: "qwen2.5-coder:7b"}


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BackendSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One model's backend. `kind`, `url` and `model_id` are derived, not set."""

    service: Service
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    ollama_url: str | None = None
    ollama_model: str | None = None
    timeout: float = 120.0  # total deadline for one call, seconds
    connect_timeout: float = 5.0
    first_token_timeout: float | None = None  # None: only the total deadline applies
    max_tokens: int = 4096
    temperature: float = 0.7
    thinking: bool = False
    max_connections: int = 256
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens
    price_output_per_mtok: float = 0.0  # USD per million completion tokens

    def __repr__(self) -> str:  # never show the key
        return (
            f"BackendSettings(service={self.service.value}, kind={self.kind.value}, "
            f"model={self.model_id})"
        )

    @property
    def kind(self) -> BackendKind:
        if self.api_key or self.base_url:
            return BackendKind.OPENAI
        if self.ollama_url:
            return BackendKind.OLLAMA
        return BackendKind.OFFLINE

    @property
    def url(self) -> str | None:
        kind = self.kind
        if kind is BackendKind.OPENAI:
            return (self.base_url or DEFAULT_BASE_URLS[self.service]).rstrip("/")
        if kind is BackendKind.OLLAMA:
            return (self.ollama_url or "").rstrip("/")
        return None

    @property
    def model_id(self) -> str:
        kind = self.kind
        if kind is BackendKind.OPENAI:
            return self.model or DEFAULT_MODELS[self.service]
        if kind is BackendKind.OLLAMA:
            return self.ollama_model or DEFAULT_OLLAMA_MODELS[self.service]
        return f"offline-{self.service.value}"

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_input_per_mtok
            + completion_tokens * self.price_output_per_mtok
        ) / 1_000_000


class RouteSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a query type goes: a primary (or "multi": both at once) and the fallback chain."""

    primary: SelectedService
    fallbacks: tuple[Service, ...] = ()


class CacheSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    ttl_seconds: float = 3600.0
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    per_key: bool = True  # partition entries by API key
    redis_timeout: float = 0.05  # seconds to wait on Redis before going on without it


class RetrySettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    attempts: int = 2  # tries per backend before falling back
    backoff_base: float = 0.1
    backoff_max: float = 2.0
    max_retry_after: float = 5.0  # a longer Retry-After falls back instead of waiting
    budget_ratio: float = 0.2  # retries allowed per first attempt, over the last window
    budget_window: float = 10.0


class BreakerSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    failure_threshold: int = 5  # consecutive failures that open the breaker
    reset_seconds: float = 30.0  # open -> half-open after this long


class HedgeSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Hedged requests: if the first service of a route has not answered by its recent p95, ask
    the next one too and take whichever answers first. Costs extra upstream calls: off unless
    asked for, and never for streams."""

    enabled: bool = False
    quantile: float = 0.95  # of the service's recent successful call latencies
    min_samples: int = 20  # no hedging until this many recent successes are known
    min_delay: float = 0.05  # seconds: never hedge sooner than this
    window: int = 200  # recent latencies kept per service


class ServerSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: tuple[str, ...] = ()  # sha256 hex of each accepted key
    metrics_token: str | None = None
    redis_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: float = 30.0  # to receive a whole request body: slow clients end here
    max_query_chars: int = 100_000
    rate_limit_per_minute: float = 0.0  # per API key; 0 turns limiting off
    rate_limit_burst: int = 20
    log_prompts: bool = False
    shutdown_grace_seconds: float = 30.0

    def __repr__(self) -> str:  # never show the metrics token or a password in the Redis URL
        redis = None if self.redis_url is None else re.sub(r"//[^@/]*@", "//***@", self.redis_url)
        return (
            f"ServerSettings(host={self.host}, port={self.port}, "
            f"api_keys={len(self.api_key_hashes)}, "
            f"metrics_token={'***' if self.metrics_token else None}, redis_url={redis})"
        )


class FlowSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    stages: tuple[str, ...]


def _default_routes() -> dict[QueryType, RouteSettings]:
    kimi_first = RouteSettings(primary=SelectedService.KIMI, fallbacks=(Service.QWEN,))
    qwen_first = RouteSettings(primary=SelectedService.QWEN, fallbacks=(Service.KIMI,))
    return {
        QueryType.CODE: qwen_first,
        QueryType.TESTING: qwen_first,
        QueryType.GENERAL: qwen_first,
        QueryType.REASONING: kimi_first,
        QueryType.REQUIREMENTS: kimi_first,
        QueryType.UNKNOWN: RouteSettings(primary=SelectedService.MULTI),
    }


def _default_flows() -> dict[str, FlowSettings]:
    return {
        "ba-dev-qa": FlowSettings(stages=("ba", "dev", "qa")),
        "dev-qa": FlowSettings(stages=("dev", "qa")),
    }


class Settings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kimi: BackendSettings = BackendSettings(
        service=Service.KIMI, timeout=600.0, max_tokens=32768, temperature=1.0, thinking=True
    )
    qwen: BackendSettings = BackendSettings(service=Service.QWEN)
    server: ServerSettings = ServerSettings()
    routes: dict[QueryType, RouteSettings] = msgspec.field(default_factory=_default_routes)
    cache: CacheSettings = CacheSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    hedge: HedgeSettings = HedgeSettings()
    flows: dict[str, FlowSettings] = msgspec.field(default_factory=_default_flows)

    def backend(self, service: Service) -> BackendSettings:
        return self.kimi if service is Service.KIMI else self.qwen

    @property
    def offline(self) -> bool:
        return all(self.backend(s).kind is BackendKind.OFFLINE for s in Service)


# Environment variable -> dotted settings key.
ENV_KEYS: dict[str, str] = {
    "AIORCH_HOST": "server.host",
    "AIORCH_PORT": "server.port",
    "AIORCH_REDIS_URL": "server.redis_url",
    "AIORCH_METRICS_TOKEN": "server.metrics_token",
    "AIORCH_RATE_LIMIT_PER_MINUTE": "server.rate_limit_per_minute",
    "AIORCH_LOG_PROMPTS": "server.log_prompts",
}
ENV_KEYS.update(
    {
        f"{service.upper()}_{field.upper()}": f"{service}.{field}"
        for service in ("kimi", "qwen")
        for field in ("api_key", "base_url", "model", "ollama_url", "ollama_model", "timeout")
    }
)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_settings(
    environ: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> Settings:
    """Build the settings once: defaults, then the TOML file, then the environment."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("AIORCH_CONFIG") or None
    raw: dict[str, Any] = _read_toml(Path(path)) if path else {}
    # Tables in the file extend the default route table and flows rather than replace them.
    defaults = Settings()
    for table in ("routes", "flows"):
        if table in raw:
            raw[table] = {**msgspec.to_builtins(getattr(defaults, table)), **raw[table]}
    for section, service in (("kimi", Service.KIMI), ("qwen", Service.QWEN)):
        backend = msgspec.to_builtins(defaults.backend(service))
        raw[section] = {**backend, **raw.get(section, {}), "service": service.value}
    for name, dotted in ENV_KEYS.items():
        value = env.get(name)
        if value is not None and value.strip() != "":
            section, _, key = dotted.partition(".")
            raw.setdefault(section, {})[key] = value.strip()
    keys = env.get("AIORCH_API_KEYS", "")
    if keys.strip():
        hashes = [hash_api_key(k.strip()) for k in keys.split(",") if k.strip()]
        raw.setdefault("server", {})["api_key_hashes"] = hashes
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {_name_key(str(error))}") from None
    _check(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read AIORCH_CONFIG file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"AIORCH_CONFIG file {path} is not valid TOML: {error}") from None


def _name_key(message: str) -> str:
    """msgspec says "... - at `$.kimi.timeout`"; lead with the key and its env variable. An
    unknown key is named in full ("kimi.colour: unknown key"), not left inside msgspec's text."""
    text, found, where = message.rpartition(" - at `$.")
    if not found:  # an error at the top level: msgspec names no path
        text, where = message, ""
    where = where.rstrip("`")
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown is not None:
        return f"{where + '.' if where else ''}{unknown.group(1)}: unknown key"
    return f"{_named(where)}: {text}" if where else text


_UNKNOWN_FIELD = re.compile(r"contains unknown field `([^`]+)`")


def _named(key: str) -> str:
    """A settings key, with the environment variable that sets it when there is one."""
    env = [name for name, dotted in ENV_KEYS.items() if dotted == key]
    return f"{key} (environment variable {env[0]} or the config file)" if env else key


def _check(settings: Settings) -> None:
    problems: list[str] = []
    for service in Service:
        backend = settings.backend(service)
        name = service.value
        if backend.timeout <= 0:
            problems.append(
                f"{_named(name + '.timeout')} must be > 0 seconds, got {backend.timeout}"
            )
        if backend.connect_timeout <= 0:
            problems.append(f"{name}.connect_timeout must be > 0, got {backend.connect_timeout}")
        if backend.max_tokens < 1:
            problems.append(f"{name}.max_tokens must be >= 1, got {backend.max_tokens}")
        if not 0 <= backend.temperature <= 2:
            problems.append(f"{name}.temperature must be in [0, 2], got {backend.temperature}")
        url = backend.url
        if url is not None and not url.startswith(("http://", "https://")):
            field = "ollama_url" if backend.kind.value == "ollama" else "base_url"
            problems.append(
                f"{_named(f'{name}.{field}')}: {url!r} must start with http:// or https://"
            )
    missing = set(QueryType) - set(settings.routes)
    if missing:
        problems.append(f"routes: no route for {', '.join(sorted(missing))}")
    for query_type, route in settings.routes.items():
        if route.primary.value in {f.value for f in route.fallbacks}:
            problems.append(f"routes.{query_type.value}: primary is also a fallback")
    if not 0 < settings.server.port < 65536:
        problems.append(f"{_named('server.port')} must be 1-65535, got {settings.server.port}")
    if settings.retry.attempts < 1:
        problems.append(f"retry.attempts must be >= 1, got {settings.retry.attempts}")
    hedge = settings.hedge
    if not 0 < hedge.quantile <= 1:
        problems.append(f"hedge.quantile must be in (0, 1], got {hedge.quantile}")
    if not 1 <= hedge.min_samples <= hedge.window:
        problems.append(
            f"hedge.min_samples must be between 1 and hedge.window ({hedge.window}), "
            f"got {hedge.min_samples}"
        )
    stages = {a.value for a in AgentType} - {AgentType.DIRECT.value}
    for flow, spec in settings.flows.items():
        bad = [s for s in spec.stages if s not in stages]
        if bad or not spec.stages:
            problems.append(
                f"flows.{flow}.stages: unknown or empty stages {bad}; use {sorted(stages)}"
            )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
