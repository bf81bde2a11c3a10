"""OpenAI-compatible chat completions, in Moonshot's flavour: decoding, checks, the plain body.

Moonshot differs from OpenAI in ways that gateways trip over, and they are reproduced: the
thinking text is `reasoning_content` (in the message and in stream deltas), a stream's usage
arrives in the last chunk's `choices[0].usage`, Kimi's tool call ids are `functions.NAME:N`, and
Kimi K2.6/K3 fix their sampling parameters. OpenAI's own final usage chunk (empty `choices`,
top-level `usage`) is added when the request sets `stream_options.include_usage`. Streams are
rendered by `sse`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from aiorch.mock import checks, faults, sse
from aiorch.mock.answers import Choice
from aiorch.mock.conversation import CallIn, Refusal, Spec, Tool, Turn, trailing_prefill
from aiorch.mock.engine import STATE, Job, prepare, record
from aiorch.mock.logprobs import openai_logprobs
from aiorch.mock.settings import ConfigError
from aiorch.mock.state import MockState

ENDPOINT = "/v1/chat/completions"


class _ImageUrl(msgspec.Struct):
    url: str


class _Part(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: _ImageUrl | str | None = None


class _Function(msgspec.Struct):
    name: str
    arguments: str = ""


class _CallIn(msgspec.Struct):
    id: str
    function: _Function
    type: str = "function"


class _Message(msgspec.Struct):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[_Part] | None = None
    tool_calls: list[_CallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None
    partial: bool = False


class _Thinking(msgspec.Struct):
    type: Literal["enabled", "disabled"]


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _FunctionDef(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.:-]+$")]
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(msgspec.Struct):
    function: _FunctionDef
    type: Literal["function"] = "function"


class _Named(msgspec.Struct):
    name: str


class _ToolChoice(msgspec.Struct):
    function: _Named
    type: Literal["function"] = "function"


class _JsonSchema(msgspec.Struct):
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _ResponseFormat(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


_Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: _Unit | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=5)] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    user: str | None = None
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    thinking: _Thinking | None = None


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.encode


def _turn(message: _Message) -> Turn:
    content = message.content
    if (
        message.tool_calls is None
        and message.reasoning_content is None
        and (content is None or isinstance(content, str))
    ):  # the common case, kept cheap: the mock is also the load tests' upstream
        return Turn(
            message.role,
            content or "",
            (),
            message.tool_call_id,
            message.name,
            None,
            0,
            message.partial,
        )
    images = 0
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        text = "".join(part.text or "" for part in content if part.type == "text")
        images = sum(1 for part in content if part.type == "image_url")
    calls = tuple(
        CallIn(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
    )
    return Turn(
        role=message.role,
        text=text,
        calls=calls,
        call_id=message.tool_call_id,
        name=message.name,
        reasoning=message.reasoning_content,
        images=images,
        partial=message.partial,
    )


def _spec(chat: ChatRequest, think: bool, max_tokens: int | None) -> Spec:
    spec = Spec(thinking=think, max_tokens=max_tokens, n=chat.n or 1, seed=chat.seed)
    if chat.tools:
        spec.tools = tuple(
            Tool(t.function.name, t.function.description, t.function.parameters) for t in chat.tools
        )
    choice = chat.tool_choice
    if isinstance(choice, _ToolChoice):
        spec.tool_choice, spec.forced_tool = "function", choice.function.name
    elif choice is not None:
        spec.tool_choice = choice
    spec.parallel_tool_calls = chat.parallel_tool_calls is not False
    fmt = chat.response_format
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema is None:
            raise Refusal(
                400,
                "Missing required parameter: 'response_format.json_schema'.",
                param="response_format.json_schema",
            )
        spec.schema = fmt.json_schema.schema
    spec.json_mode = fmt is not None and fmt.type == "json_object"
    if isinstance(chat.stop, str):
        spec.stop = (chat.stop,)
    elif chat.stop:
        spec.stop = tuple(chat.stop)
    spec.logprobs = bool(chat.logprobs)
    if chat.top_logprobs and not spec.logprobs:
        raise Refusal(400, "'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    spec.top_logprobs = chat.top_logprobs or 0
    return spec


def _invalid(message: str) -> web.Response:
    return faults.openai_error(400, "invalid_request_error", message)


def _unauthorized(state: MockState, request: web.Request) -> web.Response | None:
    key = state.config.api_key
    if key is None or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    return faults.openai_error(
        401, "invalid_authentication_error", "Invalid Authentication: missing or bad API key"
    )


def _refused(state: MockState, refusal: Refusal) -> web.Response:
    state.stats.refusals[refusal.code or refusal.param or "invalid_request"] += 1
    return faults.refusal_response(refusal, "openai")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    record(state, request, ENDPOINT, raw)
    refused = _unauthorized(state, request)
    if refused is not None:
        return refused
    try:
        chat = _decode(raw)
    except msgspec.ValidationError as error:
        return _invalid(f"Invalid request: {error}")
    except msgspec.DecodeError as error:
        return _invalid(f"Invalid request: body is not valid JSON ({error})")
    if chat.model not in state.models:
        return faults.openai_error(
            404,
            "resource_not_found_error",
            f"Not found the model {chat.model} or Permission denied",
        )
    caps = state.caps_for(chat.model)
    turns = [_turn(m) for m in chat.messages]
    try:
        asked = None if chat.thinking is None else chat.thinking.type == "enabled"
        think = checks.thinking(caps, chat.model, asked)
        budget = checks.max_tokens(caps, chat.max_tokens, chat.max_completion_tokens)
        spec = _spec(chat, think, budget)
        job = prepare(
            state, request, chat.model, turns, spec, prefill=_prefill(turns, caps.prefill)
        )
        if job.prefill is not None:
            checks.prefill(caps, chat.model)
        if caps.fixed:
            sampling = {
                "temperature": chat.temperature,
                "top_p": chat.top_p,
                "n": chat.n,
                "presence_penalty": chat.presence_penalty,
                "frequency_penalty": chat.frequency_penalty,
            }
            checks.fixed_parameters(caps, sampling, think)
        checks.request(caps, chat.model, job.turns, spec, openai=True, used=job.prompt_tokens)
    except ConfigError as error:
        return _invalid(str(error))
    except Refusal as refusal:
        return _refused(state, refusal)
    await job.wait_latency()
    if job.fault is not None:
        instead = await faults.instead_of_answer(job, "openai", request)
        if instead is not None:
            return instead
    await job.load_model()
    try:
        choices = job.answer("kimi" if caps.family == "kimi" else "openai")
    except Refusal as refusal:
        return _refused(state, refusal)
    include_usage = chat.stream_options is not None and chat.stream_options.include_usage
    if chat.stream:
        return await sse.stream(request, job, choices, include_usage)
    return await _complete(request, job, choices)


def _prefill(turns: list[Turn], mode: str) -> str | None:
    """Moonshot's partial mode always counts; a bare trailing assistant message only where the
    model continues one (vLLM's continue_final_message, DeepSeek's prefix)."""
    found = trailing_prefill(turns, partial_flag=True)
    if found is None and mode == "trailing":
        found = trailing_prefill(turns, partial_flag=False)
    return found


def message(job: Job, choice: Choice) -> dict[str, Any]:
    body: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content_text if choice.content or not choice.calls else None,
    }
    if job.spec.thinking:
        body["reasoning_content"] = choice.reasoning_text
    if choice.calls:
        body["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in choice.calls
        ]
    return body


async def _complete(
    request: web.Request, job: Job, choices: tuple[Choice, ...]
) -> web.StreamResponse:
    await job.wait_first_token()
    await job.wait_generation(sum(c.completion_tokens for c in choices))
    rendered = []
    for choice in choices:
        item: dict[str, Any] = {"index": choice.index, "message": message(job, choice)}
        if job.spec.logprobs:
            item["logprobs"] = {
                "content": openai_logprobs(choice.content, job.spec.top_logprobs),
                "refusal": None,
            }
        item["finish_reason"] = choice.finish_reason
        rendered.append(item)
    body = _encode(
        {
            "id": f"chatcmpl-{job.state.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": job.model,
            "choices": rendered,
            "usage": sse.usage(job, choices),
        }
    )
    return await faults.whole_body(request, job, body, "openai")


def _model(state: MockState, model: str) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": int(state.started),
        "owned_by": "aiorch-mock",
        "context_length": state.caps_for(model).context_window,
    }


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    record(state, request, "/v1/models", b"")
    refused = _unauthorized(state, request)
    if refused is not None:
        return refused
    data = [_model(state, m) for m in state.config.served_models()]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


async def model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["model"]
    record(state, request, f"/v1/models/{name}", b"")
    refused = _unauthorized(state, request)
    if refused is not None:
        return refused
    if name not in state.models:
        return faults.refusal_response(
            Refusal(
                404,
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            ),
            "openai",
        )
    return web.json_response(_model(state, name), dumps=_dumps)


def _dumps(value: Any) -> str:
    return _encode(value).decode()
