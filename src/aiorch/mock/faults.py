"""Injected failures: error bodies in each dialect's shape, and ways to break a connection.

Moonshot errors look like `{"error": {"type", "message"}}`; Ollama errors are `{"error": "..."}`.
Every injected failure carries an `X-Mock-Fault` header (when there are headers at all) and says
"mock fault" in its message, so a log line can never be mistaken for a real outage.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING, Literal

import msgspec
from aiohttp import web

from aiorch.mock.checks import context_refusal, prefill_refusal
from aiorch.mock.conversation import Refusal
from aiorch.mock.settings import Behaviour, FaultName

if TYPE_CHECKING:
    from aiorch.mock.engine import Job

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


def refusal_response(refusal: Refusal, dialect: Dialect) -> web.Response:
    if dialect == "openai":
        body = msgspec.json.encode(refusal.openai_body())
    else:
        body = msgspec.json.encode({"error": refusal.ollama})
    return web.Response(status=refusal.status, body=body, content_type="application/json")


def _request_fault(fault: FaultName, job: Job) -> Refusal | None:
    """The faults that are the model's 400s: content policy, context length, prefill refused."""
    note = f" (mock fault: {fault})"
    if fault == "content_filter":
        return Refusal(
            400,
            "The request was rejected because it was considered high risk" + note,
            error_type="content_filter",
            param="prompt",
            code="content_filter",
            ollama="the request was rejected because it was considered high risk" + note,
        )
    if fault == "context_length":
        refusal = context_refusal(
            job.caps.context_window, f"your messages resulted in {job.prompt_tokens} tokens"
        )
        refusal.message += note
        refusal.ollama += note
        return refusal
    if fault == "prefill_refused" and job.prefill is not None:
        refusal = prefill_refusal(job.model)
        refusal.message += note
        refusal.ollama += note
        return refusal
    return None


def stream_error_body(dialect: Dialect) -> dict[str, object]:
    message = "an error occurred while generating the response (mock fault: stream_error)"
    if dialect == "openai":
        return {"error": {"message": message, "type": "server_error", "code": None}}
    return {"error": message}


async def instead_of_answer(
    job: Job, dialect: Dialect, request: web.Request
) -> web.StreamResponse | None:
    """Act out a fault that replaces the answer; None for those that shape it (malformed, cut,
    stall, stream errors, slow_first_token), which the dialects render."""
    fault = job.fault
    assert fault is not None
    if fault == "down":
        fault = job.behaviour.down_fault
        if fault == "down":
            fault = "http_503"
    if fault in ERROR_FAULTS:
        response = error_response(fault, dialect, job.behaviour)
        response.headers["X-Mock-Fault"] = job.fault or fault
        return response
    refusal = _request_fault(fault, job)
    if refusal is not None:
        response = refusal_response(refusal, dialect)
        response.headers["X-Mock-Fault"] = fault
        return response
    if fault == "reset":
        reset_connection(request)
        return gone()
    if fault == "hang":
        return await hang(request, job.behaviour)
    return None


async def whole_body(
    request: web.Request, job: Job, body: bytes, dialect: Dialect
) -> web.StreamResponse:
    """A complete JSON answer, or what the faults that shape a stream make of a plain one."""
    fault = job.fault
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
    if fault == "stall":
        await asyncio.sleep(job.behaviour.stall_ms / 1000)
    if fault == "stream_error":
        status = 500
        error = msgspec.json.encode(stream_error_body(dialect))
        return web.Response(status=status, body=error, content_type="application/json")
    return web.Response(body=body, content_type="application/json")
