"""The per-model rules: what each model can do and what it insists on, from one table.

A model's rules come from the built-in table below (by model id prefix), overridden by the
`[[services.NAME.models]]` entries of the configuration file. `prepare()` applies them to a
request before the call, so that a provider never sees a request it will refuse, and says what it
changed: each adjustment reaches the client (the `X-Aiorch-Adjusted` header and the response's
`aiorch.adjustments`). What a model cannot do at all is refused by name with
`unsupported_parameter`, and a route skips such a model rather than degrade the request.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiorch.errors import UnsupportedParameter
from aiorch.request import ChatMessage, ChatRequest, PartType

ThinkingControl = Literal["none", "moonshot", "ollama", "enable_thinking"]
Prefill = Literal["none", "partial", "trailing"]
TokenField = Literal["max_tokens", "max_completion_tokens"]
Protocol = Literal["openai", "ollama", "offline"]


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Capabilities(_Struct, frozen=True, kw_only=True):
    tools: bool = True
    vision: bool = False
    structured_output: bool = True  # response_format: json_object and json_schema
    logprobs: bool = False
    max_choices: int = 1  # the largest `n`
    # How the model continues an assistant prefix: Moonshot's `partial: true` flag, a plain
    # trailing assistant message (Ollama, many OpenAI-compatible servers), or not at all.
    prefill: Prefill = "none"
    # Whether earlier assistant turns keep their `reasoning_content` (Kimi in tool loops needs it).
    reasoning_history: bool = False
    # Top-level fields this version does not know are forwarded verbatim (OpenAI-compatible only).
    passthrough: bool = True
    # OpenAI's newer name for system instructions; a model without it gets them as `system`.
    developer_role: bool = True


class ModelRules(_Struct, frozen=True, kw_only=True):
    """How to talk to one model; every field may be overridden from the configuration."""

    thinking: bool | None = None  # the default mode; None: the service's setting
    thinking_control: ThinkingControl = "none"  # how a request switches it; "none": fixed
    fixed: tuple[str, ...] = ()  # parameters the model fixes itself: never sent
    max_temperature: float = 2.0
    token_field: TokenField = "max_tokens"
    context_window: int | None = None
    capabilities: Capabilities = Capabilities()


_KIMI_FIXED = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")
_KIMI = Capabilities(
    max_choices=5,
    prefill="partial",
    reasoning_history=True,
    structured_output=True,
    developer_role=False,
)
# Longest matching prefix wins. Facts from the providers' documentation (docs/chat-completions.md).
BUILTIN: dict[str, ModelRules] = {
    "kimi-k2-thinking": ModelRules(
        thinking=True, max_temperature=1.0, context_window=262_144, capabilities=_KIMI
    ),
    "kimi-k2.5": ModelRules(
        thinking=True,
        thinking_control="moonshot",
        fixed=_KIMI_FIXED,
        token_field="max_completion_tokens",
        context_window=262_144,
        capabilities=msgspec.structs.replace(_KIMI, vision=True, max_choices=1),
    ),
    "kimi-k2-0": ModelRules(thinking=False, max_temperature=1.0, context_window=262_144),
    "moonshot-v1": ModelRules(
        thinking=False,
        max_temperature=1.0,
        capabilities=Capabilities(prefill="partial", developer_role=False),
    ),
    "qwen2.5-coder": ModelRules(
        thinking=False, context_window=32_768, capabilities=Capabilities(prefill="trailing")
    ),
    "qwen3-coder": ModelRules(
        thinking=False, context_window=262_144, capabilities=Capabilities(prefill="trailing")
    ),
    "qwen3-coder-plus": ModelRules(
        thinking=False, context_window=1_000_000, capabilities=Capabilities(prefill="partial")
    ),
    "offline-": ModelRules(
        thinking=False,
        capabilities=Capabilities(
            tools=True, vision=True, logprobs=True, max_choices=128, prefill="trailing"
        ),
    ),
}
for _later in ("kimi-k2.6", "kimi-k2.7", "kimi-k3"):
    BUILTIN[_later] = BUILTIN["kimi-k2.5"]
BUILTIN["kimi-k2-thinking:cloud"] = msgspec.structs.replace(
    BUILTIN["kimi-k2-thinking"],
    thinking_control="ollama",
    capabilities=msgspec.structs.replace(_KIMI, prefill="trailing", max_choices=1),
)


def builtin_rules(model_id: str, protocol: Protocol) -> ModelRules:
    """The table's rules for a model id, or the protocol's defaults for a model it does not know."""
    best = ""
    for prefix in BUILTIN:
        if model_id.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if best:
        return BUILTIN[best]
    if protocol == "ollama":
        # Ollama continues a trailing assistant message, and its `think` switch is refused (400)
        # by models without thinking: only models configured as thinkers get it.
        return ModelRules(thinking_control="none", capabilities=Capabilities(prefill="trailing"))
    return ModelRules()


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """One model a service serves, with its rules resolved."""

    service: str
    id: str
    label: str  # the `model` metric label: the id, or "other" for an unconfigured id
    thinking: bool
    rules: ModelRules
    max_tokens: int
    temperature: float
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0

    @property
    def capabilities(self) -> Capabilities:
        return self.rules.capabilities

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_input_per_mtok
            + completion_tokens * self.price_output_per_mtok
        ) / 1_000_000


class Prepared(msgspec.Struct, frozen=True):
    """A request made fit for one model, and what was changed to make it so."""

    request: ChatRequest
    thinking: bool
    max_tokens: int
    adjustments: tuple[str, ...] = ()


def refusal(model: Model, request: ChatRequest) -> UnsupportedParameter | None:
    """Why this model cannot serve the request at all, naming the field; None if it can."""
    caps = model.capabilities
    where = f"by {model.service}/{model.id}"
    if (request.tools or request.functions) and not caps.tools:
        return UnsupportedParameter(f"tools are not supported {where}", param="tools")
    structured = request.response_format and request.response_format.get("type") != "text"
    if structured and not caps.structured_output:
        return UnsupportedParameter(
            f"response_format is not supported {where}", param="response_format"
        )
    if (request.logprobs or request.top_logprobs) and not caps.logprobs:
        return UnsupportedParameter(f"logprobs are not supported {where}", param="logprobs")
    if request.n is not None and request.n > caps.max_choices:
        return UnsupportedParameter(
            f"n={request.n} is not supported {where} (at most {caps.max_choices})", param="n"
        )
    if not caps.vision:
        for i, message in enumerate(request.messages):
            if message.parts("image_url"):
                return UnsupportedParameter(
                    f"image inputs are not supported {where}", param=f"messages[{i}].content"
                )
    kinds: tuple[PartType, ...] = ("input_audio", "file")
    for i, message in enumerate(request.messages):
        for kind in kinds:
            if message.parts(kind):
                return UnsupportedParameter(
                    f"{kind} content parts are not supported {where}",
                    param=f"messages[{i}].content",
                )
    last = request.messages[-1]
    if last.role == "assistant" and not last.tool_calls and caps.prefill == "none":
        return UnsupportedParameter(
            f"continuing an assistant message is not supported {where}", param="messages"
        )
    if request.extra and not caps.passthrough:
        name = sorted(request.extra)[0]
        return UnsupportedParameter(f"{name} is not supported {where}", param=name)
    return None


def prepare(model: Model, request: ChatRequest) -> Prepared:
    """Apply the model's rules: fixed parameters, the thinking switch, the token limit."""
    rules = model.rules
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for name in rules.fixed:
        if getattr(request, name) is not None:
            changes[name] = None
            notes.append(f"{name}: not sent, {model.id} fixes it")
    temperature = request.temperature or 0.0
    if "temperature" not in rules.fixed and temperature > rules.max_temperature:
        changes["temperature"] = rules.max_temperature
        notes.append(f"temperature: {temperature:g} -> {rules.max_temperature:g} for {model.id}")
    thinking = model.thinking
    asked = _asked_thinking(request)
    if asked is not None and asked != thinking:
        if rules.thinking_control == "none":
            state = "always thinks" if thinking else "has no thinking mode"
            notes.append(f"thinking: {model.id} {state}")
        else:
            thinking = asked
    if not model.capabilities.developer_role and any(
        m.role == "developer" for m in request.messages
    ):
        messages = changes.get("messages", request.messages)
        changes["messages"] = tuple(
            msgspec.structs.replace(m, role="system") if m.role == "developer" else m
            for m in messages
        )
        notes.append(f"developer messages: sent as system to {model.id}")
    if not model.capabilities.reasoning_history:
        stripped = _without_reasoning(changes.get("messages", request.messages))
        if stripped is not None:
            changes["messages"] = stripped
            notes.append(f"reasoning_content: earlier turns' reasoning not sent to {model.id}")
    limit = request.output_limit
    asked_field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    if limit is not None and asked_field != rules.token_field:
        notes.append(f"{asked_field}: sent as {rules.token_field}")
    prepared = request.set(**changes) if changes else request
    return Prepared(prepared, thinking, limit or model.max_tokens, tuple(notes))


def _asked_thinking(request: ChatRequest) -> bool | None:
    if request.thinking is not None:
        return request.thinking.type == "enabled"
    return None


def _without_reasoning(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...] | None:
    if not any(m.reasoning_content for m in messages):
        return None
    return tuple(
        msgspec.structs.replace(m, reasoning_content=None) if m.reasoning_content else m
        for m in messages
    )
