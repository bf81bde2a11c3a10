"""The router's rules: a query's `QueryType` from weighted regex features, English and Russian.

`aiorch.classifier` decides with these rules when they are sure and asks a small learned model
(`aiorch.router_model`) otherwise; the model also reads which rules fired. This module is the
rules alone, usable and testable on their own.

A query scores points per class from weighted regex features; the best class wins unless its
score is too low, or too close to the runner-up, or the query is too short to trust, in which case
the answer is `unknown` (the orchestrator then asks both models). Two kinds of feature:

- keyword features read the *prose*: the text outside code fences and code-looking lines,
  case-folded, with `ё` read as `е`, so that a pasted `def test_x` or `requirements.txt` does not
  vote for a class. Russian words are matched by stem (`тест\\w*`, `требовани\\w*`) to absorb
  inflection;
- shape features read the raw text for code: fences, tracebacks, SQL, diffs, JSON, shell. Their
  total is capped so that a long paste cannot outvote an explicit ask ("write tests for this").

Precedence between classes comes from the weights and from *asks*: a feature marked `ask` is an
explicit request for an artefact ("write unit tests", "user stories for", "implement"). When the
ask is for tests or requirements, pasted code is its subject and its shape does not vote for code;
"why does this fail" next to a traceback has no such ask and stays code. Asks for two different
classes at once ("write the spec, the code and the tests") make the query `unknown`.

Only a bounded head and tail of the query is read, and every pattern has bounded repetition, so
a 100 KB paste costs about what a 3 KB one does.

The weights and thresholds live in plain tuples and a frozen `Classifier`, so a variant can be
built and compared without touching module state: `Classifier(margin=2.0).classify(text)`.
Every feature has a name (`test_ask`, `code_fence`); a `RuleVerdict` lists the ones that fired,
which is how a routing decision explains itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from aiorch.gates import Gate, GateIndex, Prefixes, gate_for
from aiorch.types import QueryType

__all__ = [
    "DEFAULT_CLASSIFIER",
    "KEYWORD_FEATURES",
    "NO_WORDS_REASON",
    "SHAPE_FEATURES",
    "Classifier",
    "Feature",
    "RuleVerdict",
]

_CODE = QueryType.CODE
_TEST = QueryType.TESTING
_REQ = QueryType.REQUIREMENTS
_REASON = QueryType.REASONING
_GENERAL = QueryType.GENERAL
_SCORED = (_CODE, _TEST, _REQ, _REASON, _GENERAL)  # every class but unknown, which is decided


@dataclass(frozen=True, slots=True)
class Feature:
    """One piece of evidence: when `pattern` matches (once is enough), `query_type` gains `weight`.

    `name` says what the feature is about (`test_ask`, `traceback`): it appears in explanations.
    An `ask` feature is an explicit request for an artefact of its class ("write unit tests",
    "user stories for", "implement"), as opposed to a topic the query merely mentions.
    """

    name: str
    query_type: QueryType
    weight: float
    pattern: re.Pattern[str]
    ask: bool = False
    # Derived from `pattern`: lets `verdict` skip the search when it certainly cannot match.
    gate: Gate | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gate", gate_for(self.pattern))


def _kw(
    name: str, query_type: QueryType, weight: float, *alternatives: str, ask: bool = False
) -> Feature:
    """A keyword feature over case-folded prose; each alternative is a regex fragment."""
    joined = "|".join(f"(?:{a})" for a in alternatives)
    return Feature(name, query_type, weight, re.compile(joined), ask)


def _shape(name: str, weight: float, *alternatives: str) -> Feature:
    """A code-shape feature over the raw text (case matters: `SELECT`, `Traceback`)."""
    joined = "|".join(f"(?:{a})" for a in alternatives)
    return Feature(name, _CODE, weight, re.compile(joined, re.MULTILINE))


# Language, library and tool names: shared by several features below.
_LANGS = (
    r"(?<!\w)(?:python|питон\w*|javascript|typescript|js|ts|java|golang|go|rust|c\+\+|c#"
    r"|kotlin|swift|php|ruby|scala|bash|shell|powershell|sql|postgres\w*|mysql|sqlite|pandas|numpy"
    r"|django|flask|fastapi|react|vue|angular|node(?:\.js)?|npm|pip|git|docker\w*|kubectl|k8s"
    r"|nginx|json|yaml|css|html|linux|regex|sqlalchemy|alembic|flyway|liquibase|hibernate|spring"
    r"|express|axios|prisma|rails|laravel|dotnet|\.net|celery)(?!\w)"
)
# A verb asking for an artefact.
_MAKE = (
    r"\b(?:write|create|generate|implement|build|make|give me|show me|напиши|написать|сделай"
    r"|создай|реализуй|реализовать|сгенерируй"
    # "нужна функция" asks for one; "какие нужны эндпоинты", "нужны ли реплики", "нужны для
    # функции" and "нужно согласовать" ask what is needed or to be done: a spec, a decision, a
    # test question.
    r"|(?<!как\w\w )(?<!какая )нужн\w*(?! ли\b)(?! для\b)(?! \w+(?:ть|ти|чь)\b))\b"
)
# "No other artefact in between", so that "write unit tests for this function" is not also read
# as "write ... function", nor "write requirements for when a class is full" as "write ... class".
_NO_OTHER_ASK = (
    r"(?:(?!test|тест|check|проверк|cases|кейс|inputs|requirement|требовани|spec|criteria"
    r"|критери|stor|истори).){0,40}?"
)
# Artefacts of each kind of work, for lists that ask for several at once ("the spec, the code
# and the tests", "ТЗ, реализацию и unit tests"): each one listed next to another is an ask.
_REQ_ART = (
    r"(?:requirements?(?: docs?)?|specs?|specifications?|prd|brd|user stor(?:y|ies)"
    r"|acceptance criteria|тз|требовани\w*|спецификаци\w*|постановк\w*|юзер[- ]?стори\w*"
    r"|пользовательск\w* истори\w*|критери\w* приемки)"
)
_CODE_ART = (
    r"(?:code(?![- ]?(?:coverage|review|style|smells?|quality|base))|implementation|backend"
    r"|frontend|prototype|endpoints|код(?![- ]?ревью)|кода|реализаци\w*|бэкенд\w*|фронтенд\w*"
    r"|прототип\w*|эндпоинт\w*)"
)
_TEST_ART = (
    r"(?:(?:unit |e2e |integration |end-to-end )?tests?|test suite|test plan|qa plan"
    r"|тест\w*|юнит-тест\w*|тест-план\w*|проверк\w*)"
)
_LISTED = (
    r"\s*(?:,|\+|&|\band\b|\bи\b|\bplus\b|\bплюс\b|\bthen\b|\bпотом\b|\bзатем\b"
    r"|\bas well as\b|\bа также\b)\s*(?:[\w-]+\s+){0,2}?"
)
# A list is an ask when a request verb comes before it or it opens the query ("spec + code +
# tests for a url shortener please"); "my code and tests fail" is not one.
_LIST_ASK = (
    r"(?:\b(?:write|make|create|build|generate|give me|need|want|prepare|draft|design|do"
    r"|напиши|сделай|создай|составь|подготовь|нужн\w*|хочу|дай|сгенерируй|разработай"
    r"|опиши)\b[^\n]{0,80}?|^\W*)"
)


def _listed(art: str, *others: str) -> str:
    """`art` listed right before or after an artefact of another kind, after a request."""
    other = "(?:" + "|".join(others) + ")"
    return rf"{_LIST_ASK}(?:\b{art}\b{_LISTED}{other}\b|\b{other}\b{_LISTED}{art}\b)"


# The two tables below are kept by hand, one feature per block, so that weights line up and a
# diff shows exactly which words moved: hence no auto-formatting here.
# fmt: off
KEYWORD_FEATURES: tuple[Feature, ...] = (
    # --- code: write / fix / refactor / explain this code, errors, SQL, regex, shell
    _kw("code_make", _CODE, 4.0,
        _MAKE + _NO_OTHER_ASK + r"\b(?:function(?!al)|method|class|script|program|snippet|query"
        r"|endpoint|decorator|regexp?|one-?liner|parser|algorithm|code|implementation|handler|middleware"
        r"|функци|метод|класс|скрипт|программ|код|запрос|эндпоинт|декоратор|регулярк|парсер"
        r"|алгоритм|обработчик|реализаци)", ask=True),
    _kw("code_listed", _CODE, 2.0, _listed(_CODE_ART, _REQ_ART, _TEST_ART), ask=True),
    _kw("code_implement", _CODE, 3.0, r"\b(?:implement|реализуй|реализовать|закодь)\b", ask=True),
    _kw("code_explain_this", _CODE, 4.0,
        r"\b(?:explain|what does|что делает|объясни|поясни|разбери)\b.{0,30}"
        r"\b(?:this|the following|этот|эта|это|эту|следующ\w*)\s+(?:code|function|snippet|regex"
        r"|query|script|код|функци\w*|запрос|скрипт|регулярк\w*|строк\w*)", ask=True),
    _kw("code_translate", _CODE, 4.0,
        r"\b(?:translate|convert|port|rewrite|переведи|перепиши|сконвертируй|портируй)\b.{0,40}"
        r"\b(?:to|into|на|в)\s+(?:" + _LANGS + r"|async|await)", ask=True),
    _kw("code_refactor", _CODE, 3.0,
        r"\b(?:refactor\w*|debug\w*|optimi[sz]e|add type hints|code review|отрефактор\w*"
        r"|рефактор\w*|отладь|оптимизируй|перепиши|добавь обработк\w*|сделай из (?:этого|этой)"
        r"|код[- ]?ревью|ревью кода)"),
    _kw("code_fix", _CODE, 2.5, r"\b(?:fix|исправь|почини|пофикси|поправь)\b"),
    _kw("code_error", _CODE, 2.5,
        r"\b(?:error|exception|traceback|stack ?trace|segfault|segmentation fault|crash\w*|bug"
        r"|doesn'?t work|not working|fails? to compile|undefined|null ?pointer|conflict"
        r"|\w+(?:error|exception))\b",
        r"\b(?:ошибк\w*|исключени\w*|трейсбек\w*|стектрейс\w*|падает|крашится|вылетает|баг\w*"
        r"|не работает|не компилируется|не собирается|конфликт\w*)"),
    # A debugging question: "why am I getting X" is about the code, not about ideas.
    _kw("code_debug_question", _CODE, 3.0,
        r"\bwhy (?:am i|are we|do i|do we|does|do|is|are)\b(?: \w+){0,3} (?:get(?:s|ting)?|seeing"
        r"|throw\w*|return\w*|fail\w*|crash\w*|print\w*|hang\w*)\b"
        r"|\bwhat(?:'s| is) wrong with (?:my|this|the)\b",
        r"\bпочему (?:\w+ ){0,2}(?:выдает|выкидывает|бросает|возвращает|пишет|выводит|не работает"
        r"|не компилируется|не запускается|не видит|не находит)"
        r"|\bчто не так с (?:моим|моей|этим|этой|моими|этими)\b"),
    _kw("code_word", _CODE, 2.0,
        # A promo code or a code of conduct is not software.
        r"(?<!promo )(?<!discount )(?<!coupon )(?<!gift )(?<!voucher )(?<!qr )(?<!zip )"
        r"(?<!postal )(?<!dress )(?<!area )\bcode\b(?! of conduct)"
        r"|\b(?:function|method|class|variable|loop|array|regexp?|regular expression|sql"
        r"|script|one-?liner|compiler?|syntax|endpoint)\b",
        r"\b(?:код\w{0,2}|функци\w*|метод\w*|класс\w*|переменн\w*|цикл\w*|массив\w*|регуляр\w*"
        r"|скрипт\w*|синтаксис\w*|эндпоинт\w*)\b"),
    # Words only developers use, but in every kind of developer question: a weak hint.
    _kw("dev_word", _CODE, 1.0,
        r"\b(?:query|http|sdk|client|wrapper|library|module|package|dependenc\w*|hook|callback"
        r"|promise|async|await|thread\w*|retr(?:y|ies)|backoff|timeout|serializ\w*|struct"
        r"|interface|enum|null|string|integer|boolean|dict\w*|tuple|lambda|closure|iterator"
        r"|generator|recursi\w*|pointer|stdin|stdout|argv|commit|repo\w*)\b",
        r"\b(?:запрос\w*|библиотек\w*|модул\w*|пакет\w*|зависимост\w*|колбэк\w*|промис\w*"
        r"|асинхрон\w*|поток\w*|таймаут\w*|сериализ\w*|интерфейс\w*|строк[аиуе]|объект\w*"
        r"|лямбд\w*|замыкани\w*|итератор\w*|генератор\w*|рекурси\w*|указател\w*|аргумент\w*"
        r"|коммит\w*|репозитори\w*)"),
    _kw("code_add_to", _CODE, 1.5,
        r"\badd\b.{1,40}\bto (?:this|my|our|the) \w+",
        r"\bдобавь\b.{1,40}\b(?:в|к) (?:этот|эту|это|мой|мою|наш|нашу)\b"),
    # Things a coding model writes that are not called "code": configs, CI, infrastructure.
    _kw("code_config", _CODE, 2.5,
        r"\b(?:cron\w*|dockerfile|makefile|docker-compose|helm|terraform|ansible|github actions"
        r"|gitlab-ci|webpack|orm|middleware|pagination|pull request|merge request|\.env)\b",
        r"\bпагинаци\w*|\bмиддлвар\w*|\bпулл?[- ]?реквест\w*|\bмерж[- ]?реквест\w*"),
    _kw("code_language", _CODE, 1.5, _LANGS),
    _kw("code_how_to", _CODE, 1.5,
        r"\b(?:how (?:do|can|to|would|should) (?:i |you |we )?|как (?:мне )?)\b.{0,60}"
        r"\b(?:in|на|в|with|с|using)\s+(?:" + _LANGS + r")\b",
        r"\bhow (?:do|can) i\b|\bhow to\b|\bкак (?:мне |можно )?(?:сделать|написать|распарсить"
        r"|получить|вывести|преобразовать|удалить|добавить|откатить|исправить|починить"
        r"|в |на )"),
    # --- testing: write tests, test cases, frameworks, coverage, QA, test plans
    _kw("test_ask", _TEST, 5.0,
        r"\b(?:unit|integration|e2e|end-to-end|smoke|regression|load|snapshot|component|contract"
        r"|functional|performance|stress|ui|api|acceptance|negative|positive)[- ]?tests?\b"
        r"|\b\w+[- ]testing\b",
        r"\btest[- ]?(?:cases?|plans?|suites?|scenarios?|data|coverage|strategy)\b",
        r"\b(?:write|add|create|generate|cover)\b.{0,40}\btests?\b",
        r"\b(?:review|check|improve|fix|update|rewrite) (?:my |this |the |our |these )?"
        r"(?:\w+ )?tests?\b",
        r"\b(?:юнит|модульн\w*|интеграционн\w*|нагрузочн\w*|регрессионн\w*|e2e|негативн\w*"
        r"|позитивн\w*|ui|api|смоук|дымов\w*)[- ]?тест\w*|\bавтотест\w*",
        r"тест[- ]?кейс\w*|тест[- ]?план\w*|план\w* тестировани\w*"
        r"|тестов\w* (?:данн|сценари|покрыти|набор|документаци)\w*",
        r"\b(?:напиши|добавь|создай|сгенерируй|покрой|покрыть|написать|нужны)\b.{0,25}тест\w*",
        r"\b(?:проверь|посмотри|улучши|исправь|почини|перепиши|отрефактори|оцени)\s+"
        r"(?:мой |мои |этот |эти |наш |наши )?(?:\w+ )?тест\w*",
        r"\bhow (?:do i |to |can i |should i |do you )?test\b|\bкак (?:мне )?(?:протестир|тестир)",
        r"\b(?:what|which) (?:kinds? of |types? of )?tests?\b|\bкаки\w* (?:\w+ )?тест\w*"
        r"|\bпокры\w* тест\w*|\bтест\w* покры\w*",
        ask=True),
    # Asking how to check given code or which inputs to try is a testing ask without the word
    # "test": the pasted code is its subject ("how would you check this works?" + a function).
    _kw("test_check_ask", _TEST, 4.0,
        r"\bhow (?:would|do|can|should) (?:you|i|we) (?:check|verify|make sure|be sure)"
        r" (?:that )?(?:this|it|my \w+|the \w+)(?: \w+)? (?:works|is (?:right|correct)|behaves)"
        r"|\b(?:what|which) inputs? (?:should|would|could|do|to)\b"
        r"|\binputs? (?:that|which) (?:would |could |might )?break\b"
        r"|\b(?:write|list|give me|come up with|suggest|generate) (?:some |a few )?(?:checks"
        r"|test inputs|inputs)\b",
        r"\bкак (?:мне |бы |бы ты )?(?:проверить|убедиться),? что (?:эт\w+|она|он|функци\w*|код"
        r"|метод) (?:\w+ )?работает|\bкак (?:эт\w+|ее|его)(?: \w+)? проверить"
        r"|\b(?:придумай|напиши|составь|предложи|какие|нужны|разбери,? какие) (?:\w+ )?"
        r"проверк(?:и|ами|ах)\b"
        r"|\bкаки\w* входн\w* данн\w*",
        ask=True),
    # Several artefacts in one list: each kind listed is asked for (two kinds: `unknown`).
    _kw("test_listed", _TEST, 2.0, _listed(_TEST_ART, _REQ_ART, _CODE_ART), ask=True),
    _kw("test_word", _TEST, 3.0,
        # An A/B test is an experiment on users, not a check of the software.
        r"(?<!a/b )(?<!a/b-)\btest(?:s|ing|ed)?\b|(?<!a/b-)\bтест\w*|\bпротестир\w*|\bqa\b"
        r"|quality assurance"
        r"|\bbug reports?\b|\bбаг-?репорт\w*"),
    _kw("test_tool", _TEST, 4.0,
        r"\b(?:pytest|unittest|jest|mocha|vitest|junit|testng|rspec|selenium|playwright|cypress"
        r"|locust|k6|jmeter|gatling|hypothesis|property-based|tdd|coverage|postman|newman|pact"
        r"|wiremock|testcontainers|fuzz\w*)\b|\bпокры(?:ти|т|ва)\w*|\bфазз\w*"),
    _kw("test_double", _TEST, 3.0,
        r"\b(?:mock\w*|мок\w*|замок\w*|fixtures?|фикстур\w*|stubs?|заглушк\w*|parametri[sz]e\w*"
        r"|параметризу\w*|assert\w*|flaky|флаки)"),
    _kw("test_edge_cases", _TEST, 3.0,
        r"\b(?:edge cases?|corner cases?|граничн\w*|check-?list\w*|чек-?лист\w*)",
        r"\b(?:проверк\w*|checks?|smoke)\b.{0,30}\b(?:перед|до|после|before|after)\s+"
        r"(?:релиз|release|деплой|deploy|выкатк|rollout)"),
    # The words of QA work, asked about without "test": defects, steps to reproduce, equivalence
    # classes, pairwise, exploratory sessions, smoke and regression runs, load-test vocabulary,
    # fakes and mocks. Not an ask. Edge and corner cases (граничные) are `test_edge_cases`'s:
    # voting for them twice made specs that list their edge cases read as testing.
    _kw("test_qa_word", _TEST, 3.0,
        r"\b(?:qa|testers?|qa engineers?|defects?|steps to reproduce|repro steps|bug reports?"
        r"|boundary values?|equivalence (?:class\w*|partition\w*)|pairwise|decision tables?"
        r"|exploratory|smoke|regression (?:suite|run|pass|cycle|checks?)|uat|virtual users"
        r"|ramp-?up|soak|flaky|fakes?|spy|spies|monkeypatch\w*)\b"
        r"|\bmock\w*|\bfake (?:the|a|an|out)\b|\bstub\w* out\b",
        r"\bтестировщик\w*|\bдефект\w*|шаг\w* воспроизведени\w*|\bбаг-?репорт\w*"
        r"|класс\w* эквивалентност\w*|таблиц\w* решений"
        r"|исследовательск\w* (?:тестировани|сесси)\w*|\bсмоук\w*|\bрегресс(?:а|у|ом|е)?\b"
        r"|виртуальн\w* пользовател\w*|\bприемочн\w*|\bзамок\w*|\bмок(?:и|ов|ами|ать|нуть)?\b"
        r"|\bфейков\w*"),
    # --- requirements: user stories, acceptance criteria, specs, business requirements, ТЗ
    _kw("req_ask", _REQ, 5.0,
        r"\buser[- ]?stor(?:y|ies)\b|acceptance criteria|\b(?:srs|prd|brd)\b|\bspecifications?\b"
        r"|use[- ]cases?\b|definition of (?:done|ready)|non-?functional|business requirements"
        r"|product requirements|functional requirements|\bas an? [\w ]{1,20}, i (?:want|can|need)",
        r"пользовательск\w* истори\w*|юзер[- ]?стори\w*|критери\w* (?:приемк|готовност)\w*"
        r"|\bтз\b|техническ\w* задани\w*|спецификаци\w*|сценари\w* использовани\w*|юзкейс\w*"
        r"|бизнес[- ]требовани\w*|нефункциональн\w*|функциональн\w* требовани\w*",
        ask=True),
    _kw("req_listed", _REQ, 2.0, _listed(_REQ_ART, _CODE_ART, _TEST_ART), ask=True),
    _kw("req_word", _REQ, 3.0,
        r"\brequirements?\b(?!\.txt)|\bтребовани\w*|\bspec\b|\bcriteria\b|критери\w*"),
    _kw("req_backlog", _REQ, 3.0,
        r"\b(?:backlog|epics?|mvp|stakeholders?|scope|sprint|feature request|gherkin)\b"
        r"|бэклог\w*|эпик\w*|стейкхолдер\w*|заинтересованн\w* сторон\w*|скоуп\w*|спринт\w*",
        r"\bgiven\b.{0,40}\bwhen\b.{0,40}\bthen\b"),
    _kw("req_draft", _REQ, 2.0,
        r"\b(?:draft|write|define|gather|elicit|list|formulate|refine|turn|break|describe"
        r"|outline|document|распиши|пропиши|подготовь|составь"
        r"|сформулируй|опиши|описать|оформи\w*|собери|напиши|определи|разбей|преврати)\b"
        + _NO_OTHER_ASK + r"(?:requirement|criteria|spec|scope|требовани|критери|\bтз\b"
        r"|спецификаци|бэклог|backlog)",
        ask=True),
    # --- reasoning: why, concepts, comparisons, trade-offs, architecture, maths, plans
    _kw("reason_why", _REASON, 3.0, r"\b(?:why|how come|почему|зачем|отчего)\b"),
    _kw("reason_explain", _REASON, 2.5,
        r"\b(?:explain\w*|объясни\w*|поясни\w*|растолкуй)|\bhow does\b.{1,40}\bwork"
        r"|\bкак (?:работает|устроен\w*|функционирует)|\bdifference between|\bразниц\w*"
        r"|\bотлича\w*|\bв чем (?:разница|смысл|отличие)|\bconcepts?\b|концепци\w*|\bпринцип\w*"
        r"|\bwhat (?:happens|would happen|if)\b|\bconsequences?\b|\bчто будет,? если"
        r"|\bпоследстви\w*|\bhow (?:do|does|did|can|is|are) (?!i\b|you\b|we\b|it\b|this\b|my\b"
        r"|our\b|your\b)\w+ \w+"),
    # A question offering alternatives, or a hypothetical with numbers: a decision or a puzzle.
    _kw("reason_alternatives", _REASON, 2.0,
        r"\bor\b[^?\n]{0,80}\?|\bили\b[^?\n]{0,80}\?",
        r"\bif\b.{0,100}\b(?:what|how many|how much|when)\b"
        r"|\bесли\b.{0,100}\b(?:как\w*|сколько|когда)\b"),
    # "What is X" asks for a concept as often as for a fact: weak on its own.
    _kw("reason_what_is", _REASON, 1.5, r"\bwhat (?:is|are)\b|\bwhat's\b|\bчто такое\b"),
    _kw("reason_compare", _REASON, 3.0,
        r"\b(?:compare|comparison|vs\.?|versus|trade-?offs?|pros and cons|which (?:one )?is better"
        r"|better|pitfalls?|gotchas?|drawbacks?|downsides?)\b|сравни\w*|\bпротив\b|компромисс\w*"
        r"|плюсы и минусы|преимуществ\w* и недостатк\w*|\bлучше\b|\bподвох\w*"
        r"|\bнедостатк\w*|\bминус\w*"),
    _kw("reason_decide", _REASON, 3.0,
        # "should we use X" is a decision; "what requirements should we gather" is not.
        r"(?:^|[,.;:!?(]\s*|\b(?:so|and|but|or|then|now)\s+)should (?:i|we)\b"
        r"|\bshould (?:i|we) (?:use|pick|choose|go|switch|migrate|move|adopt|keep|stay|build|buy"
        r"|rewrite|split|merge)\b|\bis it (?:a good idea|worth|better)|\bwhen (?:does it make sense"
        r"|should|to use|is it)\b|\bmake sense\b|\bchoose between\b|\bdecide\b"
        r"|\b(?:good|right|bad) (?:fit|choice|idea)\b|\bwould you (?:pick|choose|use)\b",
        r"\bстоит ли\b|\bимеет ли смысл|\bкогда (?:стоит|лучше|нужно|имеет смысл)"
        r"|\bкак выбрать|\bвыбрать между|\bкак(?:ой|ую|ое) выбрать|\bподходит ли|\bподойдет ли"),
    _kw("reason_design", _REASON, 2.5,
        r"\b(?:architect\w*|design\w*|data model|scalab\w*"
        r"|consisten\w*|consensus|distributed|microservices?|monolith\w*|event sourcing|cqrs"
        r"|cap theorem|latency|throughput|failure modes?|risks?|strateg\w*|approach\w*"
        r"|patterns?|concurren\w*)\b",
        r"архитектур\w*|проектир\w*|спроектир\w*|модел\w* данных|масштабир\w*|консистентн\w*"
        r"|консенсус\w*|распределенн\w*|микросервис\w*|монолит\w*|отказоустойчив\w*|\bриск\w*"
        r"|стратеги\w*|\bподход\w*|версионировани\w*|паттерн\w*"),
    _kw("reason_math", _REASON, 3.0,
        r"\b(?:prove|proof|theorem|probability|odds|equation|integral|derivative|complexity"
        r"|big-?o|logic|puzzle|riddle|solve|irrational|catch up|estimate|capacity)\b|o\(n|km/h"
        r"|\bhow much \w+ (?:do |would |will )?(?:we|i|you) need",
        r"\bдоказ\w*|теорем\w*|вероятност\w*|уравнени\w*|интеграл\w*|производн\w*|сложност\w*"
        r"|асимптот\w*|логик\w*|головоломк\w*|загадк\w*|\bреши\b|иррационал\w*|км/ч"
        r"|\bсколько (?:нужно|потребуется|у кажд\w*|места|памяти|серверов)|\bприкинь"),
    _kw("reason_plan", _REASON, 2.5,
        r"\b(?:plan|planning|roadmap|migrat\w*|think (?:through|about)|reason about|analy[sz]\w*"
        r"|evaluate|assess|help me (?:think|decide|understand))\b",
        r"\bспланир\w*|\bплан\w*|миграци\w*|\bпереход\w* (?:с|на)\b|рассужд\w*|подума\w*"
        r"|проанализир\w*|\bанализ\w*|\bоцени\w*|помоги (?:понять|разобраться|решить|выбрать)"),
    # --- general: greetings, thanks, translation, summaries, small talk, simple facts
    _kw("general_greeting", _GENERAL, 4.0,
        r"^\W*(?:hi|hello|hey|yo|good (?:morning|afternoon|evening|night)|greetings|привет\w*"
        r"|здравствуй\w*|добр\w+ (?:утро|день|вечер)|хай|салют)\b",
        r"\b(?:thanks|thank you|thx|cheers|bye|goodbye|see you|how are you|who are you"
        r"|that's all|what's your name)\b"
        r"|\b(?:спасибо|благодарю|до свидания|как дела|ты кто|кто ты|как тебя зовут)\b",
        # "пока" is also "while", "как ты" also "how do you (think)": only as a whole message.
        r"^\W*пока\W*$|^\W*как ты\W*$"),
    _kw("general_text_task", _GENERAL, 4.0,
        r"\b(?:translat\w*|summar\w*|tl;?dr|rephrase|paraphrase|proofread|typos?|grammar"
        r"|(?:email|letter) to|joke|poem|haiku|limerick|song|recipe|weather|congratulat\w*"
        r"|in english|in russian)\b",
        r"\b(?:переведи|перескажи|резюмируй|суммаризируй|выжимк\w*|сократи|перефразируй"
        r"|опечатк\w*|грамматик\w*|поздравлени\w*|шутк\w*|анекдот\w*|стих\w*|рецепт\w*"
        r"|погод\w*|по-английски|по-русски)",
        r"\bперевод\w* (?:на|с) \w+ск\w*|\b(?:напиши|составь) (?:\w+ )?письм\w*",
        # "fix the mistakes in this text" is proofreading, not debugging.
        r"\b(?:исправь|поправь|проверь|fix|correct|check)\b.{0,30}"
        r"\b(?:текст\w*|письм\w*|сообщени\w*|предложени\w*|text|message|sentence|paragraph)\b"),
    _kw("general_fact", _GENERAL, 4.0,
        # "who is allowed to ..." asks about roles; time zones, birthdays and "how many days" are
        # as often in a design question or a puzzle as in a question of fact.
        r"^\W*who (?:is|was)\b(?! allowed| able| responsible| supposed| in charge)"
        r"|\b(?:capital of|who (?:wrote|invented)|what time"
        r"|population|what day|what date|(?:tallest|largest|biggest|highest|longest"
        r"|oldest|smallest) \w+)\b",
        r"\bстолиц\w*|\bкто (?:такой|такая|такие|написал|придумал)|\bкоторый час"
        r"|\bсколько (?:дней|лет|будет|часов|минут|недель|месяцев)\b"
        r"|\bнаселени\w*"
        r"|на русском|\bкак(?:ой|ое) сегодня|\bсамы\w+ (?:высок|больш|длинн|стар)\w*"),
)

SHAPE_FEATURES: tuple[Feature, ...] = (
    _shape("code_fence", 3.0, r"^\s*(?:```|~~~)"),
    _shape("traceback", 3.0,
        r"Traceback \(most recent call last\)|^\s*File \"[^\"\n]{1,300}\", line \d+",
        r"^\s+at [\w$.<>/]{1,200} ?\([^)\n]{0,300}:\d+(?::\d+)?\)",
        r"^\s*[\w.]{0,100}(?:Error|Exception)\b[:(]|\bpanic: |Segmentation fault"),
    _shape("code_line", 2.5,
        r"^\s*(?:def|class|import|func|fn|package|using|public|private|const|let|var"
        r"|function)\s+[\w{]",
        r"^\s*(?:from \S{1,100} import|#include)\b|;\s*$|^\s*[{}]\s*$|\)\s*\{|=>|:=",
        r"\b[A-Za-z_]\w{0,60}\.\w{1,60}\([^)\n]{0,200}\)"),
    _shape("sql", 2.5,
        r"(?i:\bselect\s+[\w*.,\s()]{1,120}?\s+from\s+\w|\binsert\s+into\b|\bdelete\s+from\b"
        r"|\bupdate\s+\w+\s+set\b|\bcreate\s+(?:table|index)\b|\bgroup\s+by\b|\bjoin\s+\w+"
        r"\s+\w+\s+on\b)"),
    _shape("diff", 2.5, r"^diff --git |^@@ -\d+|^\+\+\+ |^--- a/"),
    _shape("json", 1.5, r"^\s*[\[{]\s*\"[^\"\n]{1,100}\"\s*:|\{\"[\w-]{1,100}\":"),
    _shape("shell", 1.5,
        r"^\s*\$ \S|\b(?:sudo|apt-get|pip install|npm (?:install|run|i)|yarn add|kubectl"
        r"|chmod|curl -)\b|\bgit (?:commit|push|pull|rebase|merge|checkout|reset)\b"
        r"|\bdocker(?:-compose| compose)? (?:run|build|up|exec)\b"),
    _shape("backticks", 1.0, r"`[^`\n]{1,200}`"),
)
# fmt: on

# The reason given for text without a letter or digit: the router reports it as its own signal.
NO_WORDS_REASON = "no words"
# Text that has no letter or digit at all (emoji, punctuation, whitespace) says nothing.
_HAS_WORD = re.compile(r"[^\W_]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_FENCE = re.compile(r"^\s*(?:```|~~~)[^\n]*$", re.MULTILINE)
# A line in the prose that is really code or tool output: read for shape, not for keywords.
_CODE_LINE = re.compile(
    r"^\s*(?:Traceback|File \"|at [\w$.<>/]+ ?\(|[\w.]*(?:Error|Exception)\b[:(]|def |class \w"
    r"|import |from \S+ import|#include|diff --git|@@ |\+\+\+ |--- |[+-] {2,}|\$ |SELECT\b"
    r"|INSERT\b|UPDATE\b|DELETE\b|CREATE\b|[{}\[\]]\s*$|\"[\w-]+\"\s*:)|;\s*$|\{\s*$"
)
# Quoted text is what the ask works on (the sentence to translate, the error message, the
# feature to turn into stories), not the ask itself: "translate 'acceptance criteria'" is general.
_QUOTED = re.compile(
    r"«[^»\n]{0,300}»|“[^”\n]{0,300}”|\"[^\"\n]{0,300}\"|`[^`\n]{0,300}`"
    r"|(?<!\w)'[^'\n]{0,300}'(?!\w)"
)
# Zero-width and soft-hyphen characters break words without showing; NFKC does not remove them.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]")


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """What the rules concluded and the evidence behind it, for the router, logs and tuning.

    `fired`: names of the keyword features that matched, in table order; `shapes`: names of the
    code-shape features found; `asked`: classes explicitly asked for; `prose`: the case-folded
    text the keyword features read (what the router's model reads too). `margin`: the winner's
    lead over the runner-up.
    """

    query_type: QueryType
    scores: Mapping[QueryType, float]
    reason: str
    fired: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    asked: frozenset[QueryType] = frozenset()
    prose: str = ""
    margin: float = 0.0


@dataclass(frozen=True, slots=True)
class Classifier:
    """Weighted-feature classifier; every knob is a field, so variants are cheap to build.

    `min_score`: the best class needs at least this much evidence. `margin`: and must lead the
    runner-up by this much. A query of fewer than `short_words` words must reach
    `short_confident` (greetings excepted: "привет" is a whole query). `shape_cap` bounds what
    code shape alone can add; when the query asks for a class in `paste_is_context_for` (and not
    for code), shape adds nothing. Only `head_chars` + `tail_chars` of a long query are read:
    the question usually sits before or after the paste.
    """

    keyword_features: tuple[Feature, ...] = KEYWORD_FEATURES
    shape_features: tuple[Feature, ...] = SHAPE_FEATURES
    min_score: float = 2.0
    margin: float = 1.0
    shape_cap: float = 5.0
    paste_is_context_for: frozenset[QueryType] = frozenset({_TEST, _REQ})
    short_words: int = 3
    short_confident: float = 4.5
    head_chars: int = 2000
    tail_chars: int = 1000
    # Prefix lengths the features' gates look up (see `aiorch.gates`); derived, not knobs.
    _keyword_prefixes: Prefixes = field(init=False, repr=False, compare=False)
    _keyword_gates: GateIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyword_prefixes", Prefixes(_lengths(self.keyword_features)))
        gates = GateIndex([feature.gate for feature in self.keyword_features])
        object.__setattr__(self, "_keyword_gates", gates)
        if min(self.min_score, self.margin, self.shape_cap, self.short_confident) < 0:
            raise ValueError("classifier thresholds must be non-negative")
        if self.head_chars < 1 or self.tail_chars < 0 or self.short_words < 0:
            raise ValueError("head_chars must be positive; tail_chars, short_words >= 0")

    def classify(self, query: str) -> QueryType:
        return self.verdict(query).query_type

    def verdict(self, query: str) -> RuleVerdict:
        text = self._window(query)
        if not _HAS_WORD.search(text):
            return _unknown(dict.fromkeys(_SCORED, 0.0), NO_WORDS_REASON)
        prose = _prose(text)
        scores = dict.fromkeys(_SCORED, 0.0)
        asked: set[QueryType] = set()
        fired: list[str] = []
        starts = self._keyword_prefixes.of(prose)
        features = self.keyword_features
        # Only the features whose gate finds one of its literals in the prose: the others'
        # searches would all fail.
        for i in self._keyword_gates.candidates(prose, starts):
            feature = features[i]
            if feature.pattern.search(prose):
                scores[feature.query_type] += feature.weight
                fired.append(feature.name)
                if feature.ask:
                    asked.add(feature.query_type)
        shape, shapes = self._shape(text)
        # Code pasted under "write tests for this" is what the tests are for, not a vote for code.
        if _CODE in asked or not asked & self.paste_is_context_for:
            scores[_CODE] += min(shape, self.shape_cap)
        evidence = _Evidence(tuple(fired), shapes, frozenset(asked), prose)
        if len(asked) > 1:
            kinds = ", ".join(sorted(asked))
            return _unknown(scores, f"asks for several kinds of work: {kinds}", evidence)
        n_words = len(_WORD.findall(prose))
        return self._decide(scores, n_words=n_words, shape=shape, evidence=evidence)

    def _shape(self, text: str) -> tuple[float, tuple[str, ...]]:
        """The weight and the names of the shape features found.

        Their gates are tested loosely (every literal as a substring): most queries need two or
        three of the eight searches whatever the test, and a word-prefix set of the raw text
        would cost more than it saves.
        """
        shape = 0.0
        names: list[str] = []
        for feature in self.shape_features:
            gate = feature.gate
            if (gate is None or gate.may_occur(text)) and feature.pattern.search(text):
                shape += feature.weight
                names.append(feature.name)
        return shape, tuple(names)

    def _decide(
        self, scores: dict[QueryType, float], *, n_words: int, shape: float, evidence: _Evidence
    ) -> RuleVerdict:
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        (best, top), (_, second) = ranked[0], ranked[1]
        if top < self.min_score:
            return _unknown(scores, f"weak evidence ({top:g} < {self.min_score:g})", evidence)
        if top - second < self.margin:
            return _unknown(scores, f"no clear winner ({top:g} vs {second:g})", evidence)
        short = n_words < self.short_words and shape == 0 and best is not _GENERAL
        if short and top < self.short_confident:
            return _unknown(scores, f"too short to tell (words: {n_words})", evidence)
        fired, shapes, asked, prose = evidence
        return RuleVerdict(
            best,
            MappingProxyType(scores),
            f"{best} by {top - second:g}",
            fired,
            shapes,
            asked,
            prose,
            top - second,
        )

    def _window(self, query: str) -> str:
        if len(query) > self.head_chars + self.tail_chars:
            tail = query[len(query) - self.tail_chars :] if self.tail_chars else ""
            query = query[: self.head_chars] + "\n" + tail
        # NFKC folds full-width letters and ligatures; casefold comes later, prose only.
        return _INVISIBLE.sub("", unicodedata.normalize("NFKC", query))


def _lengths(features: tuple[Feature, ...]) -> tuple[int, ...]:
    return tuple(sorted({n for f in features if f.gate is not None for n in f.gate.lengths}))


class _Evidence(NamedTuple):
    fired: tuple[str, ...]
    shapes: tuple[str, ...]
    asked: frozenset[QueryType]
    prose: str


_NO_EVIDENCE = _Evidence((), (), frozenset(), "")


def _unknown(
    scores: dict[QueryType, float], reason: str, evidence: _Evidence = _NO_EVIDENCE
) -> RuleVerdict:
    fired, shapes, asked, prose = evidence
    return RuleVerdict(
        QueryType.UNKNOWN, MappingProxyType(scores), reason, fired, shapes, asked, prose
    )


def _prose(text: str) -> str:
    """The text outside code fences and code-looking lines, case-folded, for keyword features."""
    prose_lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and not _CODE_LINE.search(line):
            prose_lines.append(_QUOTED.sub(" ", line))
    return "\n".join(prose_lines).casefold().replace("ё", "е")


DEFAULT_CLASSIFIER = Classifier()
