"""Guess a query's `QueryType` from its text, in English and Russian, in well under a millisecond.

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
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aiorch.gates import Gate, Prefixes, gate_for
from aiorch.types import QueryType

__all__ = [
    "DEFAULT_CLASSIFIER",
    "KEYWORD_FEATURES",
    "SHAPE_FEATURES",
    "Classifier",
    "Feature",
    "Verdict",
    "classify",
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

    An `ask` feature is an explicit request for an artefact of its class ("write unit tests",
    "user stories for", "implement"), as opposed to a topic the query merely mentions.
    """

    query_type: QueryType
    weight: float
    pattern: re.Pattern[str]
    ask: bool = False
    # Derived from `pattern`: lets `verdict` skip the search when it certainly cannot match.
    gate: Gate | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gate", gate_for(self.pattern))


def _kw(query_type: QueryType, weight: float, *alternatives: str, ask: bool = False) -> Feature:
    """A keyword feature over case-folded prose; each alternative is a regex fragment."""
    joined = "|".join(f"(?:{a})" for a in alternatives)
    return Feature(query_type, weight, re.compile(joined), ask)


def _shape(weight: float, *alternatives: str) -> Feature:
    """A code-shape feature over the raw text (case matters: `SELECT`, `Traceback`)."""
    joined = "|".join(f"(?:{a})" for a in alternatives)
    return Feature(_CODE, weight, re.compile(joined, re.MULTILINE))


# Language, library and tool names: shared by several features below.
_LANGS = (
    r"(?<!\w)(?:python|питон\w*|javascript|typescript|js|ts|java|golang|go|rust|c\+\+|c#"
    r"|kotlin|swift|php|ruby|scala|bash|shell|powershell|sql|postgres\w*|mysql|sqlite|pandas|numpy"
    r"|django|flask|fastapi|react|vue|angular|node(?:\.js)?|npm|pip|git|docker\w*|kubectl|k8s"
    r"|nginx|json|yaml|css|html|linux|regex|sqlalchemy|alembic|flyway|liquibase|hibernate|spring"
    r"|express|axios|prisma|rails|laravel|dotnet|\.net|celery)(?!\w)"
)
# A verb asking for an artefact, and "no test/tests in between", so that "write unit tests for
# this function" is not also read as "write ... function".
_MAKE = (
    r"\b(?:write|create|generate|implement|build|make|give me|show me|напиши|написать|сделай"
    r"|создай|реализуй|реализовать|сгенерируй|нужн\w*)\b"
)
_NO_TEST = r"(?:(?!test|тест).){0,40}?"

