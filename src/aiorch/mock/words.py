"""Made-up text for structured answers: words taken from the prompt's subject, then filler.

A `Filler` is seeded from the conversation's digest, so the same prompt always gets the same
titles, sentences, identifiers and code.
"""

from __future__ import annotations

import keyword
import random
import re
import uuid

# fmt: off
VOCABULARY = (
    "service", "request", "model", "latency", "token", "cache", "route", "answer", "query",
    "system", "user", "data", "stream", "value", "result", "config", "state", "error", "retry",
    "limit", "budget", "queue", "worker", "backend", "client", "response", "metric", "record",
    "schema", "field", "index", "checks", "builds", "returns", "keeps", "sends", "reads",
)
_STOP = frozenset((
    "the", "and", "for", "with", "that", "this", "from", "into", "are", "was", "were", "can",
    "will", "you", "your", "our", "their", "they", "them", "has", "have", "had", "not", "but",
    "all", "any", "each", "its", "his", "her", "who", "what", "when", "where", "which", "why",
    "how", "also", "then", "than", "there", "here", "about", "should", "would", "could", "must",
    "may", "might", "shall", "does", "did", "done", "being", "been", "such", "only", "just",
    "some", "more", "most", "very", "feature", "request", "stories", "story", "user", "users",
    "acceptance", "criteria", "criterion", "given", "file", "files", "notes", "code", "none",
    "written", "verdict", "pass", "fail", "python", "def", "return", "print", "main", "name",
))
# fmt: on
_WORD = re.compile(r"[^\W\d_][\w'-]{2,}")
_ID = re.compile(r"\b[A-Z]{1,5}-\d+\b")
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)


def subject_words(text: str, limit: int = 40) -> tuple[str, ...]:
    """The content words of `text` in order of appearance, without code, ids or stop words."""
    text = _ID.sub(" ", _FENCE.sub(" ", text))
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text):
        word = match.group().strip("'-")
        lowered = word.lower()
        if lowered in _STOP or lowered in seen or not word:
            continue
        seen[lowered] = None
        if len(seen) >= limit:
            break
    return tuple(seen)


def story_ids(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_ID.findall(text)))


class Filler:
    """Deterministic words for one answer; `key` is the JSON key being filled, as a hint."""

    def __init__(self, seed: bytes, subject: tuple[str, ...], ids: tuple[str, ...] = ()) -> None:
        self.rng = random.Random(int.from_bytes(seed[:8], "big"))
        self.subject = subject or ("request",)
        self.ids = ids
        self.key = ""
        self._cursor = 0

    def _next_subject(self) -> str:
        word = self.subject[self._cursor % len(self.subject)]
        self._cursor += 1
        return word

    def words(self, count: int) -> str:
        out = []
        for index in range(count):
            if index % 2 == 0 or len(self.subject) > 6:
                out.append(self._next_subject())
            else:
                out.append(VOCABULARY[self.rng.randrange(len(VOCABULARY))])
        return " ".join(out)

    def sentence(self, count: int) -> str:
        text = self.words(max(count, 1))
        return text[:1].upper() + text[1:] + "."

    def title(self, count: int = 4) -> str:
        return " ".join(w.capitalize() for w in self.words(count).split())

    def identifier(self, count: int = 3) -> str:
        ascii_words = [w for w in self.subject if w.isascii() and w.replace("-", "").isalpha()]
        parts = [re.sub(r"\W", "_", w.lower()) for w in ascii_words[:count]]
        name = "_".join(parts) or "handle_request"
        return name + "_" if keyword.iskeyword(name) else name

    def formatted(self, fmt: str) -> str | None:
        r = self.rng
        if fmt == "date-time":
            return (
                f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00Z"
            )
        if fmt == "date":
            return f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        if fmt == "time":
            return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00"
        if fmt == "email":
            return f"{self.identifier(1)}@example.com"
        if fmt in ("uri", "url", "iri"):
            return f"https://example.com/{self.identifier(2).replace('_', '-')}"
        if fmt == "uuid":
            return str(uuid.UUID(int=r.getrandbits(128), version=4))
        if fmt == "ipv4":
            return f"192.0.2.{r.randint(1, 254)}"
        return None

    def for_key(self, key: str) -> str:
        """A string that suits a field called `key`."""
        k = key.lower()
        if k in ("id", "key") and self.ids:
            return self.ids[self.rng.randrange(len(self.ids))]
        if k in ("name", "title", "summary", "label"):
            return self.title(3)
        if k in ("email", "mail"):
            return self.formatted("email") or ""
        if k in ("url", "uri", "link", "href"):
            return self.formatted("uri") or ""
        if k in ("path", "file", "filename"):
            return f"{self.identifier(2)}.py"
        if k in ("language", "lang"):
            return "python"
        if k in ("city", "location", "place", "country"):
            return self._next_subject().capitalize()
        return self.words(2 + self.rng.randrange(3))

    def code(self, title: str) -> str:
        """A small, complete Python module about the subject."""
        name = self.identifier(3)
        return (
            f'"""{title}."""\n\n\n'
            f"def {name}(text: str) -> str:\n"
            f'    """{self.sentence(6)}"""\n'
            "    return text.strip()\n\n\n"
            'if __name__ == "__main__":\n'
            f'    print({name}("  {self.words(2)}  "))\n'
        )
