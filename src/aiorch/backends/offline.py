"""The offline backend: no model at all. Deterministic, instant, and labelled offline everywhere.

It lets the service start and answer with no keys and no URLs, for smoke tests, demos and load
tests of the orchestrator itself. Every answer says plainly that no model produced it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from aiorch.answer import Delta, End, Event
from aiorch.backends.base import Call, Readiness
from aiorch.errors import UnsupportedParameter
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import Usage

PREFIX = "[offline: no model is configured for {service}]"


class OfflineBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return None

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return ("offline: no model answered; the request was read, not sent anywhere",)

    def _answer(self, call: Call) -> tuple[str, Usage]:
        prompt = call.request.text()
        digest = hashlib.blake2b(prompt.encode(), digest_size=6).hexdigest()
        text = (
            f"{PREFIX.format(service=self.settings.name)} "
            f"aiorch received your query ({len(prompt)} characters, digest {digest}). "
            "Set KIMI_API_KEY/KIMI_OLLAMA_URL or QWEN_OLLAMA_URL/QWEN_BASE_URL for real answers."
        )
        prompt_tokens = sum(len(m.text().split()) for m in call.request.messages)
        return text, Usage(prompt_tokens, len(text.split()), 0)

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        text, usage = self._answer(call)
        choices = range(call.request.n or 1)
        if call.stream:
            for i, word in enumerate(text.split(" ")):
                for index in choices:
                    yield Delta(index=index, content=word if i == 0 else " " + word)
            for index in choices:
                yield Delta(index=index, finish_reason="stop")
        else:
            for index in choices:
                yield Delta(index=index, content=text, finish_reason="stop")
        yield End(usage, call.model.id)

    async def probe(self) -> Readiness:
        detail = "offline: answers are placeholders, no model is configured"
        return Readiness.of(self.settings, ready=True, detail=detail)

    async def close(self) -> None:
        return None
