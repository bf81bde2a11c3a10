"""The baseline row: the least a Python gateway on aiorch's stack can do per request.

Raw ASGI (no framework) on uvicorn with uvloop and httptools, one pooled aiohttp client session,
no parsing. It is what aiorch's CPU per request is compared with (issue 19):

- `POST /v1/chat/completions`: the request body is sent as is to the upstream's same path; the
  upstream's status, content type and bytes come back. A streamed answer (`text/event-stream`) is
  passed on chunk by chunk as it arrives; any other answer is read whole and sent in one message.
- `POST /api/ai/query` (`{"query": "<text>"}` and nothing else): the JSON string literal after
  the first colon is spliced, as bytes, into a chat body for one fixed model and sent to the
  upstream's `/v1/chat/completions`; the upstream's chat completion comes back unchanged. No JSON
  is decoded or encoded; this is a byte template, not a translation.

Anything else is 404. The upstream's API key is added to every call, as a gateway would.

    python -m benchmarks.overhead.forwarder --port 8100 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import click
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHAT_PATH = "/v1/chat/completions"
QUERY_PATH = "/api/ai/query"
# The same connection limit as an aiorch service's default (`max_connections`).
POOL_LIMIT = 256


class Forwarder:
    """An ASGI app that forwards to one upstream; the client session lives for the lifespan."""

    def __init__(self, upstream: str, api_key: str, model: str) -> None:
        self.chat_url = upstream.rstrip("/") + CHAT_PATH
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        self.query_prefix = (
            b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":'
        )
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=POOL_LIMIT, keepalive_timeout=30),
                    headers=self.headers,
                    skip_auto_headers=("User-Agent",),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["method"] == "GET" and path == "/healthz":
            await _respond(send, 200, b"text/plain", b"ok")
            return
        if scope["method"] != "POST" or path not in (CHAT_PATH, QUERY_PATH):
            await _respond(send, 404, b"text/plain", b"not found")
            return
        body = await _read_body(receive)
        if path == QUERY_PATH:
            body = self._chat_body(body)
            if not body:
                await _respond(send, 400, b"text/plain", b'expected {"query": "..."}')
                return
        assert self.session is not None
        async with self.session.post(self.chat_url, data=body) as upstream:
            kind = upstream.headers.get("Content-Type", "application/json").encode()
            if kind.startswith(b"text/event-stream"):
                await send(_start(upstream.status, kind, None))
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            data = await upstream.read()
        await _respond(send, upstream.status, kind, data)

    def _chat_body(self, query_body: bytes) -> bytes:
        """`{"query": <string>}` -> a chat body with that string literal as the user's content."""
        colon, end = query_body.find(b":"), query_body.rfind(b"}")
        if colon < 0 or end < colon:
            return b""
        return self.query_prefix + query_body[colon + 1 : end].strip() + b'}],"stream":false}'


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _start(status: int, kind: bytes, length: int | None) -> Message:
    headers = [(b"content-type", kind)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _respond(send: Send, status: int, kind: bytes, body: bytes) -> None:
    await send(_start(status, kind, len(body)))
    await send({"type": "http.response.body", "body": body})


@click.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, required=True)
@click.option("--upstream", required=True, help="Base URL of the upstream (no /v1).")
@click.option("--api-key", default="", help="Sent to the upstream as a Bearer key.")
@click.option("--model", default="qwen3-coder:30b", help="The model of /api/ai/query calls.")
def main(host: str, port: int, upstream: str, api_key: str, model: str) -> None:
    """Run the bare forwarder (one worker, uvloop, httptools, no access log)."""
    uvicorn.run(
        Forwarder(upstream, api_key, model),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
