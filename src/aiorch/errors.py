"""Every error aiorch raises, under one root.

    AiorchError                      500 internal
    ├── ConfigError                  start-up: a bad setting, named by its key
    ├── RequestError                 400 invalid_request: the client sent something wrong
    │   ├── PayloadTooLarge          413 payload_too_large
    │   ├── AuthenticationError      401 authentication
    │   ├── RateLimited              429 rate_limited (with retry_after)
    │   └── NotFound                 404 not_found
    ├── BackendError                 502 upstream_error: one backend call failed
    │   ├── BackendTimeout           504 timeout             retryable
    │   ├── BackendConnectionError   502 connection_error    retryable
    │   ├── BackendRateLimited       429 rate_limited        retryable (retry_after)
    │   ├── BackendOverloaded        503 overloaded          retryable (retry_after)
    │   ├── QuotaExceeded            429 quota_exceeded      never retried
    │   ├── BackendStatusError       502 upstream_error      retryable for 5xx only
    │   ├── BackendProtocolError     502 bad_response        retryable
    │   ├── StreamInterrupted        502 stream_interrupted  after the client saw data
    │   └── CircuitOpen              503 circuit_open        skipped without a call
    ├── AllBackendsFailed            502/503/504 all_backends_failed, with every attempt
    └── FlowError                    502 flow_error: an agent stage failed, with its stage name

Each class knows its HTTP status, whether a retry may help and its `error_type`, a value from the
closed set `ERROR_TYPES` used as the `error_type` and `reason` metric labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from aiorch.types import Attempt

ERROR_TYPES: frozenset[str] = frozenset(
    {
        "internal",
        "config",
        "invalid_request",
        "payload_too_large",
        "authentication",
        "rate_limited",
        "not_found",
        "upstream_error",
        "timeout",
        "connection_error",
        "overloaded",
        "quota_exceeded",
        "bad_response",
        "stream_interrupted",
        "circuit_open",
        "all_backends_failed",
        "flow_error",
        "parse_error",
        "cancelled",
        # Not an error: the `reason` of a fallback made by a hedged request (dispatch.HEDGED).
        "hedged",
    }
)


class AiorchError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The OpenAI-shaped error body: {"error": {"type", "message", ...}}."""
        return {"error": {"type": self.error_type, "message": self.message, "code": None}}


class ConfigError(AiorchError):
    error_type = "config"


class RequestError(AiorchError):
    status_code = 400
    error_type = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["error"] = {**body["error"], "param": self.param}  # type: ignore[dict-item]
        return body


class PayloadTooLarge(RequestError):
    status_code = 413
    error_type = "payload_too_large"


class AuthenticationError(RequestError):
    status_code = 401
    error_type = "authentication"


class NotFound(RequestError):
    status_code = 404
    error_type = "not_found"


class RateLimited(RequestError):
    status_code = 429
    error_type = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(AiorchError):
    """A call to one backend failed; `service` and `model` say which."""

    status_code = 502
    error_type = "upstream_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        model: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.model = model
        self.retry_after = retry_after


class BackendTimeout(BackendError):
    status_code = 504
    error_type = "timeout"


class BackendConnectionError(BackendError):
    error_type = "connection_error"


class BackendRateLimited(BackendError):
    status_code = 429
    error_type = "rate_limited"


class BackendOverloaded(BackendError):
    status_code = 503
    error_type = "overloaded"


class QuotaExceeded(BackendError):
    status_code = 429
    error_type = "quota_exceeded"
    retryable = False


class BackendStatusError(BackendError):
    """The upstream answered with an HTTP error status that no finer class describes."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        service: str = "",
        model: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service, model=model, retry_after=retry_after)
        self.upstream_status = upstream_status

    @property
    def is_retryable(self) -> bool:
        return self.upstream_status >= 500


class BackendProtocolError(BackendError):
    error_type = "bad_response"


class StreamInterrupted(BackendError):
    error_type = "stream_interrupted"
    retryable = False


class CircuitOpen(BackendError):
    status_code = 503
    error_type = "circuit_open"


class AllBackendsFailed(AiorchError):
    """Every backend on the route failed; `attempts` holds each one's error, in order.

    `retry_after` is the soonest any of them said to come back (a 503's `Retry-After`).
    """

    error_type = "all_backends_failed"

    def __init__(self, message: str, attempts: Sequence[Attempt], status_code: int = 502) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)
        self.status = status_code
        waits = [a.retry_after for a in self.attempts if a.retry_after and a.retry_after > 0]
        self.retry_after = min(waits) if waits else None

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "type": self.error_type,
                "message": self.message,
                "code": None,
                "attempts": [
                    {
                        "service": a.service.value,
                        "model": a.model,
                        "error_type": a.error_type,
                        "message": a.message,
                    }
                    for a in self.attempts
                ],
            }
        }


class FlowError(AiorchError):
    status_code = 502
    error_type = "flow_error"

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


def is_retryable(error: BaseException) -> bool:
    """Whether the same call may succeed if tried again."""
    if isinstance(error, BackendStatusError):
        return error.is_retryable
    return isinstance(error, AiorchError) and error.retryable


def http_status(error: AiorchError) -> int:
    if isinstance(error, AllBackendsFailed):
        return error.status
    return error.status_code
