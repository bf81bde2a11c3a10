"""The error tree: each error's HTTP status, retryability and closed `error_type` label."""

from __future__ import annotations

import re

import msgspec
import pytest

import aiorch.server.app  # noqa: F401  (defines the server's own RequestError subclasses)
from aiorch import errors
from aiorch.errors import (
    ERROR_TYPES,
    AiorchError,
    AllBackendsFailed,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    CircuitOpen,
    ConfigError,
    FlowError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestError,
    StreamInterrupted,
    UpstreamRequestError,
    http_status,
    is_retryable,
)
from aiorch.server.responses import error_response
from aiorch.strategies import all_failed
from aiorch.types import Attempt


def all_subclasses(cls: type[AiorchError]) -> list[type[AiorchError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(all_subclasses(sub))
    return found


def make(cls: type[AiorchError]) -> AiorchError:
    if issubclass(cls, RateLimited):
        return cls("slow down", retry_after=2.0)
    if issubclass(cls, BackendStatusError):
        return cls("boom", upstream_status=500, service="kimi", model="m")
    if issubclass(cls, BackendError):
        return cls("boom", service="kimi", model="m")
    if issubclass(cls, AllBackendsFailed):
        return cls("all failed", [])
    if issubclass(cls, FlowError):
        return cls("stage failed", stage="qa")
    return cls("bad")


@pytest.mark.parametrize(
    ("cls", "status", "error_type", "retryable"),
    [
        (AiorchError, 500, "internal", False),
        (ConfigError, 500, "config", False),
        (RequestError, 400, "invalid_request", False),
        (PayloadTooLarge, 413, "payload_too_large", False),
        (AuthenticationError, 401, "authentication", False),
        (RateLimited, 429, "rate_limited", False),
        (NotFound, 404, "not_found", False),
        (BackendError, 502, "upstream_error", True),
        (BackendTimeout, 504, "timeout", True),
        (BackendConnectionError, 502, "connection_error", True),
        (BackendRateLimited, 429, "rate_limited", True),
        (BackendOverloaded, 503, "overloaded", True),
        (QuotaExceeded, 429, "quota_exceeded", False),
        (BackendStatusError, 502, "upstream_error", True),  # for an upstream 500
        (BackendProtocolError, 502, "bad_response", True),
        (StreamInterrupted, 502, "stream_interrupted", False),
        (CircuitOpen, 503, "circuit_open", True),
        (AllBackendsFailed, 502, "all_backends_failed", False),
        (FlowError, 502, "flow_error", False),
    ],
)
def test_status_type_and_retryability(
    cls: type[AiorchError], status: int, error_type: str, retryable: bool
) -> None:
    error = make(cls)

    assert http_status(error) == status
    assert error.error_type == error_type
    assert is_retryable(error) is retryable


def test_every_error_type_is_a_closed_label_value() -> None:
    for cls in all_subclasses(AiorchError):
        assert cls.error_type in ERROR_TYPES, cls


def test_the_tree_in_the_docstring_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    for cls in all_subclasses(AiorchError):
        if cls.__module__ != errors.__name__:
            continue
        line = re.search(rf"\b{cls.__name__}\s+(.*)", doc)
        assert line is not None, f"{cls.__name__} is missing from the tree"
        if cls not in (ConfigError, AllBackendsFailed, UpstreamRequestError):
            assert f"{cls.status_code} {cls.error_type}" in line.group(1), cls.__name__


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (404, False)])
def test_upstream_status_decides_retry(status: int, retryable: bool) -> None:
    error = BackendStatusError("x", upstream_status=status)
    assert is_retryable(error) is retryable


def test_foreign_exceptions_are_not_retryable() -> None:
    assert is_retryable(ValueError("x")) is False
    assert is_retryable(TimeoutError()) is False


def test_request_errors_say_which_field() -> None:
    body = RequestError("query must not be empty", param="query").to_dict()
    assert body == {
        "error": {
            "type": "invalid_request_error",
            "message": "query must not be empty",
            "code": "invalid_request",
            "param": "query",
        }
    }


def test_a_failed_chain_lists_every_attempt() -> None:
    attempts = [
        Attempt("kimi", "kimi-k2-thinking", "timeout", "kimi timed out"),
        Attempt("qwen", "qwen2.5-coder:7b", "upstream_error", "qwen answered 500"),
    ]
    error = all_failed(attempts)
    body = msgspec.json.decode(msgspec.json.encode(error.to_dict()))

    assert http_status(error) == 502
    assert body["error"]["code"] == "all_backends_failed"
    assert body["error"]["attempts"] == [
        {
            "service": "kimi",
            "model": "kimi-k2-thinking",
            "error_type": "timeout",
            "message": "kimi timed out",
        },
        {
            "service": "qwen",
            "model": "qwen2.5-coder:7b",
            "error_type": "upstream_error",
            "message": "qwen answered 500",
        },
    ]
    assert "kimi timed out" in error.message
    assert "qwen answered 500" in error.message


@pytest.mark.parametrize(
    ("kinds", "status"),
    [
        (("timeout", "timeout"), 504),
        (("rate_limited", "overloaded"), 503),
        (("quota_exceeded", "circuit_open"), 503),
        (("timeout", "overloaded"), 502),
        (("connection_error",), 502),
        (("upstream_error", "timeout"), 502),
    ],
)
def test_status_when_every_backend_failed(kinds: tuple[str, ...], status: int) -> None:
    attempts = [Attempt("kimi", "m", kind, kind) for kind in kinds]
    assert http_status(all_failed(attempts)) == status


def test_rate_limited_answers_carry_retry_after() -> None:
    response = error_response(RateLimited("slow down", retry_after=2.4))
    overloaded = error_response(BackendOverloaded("busy", retry_after=7))
    plain = error_response(BackendConnectionError("refused"))

    assert (response.status_code, response.headers["retry-after"]) == (429, "2")
    assert (overloaded.status_code, overloaded.headers["retry-after"]) == (503, "7")
    assert "retry-after" not in plain.headers
    assert msgspec.json.decode(response.body)["error"]["code"] == "rate_limited"
