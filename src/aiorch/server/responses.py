"""JSON responses encoded with msgspec, OpenAI-shaped error responses, and the headers that say
how an answer came to be."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from aiorch.answer import Answer
from aiorch.errors import AiorchError, RateLimited, http_status
from aiorch.pipeline import Head

_encode = msgspec.json.Encoder().encode
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_HEADER = 1000  # characters of one descriptive header value


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encode(content)


def error_response(error: AiorchError) -> JSON:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, RateLimited) or (
        retry_after is not None and http_status(error) in (429, 503)
    ):
        headers["Retry-After"] = str(max(1, round(retry_after or 1)))
    return JSON(error.to_dict(), status_code=http_status(error), headers=headers)


def answer_headers(answer: Head | Answer) -> dict[str, str]:
    """Who answered and why, readable without parsing the body (and before a stream's end)."""
    if isinstance(answer, Head):
        service, selected, cached = answer.service, answer.selected, answer.cached
        adjustments = answer.adjustments
    else:
        service, selected, cached = answer.service, answer.selected, answer.cached
        adjustments = answer.adjustments
    headers = {
        "X-Aiorch-Model": _safe(answer.model),
        "X-Aiorch-Service": service,
        "X-Aiorch-Route": f"{answer.query_type.value} -> {selected}",
        "X-Aiorch-Cache": "hit" if cached else "miss",
    }
    if answer.routing:
        headers["X-Aiorch-Routing"] = _safe(answer.routing)
    if answer.fallback is not None:
        f = answer.fallback
        headers["X-Aiorch-Fallback"] = f"{f.from_service} -> {f.to_service} ({f.reason})"
    if adjustments:
        headers["X-Aiorch-Adjusted"] = _safe("; ".join(adjustments))
    return headers


def _safe(text: str) -> str:
    """A header value: printable ASCII, bounded."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= MAX_HEADER else clean[:MAX_HEADER] + "..."
