"""The package's layering, read from the source: module-level imports only go down the
layers, and no two modules import each other at module level (directly or round a cycle).

Imports inside functions and under ``TYPE_CHECKING`` are left out: they are how a lower
layer names a higher one's type, or loads an optional stack only when it is used.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Lowest first. A module may import its own layer's modules and lower layers'.
LAYERS: list[set[str]] = [
    {"liqi._version", "liqi.errors", "liqi.core", "liqi.protocols"},
    {
        "liqi.config",
        "liqi.resource_groups",  # where jobs run: parsed from the server's settings
        "liqi.datasets",
        "liqi.asgi",
        "liqi.stores",
        "liqi.archives",
        "liqi.logs",
        "liqi._logging",
        "liqi.sandbox",  # confining user code: only errors below it
    },
    {"liqi.client"},  # the SDK: an instance reads oss:// models through it
    {"liqi.backends", "liqi.serving", "liqi.training"},
    {"liqi.gateway"},
    # the control plane, by subsystem
    {"liqi.control.db", "liqi.control.ticker", "liqi.control.fetch_policy"},
    {"liqi.control.identity"},
    {"liqi.control.storage"},
    {"liqi.control.jobs", "liqi.control.services"},
    {"liqi.control.api", "liqi.control.server", "liqi.control"},
    {"liqi.cli", "liqi"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative imports are banned by ruff; resolve anyway
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    visit(node.orelse)
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (SRC / "liqi").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = _top_level_imports(tree, name, path.name == "__init__.py")
        graph[name] = {m for m in imports if m in files and m != name}
    return graph


def _layer(module: str) -> int:
    best = -1
    best_len = -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add its package to LAYERS"
    return best


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == [], "\n".join(upward)


def test_no_import_cycle_at_module_level() -> None:
    graph = _graph()
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            # A package importing its own submodules is not a cycle of concern when the
            # submodules do not import the package back; a real cycle has two modules.
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert cycles == []


def test_the_graph_sees_real_imports() -> None:
    """The parser finds what is there (so the two tests above can fail)."""
    graph = _graph()
    assert "liqi.errors" in graph["liqi.gateway.app"]
    assert "liqi.control.services.reconciler" in graph["liqi.control.server.plane"]
    assert _layer("liqi.control.server.plane") > _layer("liqi.gateway.app")
