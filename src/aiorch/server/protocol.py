"""uvicorn's httptools protocol with the limits it lacks, enforced before any handler runs.

httptools (llhttp) puts no bound on a request's head: one 64 MB header line cost 4 s of CPU (each
read is appended to the header so far) and 64 MB of memory, while every other client on the
worker waited. Nor does uvicorn bound the time a head may take, or the number of connections: a
client sending one header line every few seconds held its connection (and a file descriptor)
for ever. So, per connection:

- the head (request line and headers) may be at most `max_header_bytes`; bytes are counted as
  they are read and never handed to the parser past the limit, so an oversized head costs no
  more than `max_header_bytes` of parsing; answered 431;
- at most `max_headers` header lines; answered 431;
- the head must arrive within `header_timeout` seconds of the connection opening or of the
  request's first byte (a connection that stays silent is closed; one that started a request is
  answered 408);
- at most `max_connections` connections at once per worker; the next is answered 503 and closed,
  with a warning in the log when the limit is first reached and every few seconds while it holds;
- a response sent before the request's body was read whole:
  - one that refuses the body (a body deadline, a body too large: the app marks the scope with
    `BODY_REFUSED`) ends the connection: our side is shut at once (the client sees the
    response, then the end), what the client still sends is read and dropped for at most
    `LINGER` seconds, then it is closed, so a client cannot keep the connection by trickling
    the rest of the body. (Closing at once could reset the connection before the client read
    the response.)
  - any other (a 401 or a 429 answered before the body arrived) keeps the connection, as its
    response promised: the rest of the body is dropped as it arrives, and the next request on
    the connection is served. The rest must arrive within `DRAIN` seconds, or the connection is
    ended as above.

Why a subclass of uvicorn's httptools protocol rather than h11 (which has a head size limit,
`h11_max_incomplete_event_size`): h11 parses in Python and costs more CPU per request; the
figures are in docs/security.md. The cost here is a comparison per read and a timer per request.

The limits reach each connection through `ServerConfig`, uvicorn's `Config` with them attached
(it is pickled to each worker process, so the limits are plain data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from aiorch.errors import AiorchError, RequestError

log = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between warnings while the connection limit holds
LINGER = 2.0  # seconds to drop a refused body's remaining bytes before closing
DRAIN = 5.0  # seconds the rest of a body answered early (not refused) may take to arrive
# Scope key set by the app when its response refuses the request's body (408, 413).
BODY_REFUSED = "aiorch.body_refused"
_encode = msgspec.json.Encoder().encode


class HeadersTooLarge(RequestError):
    status_code = 431


class HeaderTimeout(RequestError):
    status_code = 408


class TooManyConnections(AiorchError):
    status_code = 503
    error_type = "overloaded"


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections: int = 1000


class ConnectionCap:
    """Counts connections refused at the limit and says so in the log, without flooding it."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._refused = 0
        self._logged_at: float | None = None

    def refused(self) -> None:
        self._refused += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            log.warning(
                "connection limit reached: %d connections open (server.max_connections); "
                "refused %d new connection(s) with 503 since the last warning",
                self.limit,
                self._refused,
            )
            self._logged_at, self._refused = now, 0


