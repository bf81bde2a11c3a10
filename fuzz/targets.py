"""The fuzz targets: one function per parser, each taking the fuzzer's bytes.

Each raises only on a bug: an exception the parser is not allowed to raise, or two ways of
reading the same bytes that disagree. The allowed exceptions are the parsers' documented
refusals (a `RequestError` for a request body; msgspec's errors and `StreamFormatError` for a
stream), which the service turns into a 4xx or a `BackendProtocolError`.

No atheris import here: tests/unit/test_fuzz_corpus.py replays the committed corpus (every crash
found becomes a file there) through these functions in the ordinary test run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from aiorch.backends.ndjson import NDJSONDecoder
from aiorch.backends.sse import Event, SSEDecoder, StreamFormatError
from aiorch.errors import RequestError
from aiorch.server.schemas import QueryBody, decode, decode_chat

STREAM_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, StreamFormatError)
# Small limits, so that the fuzzer reaches them with short inputs.
SSE_LIMITS = {"max_line_bytes": 512, "max_event_bytes": 2048}
NDJSON_LIMITS = {"max_line_bytes": 512}


def request(data: bytes) -> None:
    """Both request bodies: decoded, or refused with a RequestError; nothing else."""
    with contextlib.suppress(RequestError):
        decode(data, QueryBody)
    with contextlib.suppress(RequestError):
        decode_chat(data)


def _cuts(data: bytes) -> tuple[bytes, list[bytes]]:
    """The first byte says how to cut the rest into chunks (every 1 to 17 bytes; with its top
    bit set, an empty chunk after each): the same bytes, cut differently."""
    if not data:
        return b"", []
    step, body = data[0] % 17 + 1, data[1:]
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    if data[0] & 0x80:
        chunks = [piece for chunk in chunks for piece in (chunk, b"")]
    return body, chunks


def _outcome(read: Callable[[], Iterator[Any]]) -> tuple[list[Any], str | None]:
    """What a reading yields, and the kind of refusal it ends with (if any)."""
    items: list[Any] = []
    try:
        for item in read():
            items.append(item)
    except STREAM_ERRORS as error:
        return items, type(error).__name__
    return items, None


def sse(data: bytes) -> None:
    """Events of a stream read whole and read in chunks: the same, or the same refusal."""
    body, chunks = _cuts(data)

    def whole() -> Iterator[Event]:
        decoder = SSEDecoder(**SSE_LIMITS)
        yield from decoder.feed(body)
        yield from decoder.close()

    def pieces() -> Iterator[Event]:
        decoder = SSEDecoder(**SSE_LIMITS)
        for chunk in chunks:
            yield from decoder.feed(chunk)
        yield from decoder.close()

    one, many = _outcome(whole), _outcome(pieces)
    if one != many:
        raise AssertionError(f"whole {one!r} != in chunks {many!r}")


def ndjson(data: bytes) -> None:
    """Objects of a stream read whole and read in chunks: the same, or the same refusal."""
    body, chunks = _cuts(data)

    def whole() -> Iterator[Any]:
        decoder = NDJSONDecoder(dict[str, Any], **NDJSON_LIMITS)
        yield from decoder.feed(body)
        yield from decoder.close()

    def pieces() -> Iterator[Any]:
        decoder = NDJSONDecoder(dict[str, Any], **NDJSON_LIMITS)
        for chunk in chunks:
            yield from decoder.feed(chunk)
        yield from decoder.close()

    one, many = _outcome(whole), _outcome(pieces)
    if one != many:
        raise AssertionError(f"whole {one!r} != in chunks {many!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {"request": request, "sse": sse, "ndjson": ndjson}
