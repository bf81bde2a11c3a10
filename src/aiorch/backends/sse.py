"""Server-sent events from a byte stream: the one SSE decoder of the package.

Incremental: `feed` takes the body's chunks as they arrive, cut anywhere (inside a line, between
a CR and its LF), and yields the events they complete, one by one. It follows the WHATWG
event-stream format (lines end in CRLF, LF or CR; `field: value`, one leading space dropped;
`data` lines of one event joined with LF; a blank line dispatches; comments start with ':'),
with two deliberate differences, both for upstreams rather than browsers:

- at the end of the stream (`close`), an event still pending is dispatched instead of dropped, so
  a last `data: [DONE]` without its blank line still counts;
- data stays bytes (JSON payloads go straight to msgspec); field names and `event` are decoded
  as UTF-8 with replacement.

A line or an event longer than its limit raises `StreamFormatError`: a hostile or broken upstream
must not make us buffer without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator

import msgspec

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 16 * 1024 * 1024


class StreamFormatError(ValueError):
    """The stream breaks its format's limits (a line or an event too long)."""


class Event(msgspec.Struct, frozen=True):
    data: bytes
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    def __init__(
        self, *, max_line_bytes: int = MAX_LINE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        # An unfinished line, in pieces: joined once it ends (appending to one bytes object as
        # chunks arrive would copy it again for each chunk).
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._skip_lf = False  # the last chunk ended in CR: an LF first in the next is its pair
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[Event]:
        if not chunk:
            return  # nothing, and a CR waiting for its LF must go on waiting
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        start = 0
        # The next CR and LF, each searched again only once passed (searching both from every
        # line's start would rescan a chunk without CRs once per line).
        cr, lf = chunk.find(b"\r"), chunk.find(b"\n")
        while cr >= 0 or lf >= 0:
            if 0 <= cr < start:
                cr = chunk.find(b"\r", start)
            if 0 <= lf < start:
                lf = chunk.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or 0 <= lf < cr else cr
            line = chunk[start:end]
            if self._parts:
                line = b"".join((*self._parts, line))
                self._parts, self._parts_size = [], 0
            self._check_line(len(line))
            start = end + 1
            if chunk[end : end + 1] == b"\r":
                if end + 1 == len(chunk):
                    self._skip_lf = True
                elif chunk[end + 1 : end + 2] == b"\n":
                    start += 1
            event = self._line(line)
            if event is not None:
                yield event
        if start < len(chunk):
            self._parts.append(chunk[start:])
            self._parts_size += len(chunk) - start
            self._check_line(self._parts_size)

    def close(self) -> Iterator[Event]:
        """The end of the stream: a last line without its end, and a pending event."""
        if self._parts:
            yield from self.feed(b"\n")
        if self._data:
            yield self._dispatch()

    def _check_line(self, size: int) -> None:
        if size > self.max_line_bytes:
            raise StreamFormatError(f"an event-stream line is over {self.max_line_bytes} bytes")

    def _line(self, line: bytes) -> Event | None:
        if not line:
            if self._data:
                return self._dispatch()
            self._reset()  # a blank line without data: no event, and the name is forgotten
            return None
        if line[:1] == b":":
            return None  # a comment (keep-alive pings)
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1
            if self._size > self.max_event_bytes:
                raise StreamFormatError(f"an event is over {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        return None  # "retry" and unknown fields are ignored, as the format says

    def _dispatch(self) -> Event:
        event = Event(b"\n".join(self._data), self._event or "message", self._id)
        self._reset()
        return event

    def _reset(self) -> None:
        self._data, self._size, self._event = [], 0, ""


async def events(
    chunks: AsyncIterable[bytes], decoder: SSEDecoder | None = None
) -> AsyncIterator[Event]:
    """The events of a streamed body, as its chunks arrive (`response.content.iter_any()`)."""
    decoder = decoder or SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event


__all__ = ["Event", "SSEDecoder", "StreamFormatError", "events"]