class ServerConfig(uvicorn.Config):
    """uvicorn's `Config` serving over `LimitedHttpToolsProtocol` with these `limits`."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, **kwargs)
        self.limits = limits
        self.cap = ConnectionCap(limits.max_connections)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if isinstance(config, ServerConfig):
            self.limits, self.cap = config.limits, config.cap
        else:  # uvicorn.run(..., http=LimitedHttpToolsProtocol): the defaults
            self.limits = ConnectionLimits()
            self.cap = ConnectionCap(self.limits.max_connections)
        self._in_head = True  # reading a request line and headers, or waiting for one
        self._in_body = False  # headers read, body not yet whole
        self._started = False  # the current head has its first byte
        self._room = self.limits.max_header_bytes  # bytes the current head may still take
        self._messages = 0
        self._head_deadline = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: RequestError | None = None
        self._lingering = False
        self._drain_timer: asyncio.TimerHandle | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.cap.refused()
            self._respond_and_close(TooManyConnections("too many connections; retry shortly"))
            return
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_drain_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a body already answered: dropped unparsed
        if not self._in_head:
            self._unset_keepalive_if_required()
            self._feed(data)
            return
        room = self._room
        if len(data) <= room:
            messages = self._messages
            self._unset_keepalive_if_required()
            self._feed(data)
            if self._in_head and self._messages == messages:
                self._room = room - len(data)
            # A head that began inside this read, after the end of a pipelined request, is
            # counted from the next read on: it may exceed the limit by at most one read.
            return
        # More than the head may still take: parse only what fits, then judge.
        self._unset_keepalive_if_required()
        self._feed(data[:room])
        if self.transport.is_closing():
            return
        if self._reading_head():  # the limit's worth of bytes, and still no end of the head
            limit = self.limits.max_header_bytes
            self._refuse(HeadersTooLarge(f"request headers exceed {limit} bytes"))
            return
        self.data_received(data[room:])

    def _reading_head(self) -> bool:
        return self._in_head

    def _feed(self, data: bytes) -> None:
        # uvicorn's data_received, with our refusals told apart from malformed requests.
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)

    # Parser callbacks

    # The head deadline is lazy: each request only notes its deadline, and one timer per
    # connection, re-armed when it finds a later deadline, does the checking. Arming and
    # cancelling a timer per request cost more than all the other limits together.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._in_head, self._started = True, True
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def on_headers_complete(self) -> None:
        # Counted here, not per header (a call per header costs on every request): the byte
        # limit already bounds how many headers can be parsed before this check.
        if len(self.headers) > self.limits.max_headers:
            limit = self.limits.max_headers
            self._refusal = HeadersTooLarge(f"a request may have at most {limit} headers")
            raise self._refusal  # stops the parser; _feed answers it
        self._in_head, self._in_body, self._started = False, True, False
        # When the request was ready for the app: its wait for the handler is the `queue` phase.
        self.scope["aiorch.received"] = time.perf_counter()  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_drain_timer()
        self._in_head, self._room = True, self.limits.max_header_bytes
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._in_body and not self.transport.is_closing():
            # Answered before the body was read whole.
            if self.scope.get(BODY_REFUSED):  # its deadline passed, it was too large
                self._end_connection()
            else:  # uvicorn drops the rest as it arrives; it has DRAIN seconds to
                self._drain_timer = self.loop.call_later(DRAIN, self._drain_timed_out)
        super().on_response_complete()

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        if self._in_body and not self.transport.is_closing():
            self._end_connection()

    def _end_connection(self) -> None:
        """Shut our side, drop what the client still sends for LINGER seconds, then close:
        parsing the rest would only let a trickling client keep the connection."""
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    # Refusals

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_drain_timer(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # the next request's first byte arms it again
        if self._started and self.loop.time() < self._head_deadline:
            # A later request's head, with its own deadline.
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)
            return
        if not self._started:
            if self._messages == 0:
                self.transport.close()  # connected and never said a word: nothing to answer
            return  # idle between requests: uvicorn's keep-alive timeout is in charge
        seconds = self.limits.header_timeout
        self._refuse(HeaderTimeout(f"request headers did not arrive within {seconds:g} s"))

    def _refuse(self, error: RequestError) -> None:
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        self.logger.info("refused a request from %s: %s", peer, error.message)
        self._respond_and_close(error)

    def _respond_and_close(self, error: AiorchError) -> None:
        self._in_head = False
        self._cancel_head_timer()
        body = _encode(error.to_dict())
        status = error.status_code
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


__all__ = ["BODY_REFUSED", "ConnectionLimits", "LimitedHttpToolsProtocol", "ServerConfig"]
