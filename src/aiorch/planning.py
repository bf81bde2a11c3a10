"""Planning a query before any backend is asked: validate, classify, route, key the cache.

The same plan serves a plain answer and a stream, so both check the same limits, route the same
way and share cache entries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import msgspec

from aiorch.cache import cache_key
from aiorch.config import Settings
from aiorch.errors import RequestError
from aiorch.routing import Route, Router
from aiorch.types import AgentType, CompletionRequest, Message, QueryType, Service

MAX_TOKENS_LIMIT = 1_000_000


class QueryOptions(msgspec.Struct, frozen=True, kw_only=True):
    query_type: QueryType | None = None  # None: classify
    agent_type: AgentType = AgentType.DIRECT
    service: Service | None = None  # pin one service: no routing, no fallback
    use_cache: bool = True
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | None = None
    tenant: str = ""  # cache partition, e.g. the API key's hash
    request_id: str = ""


class Plan(msgspec.Struct, frozen=True):
    request: CompletionRequest
    query_type: QueryType
    route: Route
    options: QueryOptions
    key: str | None  # None: the cache is not used for this query


class Planner:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        models: Mapping[Service, str],
        classify: Callable[[str], QueryType],
    ) -> None:
        self.settings = settings
        self.router = router
        self._models = dict(models)
        self._classify = classify

    def plan(self, messages: Sequence[Message], options: QueryOptions) -> Plan:
        request = self._request(messages, options)
        query_type = options.query_type or self._classify(messages[-1].content)
        if options.service is not None:
            route = self.router.pinned(options.service)
        else:
            route = self.router.route(query_type)
        return Plan(
            request, query_type, route, options, self._key(request, query_type, route, options)
        )

    def _request(self, messages: Sequence[Message], options: QueryOptions) -> CompletionRequest:
        limits = self.settings.server
        if not messages or not messages[-1].content.strip():
            raise RequestError("query must not be empty", param="query")
        size = sum(len(m.content) for m in messages)
        if size > limits.max_query_chars:
            raise RequestError(
                f"query is {size} characters; the limit is {limits.max_query_chars}",
                param="query",
            )
        if options.max_tokens is not None and not 1 <= options.max_tokens <= MAX_TOKENS_LIMIT:
            raise RequestError(
                f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}", param="max_tokens"
            )
        if options.temperature is not None and not 0 <= options.temperature <= 2:
            raise RequestError("temperature must be between 0 and 2", param="temperature")
        return CompletionRequest(
            messages=tuple(messages),
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            thinking=options.thinking,
            request_id=options.request_id or os.urandom(8).hex(),
        )

    def _key(
        self, request: CompletionRequest, query_type: QueryType, route: Route, options: QueryOptions
    ) -> str | None:
        if not (options.use_cache and self.settings.cache.enabled):
            return None
        target = ",".join(f"{s.value}={self._models[s]}" for s in route.services)
        return cache_key(
            messages=tuple((m.role, m.content) for m in request.messages),
            query_type=query_type,
            agent_type=options.agent_type,
            target=f"{route.selected.value}:{target}",
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            thinking=request.thinking,
            tenant=options.tenant if self.settings.cache.per_key else "",
        )
