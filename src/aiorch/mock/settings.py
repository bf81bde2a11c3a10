"""The mock's knobs, and how the layers that set them combine.

Every knob is a field of `Behaviour`. A request's behaviour is built from four layers, the
highest winning: a request header (`X-Mock-<Field>`, dashes for underscores), a directive in the
last user message (`[[mock: field=value ...]]`), the per-model config, the run defaults (CLI,
environment, config file, `POST /_mock/config`). `MockConfig` holds everything that
`POST /_mock/config` can change; it is immutable and replaced as a whole on each change.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec

from aiorch.mock.capabilities import DEFAULT_CAPS, CapsError, fallback_caps, merge_caps

FaultName = Literal[
    "http_500",
    "http_502",
    "http_503",
    "rate_limit",
    "overloaded",
    "quota",
    "hang",
    "reset",
    "malformed",
    "cut",
    "slow_first_token",
    "stall",
    "malformed_event",
    "stream_error",
    "prefill_refused",
    "content_filter",
    "context_length",
    "down",
]
FAULT_NAMES: tuple[str, ...] = get_args(FaultName)
# The faults made for the failover scenarios (issue 16): request errors that no retry can fix,
# streams that break after their first byte, and a model that comes back.
FAILOVER_FAULTS: frozenset[str] = frozenset(
    {
        "stall",
        "malformed_event",
        "stream_error",
        "prefill_refused",
        "content_filter",
        "context_length",
        "down",
    }
)

_Ms = Annotated[float, msgspec.Meta(ge=0, le=3_600_000)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class Behaviour(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How one request is answered. Times are milliseconds unless the name says otherwise."""

    latency_ms: _Ms = 0.0  # before the response headers
    ttft_ms: _Ms = 0.0  # headers to first token
    tokens_per_second: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # 0: as fast as possible
    jitter_ms: _Ms = 0.0  # uniform extra delay added to latency and to ttft
    tokens: _Count = 30  # answer tokens, unless a responses rule supplies the text
    reasoning_tokens: _Count = 20  # thinking tokens, when thinking is on
    fault: tuple[FaultName, ...] = ()
    fault_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    fault_limit: _Count = 0  # at most this many injected faults per key (0: no limit)
    fault_models: tuple[str, ...] = ()  # inject only for models containing one of these
    slow_first_token_ms: _Ms = 30_000.0
    hang_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0
    retry_after_s: _Count = 1
    cut_after: _Count = 5  # chunks sent before a `cut` drops the connection
    cold_start_ms: _Ms = 0.0  # first call per model (until /_mock/reset)
    stall_after: _Count = 5  # token events a `stall` stream sends before going silent
    stall_ms: _Ms = 30_000.0  # how long it stays silent (then the stream goes on)
    malformed_at: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 3  # the bad event's place
    stream_error_after: _Count = 5  # token events before a `stream_error` event
    down_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0  # `down` lasts this long
    down_from: Literal["first_request", "config"] = "first_request"
    down_fault: FaultName = "http_503"  # what a `down` model does while down
    tool_calls: _Count = 0  # tool calls per turn when tools are offered (0: as the prompt says)
    vary_by_model: bool = False  # answers depend on the model id too (else on the conversation)
    ollama_num_ctx: Annotated[int, msgspec.Meta(ge=1)] = 4096  # Ollama's default context


