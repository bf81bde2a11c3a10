"""What each simulated model can do, from one table.

A `ModelCaps` says whether a model thinks (and whether by default), takes tools and images, how
long its context is, how it takes an assistant prefill, whether it returns logprobs, which
sampling parameters it fixes (Kimi K2.6 and K3 answer 400 to any other value), and how it treats
`max_tokens`. The table below holds the defaults for the models the mock serves; a model it does
not list gets `fallback_caps()`. `--model-caps`, `--capabilities FILE` and the `capabilities`
field of `POST /_mock/config` override single fields per model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec


class ModelCaps(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    thinking: bool = False  # the model can think at all
    thinks_by_default: bool = False  # ... when the request does not say
    tools: bool = True
    vision: bool = False
    context_window: int = 131_072  # tokens (whitespace-separated words, as everywhere here)
    # "partial": Moonshot's partial mode (`"partial": true` on the trailing assistant message);
    # "trailing": any trailing assistant message is continued (Ollama, vLLM, DeepSeek's prefix);
    # "none": a prefill is refused with 400.
    prefill: Literal["partial", "trailing", "none"] = "trailing"
    logprobs: bool = False
    fixed: dict[str, float] = {}  # parameter -> the only value accepted (when sent)
    fixed_without_thinking: dict[str, float] = {}  # replaces `fixed` entries when not thinking
    # What `max_tokens` does: "honoured"; "ignored" (Kimi K2.6: deprecated, not honoured, use
    # max_completion_tokens); "refused" (OpenAI's reasoning models: 400 unsupported_parameter).
    max_tokens: Literal["honoured", "ignored", "refused"] = "honoured"
    # Kimi with thinking on: an assistant tool-call message without reasoning_content is a 400.
    reasoning_in_tool_history: bool = False
    family: str = ""  # Ollama's details.family and model_info's key prefix
    parameter_size: str = ""  # Ollama's details.parameter_size, e.g. "7.6B"


CAPS_FIELDS: frozenset[str] = frozenset(ModelCaps.__struct_fields__)

_KIMI_FIXED = {
    "temperature": 1.0,
    "top_p": 0.95,
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
_KIMI_NEW = ModelCaps(
    thinking=True,
    thinks_by_default=True,
    vision=True,
    context_window=262_144,
    prefill="partial",
    fixed=_KIMI_FIXED,
    fixed_without_thinking={"temperature": 0.6},
    max_tokens="ignored",
    reasoning_in_tool_history=True,
    family="kimi",
    parameter_size="1T",
)

DEFAULT_CAPS: Mapping[str, ModelCaps] = {
    "kimi-k2-thinking": ModelCaps(
        thinking=True,
        thinks_by_default=True,
        context_window=262_144,
        prefill="partial",
        reasoning_in_tool_history=True,
        family="kimi",
        parameter_size="1T",
    ),
    "kimi-k2.6": _KIMI_NEW,
    "kimi-k3": _KIMI_NEW,
    "moonshot-v1-8k": ModelCaps(
        context_window=8_192, prefill="partial", logprobs=True, family="moonshot"
    ),
    "kimi-k2-thinking:cloud": ModelCaps(
        thinking=True,
        thinks_by_default=True,
        context_window=262_144,
        family="kimi",
        parameter_size="1T",
    ),
    "qwen2.5-coder:7b": ModelCaps(
        context_window=32_768, logprobs=True, family="qwen2", parameter_size="7.6B"
    ),
    "qwen3-coder:30b": ModelCaps(
        context_window=262_144, logprobs=True, family="qwen3moe", parameter_size="30.5B"
    ),
}


def fallback_caps(model: str) -> ModelCaps:
    """A model the table does not list: it thinks (by default) if its id says `thinking`."""
    thinking = "thinking" in model
    return ModelCaps(thinking=thinking, thinks_by_default=thinking)


class CapsError(ValueError):
    """A capability override has a bad name or value; the message says which."""


def merge_caps(base: ModelCaps, raw: Mapping[str, Any], where: str) -> ModelCaps:
    unknown = sorted(k for k in raw if k not in CAPS_FIELDS)
    if unknown:
        raise CapsError(
            f"{where}: unknown capability {', '.join(unknown)}; "
            f"known: {', '.join(sorted(CAPS_FIELDS))}"
        )
    try:
        return msgspec.convert({**msgspec.structs.asdict(base), **raw}, ModelCaps, strict=False)
    except msgspec.ValidationError as error:
        raise CapsError(f"{where}: {error}".replace("$.", "")) from None


def resolve(
    models: tuple[str, ...], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, ModelCaps]:
    """The capabilities of every served model, overrides applied."""
    table: dict[str, ModelCaps] = {}
    for model in (*models, *(m for m in overrides if m not in models)):
        base = DEFAULT_CAPS.get(model) or fallback_caps(model)
        fields = overrides.get(model)
        table[model] = merge_caps(base, fields, f"capabilities.{model}") if fields else base
    return table


def describe(caps: ModelCaps) -> list[str]:
    """Ollama's `capabilities` list for /api/show."""
    names = ["completion"]
    if caps.tools:
        names.append("tools")
    if caps.thinking:
        names.append("thinking")
    if caps.vision:
        names.append("vision")
    return names
