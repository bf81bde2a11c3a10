"""Which kind of query is this: rules when they are sure, a small learned model otherwise.

Two deciders, measured against each other on a frozen bilingual holdout (docs/routing.md):

- the **rules** (`aiorch.classifier_rules`): weighted regex features for explicit asks ("write
  unit tests", "user stories for"), code shapes (fences, tracebacks) and topic words. Precise
  when they fire strongly, silent or torn on phrasings nobody wrote a rule for;
- the **model** (`aiorch.router_model`): a linear classifier over character and word n-grams of
  the prose plus the names of the rules that fired, trained by `scripts/train_router.py` and
  shipped as package data. It generalises to new wordings, in Russian as in English.

`Router.explain` runs the rules; when their winner leads by at least `sure_margin` points the
rules decide, otherwise the model does. For reasoning the lead is not enough: "why", "compare",
"should we" and "difference between" are asked about onions and mortgages as often as about
databases, so the rules decide reasoning only when a maths or puzzle feature voted
(`sure_needs`); the model, which knows the topic words, decides the rest. Two outcomes stay
with the rules whatever the model thinks: no letters or digits at all, and explicit asks for two
kinds of work ("write the spec, the code and the tests"), which are the `unknown` queries that
need both models.

Every answer says what decided it (`Verdict.signal`): `rule:<feature>` (the heaviest rule that
voted for the winner, e.g. `rule:test_ask`, `rule:code_fence`), `rule:several_asks`,
`rule:no_words`, `model` (then `score` is the model's probability) or `explicit` (the caller
named the type). `classify` keeps its old contract: text in, `QueryType` out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aiorch.classifier_rules import (
    DEFAULT_CLASSIFIER,
    NO_WORDS_REASON,
    Classifier,
    Feature,
    RuleVerdict,
)
from aiorch.router_model import LinearModel, load_default_model, router_features
from aiorch.types import QueryType

__all__ = [
    "DEFAULT_CLASSIFIER",
    "DEFAULT_ROUTER",
    "Classifier",
    "RecentVerdicts",
    "Router",
    "Verdict",
    "classify",
    "classify_explained",
    "router_features",
]

EXPLICIT = "explicit"
SEVERAL_ASKS = "rule:several_asks"
NO_WORDS = "rule:no_words"
MODEL = "model"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A routing decision and the signal that decided it.

    `score`: for `model`, the model's probability for `query_type` (0 to 1); for a `rule:`
    signal, the rules' lead over the runner-up in points (0 for `unknown`); 1 for `explicit`.
    `header` is the compact form for a response header: `model:0.91`, `rule:test_ask`.
    """

    query_type: QueryType
    signal: str
    score: float

    @classmethod
    def explicit(cls, query_type: QueryType) -> Verdict:
        """The verdict for a type the caller named: nothing was guessed."""
        return cls(query_type, EXPLICIT, 1.0)

    @property
    def header(self) -> str:
        return f"{self.signal}:{self.score:.2f}" if self.signal == MODEL else self.signal


def _reasoning_needs_maths() -> Mapping[QueryType, frozenset[str]]:
    return {QueryType.REASONING: frozenset({"reason_math"})}


