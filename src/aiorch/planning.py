"""Planning a request before any backend is asked: check it, classify it, route it, decide whether
the answer cache may serve it, and key it.

The same plan serves a plain answer and a stream, so both check the same limits, route the same
way and share cache entries and in-flight calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from aiorch.cache import cache_key
from aiorch.catalog import AUTO, Catalog, Route
from aiorch.classifier import Verdict
from aiorch.config import Settings
from aiorch.errors import RequestError, UnsupportedParameter
from aiorch.models import Model
from aiorch.request import ChatRequest, check
from aiorch.services import Services
from aiorch.timing import Timeline
from aiorch.types import AgentType, QueryType

# "on": the guide's /api/ai/query; "deterministic": /v1, where only a request that asks for the
# same answer every time (temperature 0 or a seed) is served from the cache; "off": never.
CachePolicy = Literal["on", "deterministic", "off"]


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller says about a request beyond the request itself."""

    query_type: QueryType | None = None  # None: classify
    agent_type: AgentType = AgentType.DIRECT
    cache: CachePolicy = "on"
    fallback: bool = True  # False: only the model the request names
    merge: bool = True  # an unknown query on `auto` asks the `multi` models and merges answers
    tenant: str = ""  # cache and coalescing partition, e.g. the API key's hash
    request_id: str = ""
    text_field: str = "messages"  # what errors about the text name: the field the client sent
    timeline: Timeline | None = None  # where this request's time goes (Server-Timing)
    # Before an answer is stored, its text must pass this (an agent stage's parser, say).
    accept: Callable[[str], bool] | None = None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    request: ChatRequest
    query_type: QueryType
    routing: str  # what decided the query type
    route: Route
    options: Options
    request_id: str
    key: str | None  # None: neither the cache nor coalescing is used for this request
    skipped: tuple[str, ...] = ()  # models of the route that cannot serve this request


class Planner:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        services: Services,
        classify: Callable[[str], Verdict],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.services = services
        self._classify = classify

    def plan(self, request: ChatRequest, options: Options) -> Plan:
        check(request)
        self._check_size(request, options.text_field)
        if options.query_type is not None:
            verdict = Verdict.explicit(options.query_type)
        elif options.timeline is None:
            verdict = self._classify(request.text())
        else:
            started = time.perf_counter()
            verdict = self._classify(request.text())
            options.timeline.add("classify", time.perf_counter() - started)
        query_type, routing = verdict.query_type, verdict.header
        route = self._route(request, options, query_type)
        route, skipped = self._capable(route, request, named=request.model != AUTO)
        return Plan(
            request=request,
            query_type=query_type,
            routing=routing,
            route=route,
            options=options,
            request_id=options.request_id or os.urandom(8).hex(),
            key=self._key(request, route, options),
            skipped=skipped,
        )

    def _check_size(self, request: ChatRequest, field: str) -> None:
        limit = self.settings.server.max_query_chars
        size = sum(len(m.text()) for m in request.messages)
        if size > limit:
            raise RequestError(
                f"the {field} holds {size} characters; the limit is {limit}", param=field
            )
        last = request.messages[-1]
        if last.role == "user" and not last.text().strip() and not last.parts("image_url"):
            raise RequestError(f"the {field} must not be empty", param=field)

    def _route(self, request: ChatRequest, options: Options, query_type: QueryType) -> Route:
        if request.model != AUTO:
            return self.catalog.named(request.model, fallback=options.fallback)
        route = self.catalog.route(query_type)
        if route.multi and not options.merge:
            # One model answers: the catch-all route's, never a merge of two.
            route = self.catalog.route(QueryType.GENERAL)
        if not options.fallback:
            return Route(route.selected, route.targets[:1], route.multi)
        return route

    def _capable(
        self, route: Route, request: ChatRequest, named: bool
    ) -> tuple[Route, tuple[str, ...]]:
        """The route without the models that cannot serve this request (each refusal named).

        A model the client named itself is never swapped for another that can serve it: its
        refusal is the answer.
        """
        kept: list[Model] = []
        skipped: list[str] = []
        first: UnsupportedParameter | None = None
        for position, model in enumerate(route.targets):
            problem = self.services[model.service].refusal(model, request)
            if problem is None:
                kept.append(model)
                continue
            if named and position == 0 and not route.multi:
                raise problem
            first = first or problem
            skipped.append(f"{model.service}/{model.id}: {problem.message}")
        if not kept:
            assert first is not None
            raise first
        if len(kept) == len(route.targets):
            return route, ()
        return Route(
            kept[0].service if not route.multi else route.selected, tuple(kept), route.multi
        ), tuple(skipped)

    def _key(self, request: ChatRequest, route: Route, options: Options) -> str | None:
        if not self.settings.cache.enabled or options.cache == "off":
            return None
        if options.cache == "deterministic" and not deterministic(request):
            return None
        return cache_key(
            request,
            targets=tuple(f"{m.service}/{m.id}" for m in route.targets),
            agent_type=options.agent_type,
            tenant=options.tenant if self.settings.cache.per_key else "",
        )


def deterministic(request: ChatRequest) -> bool:
    """Whether the client asks for the same answer every time: temperature 0 or a seed."""
    return request.temperature == 0 or request.seed is not None
