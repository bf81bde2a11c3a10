"""Routing: caller input to closed types, and query types to a chain of services.

The classifier (`aiorch.classifier`) guesses a type for queries that arrive without one; an
explicit type from the caller always wins. The route table comes from the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from aiorch.config import RouteSettings, Settings
from aiorch.errors import RequestError
from aiorch.types import AgentType, QueryType, SelectedService, Service

MODEL_ALIASES = {"kimi": Service.KIMI, "qwen": Service.QWEN}
AUTO_MODEL = "auto"


class Route(msgspec.Struct, frozen=True):
    """`services` in order of preference; `multi` asks all of them at once."""

    selected: SelectedService
    services: tuple[Service, ...]

    @property
    def multi(self) -> bool:
        return self.selected is SelectedService.MULTI


def parse_query_type(value: str | QueryType | None) -> QueryType | None:
    if value is None or isinstance(value, QueryType):
        return value
    try:
        return QueryType(value.strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in QueryType)
        raise RequestError(
            f"query_type {_show(value)} is not one of: {valid}", param="query_type"
        ) from None


def parse_agent_type(value: str | AgentType | None) -> AgentType:
    if value is None:
        return AgentType.DIRECT
    if isinstance(value, AgentType):
        return value
    try:
        return AgentType(value.strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in AgentType)
        raise RequestError(
            f"agent_type {_show(value)} is not one of: {valid}", param="agent_type"
        ) from None


class Router:
    def __init__(self, settings: Settings) -> None:
        self._routes: Mapping[QueryType, Route] = {
            query_type: _route(spec) for query_type, spec in settings.routes.items()
        }
        self._models = {
            **MODEL_ALIASES,
            **{settings.backend(s).model_id: s for s in Service},
        }

    def route(self, query_type: QueryType) -> Route:
        return self._routes[query_type]

    def pinned(self, service: Service) -> Route:
        """A caller that names a model gets that model only: no silent switch to another."""
        return Route(SelectedService(service.value), (service,))

    def service_for_model(self, model: str) -> Service | None:
        """`auto` is None (route by type); a known alias or model id is its service."""
        if model == AUTO_MODEL:
            return None
        service = self._models.get(model)
        if service is None:
            valid = ", ".join([AUTO_MODEL, *sorted(self._models)])
            raise RequestError(f"model {_show(model)} is not one of: {valid}", param="model")
        return service

    @property
    def model_ids(self) -> dict[str, Service]:
        return dict(self._models)


def _route(spec: RouteSettings) -> Route:
    if spec.primary is SelectedService.MULTI:
        return Route(SelectedService.MULTI, tuple(Service))
    primary = Service(spec.primary.value)
    return Route(spec.primary, (primary, *spec.fallbacks))


def _show(value: str) -> str:
    """Quote caller input for an error message, clipped so a huge value stays readable."""
    text = value if len(value) <= 60 else value[:60] + "..."
    return repr(text)
