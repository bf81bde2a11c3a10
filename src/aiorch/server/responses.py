"""JSON responses encoded with msgspec, and OpenAI-shaped error responses."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from aiorch.errors import AiorchError, RateLimited, http_status

_encode = msgspec.json.Encoder().encode


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
