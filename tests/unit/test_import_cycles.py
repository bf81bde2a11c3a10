"""No import cycles between aiorch's modules (issue 14: `server/flows` <-> `server/schemas` and
`config` <-> `catalog` were cycles, hidden by imports deferred into a function).

Every import counts, at module level or inside a function (a deferred import is a cycle put off,
not cut), except those under `if TYPE_CHECKING:`, which never run. A module importing from its
own package's `__init__` is not an edge: Python runs the package first in any case.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(nodes: Iterable[ast.AST]) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement below `nodes`, skipping `if TYPE_CHECKING:` blocks."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from imports(node.orelse)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from imports(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            submodules = {f"{module}.{a.name}" for a in node.names} & paths.keys()
            targets |= submodules
            if len(submodules) < len(node.names):
                targets.add(module)
        graph[name] = {
            t for t in targets if t in paths and t != name and not name.startswith(t + ".")
        }
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_checker_reads_relative_and_package_imports() -> None:
    graph = import_graph(SRC / "aiorch")
    assert "aiorch.planning" in graph["aiorch.orchestrator"]
    assert "aiorch.server.app" in graph["aiorch.server.main"]


def test_the_checker_sees_a_deferred_import_and_skips_a_type_checking_one() -> None:
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import aiorch.hidden
def later():
    from aiorch import deferred
"""
    tree = ast.parse(source)
    names = [alias.name for node in imports(tree.body) for alias in node.names]
    assert names == ["TYPE_CHECKING", "deferred"]


def test_aiorch_has_no_import_cycles() -> None:
    graph = import_graph(SRC / "aiorch")
    assert len(graph) > 100
    assert cycles(graph) == []
