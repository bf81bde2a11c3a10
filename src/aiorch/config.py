"""Configuration: one frozen `Settings`, built once from the environment and an optional TOML file.

Precedence, lowest first: built-in defaults, the TOML file named by `AIORCH_CONFIG`, the
environment variables of SPEC sections 4 and 5. Any bad value stops start-up with a `ConfigError`
naming the key, e.g. ``kimi.timeout: Expected `float`, got `str```.

A key or a URL selects each backend's transport: an API key or a base URL means the
OpenAI-compatible API, an Ollama URL means Ollama, neither means the offline backend.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from aiorch.catalog import MULTI, Catalog
from aiorch.errors import ConfigError
from aiorch.redact import redact_url
from aiorch.remote import RETRY_INTERVAL
from aiorch.service_settings import BreakerSettings, ServiceSettings
from aiorch.types import AgentType, BackendKind, QueryType


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class RouteSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a query type goes: a model (a service name, an alias, a model id or
    `service/model-id`) or "multi" (the `multi` models at once), and, when given, the fallback
    chain to use instead of the model's own."""

    primary: str
    fallbacks: tuple[str, ...] | None = None


class CacheSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    # /v1/chat/completions: "deterministic" serves from the cache only requests at temperature 0
    # or with a seed (OpenAI's clients expect a fresh sample otherwise); "on" or "off" for all.
    openai: Literal["on", "deterministic", "off"] = "deterministic"
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
    # Retries in flight allowed whatever the ratio says (Envoy's min_retry_concurrency), so that
    # an isolated request still gets its retry when another request retried a moment ago.
    budget_min_concurrent: int = 3


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
    # While Redis is failing, each of its users (cache, rate limits, breakers) skips it and tries
    # it again after this many seconds.
    redis_retry_interval: float = RETRY_INTERVAL
    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: float = 30.0  # to receive a whole request body: slow clients end here
    # Enforced by the HTTP protocol before any handler (aiorch.server.protocol), per worker.
    max_header_bytes: int = 32 * 1024  # request line and headers together
    max_headers: int = 100
    header_timeout_seconds: float = 10.0  # to receive the request line and headers
    max_connections: int = 1000  # open at once; the next is answered 503
    keep_alive_seconds: int = 5  # an idle keep-alive connection is closed after this long
    max_query_chars: int = 100_000
    rate_limit_per_minute: float = 0.0  # per API key; 0 turns limiting off
    rate_limit_burst: int = 20
    # Failed authentications (a wrong key or metrics token) per client address; 0 turns it off.
    auth_failures_per_minute: float = 10.0
    auth_failure_burst: int = 10
    log_prompts: bool = False
    shutdown_grace_seconds: float = 30.0
    readyz_cache_seconds: float = 5.0  # /readyz probes the upstreams at most this often
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or networks, "*" for
    # any); none by default, so a client cannot pick its own address for the rate limits.
    trusted_proxies: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never show the metrics token or a password in the Redis URL
        redis = None if self.redis_url is None else redact_url(self.redis_url)
        return (
            f"ServerSettings(host={self.host}, port={self.port}, "
            f"api_keys={len(self.api_key_hashes)}, "
            f"metrics_token={'***' if self.metrics_token else None}, redis_url={redis})"
        )


class FlowSettings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    stages: tuple[str, ...]


def _default_routes() -> dict[QueryType, RouteSettings]:
    kimi_first, qwen_first = RouteSettings(primary="kimi"), RouteSettings(primary="qwen")
    return {
        QueryType.CODE: qwen_first,
        QueryType.TESTING: qwen_first,
        QueryType.GENERAL: qwen_first,
        QueryType.REASONING: kimi_first,
        QueryType.REQUIREMENTS: kimi_first,
        QueryType.UNKNOWN: RouteSettings(primary=MULTI),
    }


def _default_flows() -> dict[str, FlowSettings]:
    return {
        "ba-dev-qa": FlowSettings(stages=("ba", "dev", "qa")),
        "dev-qa": FlowSettings(stages=("dev", "qa")),
    }


def _default_services() -> dict[str, ServiceSettings]:
    return {
        "kimi": ServiceSettings(
            name="kimi",
            timeout=600.0,
            first_token_timeout=None,
            max_tokens=32768,
            temperature=1.0,
            thinking=True,
            fallbacks=("qwen",),
        ),
        "qwen": ServiceSettings(name="qwen", fallbacks=("kimi",)),
    }