@dataclass(frozen=True, slots=True)
class Router:
    """Rules first, the model when the rules are unsure; every knob is a field.

    `sure_margin`: the rules decide when their winner leads by at least this many points
    (`math.inf`: the model decides everything it may; 0 with `model=None`: the rules alone, as
    before). `sure_needs`: for the classes it names, the rules decide only when one of the
    listed features voted, whatever their lead (the default: reasoning needs maths or a
    puzzle). Without a model, unsure rules answer `unknown`, the old behaviour.
    """

    rules: Classifier = DEFAULT_CLASSIFIER
    model: LinearModel | None = None
    sure_margin: float = 3.0
    sure_needs: Mapping[QueryType, frozenset[str]] = field(
        default_factory=_reasoning_needs_maths, hash=False
    )
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        features = self.rules.keyword_features + self.rules.shape_features
        object.__setattr__(self, "_by_name", {f.name: f for f in features})
        object.__setattr__(self, "sure_needs", MappingProxyType(dict(self.sure_needs)))
        if self.sure_margin < 0:
            raise ValueError("sure_margin must be non-negative")
        unknown = {n for names in self.sure_needs.values() for n in names} - set(self._by_name)
        if unknown:
            raise ValueError(f"sure_needs names no such rule feature: {', '.join(sorted(unknown))}")

    def classify(self, query: str) -> QueryType:
        return self.explain(query).query_type

    def explain(self, query: str) -> Verdict:
        rules = self.rules.verdict(query)
        if rules.reason == NO_WORDS_REASON:
            return Verdict(QueryType.UNKNOWN, NO_WORDS, 0.0)
        if len(rules.asked) > 1:
            return Verdict(QueryType.UNKNOWN, SEVERAL_ASKS, 0.0)
        if self.model is None or self._sure(rules):
            return Verdict(rules.query_type, self._rule_signal(rules), rules.margin)
        # The model's `unknown` means "nothing to route on"; pasted code is something to route
        # on, however few words come with it (a traceback and "why?").
        exclude = QueryType.UNKNOWN if rules.shapes else None
        query_type, probability = self.model.predict(router_features(rules), exclude)
        return Verdict(query_type, MODEL, round(probability, 4))

    def _sure(self, rules: RuleVerdict) -> bool:
        if rules.query_type is QueryType.UNKNOWN or rules.margin < self.sure_margin:
            return False
        needs = self.sure_needs.get(rules.query_type)
        return needs is None or not needs.isdisjoint(rules.fired)

    def _rule_signal(self, rules: RuleVerdict) -> str:
        """`rule:` and the name of the heaviest feature that voted for the winner."""
        if rules.query_type is QueryType.UNKNOWN:
            return "rule:unsure"
        voters = [
            self._by_name[name]
            for name in (*rules.fired, *rules.shapes)
            if self._by_name[name].query_type is rules.query_type
        ]
        best = max(voters, key=lambda f: f.weight, default=None)
        return f"rule:{best.name}" if best else "rule:unsure"


class RecentVerdicts:
    """A classifier that remembers the verdicts of the texts it saw last.

    Classification is a pure function of the text, so a remembered verdict is the one another
    run would give; a repeated query (every answer-cache hit, a client's retry, an agent sending
    its conversation again) skips the rules and the model, which are most of a cache hit's CPU
    (docs/performance.md). Least recently used first out, bounded by `max_entries` and by
    `max_chars` of text kept; a text longer than `max_text` is classified every time (its hash
    is as dear as a lookup saves, and it would crowd out the rest).
    """

    def __init__(
        self,
        classify: Callable[[str], Verdict],
        *,
        max_entries: int = 4096,
        max_chars: int = 1 << 21,
        max_text: int = 8192,
    ) -> None:
        if min(max_entries, max_chars, max_text) < 1:
            raise ValueError("max_entries, max_chars and max_text must be positive")
        self._classify = classify
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_text = max_text
        self._seen: dict[str, Verdict] = {}  # oldest first
        self._chars = 0

    def __call__(self, text: str) -> Verdict:
        if len(text) > self.max_text:
            return self._classify(text)  # never kept: not worth hashing a 100 KB paste for
        seen = self._seen
        verdict = seen.pop(text, None)
        if verdict is not None:
            seen[text] = verdict  # now the most recently used
            return verdict
        verdict = self._classify(text)
        seen[text] = verdict
        self._chars += len(text)
        while len(seen) > self.max_entries or self._chars > self.max_chars:
            oldest = next(iter(seen))
            del seen[oldest]
            self._chars -= len(oldest)
        return verdict

    def __len__(self) -> int:
        return len(self._seen)


DEFAULT_ROUTER = Router(model=load_default_model())


def classify_explained(query: str) -> Verdict:
    """The query's type and the signal that decided it, by the default router."""
    return DEFAULT_ROUTER.explain(query)


def classify(query: str) -> QueryType:
    """The query's type by the default router: what the orchestrator calls."""
    return DEFAULT_ROUTER.explain(query).query_type
