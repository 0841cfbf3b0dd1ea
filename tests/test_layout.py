"""The shape of the code: layers, no import cycles, no private names across modules, no switch on action names."""

from __future__ import annotations

import ast
from pathlib import Path

import actions

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actions", "core", "chat", "workers", "findings", "bot", "standins")
# What each package may import from the project: dependencies run one way, bot → workers → chat/core → actions.
MAY_IMPORT = {
    "actions": {"actions"},
    "core": {"actions", "core"},
    "chat": {"actions", "core", "chat"},
    "findings": {"actions", "core", "chat", "findings"},
    "workers": {"actions", "core", "chat", "workers"},
    "bot": {"actions", "core", "chat", "findings", "workers", "bot", "standins"},
    "standins": {"standins"},
}


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_every_package_imports_only_the_layers_below_it():
    trees = modules()
    wrong = [f"{name} imports {target}" for name, tree in trees.items() for target in imports(name, tree, set(trees))
             if target.split(".")[0] not in MAY_IMPORT[name.split(".")[0]]]
    assert wrong == []


def test_the_import_graph_has_no_cycle():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) - {name.split(".")[0]} for name, tree in trees.items()}
    # A package's __init__ importing its own modules is how registration works, not a cycle of design.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_no_private_name_is_used_across_modules():
    trees = modules()
    used = []
    for name, tree in trees.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                used += [f"{name}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name.split(".")[0] in PACKAGES})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                used.append(f"{name}: {node.value.id}.{node.attr}")
    assert used == []


def test_no_runtime_package_switches_on_an_action_name():
    names = set(actions.REGISTRY)
    found = []
    for name, tree in modules().items():
        if name.split(".")[0] not in ("workers", "core", "chat", "findings"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                    found += [f"{name}:{node.lineno} compares with {v.value!r}" for v in values
                              if isinstance(v, ast.Constant) and v.value in names]
            elif isinstance(node, ast.Dict):
                found += [f"{name}:{node.lineno} keys a dict by {k.value!r}" for k in node.keys if isinstance(k, ast.Constant) and k.value in names]
    assert found == []


def test_the_test_doubles_are_not_in_a_runtime_package():
    for package in ("actions", "core", "chat", "workers", "findings", "bot"):
        assert not list((ROOT / package).glob("fake*.py")) and not list((ROOT / package).glob("local_*.py"))
