"""Newline-delimited JSON from a byte stream (Ollama's native streaming), decoded into a type.

Incremental like the SSE decoder: `feed` takes chunks cut anywhere and yields the objects of the
lines they complete, one by one (a good line before a broken one in the same chunk still comes
out first); blank lines (and a CR before the LF) are skipped; `close` decodes a last line that
has no newline. A malformed line raises msgspec's error (the transport reports it
as a malformed response); a line longer than its limit raises `StreamFormatError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Generic, TypeVar

import msgspec

from aiorch.backends.sse import MAX_LINE_BYTES, StreamFormatError

T = TypeVar("T")


class NDJSONDecoder(Generic[T]):
    def __init__(self, kind: type[T], *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._decode = msgspec.json.Decoder(kind).decode
        self.max_line_bytes = max_line_bytes
        self._parts: list[bytes] = []  # an unfinished line, joined once it ends
        self._parts_size = 0

    def feed(self, chunk: bytes) -> Iterator[T]:
        for line in self.feed_lines(chunk):
            yield self._decode(line)

    def feed_lines(self, chunk: bytes) -> Iterator[bytes]:
        """The non-blank lines `chunk` completes, undecoded (a caller that skips a bad line)."""
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line = chunk[start:end]
            if self._parts:
                line = b"".join((*self._parts, line))
                self._parts, self._parts_size = [], 0
            if len(line) > self.max_line_bytes:
                raise StreamFormatError(f"an NDJSON line is over {self.max_line_bytes} bytes")
            start = end + 1
            line = line.strip()
            if line:
                yield line
        if start < len(chunk):
            self._parts.append(chunk[start:])
            self._parts_size += len(chunk) - start
            if self._parts_size > self.max_line_bytes:
                raise StreamFormatError(f"an NDJSON line is over {self.max_line_bytes} bytes")

    def close(self) -> Iterator[T]:
        """The end of the stream: a last line without its newline."""
        if self._parts:
            yield from self.feed(b"\n")

    def close_lines(self) -> Iterator[bytes]:
        if self._parts:
            yield from self.feed_lines(b"\n")


async def objects(chunks: AsyncIterable[bytes], decoder: NDJSONDecoder[T]) -> AsyncIterator[T]:
    """The objects of a streamed body, as its chunks arrive (`response.content.iter_any()`)."""
    async for chunk in chunks:
        for item in decoder.feed(chunk):
            yield item
    for item in decoder.close():
        yield item


async def lines(
    chunks: AsyncIterable[bytes], max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[bytes]:
    """The non-blank lines of a streamed body, undecoded, as its chunks arrive."""
    decoder: NDJSONDecoder[object] = NDJSONDecoder(object, max_line_bytes=max_line_bytes)
    async for chunk in chunks:
        for line in decoder.feed_lines(chunk):
            yield line
    for line in decoder.close_lines():
        yield line


__all__ = ["NDJSONDecoder", "lines", "objects"]
