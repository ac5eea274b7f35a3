"""The import graph of ``actors/`` and ``scripts/*.py``, read from the source (AST), not from a
tool: it has no circle, and the daemon's code never reaches the lab.

Every ``import`` and ``from ... import`` counts, at module level, inside functions and under
``if TYPE_CHECKING:`` alike: a deferred import still closes a circle (it only moves the failure
to run time), and a type-checking import still ties two modules together, so that neither can
be read, tested or moved alone. ``from X import Y`` is an edge to the module
``X.Y`` when there is one, else to ``X``; the parent packages an import loads along the way are
not edges of their own (a package's ``__init__`` that re-exports its modules would otherwise
count as a circle with each of them). A script runs with ``scripts/`` first on the path, so a
bare ``import NAME`` in a script is an edge to ``scripts/NAME.py`` when that exists.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = "actors.lab"


def module_name(path: Path) -> str:
    """``actors/a/b.py`` -> ``actors.a.b``, ``actors/a/__init__.py`` -> ``actors.a``,
    ``scripts/x.py`` -> ``scripts.x``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted((ROOT / "actors").rglob("*.py"))}
    found.update({module_name(p): p for p in sorted((ROOT / "scripts").glob("*.py"))})
    return found


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    is_script = name.startswith("scripts.")
    out: set[str] = set()

    def absolute(target: str) -> str | None:
        if target in known:
            return target
        if is_script and f"scripts.{target}" in known:
            return f"scripts.{target}"
        return None

    for node in import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            candidates = []
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                candidates.append(sub if absolute(sub) else module)
        for target in candidates:
            resolved = absolute(target)
            if resolved is not None:
                out.add(resolved)
    return out


def import_graph() -> dict[str, set[str]]:
    found = sources()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing
    itself (Tarjan's algorithm, iterative so a deep graph cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def in_lab(name: str) -> bool:
    return name == LAB or name.startswith(LAB + ".")


def test_the_walk_sees_what_python_would_import() -> None:
    """The walker itself: relative, nested, deferred and TYPE_CHECKING imports, scripts."""
    graph = import_graph()
    assert "actors.lab.bench.cli" in graph["scripts.bench"]
    assert "actors.lab.corebench" in graph["actors.lab.bench.cli"]  # from .. import corebench
    assert "actors.lab.bench.hub" in graph["actors.lab.bench.cli"]  # from . import hub
    assert "actors.settings" in graph["actors.lab.wgactors"]  # from .. import settings
    assert "actors.lab.command" in graph["actors.lab.traffic"]  # from .command import ...
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}, "b": set()}) == [["a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_walk_counts_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import typed_only\n"
        "else:\n    import at_run_time\n"
        "def f():\n    import deferred\n"
    )
    names = {alias.name for node in import_nodes(ast.parse(source)) for alias in node.names}
    assert names == {"TYPE_CHECKING", "typed_only", "at_run_time", "deferred"}


def test_no_import_circle_in_actors_or_scripts() -> None:
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_daemon_never_imports_the_lab() -> None:
    """The lab (and the core bench in it) is left out of the wheel: nothing outside it may
    import it, or an installed daemon would fail."""
    graph = import_graph()
    assert "actors.corebench" not in graph, "corebench belongs in the lab"
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith("actors") and not in_lab(name)
        for target in targets
        if in_lab(target)
    )
    assert not offenders, offenders
    # and nothing the command line reaches, however indirectly, is in the lab
    reached, todo = set(), ["actors.cli", "actors.__main__"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += graph.get(name, ())
    assert len(reached) > 10  # the walk did reach the daemon's modules
    assert not [name for name in reached if in_lab(name)]
