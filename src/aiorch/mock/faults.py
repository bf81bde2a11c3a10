"""Injected failures: error bodies in each dialect's shape, and ways to break a connection.

Moonshot errors look like `{"error": {"type", "message"}}`; Ollama errors are `{"error": "..."}`.
Every injected failure carries an `X-Mock-Fault` header (when there are headers at all) and says
"mock fault" in its message, so a log line can never be mistaken for a real outage.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Literal

import msgspec
from aiohttp import web

from aiorch.mock.settings import Behaviour, FaultName

Dialect = Literal["openai", "ollama"]

# fault -> (status, Moonshot error.type, Moonshot message, Ollama status, Ollama message)
_ERRORS: dict[str, tuple[int, str, str, int, str]] = {
    "http_500": (500, "server_error", "internal server error", 500, "internal server error"),
    "http_502": (502, "server_error", "bad gateway", 502, "bad gateway"),
    "http_503": (503, "server_error", "service unavailable", 503, "service unavailable"),
    "rate_limit": (
        429,
        "rate_limit_reached_error",
        "your organization reached max request rate (RPM) limit, please try again later",
        429,
        "too many requests, please try again later",
    ),
    "overloaded": (
        429,
        "engine_overloaded_error",
        "The engine is currently overloaded, please try again later",
        # What Ollama says when its request queue is full.
        503,
        "server busy, please try again.  maximum pending requests exceeded",
    ),
    "quota": (
        429,
        "exceeded_current_quota_error",
        "Your account is suspended, please check your plan and billing details",
        429,
        "you have reached your usage limit, please upgrade or wait for it to reset",
    ),
}
ERROR_FAULTS: frozenset[str] = frozenset(_ERRORS)


def openai_error(status: int, error_type: str, message: str) -> web.Response:
    body = msgspec.json.encode({"error": {"message": message, "type": error_type}})
    return web.Response(status=status, body=body, content_type="application/json")


def ollama_error(status: int, message: str) -> web.Response:
    body = msgspec.json.encode({"error": message})
    return web.Response(status=status, body=body, content_type="application/json")


def error_response(fault: FaultName, dialect: Dialect, behaviour: Behaviour) -> web.Response:
    status, error_type, message, ollama_status, ollama_message = _ERRORS[fault]
    note = f" (mock fault: {fault})"
    if dialect == "openai":
        response = openai_error(status, error_type, message + note)
    else:
        response = ollama_error(ollama_status, ollama_message + note)
    response.headers["X-Mock-Fault"] = fault
    if fault == "rate_limit":
        response.headers["Retry-After"] = str(behaviour.retry_after_s)
    return response


def reset_connection(request: web.Request) -> None:
    """Abort the TCP connection with an RST and no response at all."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close() into an RST, which is what a crashed upstream looks like.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def drop_connection(request: web.Request) -> None:
    """Close the connection after what was written is flushed (a FIN mid-response)."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def hang(request: web.Request, behaviour: Behaviour) -> web.Response:
    """Accept the request and say nothing. The server cancels us when the client goes away;
    if it never does, give up after `hang_max_s` with a reset."""
    await asyncio.sleep(behaviour.hang_max_s)
    reset_connection(request)
    return gone()


def gone() -> web.Response:
    """What a handler returns once it broke its connection on purpose: aiohttp's attempt to
    send it fails quietly, which is what should happen."""
    return web.Response(status=499)


async def instead_of_answer(
    fault: FaultName, dialect: Dialect, request: web.Request, behaviour: Behaviour
) -> web.StreamResponse | None:
    """Act out a fault that replaces the answer; None for those that shape it (malformed, cut,
    slow_first_token), which the dialects render."""
    if fault in ERROR_FAULTS:
        return error_response(fault, dialect, behaviour)
    if fault == "reset":
        reset_connection(request)
        return gone()
    if fault == "hang":
        return await hang(request, behaviour)
    return None


async def whole_body(
    request: web.Request, fault: FaultName | None, body: bytes
) -> web.StreamResponse:
    """A complete JSON answer, or what the `malformed` and `cut` faults make of it."""
    if fault == "malformed":
        # Complete as far as HTTP goes; the JSON inside is cut short.
        truncated = web.Response(body=body[: len(body) // 2], content_type="application/json")
        truncated.headers["X-Mock-Fault"] = "malformed"
        return truncated
    if fault == "cut":
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.headers["X-Mock-Fault"] = "cut"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        drop_connection(request)
        return response
    return web.Response(body=body, content_type="application/json")
