"""Names to models, and models to routes: what a request may name and where it then goes.

A request names `auto` (classify, then route by query type), a service (`kimi`: its default
model), a configured model id or alias, `service/model-id` (any model the service serves, listed
in the configuration or not) or `multi` (the `multi` models at once, answers merged). Every model
has its own fallback chain: its `fallbacks`, else its service's. Everything here comes from the
configuration; adding a service or a model touches the configuration only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

from aiorch.errors import ModelNotFound
from aiorch.models import Model
from aiorch.service_settings import ModelSettings, ServiceSettings
from aiorch.types import QueryType

if TYPE_CHECKING:
    from aiorch.config import Settings

AUTO = "auto"
MULTI = "multi"  # the route that asks the `multi` models at once and merges their answers
UNLISTED = "other"  # the `model` label of a `service/model-id` the configuration does not list


class Route(msgspec.Struct, frozen=True):
    """`targets` in order of preference; a multi route asks all of them at once."""

    selected: str  # the `selected_service` label: the first target's service, or "multi"
    targets: tuple[Model, ...]
    multi: bool = False


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[tuple[str, str], Model] = {}
        self._names: dict[str, Model] = {}
        ambiguous: set[str] = set()
        for service in settings.services.values():
            for entry in _entries(service):
                model = _model(service, entry, entry.id)
                self._models[(service.name, entry.id)] = model
        for (_, model_id), model in self._models.items():
            if model_id in self._names and self._names[model_id] is not model:
                ambiguous.add(model_id)
            self._names.setdefault(model_id, model)
        for name in ambiguous:  # served by two services: only `service/model-id` names it
            del self._names[name]
        self._ambiguous = frozenset(ambiguous)
        for service in settings.services.values():
            for entry in _entries(service):
                for alias in entry.aliases:
                    self._names[alias] = self._models[(service.name, entry.id)]
            self._names[service.name] = self._models[(service.name, service.model_id)]
        self._routes = {
            query_type: self._route_for(spec.primary, spec.fallbacks)
            for query_type, spec in settings.routes.items()
        }

    @classmethod
    def problems(cls, settings: Settings) -> list[str]:
        """What in the configuration names a model that is not there, or names one twice."""
        problems: list[str] = []
        seen: dict[str, str] = {}
        for service in settings.services.values():
            for entry in _entries(service):
                for alias in entry.aliases:
                    if alias in seen or alias in settings.services or alias in (AUTO, MULTI):
                        problems.append(f"alias {alias!r} of {service.name}/{entry.id} is taken")
                    seen[alias] = service.name
        if problems:
            return problems
        try:
            catalog = cls(settings)
        except ModelNotFound as error:
            return [error.message]
        for model in catalog.models():
            service = settings.services[model.service]
            codes = {**service.fallbacks_on, **service.model_settings(model.id).fallbacks_on}
            try:
                catalog.chain(model)
                for code in codes:
                    catalog.on_refusal(model, code)
            except ModelNotFound as error:
                problems.append(f"fallbacks of {model.service}/{model.id}: {error.message}")
        for ref in settings.multi:
            try:
                catalog.resolve(ref)
            except ModelNotFound as error:
                problems.append(f"multi: {error.message}")
        return problems

    def models(self) -> Iterator[Model]:
        """Every configured model, each service's default first."""
        return iter(self._models.values())

    def names(self) -> dict[str, Model]:
        """Every name a request may use for a configured model, but `service/model-id`."""
        return dict(self._names)

    def resolve(self, name: str) -> Model:
        """The model a name stands for; `ModelNotFound` (404) if none."""
        model = self._names.get(name)
        if model is not None:
            return model
        service_name, slash, model_id = name.partition("/")
        service = self.settings.services.get(service_name) if slash else None
        if service is not None and model_id:
            known = self._models.get((service_name, model_id))
            return known or _model(service, service.model_settings(model_id), UNLISTED)
        if name in self._ambiguous:
            raise ModelNotFound(
                f"model {name!r} is served by several services; name one as service/{name}"
            )
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ModelNotFound(
            f"model {shown!r} is not served here; GET /v1/models lists the models, "
            "and service/model-id names any model of a configured service"
        )

    def chain(self, model: Model) -> tuple[Model, ...]:
        """The model, then its fallbacks, each once."""
        service = self.settings.services[model.service]
        refs = service.model_settings(model.id).fallbacks
        if refs is None:
            refs = service.fallbacks or ()
        return _unique((model, *(self.resolve(ref) for ref in refs)))

    def on_refusal(self, model: Model, code: str | None) -> tuple[Model, ...]:
        """Where to go when the model's upstream refuses a request with this code: the models
        the configuration names for it (the model's entry first, then its service), or none."""
        if code is None:
            return ()
        service = self.settings.services[model.service]
        refs = service.model_settings(model.id).fallbacks_on.get(code)
        if refs is None:
            refs = service.fallbacks_on.get(code, ())
        return tuple(m for m in _unique(tuple(self.resolve(r) for r in refs)) if m != model)

    def route(self, query_type: QueryType) -> Route:
        return self._routes[query_type]

    def named(self, name: str, *, fallback: bool = True) -> Route:
        """The route for a model the client named: the model and, unless turned off, its chain."""
        if name == MULTI:
            return self.multi()
        model = self.resolve(name)
        targets = self.chain(model) if fallback else (model,)
        return Route(model.service, targets)

    def multi(self) -> Route:
        return Route(MULTI, _unique(tuple(self.resolve(r) for r in self.settings.multi)), True)

    def _route_for(self, primary: str, fallbacks: tuple[str, ...] | None) -> Route:
        if primary == MULTI:
            return self.multi()
        model = self.resolve(primary)
        if fallbacks is None:
            return Route(model.service, self.chain(model))
        return Route(model.service, _unique((model, *(self.resolve(r) for r in fallbacks))))


def _entries(service: ServiceSettings) -> list[ModelSettings]:
    """The service's model entries, its default model first (listed or not)."""
    default = service.model_settings(service.model_id)
    return [default, *(m for m in service.models if m.id != default.id)]


def model_of(service: ServiceSettings, model_id: str) -> Model:
    """One model of a service, its rules resolved (a configured entry's, or the built-in ones)."""
    listed = any(m.id == model_id for m in _entries(service))
    return _model(service, service.model_settings(model_id), model_id if listed else UNLISTED)


def _model(service: ServiceSettings, entry: ModelSettings, label: str) -> Model:
    rules = entry.rules(service.kind.value)
    if rules.thinking_control == "none" and rules.thinking is not None:
        thinking = rules.thinking  # the model's mode is fixed: no setting changes it
    else:
        thinking = entry.thinking if entry.thinking is not None else service.thinking
    return Model(
        service=service.name,
        id=entry.id,
        label=label if label == UNLISTED else entry.id,
        thinking=thinking,
        rules=rules,
        max_tokens=entry.max_tokens or service.max_tokens,
        temperature=service.temperature if entry.temperature is None else entry.temperature,
        price_input_per_mtok=_either(entry.price_input_per_mtok, service.price_input_per_mtok),
        price_output_per_mtok=_either(entry.price_output_per_mtok, service.price_output_per_mtok),
    )


def _either(value: float | None, default: float) -> float:
    return default if value is None else value


def _unique(models: tuple[Model, ...]) -> tuple[Model, ...]:
    seen: set[tuple[str, str]] = set()
    kept: list[Model] = []
    for model in models:
        key = (model.service, model.id)
        if key not in seen:
            seen.add(key)
            kept.append(model)
    return tuple(kept)