# The two tables below are kept by hand, one feature per block, so that weights line up and a
# diff shows exactly which words moved: hence no auto-formatting here.
# fmt: off
KEYWORD_FEATURES: tuple[Feature, ...] = (
    # --- code: write / fix / refactor / explain this code, errors, SQL, regex, shell
    _kw(_CODE, 4.0,
        _MAKE + _NO_TEST + r"\b(?:function|method|class|script|program|snippet|query|endpoint"
        r"|decorator|regexp?|one-?liner|parser|algorithm|code|implementation|handler|middleware"
        r"|функци|метод|класс|скрипт|программ|код|запрос|эндпоинт|декоратор|регулярк|парсер"
        r"|алгоритм|обработчик|реализаци)", ask=True),
    _kw(_CODE, 3.0, r"\b(?:implement|реализуй|реализовать|закодь)\b", ask=True),
    _kw(_CODE, 4.0,
        r"\b(?:explain|what does|что делает|объясни|поясни|разбери)\b.{0,30}"
        r"\b(?:this|the following|этот|эта|это|эту|следующ\w*)\s+(?:code|function|snippet|regex"
        r"|query|script|код|функци\w*|запрос|скрипт|регулярк\w*|строк\w*)", ask=True),
    _kw(_CODE, 4.0,
        r"\b(?:translate|convert|port|rewrite|переведи|перепиши|сконвертируй|портируй)\b.{0,40}"
        r"\b(?:to|into|на|в)\s+(?:" + _LANGS + r"|async|await)", ask=True),
    _kw(_CODE, 3.0,
        r"\b(?:refactor\w*|debug\w*|optimi[sz]e|add type hints|code review|отрефактор\w*"
        r"|рефактор\w*|отладь|оптимизируй|перепиши|добавь обработк\w*|сделай из (?:этого|этой)"
        r"|код[- ]?ревью|ревью кода)"),
    _kw(_CODE, 2.5, r"\b(?:fix|исправь|почини|пофикси|поправь)\b"),
    _kw(_CODE, 2.5,
        r"\b(?:error|exception|traceback|stack ?trace|segfault|segmentation fault|crash\w*|bug"
        r"|doesn'?t work|not working|fails? to compile|undefined|null ?pointer|conflict"
        r"|\w+(?:error|exception))\b",
        r"\b(?:ошибк\w*|исключени\w*|трейсбек\w*|стектрейс\w*|падает|крашится|вылетает|баг\w*"
        r"|не работает|не компилируется|не собирается|конфликт\w*)"),
    # A debugging question: "why am I getting X" is about the code, not about ideas.
    _kw(_CODE, 3.0,
        r"\bwhy (?:am i|are we|do i|do we|does|do|is|are)\b(?: \w+){0,3} (?:get(?:s|ting)?|seeing"
        r"|throw\w*|return\w*|fail\w*|crash\w*|print\w*|hang\w*)\b"
        r"|\bwhat(?:'s| is) wrong with (?:my|this|the)\b",
        r"\bпочему (?:\w+ ){0,2}(?:выдает|выкидывает|бросает|возвращает|пишет|выводит|не работает"
        r"|не компилируется|не запускается|не видит|не находит)"
        r"|\bчто не так с (?:моим|моей|этим|этой|моими|этими)\b"),
    _kw(_CODE, 2.0,
        r"\b(?:code|function|method|class|variable|loop|array|regexp?|regular expression|sql"
        r"|script|one-?liner|compiler?|syntax|endpoint)\b",
        r"\b(?:код\w{0,2}|функци\w*|метод\w*|класс\w*|переменн\w*|цикл\w*|массив\w*|регуляр\w*"
        r"|скрипт\w*|синтаксис\w*|эндпоинт\w*)\b"),
    # Words only developers use, but in every kind of developer question: a weak hint.
    _kw(_CODE, 1.0,
        r"\b(?:query|http|sdk|client|wrapper|library|module|package|dependenc\w*|hook|callback"
        r"|promise|async|await|thread\w*|retr(?:y|ies)|backoff|timeout|serializ\w*|struct"
        r"|interface|enum|null|string|integer|boolean|dict\w*|tuple|lambda|closure|iterator"
        r"|generator|recursi\w*|pointer|stdin|stdout|argv|commit|repo\w*)\b",
        r"\b(?:запрос\w*|библиотек\w*|модул\w*|пакет\w*|зависимост\w*|колбэк\w*|промис\w*"
        r"|асинхрон\w*|поток\w*|таймаут\w*|сериализ\w*|интерфейс\w*|строк[аиуе]|объект\w*"
        r"|лямбд\w*|замыкани\w*|итератор\w*|генератор\w*|рекурси\w*|указател\w*|аргумент\w*"
        r"|коммит\w*|репозитори\w*)"),
    _kw(_CODE, 1.5,
        r"\badd\b.{1,40}\bto (?:this|my|our|the) \w+",
        r"\bдобавь\b.{1,40}\b(?:в|к) (?:этот|эту|это|мой|мою|наш|нашу)\b"),
    # Things a coding model writes that are not called "code": configs, CI, infrastructure.
    _kw(_CODE, 2.5,
        r"\b(?:cron\w*|dockerfile|makefile|docker-compose|helm|terraform|ansible|github actions"
        r"|gitlab-ci|webpack|orm|middleware|pagination|pull request|merge request|\.env)\b",
        r"\bпагинаци\w*|\bмиддлвар\w*|\bпулл?[- ]?реквест\w*|\bмерж[- ]?реквест\w*"),
    _kw(_CODE, 1.5, _LANGS),
    _kw(_CODE, 1.5,
        r"\b(?:how (?:do|can|to|would|should) (?:i |you |we )?|как (?:мне )?)\b.{0,60}"
        r"\b(?:in|на|в|with|с|using)\s+(?:" + _LANGS + r")\b",
        r"\bhow (?:do|can) i\b|\bhow to\b|\bкак (?:мне |можно )?(?:сделать|написать|распарсить"
        r"|получить|вывести|преобразовать|удалить|добавить|откатить|исправить|починить"
        r"|в |на )"),
    # --- testing: write tests, test cases, frameworks, coverage, QA, test plans
    _kw(_TEST, 5.0,
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
    _kw(_TEST, 3.0,
        r"\btest(?:s|ing|ed|able)?\b|\bтест\w*|\bпротестир\w*|\bqa\b|quality assurance"),
    _kw(_TEST, 4.0,
        r"\b(?:pytest|unittest|jest|mocha|vitest|junit|testng|rspec|selenium|playwright|cypress"
        r"|locust|k6|jmeter|gatling|hypothesis|property-based|tdd|coverage|postman|newman|pact"
        r"|wiremock|testcontainers)\b|\bпокры(?:ти|т|ва)\w*"),
    _kw(_TEST, 3.0,
        r"\b(?:mock\w*|мок\w*|замок\w*|fixtures?|фикстур\w*|stubs?|заглушк\w*|parametri[sz]e\w*"
        r"|параметризу\w*|assert\w*|flaky|флаки)"),
    _kw(_TEST, 3.0,
        r"\b(?:edge cases?|corner cases?|граничн\w*|check-?list\w*|чек-?лист\w*)",
        r"\b(?:проверк\w*|checks?|smoke)\b.{0,30}\b(?:перед|до|после|before|after)\s+"
        r"(?:релиз|release|деплой|deploy|выкатк|rollout)"),
    # --- requirements: user stories, acceptance criteria, specs, business requirements, ТЗ
    _kw(_REQ, 5.0,
        r"\buser[- ]?stor(?:y|ies)\b|acceptance criteria|\b(?:srs|prd|brd)\b|\bspecifications?\b"
        r"|use[- ]cases?\b|definition of (?:done|ready)|non-?functional|business requirements"
        r"|product requirements|functional requirements|\bas an? [\w ]{1,20}, i (?:want|can|need)",
        r"пользовательск\w* истори\w*|юзер[- ]?стори\w*|критери\w* (?:приемк|готовност)\w*"
        r"|\bтз\b|техническ\w* задани\w*|спецификаци\w*|сценари\w* использовани\w*|юзкейс\w*"
        r"|бизнес[- ]требовани\w*|нефункциональн\w*|функциональн\w* требовани\w*",
        ask=True),
    _kw(_REQ, 3.0, r"\brequirements?\b(?!\.txt)|\bтребовани\w*|\bspec\b|\bcriteria\b|критери\w*"),
    _kw(_REQ, 3.0,
        r"\b(?:backlog|epics?|mvp|stakeholders?|scope|sprint|feature request|gherkin)\b"
        r"|бэклог\w*|эпик\w*|стейкхолдер\w*|заинтересованн\w* сторон\w*|скоуп\w*|спринт\w*",
        r"\bgiven\b.{0,40}\bwhen\b.{0,40}\bthen\b"),
    _kw(_REQ, 2.0,
        r"\b(?:draft|write|define|gather|elicit|list|formulate|refine|turn|break|describe"
        r"|outline|document|распиши|пропиши|подготовь|составь"
        r"|сформулируй|опиши|описать|оформи\w*|собери|напиши|определи|разбей|преврати)\b"
        + _NO_TEST + r"(?:requirement|criteria|spec|scope|требовани|критери|\bтз\b"
        r"|спецификаци|бэклог|backlog)",
        ask=True),
    # --- reasoning: why, concepts, comparisons, trade-offs, architecture, maths, plans
    _kw(_REASON, 3.0, r"\b(?:why|how come|почему|зачем|отчего)\b"),
    _kw(_REASON, 2.5,
        r"\b(?:explain\w*|объясни\w*|поясни\w*|растолкуй)|\bhow does\b.{1,40}\bwork"
        r"|\bкак (?:работает|устроен\w*|функционирует)|\bdifference between|\bразниц\w*"
        r"|\bотлича\w*|\bв чем (?:разница|смысл|отличие)|\bconcepts?\b|концепци\w*|\bпринцип\w*"
        r"|\bwhat (?:happens|would happen|if)\b|\bconsequences?\b|\bчто будет,? если"
        r"|\bпоследстви\w*|\bhow (?:do|does|did|can|is|are) (?!i\b|you\b|we\b|it\b|this\b|my\b"
        r"|our\b|your\b)\w+ \w+"),
    # A question offering alternatives, or a hypothetical with numbers: a decision or a puzzle.
    _kw(_REASON, 2.0,
        r"\bor\b[^?\n]{0,80}\?|\bили\b[^?\n]{0,80}\?",
        r"\bif\b.{0,100}\b(?:what|how many|how much|when)\b"
        r"|\bесли\b.{0,100}\b(?:как\w*|сколько|когда)\b"),
    # "What is X" asks for a concept as often as for a fact: weak on its own.
    _kw(_REASON, 1.5, r"\bwhat (?:is|are)\b|\bwhat's\b|\bчто такое\b"),
    _kw(_REASON, 3.0,
        r"\b(?:compare|comparison|vs\.?|versus|trade-?offs?|pros and cons|which (?:one )?is better"
        r"|better|pitfalls?|gotchas?|drawbacks?|downsides?)\b|сравни\w*|\bпротив\b|компромисс\w*"
        r"|плюсы и минусы|преимуществ\w* и недостатк\w*|\bлучше\b|\bподвох\w*"
        r"|\bнедостатк\w*|\bминус\w*"),
    _kw(_REASON, 3.0,
        # "should we use X" is a decision; "what requirements should we gather" is not.
        r"(?:^|[,.;:!?(]\s*|\b(?:so|and|but|or|then|now)\s+)should (?:i|we)\b"
        r"|\bshould (?:i|we) (?:use|pick|choose|go|switch|migrate|move|adopt|keep|stay|build|buy"
        r"|rewrite|split|merge)\b|\bis it (?:a good idea|worth|better)|\bwhen (?:does it make sense"
        r"|should|to use|is it)\b|\bmake sense\b|\bchoose between\b|\bdecide\b"
        r"|\b(?:good|right|bad) (?:fit|choice|idea)\b|\bwould you (?:pick|choose|use)\b",
        r"\bстоит ли\b|\bимеет ли смысл|\bкогда (?:стоит|лучше|нужно|имеет смысл)"
        r"|\bкак выбрать|\bвыбрать между|\bкак(?:ой|ую|ое) выбрать|\bподходит ли|\bподойдет ли"),
    _kw(_REASON, 2.5,
        r"\b(?:architect\w*|design\w*|data model|scalab\w*"
        r"|consisten\w*|consensus|distributed|microservices?|monolith\w*|event sourcing|cqrs"
        r"|cap theorem|latency|throughput|failure modes?|risks?|strateg\w*|approach\w*"
        r"|patterns?|concurren\w*)\b",
        r"архитектур\w*|проектир\w*|спроектир\w*|модел\w* данных|масштабир\w*|консистентн\w*"
        r"|консенсус\w*|распределенн\w*|микросервис\w*|монолит\w*|отказоустойчив\w*|\bриск\w*"
        r"|стратеги\w*|\bподход\w*|версионировани\w*|паттерн\w*"),
    _kw(_REASON, 3.0,
        r"\b(?:prove|proof|theorem|probability|odds|equation|integral|derivative|complexity"
        r"|big-?o|logic|puzzle|riddle|solve|irrational|catch up|estimate|capacity)\b|o\(n|km/h"
        r"|\bhow much \w+ (?:do |would |will )?(?:we|i|you) need",
        r"\bдоказ\w*|теорем\w*|вероятност\w*|уравнени\w*|интеграл\w*|производн\w*|сложност\w*"
        r"|асимптот\w*|логик\w*|головоломк\w*|загадк\w*|\bреши\b|иррационал\w*|км/ч"
        r"|\bсколько (?:нужно|потребуется|у кажд\w*|места|памяти|серверов)|\bприкинь"),
    _kw(_REASON, 2.5,
        r"\b(?:plan|planning|roadmap|migrat\w*|think (?:through|about)|reason about|analy[sz]\w*"
        r"|evaluate|assess|help me (?:think|decide|understand))\b",
        r"\bспланир\w*|\bплан\w*|миграци\w*|\bпереход\w* (?:с|на)\b|рассужд\w*|подума\w*"
        r"|проанализир\w*|\bанализ\w*|\bоцени\w*|помоги (?:понять|разобраться|решить|выбрать)"),
    # --- general: greetings, thanks, translation, summaries, small talk, simple facts
    _kw(_GENERAL, 4.0,
        r"^\W*(?:hi|hello|hey|yo|good (?:morning|afternoon|evening|night)|greetings|привет\w*"
        r"|здравствуй\w*|добр\w+ (?:утро|день|вечер)|хай|салют)\b",
        r"\b(?:thanks|thank you|thx|cheers|bye|goodbye|see you|how are you|who are you"
        r"|that's all|what's your name)\b"
        r"|\b(?:спасибо|благодарю|до свидания|как дела|ты кто|кто ты|как тебя зовут)\b",
        # "пока" is also "while", "как ты" also "how do you (think)": only as a whole message.
        r"^\W*пока\W*$|^\W*как ты\W*$"),
    _kw(_GENERAL, 4.0,
        r"\b(?:translat\w*|summar\w*|tl;?dr|rephrase|paraphrase|proofread|typos?|grammar"
        r"|(?:email|letter) to|joke|poem|haiku|limerick|song|recipe|weather|congratulat\w*"
        r"|in english|in russian)\b",
        r"\b(?:переведи|перескажи|резюмируй|суммаризируй|выжимк\w*|сократи|перефразируй"
        r"|опечатк\w*|грамматик\w*|поздравлени\w*|шутк\w*|анекдот\w*|стих\w*|рецепт\w*"
        r"|погод\w*|по-английски|по-русски)",
        r"\bперевод\w* (?:на|с) \w+ск\w*|\b(?:напиши|составь) (?:\w+ )?письм\w*"),
    _kw(_GENERAL, 4.0,
        r"\b(?:capital of|who (?:wrote|is|was|invented)|what time|time ?zone|how many days"
        r"|population|birthday|what day|what date|(?:tallest|largest|biggest|highest|longest"
        r"|oldest|smallest) \w+)\b",
        r"\bстолиц\w*|\bкто (?:такой|такая|такие|написал|придумал)|\bкоторый час"
        r"|\bчасов\w* пояс\w*|\bсколько (?:дней|лет|будет|часов|минут|недель|месяцев)\b"
        r"|\bнаселени\w*|\bдн\w+ рождени\w*"
        r"|на русском|\bкак(?:ой|ое) сегодня|\bсамы\w+ (?:высок|больш|длинн|стар)\w*"),
)

SHAPE_FEATURES: tuple[Feature, ...] = (
    _shape(3.0, r"^\s*(?:```|~~~)"),
    _shape(3.0,
           r"Traceback \(most recent call last\)|^\s*File \"[^\"\n]{1,300}\", line \d+",
           r"^\s+at [\w$.<>/]{1,200} ?\([^)\n]{0,300}:\d+(?::\d+)?\)",
           r"^\s*[\w.]{0,100}(?:Error|Exception)\b[:(]|\bpanic: |Segmentation fault"),
    _shape(2.5,
           r"^\s*(?:def|class|import|func|fn|package|using|public|private|const|let|var"
           r"|function)\s+[\w{]",
           r"^\s*(?:from \S{1,100} import|#include)\b|;\s*$|^\s*[{}]\s*$|\)\s*\{|=>|:=",
           r"\b[A-Za-z_]\w{0,60}\.\w{1,60}\([^)\n]{0,200}\)"),
    _shape(2.5,
           r"(?i:\bselect\s+[\w*.,\s()]{1,120}?\s+from\s+\w|\binsert\s+into\b|\bdelete\s+from\b"
           r"|\bupdate\s+\w+\s+set\b|\bcreate\s+(?:table|index)\b|\bgroup\s+by\b|\bjoin\s+\w+"
           r"\s+\w+\s+on\b)"),
    _shape(2.5, r"^diff --git |^@@ -\d+|^\+\+\+ |^--- a/"),
    _shape(1.5, r"^\s*[\[{]\s*\"[^\"\n]{1,100}\"\s*:|\{\"[\w-]{1,100}\":"),
    _shape(1.5,
           r"^\s*\$ \S|\b(?:sudo|apt-get|pip install|npm (?:install|run|i)|yarn add|kubectl"
           r"|chmod|curl -)\b|\bgit (?:commit|push|pull|rebase|merge|checkout|reset)\b"
           r"|\bdocker(?:-compose| compose)? (?:run|build|up|exec)\b"),
    _shape(1.0, r"`[^`\n]{1,200}`"),
)
# fmt: on

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
class Verdict:
    """A classification with the evidence behind it, for logs, docs and tuning."""

    query_type: QueryType
    scores: Mapping[QueryType, float]
    reason: str


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyword_prefixes", Prefixes(_lengths(self.keyword_features)))
        if min(self.min_score, self.margin, self.shape_cap, self.short_confident) < 0:
            raise ValueError("classifier thresholds must be non-negative")
        if self.head_chars < 1 or self.tail_chars < 0 or self.short_words < 0:
            raise ValueError("head_chars must be positive; tail_chars, short_words >= 0")

    def classify(self, query: str) -> QueryType:
        return self.verdict(query).query_type

    def verdict(self, query: str) -> Verdict:
        text = self._window(query)
        if not _HAS_WORD.search(text):
            return _unknown(dict.fromkeys(_SCORED, 0.0), "no words")
        prose = _prose(text)
        scores = dict.fromkeys(_SCORED, 0.0)
        asked: set[QueryType] = set()
        starts = self._keyword_prefixes.of(prose)
        for feature in self.keyword_features:
            gate = feature.gate
            # No literal that every match contains is in the prose: the search would fail.
            if (
                gate is not None
                and gate.starts.isdisjoint(starts)
                and not (gate.more and gate.in_text(prose, starts))
            ):
                continue
            if feature.pattern.search(prose):
                scores[feature.query_type] += feature.weight
                if feature.ask:
                    asked.add(feature.query_type)
        shape = self._shape(text)
        # Code pasted under "write tests for this" is what the tests are for, not a vote for code.
        if _CODE in asked or not asked & self.paste_is_context_for:
            scores[_CODE] += min(shape, self.shape_cap)
        if len(asked) > 1:
            kinds = ", ".join(sorted(asked))
            return _unknown(scores, f"asks for several kinds of work: {kinds}")
        return self._decide(scores, n_words=len(_WORD.findall(prose)), shape=shape)

    def _shape(self, text: str) -> float:
        """The weight of the shape features found.

        Their gates are tested loosely (every literal as a substring): most queries need two or
        three of the eight searches whatever the test, and a word-prefix set of the raw text
        would cost more than it saves.
        """
        shape = 0.0
        for feature in self.shape_features:
            gate = feature.gate
            if (gate is None or gate.may_occur(text)) and feature.pattern.search(text):
                shape += feature.weight
        return shape

    def _decide(self, scores: dict[QueryType, float], *, n_words: int, shape: float) -> Verdict:
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        (best, top), (_, second) = ranked[0], ranked[1]
        if top < self.min_score:
            return _unknown(scores, f"weak evidence ({top:g} < {self.min_score:g})")
        if top - second < self.margin:
            return _unknown(scores, f"no clear winner ({top:g} vs {second:g})")
        short = n_words < self.short_words and shape == 0 and best is not _GENERAL
        if short and top < self.short_confident:
            return _unknown(scores, f"too short to tell (words: {n_words})")
        return Verdict(best, MappingProxyType(scores), f"{best} by {top - second:g}")

    def _window(self, query: str) -> str:
        if len(query) > self.head_chars + self.tail_chars:
            tail = query[len(query) - self.tail_chars :] if self.tail_chars else ""
            query = query[: self.head_chars] + "\n" + tail
        # NFKC folds full-width letters and ligatures; casefold comes later, prose only.
        return _INVISIBLE.sub("", unicodedata.normalize("NFKC", query))


def _lengths(features: tuple[Feature, ...]) -> tuple[int, ...]:
    return tuple(sorted({n for f in features if f.gate is not None for n in f.gate.lengths}))


def _unknown(scores: dict[QueryType, float], reason: str) -> Verdict:
    return Verdict(QueryType.UNKNOWN, MappingProxyType(scores), reason)


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


def classify(query: str) -> QueryType:
    """The query's type by the default classifier: what the orchestrator calls."""
    return DEFAULT_CLASSIFIER.classify(query)
