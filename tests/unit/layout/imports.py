"""The import graph of rayguard's two packages, read from the source with `ast` (nothing is
imported). Every import counts, at module level or inside a function, except imports under
`if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.paths import REPO_ROOT

PACKAGE_DIRS = {
    "rayguard_operator": REPO_ROOT / "operator" / "rayguard_operator",
    "rayguard_node": REPO_ROOT / "node_image" / "rayguard_node",
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. rayguard_node.guard.loop
    path: Path
    is_package: bool


def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package, root in PACKAGE_DIRS.items():
        for path in sorted(root.rglob("*.py")):
            parts = (package,) + path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            found[name] = Module(name, path, is_package)
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(module: Module) -> list[str]:
    """Absolute dotted names this module imports (a module, or a name inside one)."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from a.b import c`: the module a.b.c if it is one, else a.b (see import_graph).
            names.extend(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the rayguard modules it imports (a name inside a module counts as the module)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, module in known.items():
        targets = set()
        for imported in _imported_names(module):
            # The longest prefix that is one of our modules: `a.b.c.Name` -> `a.b.c`.
            parts = imported.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in known:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def layer_of(module: str) -> str:
    """`rayguard_node.guard.loop` -> `rayguard_node.guard`; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])
