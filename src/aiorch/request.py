"""`ChatRequest`: everything a client asked of a model, kept whole from the edge to the backend.

Both endpoints build one: `/v1/chat/completions` decodes it from the body, `/api/ai/query` builds
it from a query and its context. Nothing a client sends is dropped here: every message field and
content part of Chat Completions has a place, and top-level fields this version does not know are
kept in `extra`, to be forwarded verbatim where the service allows it or refused by name. Each
backend translates a request into its own dialect; the classifier reads `text()`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aiorch.errors import RequestError, UnsupportedParameter

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
PartType = Literal["text", "image_url", "input_audio", "file", "refusal"]


class _Struct(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    pass


class ImageURL(_Struct, frozen=True):
    url: str
    detail: str | None = None


class ContentPart(_Struct, frozen=True, kw_only=True):
    """One part of a message's content: text, an image, audio, a file or a refusal."""

    type: PartType
    text: str | None = None
    image_url: ImageURL | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    refusal: str | None = None


class _Whole(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Encoded with every field, defaults included: clients check `type` and `arguments`."""


class FunctionCall(_Whole, frozen=True):
    name: str
    arguments: str = ""  # JSON text, as the model wrote it


class ToolCall(_Whole, frozen=True, kw_only=True):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(_Struct, frozen=True, kw_only=True):
    """One message of a conversation, as Chat Completions spells it (with Moonshot's and
    DeepSeek's extensions: `reasoning_content`, `partial`, `prefix`)."""

    role: Role
    content: str | tuple[ContentPart, ...] | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    annotations: tuple[dict[str, Any], ...] | None = None
    partial: bool | None = None  # Moonshot: continue this assistant message
    prefix: bool | None = None  # DeepSeek: the same

    def text(self) -> str:
        """The message's text parts joined; images, audio and files have none."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(p.text or "" for p in content if p.type == "text")

    def parts(self, kind: PartType) -> tuple[ContentPart, ...]:
        content = self.content
        if content is None or isinstance(content, str):
            return ()
        return tuple(p for p in content if p.type == kind)


class StreamOptions(_Struct, frozen=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class Thinking(_Struct, frozen=True):
    """Moonshot's switch (kimi-k2.6 and later): `{"type": "enabled"}` or `"disabled"`."""

    type: Literal["enabled", "disabled"]


class ChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """A Chat Completions request. `model` is what the client named (`auto`, a service, an alias,
    a model id or `service/model-id`); the route decides which model is asked."""

    messages: tuple[ChatMessage, ...]
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: tuple[dict[str, Any], ...] | None = None
    function_call: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None
    thinking: Thinking | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: tuple[str, ...] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Fields this version does not know, verbatim: forwarded only where a service allows it.
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def text(self) -> str:
        """What the classifier reads: the last user message's text."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""

    @property
    def output_limit(self) -> int | None:
        """The client's cap on generated tokens, whichever of the two names it used."""
        return self.max_completion_tokens or self.max_tokens

    def set(self, **changes: Any) -> ChatRequest:
        return msgspec.structs.replace(self, **changes)


# The top-level fields a client may send, with `extra` standing for those we do not know.
KNOWN_FIELDS = frozenset(ChatRequest.__struct_fields__) - {"extra"}
MAX_TOKENS_LIMIT = 1_000_000


def check(request: ChatRequest) -> ChatRequest:
    """Refuse what no model could serve; the per-model rules come later, per target."""
    if not any(m.role == "user" for m in request.messages):
        raise RequestError("messages must hold at least one user message", param="messages")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and not 1 <= value <= MAX_TOKENS_LIMIT:
            raise RequestError(f"{name} must be between 1 and {MAX_TOKENS_LIMIT}", param=name)
    if (
        request.max_tokens is not None
        and request.max_completion_tokens is not None
        and request.max_tokens != request.max_completion_tokens
    ):
        raise RequestError(
            "max_tokens and max_completion_tokens disagree; send one of them",
            param="max_completion_tokens",
        )
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise RequestError("temperature must be between 0 and 2", param="temperature")
    if request.top_p is not None and not 0 <= request.top_p <= 1:
        raise RequestError("top_p must be between 0 and 1", param="top_p")
    if request.n is not None and not 1 <= request.n <= 128:
        raise RequestError("n must be between 1 and 128", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None and not -2 <= value <= 2:
            raise RequestError(f"{name} must be between -2 and 2", param=name)
    if request.top_logprobs is not None and not 0 <= request.top_logprobs <= 20:
        raise RequestError("top_logprobs must be between 0 and 20", param="top_logprobs")
    stop = request.stop
    if isinstance(stop, tuple) and len(stop) > 4:
        raise RequestError("stop takes at most 4 sequences", param="stop")
    if request.stream_options is not None and not request.stream:
        raise RequestError(
            "stream_options is only allowed with stream: true", param="stream_options"
        )
    _check_messages(request.messages)
    return request


def _check_messages(messages: tuple[ChatMessage, ...]) -> None:
    calls: set[str] = set()
    for i, message in enumerate(messages):
        if message.role == "tool":
            if not message.tool_call_id:
                raise RequestError(
                    "a tool message needs the tool_call_id it answers",
                    param=f"messages[{i}].tool_call_id",
                )
            if message.tool_call_id not in calls:
                raise RequestError(
                    f"tool message answers tool_call_id {message.tool_call_id[:64]!r}, which no "
                    "earlier assistant message called",
                    param=f"messages[{i}].tool_call_id",
                )
        if message.tool_calls:
            if message.role != "assistant":
                raise RequestError(
                    "only assistant messages carry tool_calls", param=f"messages[{i}].tool_calls"
                )
            calls.update(call.id for call in message.tool_calls)
        if message.content is not None and not isinstance(message.content, str):
            for j, part in enumerate(message.content):
                _check_part(part, f"messages[{i}].content[{j}]")


def _check_part(part: ContentPart, where: str) -> None:
    needed = {
        "text": part.text,
        "image_url": part.image_url,
        "input_audio": part.input_audio,
        "file": part.file,
        "refusal": part.refusal,
    }[part.type]
    if needed is None:
        raise RequestError(f"a {part.type} part needs its {part.type} field", param=where)


def unsupported(name: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"{name} is not supported {why}", param=name)