BEHAVIOUR_FIELDS: frozenset[str] = frozenset(Behaviour.__struct_fields__)
DEFAULT_MODELS: tuple[str, ...] = (
    "kimi-k2-thinking",
    "kimi-k2.6",
    "kimi-k3",
    "moonshot-v1-8k",
    "kimi-k2-thinking:cloud",
    "qwen2.5-coder:7b",
    "qwen3-coder:30b",
)


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scripted answer: used when `match` is found in the last user message or system prompt."""

    match: str
    content: str
    reasoning: str | None = None
    model: str | None = None  # a regex the model id must contain a match for


class MockConfig(msgspec.Struct, frozen=True, kw_only=True):
    behaviour: Behaviour = Behaviour()
    model_config: dict[str, dict[str, Any]] = {}  # model -> validated partial Behaviour
    models: tuple[str, ...] = DEFAULT_MODELS
    responses: tuple[Rule, ...] = ()
    api_key: str | None = None
    seed: int = 0
    capabilities: dict[str, dict[str, Any]] = {}  # model -> validated partial ModelCaps

    def served_models(self) -> tuple[str, ...]:
        extra = tuple(m for m in self.model_config if m not in self.models)
        return self.models + extra

    def public(self) -> dict[str, Any]:
        """The config as `POST /_mock/config` accepts it (the API key is not echoed)."""
        return {
            **msgspec.structs.asdict(self.behaviour),
            "model_config": self.model_config,
            "models": list(self.models),
            "responses": [msgspec.structs.asdict(r) for r in self.responses],
            "api_key": None if self.api_key is None else "***",
            "seed": self.seed,
            "capabilities": self.capabilities,
        }


class ConfigError(ValueError):
    """A knob has a bad name or value; the message says which and why."""


def normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _coerce(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Turn user-facing values into `Behaviour` field values (strings allowed for every field)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = normalise_key(key)
        if name not in BEHAVIOUR_FIELDS:
            raise ConfigError(
                f"{where}: unknown field {key!r}; known: {', '.join(sorted(BEHAVIOUR_FIELDS))}"
            )
        if name == "fault" and isinstance(value, str):
            value = value.lower()
        if name in ("fault", "fault_models") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
        out[name] = value
    return out


def merge(base: Behaviour, raw: Mapping[str, Any], where: str) -> Behaviour:
    """`base` with the fields in `raw` replaced, validated; raises `ConfigError`."""
    if not raw:
        return base
    overrides = _coerce(raw, where)
    try:
        return msgspec.convert(
            {**msgspec.structs.asdict(base), **overrides}, Behaviour, strict=False
        )
    except msgspec.ValidationError as error:
        raise ConfigError(f"{where}: {error}".replace("$.", "")) from None


def validate_partial(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check a partial behaviour on its own and return it in canonical form."""
    checked = merge(Behaviour(), raw, where)
    return {name: getattr(checked, name) for name in _coerce(raw, where)}


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """`a=1 b=2` or `a=1,b=2` (a comma inside a fault list is kept: `fault=x,y`)."""
    pairs: dict[str, str] = {}
    for item in re.split(r"[\s;]+|,(?=\s*[\w-]+\s*=)", text.strip()):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: expected field=value, got {item!r}")
        pairs[normalise_key(key)] = value.strip()
    return pairs


def parse_model_config(spec: str) -> tuple[str, dict[str, Any]]:
    """`MODEL:field=value,field=value` -> (model, partial behaviour)."""
    # Model ids contain colons (qwen2.5-coder:7b): the fields start at the first colon that is
    # followed by `name=`.
    match = re.match(r"^(?P<model>.+?):(?P<fields>[\w-]+\s*=.*)$", spec.strip())
    if match is None:
        raise ConfigError(f"--model-config {spec!r}: expected MODEL:field=value[,field=value]")
    model, rest = match["model"], match["fields"]
    return model, validate_partial(parse_pairs(rest, f"--model-config {model}"), model)


DIRECTIVE_MARK = "[[mock"
DIRECTIVE = re.compile(r"\[\[mock:?\s*([^\]]*)\]\]")


def directives(text: str) -> tuple[dict[str, str], str]:
    """The directives' fields and the text without them. Call only if DIRECTIVE_MARK is in text."""
    fields: dict[str, str] = {}
    for body in DIRECTIVE.findall(text):
        fields.update(parse_pairs(body, "[[mock: ...]] directive"))
    return fields, DIRECTIVE.sub("", text).strip()


HEADER_PREFIX = "x-mock-"


