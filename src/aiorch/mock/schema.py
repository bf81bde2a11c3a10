"""JSON values made up to fit a JSON Schema, deterministically (structured output, tool arguments).

Covers what clients actually send (OpenAI's strict schemas from Pydantic, Ollama's `format`):
`type` (also lists), `properties`/`required`/`additionalProperties`, `items`/`prefixItems`/
`minItems`/`maxItems`/`uniqueItems`, `enum`, `const`, `$ref` into `$defs`/`definitions`,
`anyOf`/`oneOf`/`allOf`, `minimum`/`maximum` (and exclusive ones), `multipleOf`,
`minLength`/`maxLength` and the common string `format`s. `pattern` is not honoured. Recursive
schemas end at a depth limit: optional properties are left out, arrays take their minimum length
and `anyOf` branches take `null` when they can.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from aiorch.mock.words import Filler

_DEEP = 4  # below this depth only what the schema requires is generated
_LIMIT = 12  # never deeper than this, whatever the schema says


class SchemaError(ValueError):
    """The schema cannot be satisfied or is not a schema; the message says where."""


def instance(schema: Any, filler: Filler) -> Any:
    """A value valid for `schema` (a JSON Schema as decoded JSON)."""
    if schema is True or schema == {}:
        return {"answer": filler.sentence(8)}
    if not isinstance(schema, Mapping):
        raise SchemaError("the schema must be a JSON object")
    return _Maker(schema, filler).make(schema, 0, "value")


class _Maker:
    def __init__(self, root: Mapping[str, Any], filler: Filler) -> None:
        self.root = root
        self.filler = filler
        self.rng: random.Random = filler.rng

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise SchemaError(f"only local $ref are supported, got {ref!r}")
            target: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise SchemaError(f"$ref {ref} points nowhere")
                target = target[part]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if rest else target
            seen += 1
            if seen > 32:
                raise SchemaError(f"$ref {ref} loops")
        return schema

    def make(self, raw: Any, depth: int, name: str) -> Any:
        if raw is True or raw == {}:
            return self.filler.words(2)
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{name}: a schema must be an object")
        schema = self.resolve(raw)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            options = schema["enum"]
            if not isinstance(options, list) or not options:
                raise SchemaError(f"{name}: enum must be a non-empty list")
            return options[self.rng.randrange(len(options))]
        if "allOf" in schema:
            return self.make(
                _merge_all(schema, [self.resolve(s) for s in schema["allOf"]]), depth, name
            )
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.make(self.branch(schema, key, depth), depth, name)
        kind = self.kind(schema, depth)
        if kind == "object":
            return self.obj(schema, depth, name)
        if kind == "array":
            return self.array(schema, depth, name)
        if kind == "string":
            return self.string(schema, name)
        if kind == "integer":
            return int(self.number(schema, integer=True))
        if kind == "number":
            return self.number(schema, integer=False)
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    def branch(self, schema: Mapping[str, Any], key: str, depth: int) -> Mapping[str, Any]:
        options = [self.resolve(s) for s in schema[key] if isinstance(s, Mapping)]
        if not options:
            raise SchemaError(f"{key} must list schemas")
        rest = {k: v for k, v in schema.items() if k != key}
        nulls = [o for o in options if o.get("type") == "null"]
        others = [o for o in options if o.get("type") != "null"] or nulls
        pick = nulls[0] if nulls and depth >= _DEEP else others[self.rng.randrange(len(others))]
        return {**rest, **pick}

    def kind(self, schema: Mapping[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if isinstance(k, str)]
            if not kinds:
                raise SchemaError("type lists must name types")
            if "null" in kinds and (depth >= _DEEP or len(kinds) == 1):
                return "null"
            return next(k for k in kinds if k != "null")
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def obj(self, schema: Mapping[str, Any], depth: int, name: str) -> dict[str, Any]:
        if depth > _LIMIT:
            raise SchemaError(f"{name}: the schema nests deeper than {_LIMIT} levels")
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            if key in required or depth < _DEEP:
                self.filler.key = key
                out[key] = self.make(sub, depth + 1, f"{name}.{key}")
        missing = required - out.keys()
        if missing:
            raise SchemaError(f"{name}: required {sorted(missing)} not in properties")
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, Mapping) and depth < _DEEP:
            for key in self.filler.words(2).split():
                out[key] = self.make(extra, depth + 1, f"{name}.{key}")
        return out

    def array(self, schema: Mapping[str, Any], depth: int, name: str) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        if high < low:
            raise SchemaError(f"{name}: maxItems < minItems")
        wanted = low if depth >= _DEEP else min(high, max(low, 1 + self.rng.randrange(3)))
        wanted = max(wanted, len(prefix)) if items is not False else len(prefix)
        out: list[Any] = []
        for index in range(wanted):
            sub = prefix[index] if index < len(prefix) else items
            value = self.make(sub, depth + 1, f"{name}[{index}]")
            if schema.get("uniqueItems"):
                for _ in range(8):
                    if value not in out:
                        break
                    value = self.make(sub, depth + 1, f"{name}[{index}]")
                else:
                    break  # the item schema has too few values; a shorter array stays valid
            out.append(value)
        return out

    def number(self, schema: Mapping[str, Any], *, integer: bool) -> float:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", max(low, 0) + 100))
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            low = low + (1 if integer else 0.5)
        if "exclusiveMaximum" in schema and "maximum" not in schema:
            high = high - (1 if integer else 0.5)
        if high < low:
            raise SchemaError("maximum < minimum")
        step = schema.get("multipleOf")
        if step:
            first = -(-low // step)
            last = high // step
            if last < first:
                raise SchemaError("no multiple of multipleOf between minimum and maximum")
            return float(step * self.rng.randint(int(first), int(last)))
        if integer:
            return float(self.rng.randint(int(-(-low // 1)), int(high // 1)))
        return round(self.rng.uniform(low, high), 2)

    def string(self, schema: Mapping[str, Any], name: str) -> str:
        fmt = schema.get("format")
        value = self.filler.formatted(fmt) if isinstance(fmt, str) else None
        if value is None:
            value = self.filler.for_key(self.filler.key or name)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        while len(value) < low:
            value = f"{value} {self.filler.words(3)}".strip()
        if high is not None:
            value = value[: int(high)].rstrip() or "x" * min(int(high), max(low, 1))
        return value


def _merge_all(schema: Mapping[str, Any], parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


_IDENT = re.compile(r"[^a-z0-9]+")


def slug(text: str, sep: str = "_") -> str:
    return _IDENT.sub(sep, text.lower()).strip(sep)
