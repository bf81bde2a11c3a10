"""The SSE and NDJSON decoders the backends read streams with: the format's rules, limits, and
the same events however the body is cut into chunks (also the fuzzers' property, fuzz/)."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiorch.backends.ndjson import NDJSONDecoder
from aiorch.backends.sse import Event, SSEDecoder, StreamFormatError


def sse(*chunks: bytes, **limits: int) -> list[Event]:
    decoder = SSEDecoder(**limits)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + list(decoder.close())


def test_events_as_openai_streams_send_them() -> None:
    body = b'data: {"a":1}\n\n: keep-alive\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'

    assert [e.data for e in sse(body)] == [b'{"a":1}', b'{"a":2}', b"[DONE]"]


def test_fields_names_multiline_data_and_line_endings() -> None:
    body = b"event: error\r\nid: 7\r\ndata: one\rdata:two\ndata\n\nretry: 5\nunknown: x\n\n"

    (event,) = sse(body)

    assert event == Event(b"one\ntwo\n", "error", "7")


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    assert [e.data for e in sse(b"data: [DONE]")] == [b"[DONE]"]
    assert [e.data for e in sse(b"data: [DONE]\n")] == [b"[DONE]"]


def test_a_blank_line_without_data_dispatches_nothing_and_forgets_the_name() -> None:
    events = sse(b"event: x\n\ndata: y\n\n")

    assert events == [Event(b"y")]


def test_lines_and_events_over_their_limits_are_refused() -> None:
    with pytest.raises(StreamFormatError):
        sse(b"data: " + b"x" * 100, max_line_bytes=64)
    with pytest.raises(StreamFormatError):
        sse(b"data: " + b"x" * 30, b"x" * 60, max_line_bytes=64)  # an unfinished line
    with pytest.raises(StreamFormatError):
        sse(b"data: xxxxxxxx\n" * 20 + b"\n", max_event_bytes=64)


SSE_BODY = (
    b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9"}}]}\r\n\r\n'
    b": ping\r\r"
    b"event: done\ndata: a\ndata: b\n\n"
    b"data: [DONE]\n\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(SSE_BODY)), max_size=8))
def test_sse_events_do_not_depend_on_where_the_body_is_cut(cuts: list[int]) -> None:
    points = sorted({0, *cuts, len(SSE_BODY)})
    chunks = [SSE_BODY[a:b] for a, b in itertools.pairwise(points)]

    assert sse(*chunks) == sse(SSE_BODY)


def test_an_empty_chunk_between_a_cr_and_its_lf_changes_nothing() -> None:
    assert sse(b"data: a\r", b"", b"\ndata: b\n\n") == [Event(b"a\nb")]


def test_every_single_byte_cut_too() -> None:
    whole = sse(SSE_BODY)
    assert sse(*(SSE_BODY[i : i + 1] for i in range(len(SSE_BODY)))) == whole
    assert len(whole) == 3


def ndjson(*chunks: bytes, **limits: int) -> list[dict[str, Any]]:
    decoder = NDJSONDecoder(dict[str, Any], **limits)
    items = [item for chunk in chunks for item in decoder.feed(chunk)]
    return items + list(decoder.close())


NDJSON_BODY = b'{"message":{"content":"a"}}\r\n\n  \n{"done":true,"eval_count":3}'


@given(st.lists(st.integers(min_value=0, max_value=len(NDJSON_BODY)), max_size=8))
def test_ndjson_objects_do_not_depend_on_where_the_body_is_cut(cuts: list[int]) -> None:
    points = sorted({0, *cuts, len(NDJSON_BODY)})
    chunks = [NDJSON_BODY[a:b] for a, b in itertools.pairwise(points)]

    assert ndjson(*chunks) == [{"message": {"content": "a"}}, {"done": True, "eval_count": 3}]


def test_a_good_line_comes_out_before_a_broken_one_in_the_same_chunk() -> None:
    decoder = NDJSONDecoder(dict[str, Any])
    lines = decoder.feed(b'{"ok":1}\n{"broken\n')

    assert next(lines) == {"ok": 1}
    with pytest.raises(msgspec.DecodeError):
        next(lines)


def test_an_ndjson_line_over_its_limit_is_refused() -> None:
    with pytest.raises(StreamFormatError):
        ndjson(b'{"a":"' + b"x" * 100 + b'"}\n', max_line_bytes=64)
    with pytest.raises(StreamFormatError):
        ndjson(b'{"a":"' + b"x" * 40, b"x" * 40, max_line_bytes=64)
