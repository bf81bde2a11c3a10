"""Server-sent events: framing and the error event that ends a failed stream."""

from __future__ import annotations

import msgspec

from aiorch.errors import AiorchError

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


def event(data: object, name: str | None = None) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + _encode(data) + b"\n\n"


def error_event(error: AiorchError, name: str | None = None) -> bytes:
    """An explicit error in the stream: the client never mistakes a failure for a short answer."""
    return event(error.to_dict(), name)


def internal_error(request_id: str) -> AiorchError:
    return AiorchError(f"internal error while streaming (request {request_id})")
