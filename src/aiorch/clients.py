"""`KimiClient`/`KimiConfig` and `QwenClient`/`QwenConfig`: one model, straight, no orchestration.

The guide's benchmark uses `KimiClient` directly, as the orchestrator does underneath. The
transport follows the environment: an API key or base URL means the OpenAI-compatible API, an
Ollama URL means Ollama, neither means offline (`config.is_configured` is then False).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import msgspec

from aiorch.answer import Choice, Collector, Delta, End
from aiorch.backends import Backend, Call, Readiness, build_backend
from aiorch.catalog import model_of
from aiorch.config import load_settings
from aiorch.models import prepare
from aiorch.request import ChatMessage, ChatRequest, Thinking
from aiorch.service_settings import ServiceSettings
from aiorch.types import BackendKind, Usage


class ModelConfig(msgspec.Struct, frozen=True):
    service: ServiceSettings

    @property
    def is_configured(self) -> bool:
        """False when neither a key/base URL nor an Ollama URL is set (offline)."""
        return self.service.kind is not BackendKind.OFFLINE

    @property
    def model(self) -> str:
        return self.service.model_id


class KimiConfig(ModelConfig, frozen=True):
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KimiConfig:
        return cls(load_settings(environ).kimi)


class QwenConfig(ModelConfig, frozen=True):
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QwenConfig:
        return cls(load_settings(environ).qwen)


class Reply(msgspec.Struct, frozen=True):
    """One model's whole answer."""

    choices: tuple[Choice, ...]
    usage: Usage
    model: str

    @property
    def content(self) -> str:
        return self.choices[0].content

    @property
    def reasoning_content(self) -> str | None:
        return self.choices[0].reasoning

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason


class ModelClient:
    """Ask one model directly: `ask("...")`, `complete(request)` or `stream(request)`."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.backend: Backend = build_backend(config.service)
        self.model = model_of(config.service, config.model)

    def _call(self, request: ChatRequest, stream: bool) -> Call:
        prepared = prepare(self.model, request)
        return Call(
            request=prepared.request,
            model=self.model,
            thinking=prepared.thinking,
            max_tokens=prepared.max_tokens,
            stream=stream,
        )

    async def complete(self, request: ChatRequest) -> Reply:
        collector = Collector()
        usage, model = Usage(), self.model.id
        async for event in self.backend.generate(self._call(request, stream=False)):
            if isinstance(event, Delta):
                collector.add(event)
            elif isinstance(event, End):
                usage, model = event.usage, event.model or model
        return Reply(collector.choices(), usage, model)

    async def ask(
        self, prompt: str, *, max_tokens: int | None = None, thinking: bool | None = None
    ) -> Reply:
        request = ChatRequest(
            messages=(ChatMessage(role="user", content=prompt),),
            model=self.model.id,
            max_tokens=max_tokens,
            thinking=None if thinking is None else Thinking("enabled" if thinking else "disabled"),
        )
        return await self.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The answer's deltas as they come (malformed events skipped)."""
        async for event in self.backend.generate(self._call(request, stream=True)):
            if isinstance(event, Delta):
                yield event

    async def probe(self) -> Readiness:
        return await self.backend.probe()

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class KimiClient(ModelClient):
    def __init__(self, config: KimiConfig | None = None) -> None:
        super().__init__(config or KimiConfig.from_env())


class QwenClient(ModelClient):
    def __init__(self, config: QwenConfig | None = None) -> None:
        super().__init__(config or QwenConfig.from_env())
