"""Hostile and broken input: never a 500, always a JSON error saying what is wrong, no new labels.

Malformed JSON, wrong types, huge bodies, empty and enormous queries, invalid enums and models,
odd unicode, header injection and slow clients, against a service with a real upstream (the
mock) so that anything that slips through validation meets real HTTP on the other side.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiorch.errors import ERROR_TYPES
from aiorch.monitoring.initial import FLOW_STATUSES
from aiorch.server.middleware import METHODS, ROUTES
from aiorch.timing import PHASES
from aiorch.types import AgentType, Mode, QueryType, Status, TokenType
from tests.integration.reliability_support import (
    DEFAULT_TOML,
    KIMI_MODEL,
    QWEN_MODEL,
    aiorch_service,
    label_values,
    mock_upstream,
)
from tests.integration.service_support import Service as Running
from tests.integration.service_support import unique

MARK = "zz-hostile"  # in every hostile value, so that a leak into a label is easy to spot
BODY_TIMEOUT_S = 1.5
BAD_TOML = DEFAULT_TOML + f"[server]\nbody_timeout_seconds = {BODY_TIMEOUT_S}\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("bad-input")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(tmp, mock, toml=BAD_TOML, name="bad-input") as running,
    ):
        # One good request first, so that "before" already has the labels of normal traffic.
        assert running.query({"query": "warm up", "query_type": "code"}).status_code == 200
        yield running


@pytest.fixture(scope="module")
def labels_before(service: Running) -> set[tuple[str, str, str]]:
    return label_values(service.metrics())


UNCHECKED = object()


@dataclass(frozen=True)
class Bad:
    name: str
    path: str
    content: bytes
    status: int
    says: str  # a regex our part of the error message must match: it says what is wrong
    headers: tuple[tuple[str, str], ...] = ()
    # The field the error names (`error.param`); not compared when left UNCHECKED.
    param: object = UNCHECKED  # str, None, or UNCHECKED


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


INVALID = r"^invalid request body"  # our words before msgspec's account of the wrong shape
Q = "/api/ai/query"
C = "/v1/chat/completions"
HUGE = 1024 * 1024 + 1  # just over the default body limit

CASES = [
    Bad("malformed-json", Q, b'{"query": "x",', 400, r"not valid JSON"),
    Bad("not-json", Q, b"query=hello", 400, r"not valid JSON"),
    Bad("empty-body", Q, b"", 400, r"empty"),
    # Wrong shapes: our words, and the field named in `param` (msgspec's own text follows ours).
    Bad("array-body", Q, b"[1, 2]", 422, INVALID, param=None),
    Bad("null-body", Q, b"null", 422, INVALID, param=None),
    Bad("missing-query", Q, js({"query_type": "code"}), 422, INVALID, param="query"),
    Bad("query-int", Q, js({"query": 42}), 422, INVALID, param="query"),
    Bad("query-list", Q, js({"query": ["a"]}), 422, INVALID, param="query"),
    Bad("stream-string", Q, js({"query": "x", "stream": "yes"}), 422, INVALID, param="stream"),
    Bad(
        "max-tokens-string",
        Q,
        js({"query": "x", "max_tokens": "9"}),
        422,
        INVALID,
        param="max_tokens",
    ),
    Bad("max-tokens-zero", Q, js({"query": "x", "max_tokens": 0}), 400, r"max_tokens"),
    Bad("max-tokens-huge", Q, js({"query": "x", "max_tokens": 10**15}), 400, r"max_tokens"),
    Bad("temperature-hot", Q, js({"query": "x", "temperature": 9}), 400, r"temperature"),
    Bad("temperature-nan", Q, b'{"query": "x", "temperature": NaN}', 400, r"not valid JSON"),
    Bad("unknown-field", Q, js({"query": "x", f"{MARK}": 1}), 422, INVALID, param=MARK),
    Bad("empty-query", Q, js({"query": ""}), 400, r"query must not be empty"),
    Bad("blank-query", Q, js({"query": " \n\t "}), 400, r"must not be empty"),
    Bad("enormous-query", Q, js({"query": "a" * 200_000}), 400, r"200000 characters.*limit"),
    Bad("huge-body", Q, js({"query": "a" * HUGE}), 413, r"limit"),
    Bad("bad-query-type", Q, js({"query": "x", "query_type": MARK}), 400, r"query_type"),
    Bad("bad-agent-type", Q, js({"query": "x", "agent_type": MARK}), 400, r"agent_type"),
    Bad("bad-model", Q, js({"query": "x", "model": MARK}), 404, r"model .* is not served here"),
    Bad("lone-surrogate", Q, b'{"query": "a\\ud800b"}', 400, r"not valid JSON"),
    Bad("invalid-utf8", Q, b'{"query": "\xff\xfe"}', 400, r"not valid JSON: not UTF-8", param=None),
    Bad("chat-no-messages", C, js({"model": "auto", "messages": []}), 400, r"user message"),
    Bad(
        "chat-bad-role",
        C,
        js({"model": "auto", "messages": [{"role": MARK, "content": "x"}]}),
        422,
        INVALID,
        param="messages[0].role",
    ),
    Bad(
        "chat-bad-model",
        C,
        js({"model": MARK, "messages": [{"role": "user", "content": "x"}]}),
        404,
        r"model",
    ),
    Bad(
        "chat-last-not-user",
        C,
        js({"model": "auto", "messages": [{"role": "assistant", "content": "x"}]}),
        400,
        r"at least one user message",
    ),
    Bad("chat-missing-model", C, js({"messages": []}), 422, INVALID, param="model"),
    Bad(
        "wrong-content-type",
        Q,
        js({"query": "x", "query_type": MARK}),
        400,
        r"query_type",
        (("content-type", "text/plain"),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_bodies_get_a_json_error_saying_what_is_wrong(
    service: Running, labels_before: set[tuple[str, str, str]], case: Bad
) -> None:
    headers = {"content-type": "application/json", **dict(case.headers)}
    with service.client() as client:
        response = client.post(case.path, content=case.content, headers=headers)
    assert response.status_code == case.status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] in ERROR_TYPES
    assert re.search(case.says, error["message"], re.S), error["message"]
    if case.param is not UNCHECKED:
        assert error["param"] == case.param


def test_a_chunked_body_over_the_limit_is_refused(service: Running) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "'
        for _ in range(2 * 1024):
            yield b"a" * 1024
        yield b'"}'

    with service.client() as client:
        response = client.post(Q, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


ODD = {
    "rtl": "\u202eexplain why \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "zero-width": "explain\u200b why\u200d the\ufeff build\u2060 is slow",
    "nul": "explain why\u0000 the build is slow",
    "combining": "e\u0301xplain why" + "\u0301" * 500,
    "emoji": "explain why 👩‍👩‍👧‍👦🏳️‍🌈 \U0010ffff",
    "controls": "explain\u0007\u001b[31m why\u0085\u2028\u2029",
}


@pytest.mark.parametrize("name", sorted(ODD))
@pytest.mark.parametrize("path", [Q, C])
def test_odd_unicode_is_answered(service: Running, name: str, path: str) -> None:
    text = unique(ODD[name])
    if path == Q:
        body: dict[str, Any] = {"query": text}
    else:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    with service.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text[:300]
    assert response.json()


def test_request_ids_are_never_echoed_unless_sane(service: Running) -> None:
    hostile = [
        f"{MARK}<script>alert(1)</script>",
        f"{MARK} with spaces",
        MARK + "x" * 200,
        f"{MARK}\u00e9",
        "",
    ]
    with service.client() as client:
        for value in hostile:
            sent = value.encode("utf-8")
            response = client.get("/healthz", headers=[(b"x-request-id", sent)])
            echoed = response.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{16}", echoed), echoed
        fine = client.get("/healthz", headers={"x-request-id": "trace-42.a:b_c"})
        assert fine.headers["x-request-id"] == "trace-42.a:b_c"


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are and read until the server closes or stops talking."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _complete(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


@pytest.mark.parametrize(
    "header",
    [
        b"X-Request-ID: abc\rSet-Cookie: " + MARK.encode(),
        b"X-Request-ID: abc\nSet-Cookie: " + MARK.encode(),
        b"X-Request-ID: abc\x00def",
        b"Authorization: Bearer \r\n\r\nGET /metrics HTTP/1.1",
    ],
    ids=["bare-cr", "bare-lf", "nul", "smuggled-request"],
)
def test_header_injection_is_refused_or_neutralised(service: Running, header: bytes) -> None:
    request = (
        b"POST /api/ai/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + header
        + b'\r\nContent-Length: 15\r\n\r\n{"query": "hi"}'
    )
    raw = raw_request(service.server.port, request)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None
    # The HTTP parser may refuse it outright (400) or drop the connection; it must not be a
    # 500, and nothing we sent may come back as a header of ours.
    assert status is None or status < 500, raw[:300]
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"set-cookie" not in head
    assert MARK.encode() not in head
    assert service.query({"query": "still alive?", "query_type": "code"}).status_code == 200


def test_a_slow_body_is_cut_off_at_the_body_deadline(service: Running) -> None:
    body = b'{"query": "slow"}'
    head = (
        b"POST /api/ai/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", service.server.port), timeout=15) as sock:
        sock.sendall(head)
        reply = b""
        for byte in body:  # one byte every half second: eight and a half seconds in all
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the server already answered and closed
            sock.settimeout(0.5)
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if reply:
                break
        sock.settimeout(10)
        while not _complete(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    elapsed = time.perf_counter() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert "did not arrive within" in error["message"]
    assert elapsed < BODY_TIMEOUT_S + 5


def test_a_body_that_never_comes_is_cut_off_too(service: Running) -> None:
    head = (
        b"POST /api/ai/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    raw = raw_request(service.server.port, head, timeout=BODY_TIMEOUT_S + 10)
    assert raw.startswith(b"HTTP/1.1 408"), raw[:300]


def test_unknown_paths_and_methods_are_json_errors(service: Running) -> None:
    with service.client() as client:
        for method, path, status in [
            ("GET", Q, 405),
            ("DELETE", "/v1/chat/completions", 405),
            ("GET", f"/api/ai/{MARK}", 404),
            ("POST", f"/v1/{MARK}/../../etc/passwd", 404),
            ("GET", "/%F0%9F%92%A9", 404),
            ("PATCH", f"/{MARK}", 404),
        ]:
            response = client.request(method, path)
            assert response.status_code == status, (method, path, response.text[:200])
            assert response.json()["error"]["message"]


def closed_label_values(service: Running) -> set[str]:
    """Every value a label may take: the enums, the error types, routes, methods, models."""
    values: set[str] = set()
    for enum in (QueryType, AgentType, Mode, Status, TokenType):
        values |= {member.value for member in enum}
    values |= {"kimi", "qwen", "multi"}  # the configured services, and the fan-out route
    values |= set(PHASES) | set(FLOW_STATUSES)
    values |= ERROR_TYPES | ROUTES | METHODS | {"other"}
    values |= {"/api/ai/flows/{name}", "/v1/models/{model}"}
    values |= {KIMI_MODEL, QWEN_MODEL, "true", "false", "get", "set"}
    return values


def test_no_hostile_value_became_a_label(
    service: Running, labels_before: set[tuple[str, str, str]]
) -> None:
    # Runs last in this module (pytest keeps file order): every case above has been sent.
    after = label_values(service.metrics())
    allowed = closed_label_values(service)
    new = after - labels_before
    print("\nnew label values:", sorted(new))
    for family, label, value in after:
        assert MARK not in value, (family, label, value)
        if family.startswith("aiorch_http_requests") and label == "status":
            assert value.isdigit(), (family, label, value)
            assert value != "500", "a request produced a 500"
        elif label not in ("flow", "stage"):
            assert value in allowed, (family, label, value)
