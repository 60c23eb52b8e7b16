"""Import hygiene that ruff and mypy do not check: no import cycle inside the package and no ``_private``
name imported from another of its packages (``etl`` from ``services``, say; within one package a private
helper may be shared) (issue 18). Counts every import, also those inside functions, since
a lazy import is still a dependency; imports under ``if TYPE_CHECKING:`` are left out. Exits 1 on a finding."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _stage(module: str) -> str:
    """``identigraph.etl`` for ``identigraph.etl.job``; top-level modules are each their own."""
    return ".".join(module.split(".")[:2])


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    private: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*head, base] if base else head)
            deps.add(base)
            for alias in node.names:
                deps.add(f"{base}.{alias.name}")
                if alias.name.startswith("_") and base.startswith("identigraph.") and _stage(base) != _stage(name):
                    private.append(f"{path.relative_to(ROOT)}:{node.lineno}: {base} import {alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {d for d in deps if d in known and d != name}, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def main() -> int:
    known = modules()
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for name, path in known.items():
        graph[name], bad = imports(name, path, known)
        private += bad
    loops = cycles(graph)
    for line in private:
        print(f"private import across modules: {line}")
    for loop in loops:
        print(f"import cycle: {' <-> '.join(loop)}")
    print(f"check_imports: {len(known)} modules, {len(private)} private imports, {len(loops)} cycles")
    return 1 if private or loops else 0


if __name__ == "__main__":
    sys.exit(main())
