"""A minimal keep-alive HTTP/1.1 client for the load generator: asyncio protocols and httptools.

aiohttp's client costs a few hundred microseconds of CPU per request, which on a 2-core machine
shared with the server and the mock makes the generator the bottleneck long before the gateway.
This client does only what the benchmark needs: POST a prepared body on a pooled connection and
read the status and the whole body. It is not a general HTTP client (no redirects, no TLS, no
chunked request bodies).
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import httptools


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"bad response: {error}"))
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        # Asked here: once the parser has moved on to the next message it no longer knows.
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed before the response ended"))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    async def exchange(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


# Servers close idle keep-alive connections (uvicorn after 5 s). A request written on one that
# the server is closing at that moment fails through no fault of the server; retire them first.
MAX_IDLE = 3.0


class FastPool:
    """Up to `limit` keep-alive connections to one host; `post` returns the status code."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._all: set[_Connection] = set()

    async def post(self, path: str, headers: bytes, body: bytes) -> int:
        raw = (
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.host.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n"
            + headers
            + b"\r\n"
            + body
        )
        async with self._slots:
            conn = await self._connection()
            try:
                status = await conn.exchange(raw)
            except BaseException:
                if conn.transport is not None:
                    conn.transport.close()
                self._all.discard(conn)
                raise
            if conn.closed or not conn.keep_alive:
                self._all.discard(conn)
                if conn.transport is not None:
                    conn.transport.close()
            else:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            return status

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < MAX_IDLE:
                return conn
            self._all.discard(conn)
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(conn)
        return conn

    async def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


def header_block(headers: dict[str, str]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
