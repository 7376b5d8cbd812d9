"""embeddb's dependencies run one way: read its import graph from the source and check it.

Every ``import`` counts, at module level and inside functions (a lazy import is still a
dependency; it only hides a cycle from the interpreter). Imports under ``if TYPE_CHECKING:``
never run: they count for what a module knows of, not for cycles. The foundation (errors, url, config,
ids, models, dialect) knows nothing of the features built on it, and nothing in the engine
imports the reference application, which is an app like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import embeddb

PACKAGE = Path(embeddb.__file__).parent
FOUNDATION = ["errors", "url", "config", "ids", "models", "dialect"]
FEATURES = ["migrate", "backup", "cache", "maintenance", "seed", "repository", "cli", "reference"]


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements inside ``if TYPE_CHECKING:`` blocks."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }


def _imported(name: str, path: Path, runtime: bool) -> Iterator[str]:
    """The embeddb modules that ``name`` (at ``path``) imports, anywhere in its body
    (``runtime``: leaving out the imports made for the type checker only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_only(tree) if runtime else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from .cache import tiered` names a module
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def _graph(runtime: bool) -> dict[str, set[str]]:
    return {
        name: {t for t in _imported(name, path, runtime) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }


GRAPH = _graph(runtime=False)  # what each module knows of
RUNTIME = _graph(runtime=True)  # what each module runs


def _reachable(start: str) -> dict[str, str]:
    """Every module ``start`` depends on, directly or not -> the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in GRAPH[current]:
            if target not in seen and target != start:
                seen[target] = current
                todo.append(target)
    return seen


def _chain(start: str, end: str, parents: dict[str, str]) -> str:
    links = [end]
    while links[-1] != start:
        links.append(parents[links[-1]])
    return " -> ".join(reversed(links))


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(RUNTIME[node]):
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

    for name in sorted(RUNTIME):
        if name not in index:
            visit(name)
    return found


def _is_feature(module: str) -> bool:
    return any(module == f"embeddb.{f}" or module.startswith(f"embeddb.{f}.") for f in FEATURES)


def test_the_graph_is_read():
    """The reader sees lazy imports and package-relative ones (else every check passes)."""
    assert "embeddb.errors" in GRAPH["embeddb.database"]
    assert "embeddb.cache.memory" in GRAPH["embeddb.cache.disk"]
    assert "embeddb.cache.tiered" in GRAPH["embeddb.cache.rows"]  # for the type checker
    assert "embeddb.cache.tiered" not in RUNTIME["embeddb.cache.rows"]
    assert len(GRAPH) > 60


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(", ".join(c) for c in cycles)


@pytest.mark.parametrize("module", FOUNDATION)
def test_the_foundation_knows_no_feature(module):
    start = f"embeddb.{module}"
    parents = _reachable(start)
    reached = [_chain(start, m, parents) for m in sorted(parents) if _is_feature(m)]
    assert not reached, f"{start} depends on features:\n" + "\n".join(reached)


def test_the_engine_never_imports_the_reference_app():
    outside = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("embeddb.reference")
        for target in targets
        if target.startswith("embeddb.reference")
    ]
    assert not outside


def test_backups_load_the_cache_tier_only_to_restore():
    """``import embeddb.backup`` (every backup CLI run) does not load the cache tier."""
    import subprocess
    import sys

    code = "import sys, embeddb.backup; print(any(m.startswith('embeddb.cache') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
