"""Upstream error responses to `BackendError`s: the status, body shape and headers decide."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import msgspec
import pytest

from aiorch.backends.http import error_from_response, parse_retry_after
from aiorch.errors import (
    BackendError,
    BackendOverloaded,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    QuotaExceeded,
    UpstreamRequestError,
    http_status,
    is_retryable,
)


def moonshot(error_type: str, message: str = "details") -> bytes:
    return msgspec.json.encode({"error": {"type": error_type, "message": message}})


def ollama(message: str) -> bytes:
    return msgspec.json.encode({"error": message})


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "error_type"),
    [
        # Moonshot's three 429s: only the quota is final.
        (429, moonshot("rate_limit_reached_error"), BackendRateLimited, True, "rate_limited"),
        (429, moonshot("engine_overloaded_error"), BackendOverloaded, True, "overloaded"),
        (429, moonshot("exceeded_current_quota_error"), QuotaExceeded, False, "quota_exceeded"),
        # OpenAI's names for the same.
        (429, moonshot("insufficient_quota"), QuotaExceeded, False, "quota_exceeded"),
        (429, moonshot("requests"), BackendRateLimited, True, "rate_limited"),
        # Ollama: bare strings.
        (429, ollama("too many requests"), BackendRateLimited, True, "rate_limited"),
        (
            429,
            ollama("you (me) have reached your weekly usage limit, upgrade for higher limits"),
            QuotaExceeded,
            False,
            "quota_exceeded",
        ),
        (
            503,
            ollama("server busy, maximum pending requests exceeded"),
            BackendOverloaded,
            True,
            "overloaded",
        ),
        (
            500,
            ollama("llama runner process has terminated"),
            BackendStatusError,
            True,
            "upstream_error",
        ),
        # Status alone.
        (500, b"", BackendStatusError, True, "upstream_error"),
        (502, b"<html>bad gateway</html>", BackendStatusError, True, "upstream_error"),
        (503, b"", BackendOverloaded, True, "overloaded"),
        (504, b"", BackendTimeout, True, "timeout"),
        (408, b"", BackendTimeout, True, "timeout"),
        (
            401,
            moonshot("invalid_authentication_error"),
            BackendStatusError,
            False,
            "upstream_error",
        ),
        (500, moonshot("engine_overloaded_error"), BackendOverloaded, True, "overloaded"),
    ],
)
def test_error_mapping(
    status: int, body: bytes, kind: type[BackendError], retryable: bool, error_type: str
) -> None:
    error = error_from_response(status, body, {}, "kimi", "kimi-k2-thinking")

    assert type(error) is kind
    assert is_retryable(error) is retryable
    assert error.error_type == error_type
    assert (error.service, error.model) == ("kimi", "kimi-k2-thinking")
    assert f"HTTP {status}" in error.message
    if isinstance(error, BackendStatusError):
        assert error.upstream_status == status


@pytest.mark.parametrize(
    ("status", "body", "upstream_type", "code"),
    [
        (404, ollama('model "x" not found, try pulling it first'), None, None),
        (400, moonshot("invalid_request_error"), "invalid_request_error", None),
        (
            400,
            msgspec.json.encode(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                        "param": "messages",
                        "message": "too long",
                    }
                }
            ),
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (422, b"", None, None),
    ],
)
def test_request_errors_pass_through_as_the_upstream_said_them(
    status: int, body: bytes, upstream_type: str | None, code: str | None
) -> None:
    error = error_from_response(status, body, {}, "kimi", "kimi-k2-thinking")

    assert isinstance(error, UpstreamRequestError)
    assert not is_retryable(error)
    assert http_status(error) == status
    detail = error.to_dict()["error"]
    assert isinstance(detail, dict)
    assert detail["type"] == (upstream_type or "invalid_request_error")
    assert detail["code"] == code
    assert (detail["service"], detail["model"]) == ("kimi", "kimi-k2-thinking")


def test_message_carries_the_upstream_type_and_text_clipped() -> None:
    error = error_from_response(
        429, moonshot("rate_limit_reached_error", "x" * 5000), {}, "kimi", "m"
    )

    assert "rate_limit_reached_error" in error.message
    assert error.message.endswith("...")
    assert len(error.message) < 400


def test_retry_after_header_is_kept() -> None:
    error = error_from_response(
        429, moonshot("rate_limit_reached_error"), {"Retry-After": "7"}, "kimi", "m"
    )
    assert error.retry_after == 7.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("1.5", 1.5), ("-4", 0.0), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)

    seconds = parse_retry_after(later)
    assert seconds is not None
    assert 100 < seconds <= 120
    assert parse_retry_after(earlier) == 0.0


def test_statuses_of_backend_errors_reach_the_client_unchanged() -> None:
    quota = error_from_response(429, moonshot("exceeded_current_quota_error"), {}, "kimi", "m")
    timeout = error_from_response(504, b"", {}, "kimi", "m")

    assert http_status(quota) == 429
    assert http_status(timeout) == 504
