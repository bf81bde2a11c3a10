"""The OpenAI/Moonshot stream: `data: {chat.completion.chunk}` events, then `data: [DONE]`.

Per choice: a role delta, then one delta per thinking token (`reasoning_content`), per answer
token (`content`) or per tool-call fragment (index-based `tool_calls` deltas: the first carries
the id and name, the rest pieces of the arguments); choices take turns when `n` > 1. Then each
choice's finish chunk (`delta: {}` and `finish_reason`); the last one carries Moonshot's usage in
`choices[0].usage`; OpenAI's usage chunk follows when `include_usage` is set.

Events are built as bytes around pre-encoded prefixes: this is the load tests' hot path.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from aiorch.mock import faults
from aiorch.mock.answers import Choice
from aiorch.mock.engine import Job
from aiorch.mock.logprobs import entry
from aiorch.mock.streams import Events, play
from aiorch.mock.text import pieces

_encode = msgspec.json.encode
_MALFORMED = b'data: {"id":"chatcmpl-malformed","choices":[{"delta":{"content":"oops\n\n'


def _choice_events(
    prefix: bytes, suffix: bytes, job: Job, choice: Choice
) -> tuple[bytes, list[bytes]]:
    """The role event and the token events of one choice."""
    content_start = prefix + b'{"content":'
    if job.spec.logprobs:
        top = job.spec.top_logprobs
        tokens = [
            content_start
            + _encode(p)
            + b'},"logprobs":{"content":['
            + _encode(entry(p, i, top))
            + b'],"refusal":null}'
            + suffix
            for i, p in enumerate(choice.content)
        ]
    else:
        end = b"}" + suffix
        tokens = [content_start + _encode(p) + end for p in choice.content]
    thinking = prefix + b'{"reasoning_content":'
    events = [thinking + _encode(p) + b"}" + suffix for p in choice.reasoning]
    events += tokens
    for call in choice.calls:
        opening = {
            "tool_calls": [
                {
                    "index": call.index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            ]
        }
        events.append(prefix + _encode(opening) + suffix)
        fragment = prefix + b'{"tool_calls":[{"index":' + str(call.index).encode()
        fragment += b',"function":{"arguments":'
        for piece in _split(call.arguments):
            events.append(fragment + _encode(piece) + b"}}]}" + suffix)
    content = b"null" if choice.calls and not choice.content else b'""'
    role = prefix + b'{"role":"assistant","content":' + content + b"}" + suffix
    return role, events


def _split(arguments: str) -> list[str]:
    """The arguments in whitespace-token pieces whose concatenation is the whole string."""
    return list(pieces(arguments)) or [arguments]


async def stream(
    request: web.Request, job: Job, choices: tuple[Choice, ...], include_usage: bool
) -> web.StreamResponse:
    head = _encode(
        {
            "id": f"chatcmpl-{job.state.next_id()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": job.model,
        }
    )
    tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
    suffix = b',"finish_reason":null}]' + tail
    usage_ = usage(job, choices)

    roles: list[bytes] = []
    per_choice: list[list[bytes]] = []
    finals: list[bytes] = []
    for position, choice in enumerate(choices):
        prefix = b"data: " + head[:-1] + b',"choices":[{"index":' + str(choice.index).encode()
        prefix += b',"delta":'
        role, token_events = _choice_events(prefix, suffix, job, choice)
        roles.append(role)
        per_choice.append(token_events)
        last = position == len(choices) - 1
        finals.append(
            prefix
            + b'{},"finish_reason":'
            + _encode(choice.finish_reason)
            + ((b',"usage":' + _encode(usage_)) if last else b"")
            + b"}]"
            + tail
        )
    tokens = _interleave(per_choice)
    closing = b"".join(finals)
    if include_usage:
        closing += b"data: " + head[:-1] + b',"choices":[],"usage":' + _encode(usage_) + b"}\n\n"
    closing += b"data: [DONE]\n\n"
    events = Events(
        opening=b"".join(roles),
        tokens=tokens,
        closing=closing,
        malformed=_MALFORMED,
        error=_error_event(job),
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    legacy = events.opening + _MALFORMED + b"data: [DONE]\n\n"
    return await play(request, response, job, events, legacy_malformed=legacy)


def _interleave(lists: list[list[bytes]]) -> list[bytes]:
    if len(lists) == 1:
        return lists[0]
    out: list[bytes] = []
    for index in range(max((len(x) for x in lists), default=0)):
        out.extend(x[index] for x in lists if index < len(x))
    return out


def usage(job: Job, choices: tuple[Choice, ...]) -> dict[str, Any]:
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(len(c.reasoning) for c in choices)},
    }


def _error_event(job: Job) -> bytes:
    body = faults.stream_error_body("openai")
    return b"data: " + _encode(body) + b"\n\n"
