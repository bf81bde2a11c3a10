"""Finding JSON in what a model wrote: fenced blocks, bare JSON, JSON inside prose, trailing commas.

Models asked for JSON often wrap it in ```json fences, add a sentence before or after, or leave a
trailing comma. `json_values` yields every JSON object or array it can recover, best candidates
first, so the caller can take the first one that fits its schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# ```lang info\n body ``` ; the info string after the language (e.g. `title=a.py`) is kept apart.
FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)([^\n`]*)\n(.*?)^[ \t]*```", re.S | re.M)
_JSON_LANGS = frozenset({"", "json", "json5", "jsonc", "javascript", "js"})
# Scanning from every brace of a long answer would be quadratic; real answers need only a few.
_MAX_STARTS = 32
_SPACE = re.compile(r"\s*")


def json_values(text: str) -> Iterator[dict[str, Any] | list[Any]]:
    """Every JSON object or array recoverable from `text`, fenced blocks first."""
    seen: set[str] = set()
    for candidate in _candidates(text):
        candidate = candidate.strip()
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        value = loads(candidate)
        if isinstance(value, dict | list):
            yield value


def loads(text: str) -> Any:
    """`json.loads`, then once more without trailing commas and `//` comments; None if neither."""
    for attempt in (text, _repair(text)):
        try:
            return json.loads(attempt)
        except ValueError:
            continue
    return None


def _candidates(text: str) -> Iterator[str]:
    for match in FENCE.finditer(text):
        if match.group(1).lower() in _JSON_LANGS:
            yield match.group(3)
    yield text
    yield from _balanced(text)


def _balanced(text: str) -> Iterator[str]:
    """Substrings from an opening brace or bracket to its matching close, strings respected."""
    starts = 0
    index = _next_open(text, 0)
    while index != -1 and starts < _MAX_STARTS:
        starts += 1
        end = _match_close(text, index)
        if end != -1:
            yield text[index : end + 1]
        index = _next_open(text, index + 1)


def _next_open(text: str, start: int) -> int:
    positions = [p for p in (text.find("{", start), text.find("[", start)) if p != -1]
    return min(positions) if positions else -1


def _match_close(text: str, start: int) -> int:
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _repair(text: str) -> str:
    """Drop trailing commas before `}`/`]` and `//` line comments, outside strings."""
    out: list[str] = []
    in_string = False
    escaped = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char == "/" and text.startswith("//", index):
            newline = text.find("\n", index)
            index = length if newline == -1 else newline
            continue
        elif char == ",":
            after = _SPACE.match(text, index + 1)
            following = text[after.end() : after.end() + 1] if after else ""
            if following not in ("}", "]"):
                out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)
