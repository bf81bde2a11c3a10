"""README.md as a list of examples: every line of every shell block, every Python block, every
other block, and every command of the commands table. `test_readme.py` runs each one; this module
only reads the file, so that a change to the README changes the tests with it."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL = {"bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Example:
    where: str  # e.g. "Quick start, block 2, line 3" or "Commands table, row 4"
    kind: str  # "shell", "python", "block" (another fenced block) or "table"
    text: str  # a shell command as written (continuations joined), or the block's text
    env: tuple[tuple[str, str], ...] = ()  # `export`s earlier in the same shell block
    background: bool = False  # a shell command ending with `&`
    options: tuple[str, ...] = ()  # table rows: the `--options` its description names
    comment: str = ""  # shell: the trailing comments of this line and the `export`s before it
    lang: str = ""

    @property
    def id(self) -> str:
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"{self.where}: {first[:70]}"

    def assignments(self) -> tuple[dict[str, str], list[str]]:
        """Leading `NAME=value` words of a shell command, and the words after them."""
        words = shlex.split(self.text)
        env: dict[str, str] = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        return env, words


@dataclass
class _Block:
    section: str
    index: int
    lang: str
    lines: list[str] = field(default_factory=list)


def examples(text: str | None = None) -> list[Example]:
    text = README.read_text(encoding="utf-8") if text is None else text
    found: list[Example] = []
    for block in _blocks(text):
        where = f"{block.section}, block {block.index}"
        if block.lang in SHELL:
            found += _shell(block, where)
        elif block.lang in ("python", "py"):
            found.append(Example(where, "python", "\n".join(block.lines), lang=block.lang))
        else:
            found.append(Example(where, "block", "\n".join(block.lines), lang=block.lang))
    found += _table(text)
    return found


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    section, current, counts = "top", None, dict[str, int]()
    for line in text.splitlines():
        fence = re.match(r"^```\s*([\w-]*)\s*$", line)
        if current is None and line.startswith("## "):
            section = line[3:].strip()
        elif fence and current is None:
            counts[section] = counts.get(section, 0) + 1
            current = _Block(section, counts[section], fence.group(1).lower())
        elif fence or (current is not None and line.strip() == "```"):
            assert current is not None
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"README.md: a fenced block in {section!r} is never closed"
    return blocks


def _shell(block: _Block, where: str) -> list[Example]:
    found: list[Example] = []
    env: dict[str, str] = {}
    joined: list[tuple[int, str]] = []
    for number, line in enumerate(block.lines, 1):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((number, line))
    notes: list[str] = []  # comments since the last command (its `export`s' and its own)
    for number, line in joined:
        command, comment = _split_comment(line.strip())
        notes += [comment] if comment else []
        if not command:
            continue
        export = re.fullmatch(r"export\s+([A-Z_][A-Z0-9_]*)=(\S*)", command)
        if export:
            env[export.group(1)] = export.group(2)
            continue
        background = command.endswith("&") and not command.endswith("&&")
        found.append(
            Example(
                f"{where}, line {number}",
                "shell",
                command.rstrip("& ").strip() if background else command,
                env=tuple(env.items()),
                background=background,
                comment="; ".join(notes),
                lang=block.lang,
            )
        )
        notes = []
    return found


def _split_comment(line: str) -> tuple[str, str]:
    """`command  # comment` -> (command, comment); a `#` inside quotes is not a comment."""
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip(), line[index + 1 :].strip()
    return line.strip(), ""


def _table(text: str) -> list[Example]:
    """The rows of the table under `## Commands`: the command in its first cell."""
    section = re.search(r"^## Commands\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        return []
    found = []
    rows = [r for r in section.group(1).splitlines() if r.startswith("|")][2:]  # past the header
    for number, row in enumerate(rows, 1):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        command = re.fullmatch(r"`([^`]+)`", cells[0])
        assert command, f"README.md commands table, row {number}: no `command` in {cells[0]!r}"
        options = tuple(re.findall(r"`(--[\w-]+)`", " ".join(cells[1:])))
        found.append(
            Example(f"Commands table, row {number}", "table", command.group(1), options=options)
        )
    return found
