"""The router's explained verdicts, its cascade, and the linear model's arithmetic."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from types import MappingProxyType

import pytest

from aiorch.classifier import (
    DEFAULT_CLASSIFIER,
    DEFAULT_ROUTER,
    Router,
    Verdict,
    classify,
    classify_explained,
)
from aiorch.router_model import HEAD_CHARS, TAIL_CHARS, LinearModel, text_features
from aiorch.types import QueryType

DATA = Path(__file__).parent / "data"
LABELLED = [
    json.loads(line)["query"]
    for line in (DATA / "labelled_queries.jsonl").read_text(encoding="utf-8").splitlines()
]
TRACEBACK = (
    "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\nKeyError: 'eu'\n"
)
ALWAYS_MODEL = Router(model=DEFAULT_ROUTER.model, sure_margin=math.inf)


def test_classify_is_the_explained_verdicts_type() -> None:
    for query in LABELLED:
        assert classify(query) is classify_explained(query).query_type


@pytest.mark.parametrize(
    ("query", "query_type", "signal"),
    [
        ("write unit tests for the parser", QueryType.TESTING, "rule:test_ask"),
        (
            "напиши user stories с критериями приёмки для корзины",
            QueryType.REQUIREMENTS,
            "rule:req_ask",
        ),
        ("```sql\nSELECT id FROM users;\n```", QueryType.CODE, "rule:code_fence"),
    ],
)
def test_a_sure_rule_names_its_heaviest_feature(
    query: str, query_type: QueryType, signal: str
) -> None:
    verdict = classify_explained(query)
    assert (verdict.query_type, verdict.signal) == (query_type, signal)
    assert verdict.score >= DEFAULT_ROUTER.sure_margin  # the rules' lead, in points
    assert verdict.header == signal


@pytest.mark.parametrize("query", ["", "   ", "🤔", "?!"])
def test_no_words_is_unknown_by_rule(query: str) -> None:
    assert classify_explained(query) == Verdict(QueryType.UNKNOWN, "rule:no_words", 0.0)


@pytest.mark.parametrize(
    "query",
    [
        "write the spec, the code and the tests for a todo app",
        "составь ТЗ и напиши реализацию на Python",
    ],
)
def test_asks_for_two_kinds_of_work_need_both_models_whatever_the_model_says(query: str) -> None:
    for router in (DEFAULT_ROUTER, ALWAYS_MODEL):
        assert router.explain(query) == Verdict(QueryType.UNKNOWN, "rule:several_asks", 0.0)


def test_when_the_rules_are_unsure_the_model_decides_with_its_probability() -> None:
    query = "how long should I let bread dough rise"
    rules = DEFAULT_CLASSIFIER.verdict(query)
    assert rules.margin < DEFAULT_ROUTER.sure_margin
    verdict = classify_explained(query)
    assert verdict.signal == "model"
    assert 0 < verdict.score <= 1
    assert verdict.header == f"model:{verdict.score:.2f}"


def test_the_model_never_answers_unknown_when_code_is_pasted() -> None:
    for query in (
        TRACEBACK + "why",
        "```python\nx = 1\n```",
        "почему?\n```js\nlet a = b.c();\n```",
    ):
        verdict = ALWAYS_MODEL.explain(query)
        assert verdict.signal == "model"
        assert verdict.query_type is not QueryType.UNKNOWN


def test_explicit_type_is_its_own_signal() -> None:
    verdict = Verdict.explicit(QueryType.REASONING)
    assert verdict == Verdict(QueryType.REASONING, "explicit", 1.0)
    assert verdict.header == "explicit"


def test_without_a_model_the_router_is_the_old_rules() -> None:
    rules_only = Router(model=None)
    for query in LABELLED:
        assert rules_only.classify(query) is DEFAULT_CLASSIFIER.classify(query)
    assert rules_only.explain("tests").signal == "rule:unsure"


def test_reasoning_cues_alone_do_not_make_the_rules_sure() -> None:
    """Why, compare and should-we cues are asked about everyday things too: the model decides."""
    query = "why do cats knock cups off tables"
    rules = DEFAULT_CLASSIFIER.verdict(query)
    assert rules.query_type is QueryType.REASONING
    assert rules.margin >= DEFAULT_ROUTER.sure_margin
    assert classify_explained(query).signal == "model"
    round_one = Router(model=DEFAULT_ROUTER.model, sure_needs={})
    assert round_one.explain(query) == Verdict(QueryType.REASONING, "rule:reason_why", rules.margin)


def test_a_maths_feature_lets_the_rules_decide_reasoning() -> None:
    verdict = classify_explained("prove that the square root of 3 is irrational")
    assert (verdict.query_type, verdict.signal) == (QueryType.REASONING, "rule:reason_math")


def test_router_is_immutable_and_validates() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_ROUTER.sure_margin = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="sure_margin"):
        Router(sure_margin=-1.0)
    with pytest.raises(ValueError, match="no_such_feature"):
        Router(sure_needs={QueryType.CODE: frozenset({"no_such_feature"})})
    needs = {QueryType.CODE: frozenset({"code_fence"})}
    router = Router(sure_needs=needs)
    needs[QueryType.CODE] = frozenset()
    assert router.sure_needs[QueryType.CODE] == {"code_fence"}  # a copy, not the caller's dict


# --- the linear model

CLASSES = (QueryType.CODE, QueryType.TESTING, QueryType.UNKNOWN)


def _model() -> LinearModel:
    weights = {"<fix>": (900, -400, -1000), "tes": (-300, 1200, -50), "#s:fence": (0, 0, -999_999)}
    return LinearModel(CLASSES, (10, -20, 500), MappingProxyType(weights))


def test_packed_scores_are_the_plain_sums() -> None:
    model = _model()
    features = {"<fix>", "tes", "#s:fence", "not in the model"}
    expected = [
        (bias + sum(model.weights[f][k] for f in features if f in model.weights)) / 1000
        for k, bias in enumerate(model.bias)
    ]
    assert model.scores(features) == pytest.approx(expected)
    assert model.scores([]) == [b / 1000 for b in model.bias]


def test_predict_gives_a_probability_and_can_exclude_a_class() -> None:
    model = _model()
    # scores 0.91, -0.42, -0.5: softmax of the first
    expected = 1 / (1 + math.exp(-0.42 - 0.91) + math.exp(-0.5 - 0.91))
    assert model.predict({"<fix>"}) == (QueryType.CODE, pytest.approx(expected))
    assert model.predict(set())[0] is QueryType.UNKNOWN
    kind, probability = model.predict(set(), exclude=QueryType.UNKNOWN)
    assert kind is QueryType.CODE
    assert probability < 0.5  # still measured against every class


def test_model_round_trips_through_its_file_format() -> None:
    model = _model()
    again = LinearModel.from_json(model.to_json())
    assert (again.classes, again.bias, dict(again.weights)) == (
        model.classes,
        model.bias,
        dict(model.weights),
    )


def test_from_floats_rounds_and_drops_empty_rows() -> None:
    model = LinearModel.from_floats(
        CLASSES, [0.0123, 0, 0], {"a": [0.0004, 0, 0], "b": [1, -2, 0.5]}
    )
    assert model.bias == (12, 0, 0)
    assert dict(model.weights) == {"b": (1000, -2000, 500)}


@pytest.mark.parametrize(
    ("bias", "weights", "match"),
    [
        ((0, 0), {}, "one value per class"),
        ((0, 0, 0), {"x": (1, 2)}, "one value per class"),
        ((0, 0, 0), {"x": (1 << 21, 0, 0)}, "under"),
    ],
)
def test_model_rejects_malformed_weights(
    bias: tuple[int, ...], weights: dict[str, tuple[int, ...]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        LinearModel(CLASSES, bias, MappingProxyType(weights))


def test_model_file_in_other_units_is_refused() -> None:
    text = _model().to_json().replace('"scale":1000', '"scale":100')
    with pytest.raises(ValueError, match="units"):
        LinearModel.from_json(text)


def test_shipped_model_covers_every_class() -> None:
    model = DEFAULT_ROUTER.model
    assert model is not None
    assert model.classes == tuple(QueryType)
    assert len(model.weights) > 1000


def test_features_of_a_huge_paste_are_bounded() -> None:
    prose = "слово word " * 50_000  # 550 KB
    bounded = text_features(prose)
    window = text_features(prose[:HEAD_CHARS] + " " + prose[-TAIL_CHARS:])
    assert bounded == window
    long_words = text_features("x" * 100_000)  # one word, cut before its 3-grams are taken
    assert len(long_words) < 40


def test_features_name_the_rules_and_shapes_that_fired() -> None:
    from aiorch.router_model import router_features

    features = router_features(DEFAULT_CLASSIFIER.verdict(TRACEBACK + "write unit tests"))
    assert {"#s:traceback", "#k:test_ask", "#a:testing", "<unit>", "uni", "unit tests"} <= features


def test_the_trainer_learns_a_small_separable_set() -> None:
    spec = importlib.util.spec_from_file_location(
        "train_router", Path(__file__).parents[2] / "scripts" / "train_router.py"
    )
    assert spec is not None
    assert spec.loader is not None
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    queries = ["fix my loop", "fix the loop please", "write tests", "more tests please"] * 3
    labels = [QueryType.CODE, QueryType.CODE, QueryType.TESTING, QueryType.TESTING] * 3
    model = trainer.train(trainer.featurize(queries), labels, epochs=20, rate=0.3)
    assert [model.predict(f)[0] for f in trainer.featurize(queries)] == labels
    assert trainer.train(trainer.featurize(queries), labels, epochs=20, rate=0.3) == model
