"""The one protocol every backend implements, what it is asked (`Call`), and what a readiness
probe reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from aiorch.answer import Event
from aiorch.errors import UnsupportedParameter
from aiorch.models import Model
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.timing import Timeline


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One request to one model, its rules already applied (`aiorch.models.prepare`)."""

    request: ChatRequest
    model: Model
    thinking: bool
    max_tokens: int
    stream: bool
    request_id: str = ""
    # Continue this text: the answer so far of an attempt that broke off (a rescued stream).
    prefill: str = ""
    timeline: Timeline | None = None  # the connection's wait goes to its `connect` phase


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    kind: str
    model: str
    url: str | None
    ready: bool
    detail: str
    model_loaded: bool | None = None  # Ollama only: False means the next call pays a cold start

    @classmethod
    def of(
        cls,
        settings: ServiceSettings,
        *,
        ready: bool,
        detail: str,
        model_loaded: bool | None = None,
    ) -> Readiness:
        return cls(
            service=settings.name,
            kind=settings.kind.value,
            model=settings.model_id,
            url=settings.url,
            ready=ready,
            detail=detail,
            model_loaded=model_loaded,
        )


class Backend(Protocol):
    """A service behind some transport. The core depends on this, never on a class."""

    settings: ServiceSettings

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        """What in the request this dialect cannot express at all, by name; None if nothing."""
        ...

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        """What this dialect will leave out or change, to be shown to the client."""
        ...

    def generate(self, call: Call) -> AsyncIterator[Event]:
        """The answer: deltas as they come (all at once for a plain call), then one `End`;
        a malformed event it skipped is reported as `Skipped`.

        Raises a `BackendError` (or `UpstreamRequestError` for a refused request) on failure.
        """
        ...

    async def probe(self) -> Readiness:
        """A cheap check that the backend answers; never raises."""
        ...

    async def close(self) -> None: ...
