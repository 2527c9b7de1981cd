"""``objects/`` depends one way: no module imports, even lazily, one that imports it back.

Imports under ``if TYPE_CHECKING:`` are left out (they never run); every other import of
an ``objects`` module counts, at module level or inside a function, since a lazy import
is how a cycle hides.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "objects"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def _name(stem: str) -> str:
    return "objects" if stem == "__init__" else f"objects.{stem}"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, known: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "objects")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "objects":
                for alias in node.names:
                    sub = f"objects.{alias.name}"
                    found.add(sub if sub in known else "objects")
            elif node.module.split(".")[0] == "objects":
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    known = {_name(stem) for stem in MODULES}
    graph: dict[str, set[str]] = {}
    for stem in MODULES:
        tree = ast.parse((PACKAGE / f"{stem}.py").read_text())
        graph[_name(stem)] = _imports(tree, known) - {_name(stem)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state:
                cycle = walk(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_no_module_of_objects_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert "objects.base" in graph and graph["objects.base"], "the graph is empty: parser broke"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in objects/: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_inside_objects_imports_the_base_facade() -> None:
    graph = import_graph()
    domain = {"objects", "objects.instance", "objects.flavor", "objects.compute_node"}
    users = sorted(m for m, deps in graph.items() if "objects.base" in deps and m not in domain)
    assert users == [], f"{users} import the objects.base facade; import the defining module"


def test_fields_knows_no_object_class() -> None:
    assert not {"objects.base", "objects.versioned"} & import_graph()["objects.fields"]


@pytest.mark.parametrize("stem", [s for s in MODULES if s != "__init__"])
def test_every_module_imports_first_in_a_fresh_interpreter(stem: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import objects.{stem}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE.parent,
    )
    assert out.returncode == 0, out.stderr
