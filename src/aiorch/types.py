"""The value types shared by every layer: closed label sets, requests, answers, stream chunks.

Every enum here is a closed set of metric label values: user input is mapped onto these (or
rejected) before it reaches a metric, so no client can grow the series count.
"""

from __future__ import annotations

import enum

import msgspec


class QueryType(enum.StrEnum):
    CODE = "code"
    REASONING = "reasoning"
    REQUIREMENTS = "requirements"
    TESTING = "testing"
    GENERAL = "general"
    UNKNOWN = "unknown"


class AgentType(enum.StrEnum):
    DIRECT = "direct"
    BA = "ba"
    DEV = "dev"
    QA = "qa"


class BackendKind(enum.StrEnum):
    OPENAI = "openai"
    OLLAMA = "ollama"
    OFFLINE = "offline"


class Mode(enum.StrEnum):
    """The `mode` label of the per-model families: whether the model was asked to think."""

    THINKING = "thinking"
    INSTANT = "instant"


class Status(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class TokenType(enum.StrEnum):
    PROMPT = "prompt"
    COMPLETION = "completion"
    # Reasoning tokens are a part of the completion tokens, counted again on their own.
    REASONING = "reasoning"


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # a part of the prompt tokens, served from the provider's cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cached_tokens + other.cached_tokens,
        )


class Attempt(msgspec.Struct, frozen=True):
    """One upstream call made for a query, successful or not: recorded once, where the call was
    made, and read by the metrics, the traces, the response's `attempts` and the doctor."""

    service: str
    model: str
    error_type: str | None = None  # None: it answered
    message: str | None = None
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    retries: int = 0
    retry_after: float | None = None  # seconds the upstream (or an open breaker) asked to wait
    continued: bool = False  # it continued an answer another attempt had started
    skipped_events: int = 0  # malformed upstream events skipped, the stream going on


class Fallback(msgspec.Struct, frozen=True):
    """The move away from the first service asked (which models: the `attempts`)."""

    from_service: str
    to_service: str
    reason: str


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one `process_query` call: the body of `POST /api/ai/query`."""

    answer: str
    query_type: QueryType
    selected_service: str
    model: str
    cached: bool
    fallback: Fallback | None
    usage: Usage
    latency_ms: float
    request_id: str
    agent_type: AgentType = AgentType.DIRECT
    finish_reason: str | None = "stop"
    reasoning_content: str | None = None
    offline: bool = False
    attempts: tuple[Attempt, ...] = ()
    answers: dict[str, str] | None = None  # per service, for multi-service answers
    adjustments: tuple[str, ...] = ()
    routing: str | None = None  # what decided the query type


class StreamStart(msgspec.Struct, frozen=True, kw_only=True):
    """The first event of a streamed answer: who answers, before any text arrives."""

    query_type: QueryType
    selected_service: str
    model: str
    request_id: str
    cached: bool = False
    fallback: Fallback | None = None
    offline: bool = False
    routing: str | None = None
