"""No import circle between the package's modules, read from the source rather than from a
tool's report.

Every import counts: at the top of a module, under ``if TYPE_CHECKING:`` and inside functions.
A circle that only a deferred import or a type-checking guard keeps from failing at start-up
still ties the two modules together: neither can be read, tested or moved alone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "actors"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its
    ``__init__.py``)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            yield from (m for m in submodules if m in modules)
            # `from pkg import name` of something that is not a submodule runs pkg itself
            if source in modules and not all(m in modules for m in submodules):
                yield source


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = module_files(package)
    return {
        name: {m for m in imported(name, path, modules) if m != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The check itself: a circle closed by a type-checking import or by an import inside a
    function is found, and a package importing its own submodules is not one."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n"
    )
    (pkg / "b.py").write_text("from . import a\nB = 2\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..sub import d\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub.c import f\n")
    assert circles(import_graph(pkg)) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]


def test_no_import_circle_in_the_package() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the walk found the package's modules
    assert circles(graph) == []
