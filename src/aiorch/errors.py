"""Every error aiorch raises, under one root.

    AiorchError                      500 internal
    ├── ConfigError                  start-up: a bad setting, named by its key
    ├── RequestError                 400 invalid_request: the client sent something wrong
    │   ├── UnsupportedParameter     400 unsupported_parameter: no model here can honour a field
    │   ├── PayloadTooLarge          413 payload_too_large
    │   ├── AuthenticationError      401 authentication
    │   ├── RateLimited              429 rate_limited (with retry_after)
    │   └── NotFound                 404 not_found
    │       └── ModelNotFound        404 model_not_found
    ├── UpstreamRequestError         the upstream refused this request (4xx): its status, type,
    │                                code and message passed through; never retried
    ├── BackendError                 502 upstream_error: one backend call failed
    │   ├── BackendTimeout           504 timeout             retryable
    │   ├── BackendConnectionError   502 connection_error    retryable
    │   ├── BackendRateLimited       429 rate_limited        retryable (retry_after)
    │   ├── BackendOverloaded        503 overloaded          retryable (retry_after)
    │   ├── QuotaExceeded            429 quota_exceeded      never retried
    │   ├── BackendStatusError       502 upstream_error      retryable for 5xx only
    │   ├── BackendProtocolError     502 bad_response        retryable
    │   ├── StreamCut                502 stream_cut          the stream ended before its end
    │   ├── StreamStalled            504 stream_stall        silent past the idle limit
    │   ├── StreamInterrupted        502 stream_interrupted  after the client saw data, unrescued
    │   └── CircuitOpen              503 circuit_open        skipped without a call
    ├── AllBackendsFailed            502/503/504 all_backends_failed, with every attempt
    └── FlowError                    502 flow_error: an agent stage failed, with its stage name

Each class knows its HTTP status, whether a retry may help and its `error_type`, a value from the
closed set `ERROR_TYPES` used as the `error_type` and `reason` metric labels. The JSON body spells
errors as OpenAI's clients expect: `type` is OpenAI's class of error (`invalid_request_error`,
`rate_limit_error`, `server_error`, ...), `code` is our `error_type` (or the upstream's own code).
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
        "unsupported_parameter",
        "method_not_allowed",
        "model_not_found",
        "upstream_request_error",
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
        "stream_cut",
        "stream_stall",
        "circuit_open",
        "all_backends_failed",
        "flow_error",
        "parse_error",
        "cancelled",
        # Not an error: the `reason` of a fallback made by a hedged request (dispatch.HEDGED).
        "hedged",
    }
)


def openai_type(status: int) -> str:
    """OpenAI's `type` for an error status, as its clients read it."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


class AiorchError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The OpenAI-shaped error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": openai_type(http_status(self)),
                "param": None,
                "code": self.error_type,
            }
        }


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


class UnsupportedParameter(RequestError):
    """A field the client sent that the chosen model (or every model of its route) cannot honour:
    refused by name rather than dropped."""

    error_type = "unsupported_parameter"


class PayloadTooLarge(RequestError):
    status_code = 413
    error_type = "payload_too_large"


class AuthenticationError(RequestError):
    status_code = 401
    error_type = "authentication"


class NotFound(RequestError):
    status_code = 404
    error_type = "not_found"


class ModelNotFound(NotFound):
    error_type = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class RateLimited(RequestError):
    status_code = 429
    error_type = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamRequestError(AiorchError):
    """The upstream refused this request with a 4xx (context too long, content policy, a
    parameter the model refuses): a client error that another try cannot fix. Its status, type,
    code, param and message reach the client as the upstream said them."""

    error_type = "upstream_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        upstream_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        service: str = "",
        model: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.upstream_type = upstream_type
        self.code = code
        self.param = param
        self.service = service
        self.model = model

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.upstream_type or openai_type(self.status),
                "param": self.param,
                "code": self.code,
                "service": self.service,
                "model": self.model,
            }
        }


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


class StreamCut(BackendError):
    """The upstream's stream ended (or broke) before its terminating event."""

    error_type = "stream_cut"


class StreamStalled(BackendError):
    """The upstream went silent mid-stream for longer than the service's idle limit."""

    status_code = 504
    error_type = "stream_stall"


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
                "message": self.message,
                "type": openai_type(self.status),
                "param": None,
                "code": self.error_type,
                "attempts": [
                    {
                        "service": a.service,
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
    if isinstance(error, AllBackendsFailed | UpstreamRequestError):
        return error.status
    return error.status_code
