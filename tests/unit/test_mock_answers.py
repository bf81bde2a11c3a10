"""The mock's pure answer logic: schema instances, continuations, agent shapes."""

from __future__ import annotations

import json
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.mock.answers import continue_after
from aiorch.mock.schema import SchemaError, instance
from aiorch.mock.shapes import find_template, shaped
from aiorch.mock.text import pieces
from aiorch.mock.words import Filler


class Leaf(pydantic.BaseModel):
    label: str = pydantic.Field(min_length=3, max_length=12)
    weight: float = pydantic.Field(ge=-1, le=1)


class Tree(pydantic.BaseModel):
    kind: Literal["a", "b", "c"]
    leaves: list[Leaf] = pydantic.Field(min_length=1, max_length=4)
    child: Tree | None
    tags: set[str]
    count: int = pydantic.Field(gt=0, lt=10, multiple_of=3)


@given(st.binary(min_size=8, max_size=16))
@settings(max_examples=60, deadline=None)
def test_instances_validate_against_the_model_that_made_the_schema(seed: bytes) -> None:
    value = instance(Tree.model_json_schema(), Filler(seed, ("alpha", "beta")))
    Tree.model_validate(value)  # raises if the mock's value does not fit


def test_instances_are_deterministic() -> None:
    schema = Tree.model_json_schema()
    assert instance(schema, Filler(b"12345678", ())) == instance(schema, Filler(b"12345678", ()))


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/missing"},
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "object", "required": ["x"], "properties": {}},
        {"type": "array", "minItems": 3, "maxItems": 1},
    ],
)
def test_unsatisfiable_schemas_say_so(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        instance(schema, Filler(b"12345678", ()))


WHOLE = pieces("The quick brown fox jumps over the lazy dog.\n\n```python\nx = 1\n```")


@pytest.mark.parametrize("cut", [0, 1, 5, 17, 30, len("".join(WHOLE))])
def test_a_prefix_plus_its_continuation_is_the_whole_answer(cut: int) -> None:
    text = "".join(WHOLE)
    prefix = text[:cut]
    assert prefix + "".join(continue_after(WHOLE, prefix)) == text


def test_a_foreign_prefix_goes_on_after_as_many_words() -> None:
    assert (
        "".join(continue_after(WHOLE, "One two three"))
        == " fox jumps over the lazy dog.\n\n```python\nx = 1\n```"
    )


def test_templates_need_a_request_for_json_and_a_json_fence() -> None:
    fenced = '```json\n{"a": 1}\n```'
    assert find_template(f"Answer with JSON in this shape:\n{fenced}\n## Topic\nx") is not None
    assert find_template(f"Explain this:\n{fenced}") is None  # shows JSON, asks for none
    assert shaped("Tell me about caching", "", b"12345678" * 2) is None


def test_a_template_is_mirrored_with_ids_enums_and_code() -> None:
    prompt = (
        "Answer with one JSON object in this shape:\n```json\n"
        '{"items": [{"id": "T-1", "state": "open", "path": "src/app.py", "content": "..."}],'
        ' "ok": true}\n```\n## Request\nA tool that counts words in files'
    )
    text = shaped(prompt, "", b"0123456789abcdef")
    assert text is not None
    value = json.loads(text.removeprefix("```json\n").removesuffix("\n```"))
    assert value["ok"] is True
    for number, item in enumerate(value["items"], 1):
        assert item["id"] == f"T-{number}"
        assert item["state"] == "open"
        assert item["path"].startswith("src/")
        assert item["path"].endswith(".py")
        compile(item["content"], item["path"], "exec")