def header_overrides(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {
        normalise_key(key[len(HEADER_PREFIX) :]): value
        for key, value in headers
        if key.lower().startswith(HEADER_PREFIX)
    }


def load_structured(path: Path) -> Any:
    """A JSON or TOML file (by suffix; JSON if unsure)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix or 'JSON'}: {error}") from None


def parse_rules(data: Any, where: str) -> tuple[Rule, ...]:
    """Rules from a list, or from an object with a `responses` (or `rules`) list."""
    if isinstance(data, dict):
        data = data.get("responses", data.get("rules"))
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of rules (or a `responses` list)")
    try:
        rules = msgspec.convert(data, tuple[Rule, ...])
    except msgspec.ValidationError as error:
        raise ConfigError(f"{where}: {error}") from None
    for rule in rules:
        for pattern in (rule.match, rule.model):
            try:
                if pattern is not None:
                    re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"{where}: bad regex {pattern!r}: {error}") from None
    return rules


def update(config: MockConfig, raw: Mapping[str, Any], where: str) -> MockConfig:
    """Apply a `POST /_mock/config` body (or a config file) to `config`.

    Behaviour fields change the run defaults; `model_config` merges per model (null removes a
    model's overrides); `models`, `responses`, `api_key` and `seed` replace the current value.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    behaviour_raw = {k: v for k, v in raw.items() if normalise_key(k) in BEHAVIOUR_FIELDS}
    changes: dict[str, Any] = {"behaviour": merge(config.behaviour, behaviour_raw, where)}
    for key, value in raw.items():
        name = normalise_key(key)
        if name in BEHAVIOUR_FIELDS:
            continue
        if name == "model_config":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: model_config must be an object of model -> fields")
            merged = dict(config.model_config)
            for model, fields in value.items():
                if fields is None:
                    merged.pop(model, None)
                elif isinstance(fields, Mapping):
                    checked = validate_partial(fields, f"{where}: model_config.{model}")
                    merged[model] = {**merged.get(model, {}), **checked}
                else:
                    raise ConfigError(f"{where}: model_config.{model} must be an object or null")
            changes["model_config"] = merged
        elif name == "models":
            if isinstance(value, str):
                value = [m.strip() for m in value.split(",") if m.strip()]
            if not (isinstance(value, list) and value and all(isinstance(m, str) for m in value)):
                raise ConfigError(f"{where}: models must be a non-empty list of model ids")
            changes["models"] = tuple(value)
        elif name == "responses":
            if isinstance(value, str):  # a path to a rules file
                value = load_structured(Path(value))
            changes["responses"] = parse_rules(value, f"{where}: responses")
        elif name == "api_key":
            if value is not None and not (isinstance(value, str) and value):
                raise ConfigError(f"{where}: api_key must be a non-empty string or null")
            changes["api_key"] = value
        elif name == "capabilities":
            changes["capabilities"] = _capabilities(config.capabilities, value, where)
        elif name == "seed":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: seed must be an integer")
            changes["seed"] = value
        else:
            raise ConfigError(f"{where}: unknown field {key!r}")
    return msgspec.structs.replace(config, **changes)


def _capabilities(
    current: Mapping[str, dict[str, Any]], value: Any, where: str
) -> dict[str, dict[str, Any]]:
    """Per-model capability overrides merged into `current` (null removes a model's)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: capabilities must be an object of model -> fields")
    merged = dict(current)
    for model, fields in value.items():
        if fields is None:
            merged.pop(model, None)
            continue
        if not isinstance(fields, Mapping):
            raise ConfigError(f"{where}: capabilities.{model} must be an object or null")
        base = DEFAULT_CAPS.get(model) or fallback_caps(model)
        try:
            merge_caps(base, fields, f"{where}: capabilities.{model}")
        except CapsError as error:
            raise ConfigError(str(error)) from None
        merged[model] = {**merged.get(model, {}), **fields}
    return merged


def parse_caps_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`MODEL:field=value,field=value` -> (model, capability overrides)."""
    match = re.match(r"^(?P<model>.+?):(?P<fields>[\w-]+\s*=.*)$", spec.strip())
    if match is None:
        raise ConfigError(f"--model-caps {spec!r}: expected MODEL:field=value[,field=value]")
    pairs = parse_pairs(match["fields"], f"--model-caps {match['model']}")
    fields: dict[str, Any] = {}
    for key, value in pairs.items():
        fields[key] = _loose(value)
    return match["model"], fields


def _loose(value: str) -> Any:
    """A command-line value as JSON when it is JSON (numbers, booleans, objects), else text."""
    try:
        return json.loads(value)
    except ValueError:
        return value
