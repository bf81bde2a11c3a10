"""A small linear model over words and their n-grams: the router's answer when the rules are unsure.

The rules (`aiorch.classifier_rules`) are precise where a query names what it wants ("write unit
tests", "user stories", a traceback) and silent where it does not ("what would break if we
doubled the partitions", "how long to boil an egg"). A linear model over sub-word pieces
generalises from phrasings it has seen to ones it has not, in both languages, because Russian
inflection and English compounds share their character n-grams.

Features of one query (a set of strings; each counts once):

- each word of the prose padded with `<` and `>` (`<tests>`), and each character 3-gram of the
  padded word (`<te`, `tes`, `est`, `sts`, `ts>`): Russian inflection and English compounds
  share their 3-grams, so `тестами` and `тестирование` vote alike;
- each pair of neighbouring words (`unit tests`, `как проверить`): a phrase says more than its
  words ("what's the difference" between two drinks is not a design question);
- `#k:` + the name of each rule keyword feature that fired (`#k:test_ask`), `#s:` + each code
  shape the rules found (`#s:traceback`), `#a:` + each class explicitly asked for: the rules'
  knowledge is evidence the model weighs, not a verdict it must follow;
- `#n:` + a bucket of the prose's word count (one-word queries behave differently).

In 5-fold cross-validation of the router on the round-two training data (3,900 queries, two
writers, this trainer), 3-grams and word pairs scored 0.915, 3-grams alone 0.911, 4-grams 0.913,
3+4-grams 0.906; with another learner 2-4-grams, 1-5-grams and 3-5-grams were within half a
point. N-gram ranges barely matter; 3-grams and pairs are the best and among the cheapest.

Scoring is one dictionary lookup per feature and one sum: each feature's six class weights are
packed into one integer (see `_pack`), so `sum` adds all of them in a single C loop. About as
cheap as the rules themselves; no numpy at run time. The weights are trained by
`scripts/train_router.py` (pure Python, multinomial logistic regression) and shipped as
`aiorch/data/router_model.json`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise, repeat
from types import MappingProxyType
from typing import TYPE_CHECKING

from aiorch.types import QueryType

if TYPE_CHECKING:
    from aiorch.classifier_rules import RuleVerdict

__all__ = ["LinearModel", "load_default_model", "router_features", "text_features"]

_WORDS = re.compile(r"[^\W_]+")
# Weights are stored and summed as integers in units of 1/SCALE.
SCALE = 1000
# Packing: each class gets a slot of _SLOT bits holding weight + _OFFSET (never negative), and a
# last slot counts the features, so the offsets can be taken off after the sum. A weight must
# stay under _OFFSET in size (|w| < 1048 at SCALE 1000) and a query can have 2**19 features
# before a slot overflows; the prose window allows a few thousand.
_SLOT = 40
_OFFSET = 1 << 20
_MASK = (1 << _SLOT) - 1
# Prose beyond this is not read by the model: the ask sits at either end of a long query.
HEAD_CHARS = 1200
TAIL_CHARS = 400
# Words longer than this are cut before n-grams are taken: a hash or a base64 blob is not a word.
_LONGEST_WORD = 24
_MODEL_FILE = "router_model.json"
# The 3-gram slices of a padded word of each length: a C-level map instead of a Python loop.
_TRIGRAMS = tuple(tuple(slice(i, i + 3) for i in range(n - 2)) for n in range(_LONGEST_WORD + 3))


def _bucket(n_words: int) -> str:
    if n_words <= 2:
        return f"#n:{n_words}"
    if n_words <= 5:
        return "#n:3-5"
    return "#n:6-15" if n_words <= 15 else "#n:16+"


def text_features(prose: str, extra: Iterable[str] = ()) -> set[str]:
    """The model's features of already case-folded prose, plus `extra` ones (rule and shape names).

    The prose is read up to `HEAD_CHARS` from its start and `TAIL_CHARS` from its end, so the
    cost is bounded whatever the query's length. Extra features start with `#`, which no word
    piece contains.
    """
    if len(prose) > HEAD_CHARS + TAIL_CHARS:
        prose = prose[:HEAD_CHARS] + " " + prose[-TAIL_CHARS:]
    words = [word[:_LONGEST_WORD] for word in _WORDS.findall(prose)]
    features = set(extra)
    features.add(_bucket(len(words)))
    for word in set(words):
        padded = "<" + word + ">"
        features.add(padded)
        features.update(map(padded.__getitem__, _TRIGRAMS[len(padded)]))
    # A space joins the pair: no word or 3-gram has one.
    features.update(map(" ".join, pairwise(words)))
    return features


def router_features(rules: RuleVerdict) -> set[str]:
    """The model's features of a query the rules have read: what training and routing share."""
    extra = [f"#k:{name}" for name in rules.fired]
    extra += [f"#s:{name}" for name in rules.shapes]
    extra += [f"#a:{kind.value}" for kind in rules.asked]
    return text_features(rules.prose, extra)


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Per-class weights over string features, in units of 1/`SCALE`.

    `scores` adds the weights of the features present to the bias, per class.
    """

    classes: tuple[QueryType, ...]
    bias: tuple[int, ...]
    weights: Mapping[str, tuple[int, ...]]
    _packed: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        width = len(self.classes)
        if len(self.bias) != width or any(len(w) != width for w in self.weights.values()):
            raise ValueError("every weight row needs one value per class")
        if any(abs(w) >= _OFFSET for row in self.weights.values() for w in row):
            raise ValueError(f"weights must stay under {_OFFSET / SCALE:g} in size")
        packed = {feature: _pack(row) for feature, row in self.weights.items()}
        object.__setattr__(self, "_packed", packed)

    def scores(self, features: Iterable[str]) -> list[float]:
        """Each class's score: its bias plus the weights of the features present."""
        total = sum(map(self._packed.get, features, repeat(0)))
        width = len(self.classes)
        count = total >> (_SLOT * width)
        return [
            (bias + ((total >> (_SLOT * k)) & _MASK) - count * _OFFSET) / SCALE
            for k, bias in enumerate(self.bias)
        ]

    def predict(
        self, features: Iterable[str], exclude: QueryType | None = None
    ) -> tuple[QueryType, float]:
        """The most likely class but `exclude`, and its probability (softmax over all classes)."""
        scores = self.scores(features)
        allowed = [s for c, s in zip(self.classes, scores, strict=True) if c is not exclude]
        top = max(allowed)
        total = sum(math.exp(s - top) for s in scores)
        return self.classes[scores.index(top)], 1.0 / total

    @classmethod
    def from_floats(
        cls,
        classes: tuple[QueryType, ...],
        bias: Iterable[float],
        weights: Mapping[str, Iterable[float]],
    ) -> LinearModel:
        """A model from trained float weights, rounded to 1/`SCALE`; all-zero rows are dropped."""
        rows = {f: tuple(round(w * SCALE) for w in row) for f, row in weights.items()}
        return cls(
            classes,
            tuple(round(b * SCALE) for b in bias),
            MappingProxyType({f: row for f, row in sorted(rows.items()) if any(row)}),
        )

    def to_json(self) -> str:
        """The model as compact JSON, one feature per line so that a retrain diffs readably."""
        head = {"classes": [c.value for c in self.classes], "scale": SCALE, "bias": self.bias}
        lines = [json.dumps(head, separators=(",", ":"))[:-1] + ',"weights":{']
        rows = sorted(self.weights.items())
        for i, (feature, row) in enumerate(rows):
            comma = "," if i < len(rows) - 1 else ""
            key = json.dumps(feature, ensure_ascii=False)
            lines.append(f"{key}:{json.dumps(list(row))}{comma}")
        lines.append("}}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LinearModel:
        document = json.loads(text)
        if document["scale"] != SCALE:
            raise ValueError(f"model weights are in units of 1/{document['scale']}, not 1/{SCALE}")
        weights = {feature: tuple(row) for feature, row in document["weights"].items()}
        return cls(
            classes=tuple(QueryType(c) for c in document["classes"]),
            bias=tuple(document["bias"]),
            weights=MappingProxyType(weights),
        )


def _pack(row: tuple[int, ...]) -> int:
    """Six weights and a count of one in one integer: summing packed rows sums each slot."""
    packed = 1 << (_SLOT * len(row))
    for k, weight in enumerate(row):
        packed |= (weight + _OFFSET) << (_SLOT * k)
    return packed


def load_default_model() -> LinearModel:
    """The model shipped in the package (`aiorch/data/router_model.json`)."""
    text = resources.files("aiorch").joinpath("data", _MODEL_FILE).read_text(encoding="utf-8")
    return LinearModel.from_json(text)