class Settings(_Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    services: dict[str, ServiceSettings] = msgspec.field(default_factory=_default_services)
    server: ServerSettings = ServerSettings()
    routes: dict[QueryType, RouteSettings] = msgspec.field(default_factory=_default_routes)
    multi: tuple[str, ...] = ("kimi", "qwen")  # the models a "multi" route asks at once
    cache: CacheSettings = CacheSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    hedge: HedgeSettings = HedgeSettings()
    flows: dict[str, FlowSettings] = msgspec.field(default_factory=_default_flows)

    def service(self, name: str) -> ServiceSettings:
        return self.services[name]

    @property
    def kimi(self) -> ServiceSettings:
        """The guide's reasoning service."""
        return self.services["kimi"]

    @property
    def qwen(self) -> ServiceSettings:
        """The guide's coding service."""
        return self.services["qwen"]

    @property
    def offline(self) -> bool:
        return all(s.kind is BackendKind.OFFLINE for s in self.services.values())


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
DEFAULT_SERVICES = ("kimi", "qwen")  # [kimi] and [qwen] stand for [services.kimi] and so on


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_settings(
    environ: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> Settings:
    """Build the settings once: defaults, then the TOML file, then the environment."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("AIORCH_CONFIG") or None
    raw: dict[str, Any] = _read_toml(Path(path)) if path else {}
    defaults = Settings()
    # Tables in the file extend the default route table and flows rather than replace them.
    for table in ("routes", "flows"):
        if table in raw:
            raw[table] = {**msgspec.to_builtins(getattr(defaults, table)), **raw[table]}
    services = _raw_services(raw, defaults)
    for name, dotted in ENV_KEYS.items():
        value = env.get(name)
        if value is not None and value.strip() != "":
            section, _, key = dotted.partition(".")
            target = (
                services[section] if section in DEFAULT_SERVICES else raw.setdefault(section, {})
            )
            target[key] = value.strip()
    for service in services.values():
        variable = service.get("api_key_env")
        if (
            isinstance(variable, str)
            and env.get(variable, "").strip()
            and not service.get("api_key")
        ):
            service["api_key"] = env[variable].strip()
    raw["services"] = {name: _service(name, table) for name, table in services.items()}
    keys = env.get("AIORCH_API_KEYS", "")
    if keys.strip():
        hashes = [hash_api_key(k.strip()) for k in keys.split(",") if k.strip()]
        if not hashes:
            # "," is what a template leaves when its variables are unset: running without
            # authentication because of it would be a silent, dangerous downgrade.
            raise ConfigError(
                f"AIORCH_API_KEYS is set ({keys.strip()!r}) but holds no key; give a "
                "comma-separated list of keys, or unset it to run without authentication"
            )
        raw.setdefault("server", {})["api_key_hashes"] = hashes
    proxies = env.get("AIORCH_TRUSTED_PROXIES", "")
    if proxies.strip():
        entries = [p.strip() for p in proxies.split(",") if p.strip()]
        raw.setdefault("server", {})["trusted_proxies"] = entries
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {_name_key(str(error))}") from None
    _check(settings)
    return settings


def _raw_services(raw: dict[str, Any], defaults: Settings) -> dict[str, dict[str, Any]]:
    """Every service's raw table: the defaults, `[kimi]`/`[qwen]`, then `[services.NAME]`."""
    tables = raw.pop("services", {})
    if not isinstance(tables, dict):
        raise ConfigError("invalid configuration: services must be a table of services")
    services: dict[str, dict[str, Any]] = {}
    for name in DEFAULT_SERVICES:
        base = msgspec.to_builtins(defaults.services[name])
        services[name] = {**base, **raw.pop(name, {}), **tables.pop(name, {}), "name": name}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"invalid configuration: services.{name} must be a table")
        services[name] = {**table, "name": name}
    return services


def _service(name: str, table: dict[str, Any]) -> ServiceSettings:
    """One service's settings, its errors naming the key as the file spells it."""
    try:
        return msgspec.convert(table, ServiceSettings, strict=False)
    except msgspec.ValidationError as error:
        section = name if name in DEFAULT_SERVICES else f"services.{name}"
        text, found, where = str(error).rpartition(" - at `$")
        message = f"{text} - at `$.{section}{where}" if found else f"{error} - at `$.{section}`"
        raise ConfigError(f"invalid configuration: {_name_key(message)}") from None


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


def _url_problems(service: ServiceSettings, section: str) -> list[str]:
    """A URL the transport could not call is refused here, not on every request (as a 500); the
    URL is shown redacted, since a malformed one may still hold a password."""
    url = service.url
    if url is None:
        return []
    field = "ollama_url" if service.kind is BackendKind.OLLAMA else "base_url"
    key = _named(f"{section}.{field}")
    shown = redact_url(url)
    if not url.startswith(("http://", "https://")):
        return [f"{key}: {shown!r} must start with http:// or https://"]
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not 0-65535
    except ValueError as error:
        return [f"{key}: {shown!r} is not a valid URL ({error})"]
    if not parts.hostname:
        return [f"{key}: {shown!r} has no host"]
    if service.kind is BackendKind.OPENAI and service.api_key and "@" in parts.netloc:
        # The key goes in `Authorization: Bearer`, URL credentials would go in the same header
        # as Basic auth: the two cannot both be sent, and the upstream expects the key.
        api_key = _named(f"{section}.api_key")
        return [
            f"{key}: {shown!r} holds credentials (user:password@) and {api_key} is set too; "
            "put the key in the API key only and remove the credentials from the URL"
        ]
    return []


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check(settings: Settings) -> None:
    problems: list[str] = []
    for name, service in settings.services.items():
        problems.extend(_service_problems(name, service))
    if not 0 < settings.server.port < 65536:
        problems.append(f"{_named('server.port')} must be 1-65535, got {settings.server.port}")
    for proxy in settings.server.trusted_proxies:
        if proxy != "*" and not _is_network(proxy):
            problems.append(
                f"server.trusted_proxies (environment variable AIORCH_TRUSTED_PROXIES or the "
                f"config file): {proxy!r} is not an IP address or network"
            )
    server = settings.server
    for name in ("max_header_bytes", "max_headers", "max_connections", "keep_alive_seconds"):
        if getattr(server, name) < 1:
            problems.append(f"server.{name} must be >= 1, got {getattr(server, name)}")
    for name in ("header_timeout_seconds", "body_timeout_seconds"):
        if getattr(server, name) <= 0:
            problems.append(f"server.{name} must be > 0 seconds, got {getattr(server, name)}")
    if settings.retry.attempts < 1:
        problems.append(f"retry.attempts must be >= 1, got {settings.retry.attempts}")
    if settings.retry.budget_min_concurrent < 0:
        problems.append(
            f"retry.budget_min_concurrent must be >= 0, got {settings.retry.budget_min_concurrent}"
        )
    problems.extend(settings.breaker.problems("breaker"))
    if settings.server.redis_retry_interval <= 0:
        problems.append(
            f"server.redis_retry_interval must be > 0, got {settings.server.redis_retry_interval}"
        )
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
    missing = set(QueryType) - set(settings.routes)
    if missing:
        problems.append(f"routes: no route for {', '.join(sorted(missing))}")
    if not problems:
        problems.extend(Catalog.problems(settings))
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def _service_problems(name: str, service: ServiceSettings) -> list[str]:
    key = name if name in DEFAULT_SERVICES else f"services.{name}"
    problems: list[str] = []
    if not name.replace("-", "_").isidentifier() or name == MULTI or "/" in name:
        problems.append(f"services.{name}: a service name is letters, digits, - and _")
    for field in ("timeout", "stream_timeout", "connect_timeout", "idle_timeout"):
        value = getattr(service, field)
        if value <= 0:
            problems.append(f"{_named(f'{key}.{field}')} must be > 0 seconds, got {value}")
    first = service.first_token_timeout
    if first is not None and first <= 0:
        problems.append(f"{key}.first_token_timeout must be > 0 seconds, got {first}")
    if service.max_tokens < 1:
        problems.append(f"{key}.max_tokens must be >= 1, got {service.max_tokens}")
    if not 0 <= service.temperature <= 2:
        problems.append(f"{key}.temperature must be in [0, 2], got {service.temperature}")
    kind = service.kind
    if kind is not BackendKind.OFFLINE and service.url is None:
        field = "ollama_url" if kind is BackendKind.OLLAMA else "base_url"
        problems.append(f"{key}.{field} is needed for a {kind.value} service")
    problems.extend(_url_problems(service, key))
    if service.breaker is not None:
        problems.extend(service.breaker.problems(f"{key}.breaker"))
    if kind is not BackendKind.OFFLINE and not service.model_id:
        problems.append(f"{key}: name its default model (model, ollama_model or [[models]])")
    return problems
