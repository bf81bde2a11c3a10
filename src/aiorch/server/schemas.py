"""Request bodies, their decoding with clear errors, and the served OpenAPI document.

Bodies are msgspec Structs: decoding validates types in one pass and its messages name the field
(``Expected `str`, got `int` - at `$.query```), which is what a client needs to fix its call.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import msgspec

from aiorch.agents.flow import FlowResult
from aiorch.errors import RequestError, UnsupportedParameter
from aiorch.request import KNOWN_FIELDS, ChatRequest
from aiorch.types import QueryResult, Usage

T = TypeVar("T")


class FlowBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of `POST /api/ai/flows/{name}`."""

    request: str
    use_cache: bool = True
    stream: bool = False
    context: str | None = None


class QueryBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/ai/query`."""

    query: str
    query_type: str | None = None
    agent_type: str | None = None
    context: str | None = None
    stream: bool = False
    use_cache: bool = True
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | None = None
    model: str | None = None  # "auto" (default), "kimi", "qwen" or a configured model id


class StrictChat(ChatRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/chat/completions` as most clients send it: only fields we know."""


_decode_strict = msgspec.json.Decoder(StrictChat).decode


def decode_chat(body: bytes) -> ChatRequest:
    """A Chat Completions body, whole. Top-level fields this version does not know are kept in
    `extra` (forwarded where the model's service allows it, refused by name elsewhere); an
    unknown field inside a message is refused by name."""
    if not body.strip():
        raise RequestError("request body is empty; send a JSON object")
    try:
        return _decode_strict(body)
    except msgspec.ValidationError as error:
        if not str(error).startswith("Object contains unknown field") or " - at `$" in str(error):
            raise _invalid(error) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise _malformed(error, body) from None
    data = decode(body, dict[str, Any])
    extra = {k: data.pop(k) for k in list(data) if k not in KNOWN_FIELDS}
    try:
        return msgspec.convert({**data, "extra": extra}, ChatRequest)
    except msgspec.ValidationError as error:
        raise _invalid(error) from None


class ErrorDetail(msgspec.Struct):
    type: str
    message: str
    code: str | None = None
    param: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ChatUsage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, int] | None = None
    prompt_tokens_details: dict[str, int] | None = None

    @classmethod
    def of(cls, usage: Usage) -> ChatUsage:
        return cls(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            {"reasoning_tokens": usage.reasoning_tokens} if usage.reasoning_tokens else None,
            {"cached_tokens": usage.cached_tokens} if usage.cached_tokens else None,
        )


class ChatCompletion(msgspec.Struct):
    """The answer to a plain `POST /v1/chat/completions`, in OpenAI's shape."""

    id: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: ChatUsage
    object: str = "chat.completion"
    system_fingerprint: str | None = None
    aiorch: dict[str, Any] | None = None


class ModelCard(msgspec.Struct):
    id: str
    owned_by: str
    object: str = "model"
    created: int = 0


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class BackendState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Anonymous callers get `service`, `kind` and `ready` only; the details (model, URL, the
    probe's words, which may name hosts) need an API key or the metrics token."""

    service: str
    kind: str
    ready: bool
    model: str | None = None
    url: str | None = None
    detail: str | None = None
    model_loaded: bool | None = None


class Readyz(msgspec.Struct):
    status: Literal["ready", "degraded", "offline", "unavailable"]
    offline: bool
    backends: list[BackendState]


def decode(body: bytes, kind: type[T]) -> T:
    """Decode and validate a request body, or raise a 400/422-worthy `RequestError`."""
    if not body.strip():
        raise RequestError("request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise InvalidBody(f"invalid request body: {error}", param=_param(str(error))) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise _malformed(error, body) from None


def _invalid(error: msgspec.ValidationError) -> RequestError:
    """A chat body's field that is wrong: an unknown one is refused by name (400, as OpenAI
    does), a wrongly typed or missing one is a 422 naming it."""
    text = str(error)
    param = _param(text)
    if text.startswith("Object contains unknown field"):
        return UnsupportedParameter(f"{param} is not a field this endpoint knows", param=param)
    return InvalidBody(f"invalid request body: {text}", param=param)


def _malformed(error: Exception, body: bytes) -> RequestError:
    if isinstance(error, RecursionError):  # msgspec recurses per nesting level
        return RequestError("request body is nested too deeply")
    # Some msgspec releases let UnicodeDecodeError through for bad UTF-8; others word it.
    detail = f": {error}" if isinstance(error, msgspec.DecodeError) else ""
    return _not_utf8(body) or RequestError(f"request body is not valid JSON{detail}")


def _not_utf8(body: bytes) -> RequestError | None:
    """Our own words for a body that is not UTF-8, whatever msgspec's release calls it; checked
    only once decoding has failed, so that good bodies are not decoded twice."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return RequestError(
            f"request body is not valid JSON: not UTF-8 ({error.reason} at byte {error.start})"
        )
    return None


class InvalidBody(RequestError):
    """Well-formed JSON with a missing, unknown or wrongly typed field."""

    status_code = 422


# msgspec names the field in backticks: "Object missing required field `role`".
_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def _param(message: str) -> str | None:
    """The path of the offending field, e.g. `messages[0].role`, from msgspec's message
    ("... - at `$.messages[0]`"); None when the body as a whole is wrong."""
    text, found, where = message.rpartition(" - at `$")
    path = where.rstrip("`").lstrip(".") if found else ""
    field = _FIELD.search(text if found else message)
    if field is not None:
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    return path or None


def openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document, with schemas generated from the Structs above."""
    (
        (query, result, chat, completion, models, card, ready, error, flow, flow_result),
        components,
    ) = msgspec.json.schema_components(
        [
            QueryBody,
            QueryResult,
            ChatRequest,
            ChatCompletion,
            ModelList,
            ModelCard,
            Readyz,
            ErrorBody,
            FlowBody,
            FlowResult,
        ],
        ref_template="#/components/schemas/{name}",
    )
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": error}}}
        for code, text in (
            (400, "The request is invalid; the message says what is wrong."),
            (401, "A valid API key is required."),
            (404, "The model named is not served here (code model_not_found)."),
            (413, "The body is too large."),
            (422, "A field is missing, unknown or of the wrong type."),
            (429, "Rate limited; see Retry-After."),
            (502, "Every backend failed; the attempts say which and why."),
            (503, "No backend is available."),
            (504, "Every backend timed out."),
        )
    }

    def post(summary: str, body: Any, answer: Any, events: tuple[str, ...]) -> dict[str, Any]:
        content: dict[str, Any] = {
            "application/json": {"schema": answer},
            "text/event-stream": {"schema": _sse_event(events)},
        }
        return {
            "post": {
                "summary": summary,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {"200": {"description": "The answer.", "content": content}, **errors},
            }
        }

    def get(summary: str, answer: Any, media: str = "application/json") -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "responses": {
                    "200": {"description": summary, "content": {media: {"schema": answer}}}
                },
            }
        }

    model_card = get("One configured model.", card)
    model_card["get"]["responses"]["404"] = {
        "description": "No configured model has that id.",
        "content": {"application/json": {"schema": error}},
    }
    run_flow = post("Run an agent flow (ba-dev-qa, dev-qa, ...).", flow, flow_result, FLOW_EVENTS)
    run_flow["post"]["responses"]["404"] = {
        "description": "No flow has that name; the message lists the configured ones.",
        "content": {"application/json": {"schema": error}},
    }

    return {
        "openapi": "3.1.0",
        "info": {"title": "aiorch", "version": version},
        "paths": {
            "/api/ai/query": post(
                "Classify, route and answer one query.", query, result, QUERY_EVENTS
            ),
            "/v1/chat/completions": post(
                "OpenAI-compatible chat completions.", chat, completion, CHAT_EVENTS
            ),
            "/api/ai/flows/{name}": {
                **run_flow,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            },
            "/v1/models": get("The configured models.", models),
            "/v1/models/{model}": {
                **model_card,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            },
            "/healthz": get("Liveness.", {"type": "object"}),
            "/readyz": get("Readiness of each backend.", ready),
            "/metrics": get("Prometheus exposition.", {"type": "string"}, "text/plain"),
        },
        "components": {"schemas": components},
    }


# Event names in each stream; "message" is what SSE calls an event sent without a name.
QUERY_EVENTS = ("meta", "message", "done", "error")
CHAT_EVENTS = ("message",)
FLOW_EVENTS = ("start", "stage", "done", "error")


def _sse_event(names: tuple[str, ...]) -> dict[str, Any]:
    """One server-sent event (in OpenAPI 3.1 the stream's `schema` describes each event, as
    3.2's `itemSchema` does); `data` is JSON, or `[DONE]` at the end of a chat stream."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": list(names)},
            "data": {"type": "string"},
            "id": {"type": "string"},
        },
    }
