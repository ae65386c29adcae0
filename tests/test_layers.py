"""The package's imports are layered: no module imports one above it, and no modules import each
other in a circle.

Read from the source with ``ast``: every import a module makes, at module level or inside a
function, except those under ``if TYPE_CHECKING:`` (type checkers read those, Python never runs
them). From the bottom up:

* core: nodes, composites, graph, scheduler, attempts, events, errors, state, records;
* runtime: driving the loop (``runner``), output capture, Dask, schedules;
* front ends: display, notebook, store, cli, and the package's face (``nborch/__init__.py``).

Where the core must reach upward (``Node.run()`` needs the runner, a node's notebook repr needs
the display, ``Run.load()`` needs the store), the higher layer registers a function with
``nborch.hooks`` when it is imported. A new module must be placed in ``LAYERS`` below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import nborch
from nborch import hooks
from nborch.errors import NborchError

PACKAGE = Path(__file__).resolve().parent.parent / "nborch"

LAYERS: dict[str, set[str]] = {
    "core": {
        "attempts", "children", "clock", "engine", "errors", "eventbus", "executors", "expansion", "graph",
        "hooks", "invocation", "keys", "limits", "mapping", "offload", "pickling", "policies", "progress",
        "record", "registry", "reuse", "state", "task", "workers", "workflow",
    },
    "runtime": {"capture", "dask_executor", "runner", "schedule"},
    "front end": {
        "__init__", "__main__", "cache", "cli", "demo", "display", "frontends", "notebook", "store",
    },
}
ORDER = list(LAYERS)

# Circles left on purpose, each with what opens it; the test fails when one of them is gone, so
# that it leaves this list too. store.sqlite's Recorder keeps a failed run's values for resume
# through store.cache's Cache, and Cache writes with sqlite's temp_name: opened when
# store/__init__.py's start_recording hands the recorder that function (cache.py would then
# import sqlite.py alone), in the store's rewrite.
KNOWN_CIRCLES = [["nborch.store.cache", "nborch.store.sqlite"]]


def layer_of(module: str) -> str | None:
    """The layer of ``nborch.a.b``: that of ``a`` (a folder is one piece of one layer)."""
    top = module.split(".")[1] if "." in module else "__init__"
    return next((name for name, tops in LAYERS.items() if top in tops), None)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The package's modules that ``module`` imports, each with the line of its first import."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        if name != module and name in known:
            found.setdefault(name, line)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import capture` imports a module
                name = f"{source}.{alias.name}"
                add(name if name in known else source, node.lineno)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def loop_through(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """The shortest circle from ``component[0]`` back to it, as a list of modules."""
    start, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in graph[v]:
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w in inside and w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"{component} is no circle")  # pragma: no cover


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"modules in no layer: {unplaced}; add each to LAYERS in {Path(__file__).name}"


def test_no_import_circles() -> None:
    graph = import_graph()
    found = [c for c in circles(graph) if c not in KNOWN_CIRCLES]
    described = []
    for component in found:
        loop = loop_through(graph, component)
        steps = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(loop, loop[1:], strict=False))
        described.append(f"{len(component)} modules import each other ({', '.join(component)}), "
                         f"for one: {steps} -> {loop[-1]}")
    assert not found, "\n".join(described)


def test_known_circles_are_still_there() -> None:
    gone = [c for c in KNOWN_CIRCLES if c not in circles(import_graph())]
    assert not gone, f"these circles are open now: {gone}; remove them from KNOWN_CIRCLES"


def test_no_module_imports_a_higher_layer() -> None:
    graph = import_graph()
    upward = [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)}) at line {line}"
        for a, targets in sorted(graph.items())
        for b, line in targets.items()
        if ORDER.index(layer_of(b) or ORDER[0]) > ORDER.index(layer_of(a) or ORDER[-1])
    ]
    assert not upward, "a lower layer imports a higher one (register a hook instead):\n" + "\n".join(upward)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .b import x\n", {"nborch.b"}),
        ("from . import b\n", {"nborch.b"}),
        ("def f():\n    from .b import x\n", {"nborch.b"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n", set()),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    from .b import x\n", {"nborch.b"}),
        ("import nborch.b\n", {"nborch.b"}),
    ],
    ids=["from-import", "module", "in a function", "type checking", "its else", "absolute"],
)
def test_imports_are_read(tmp_path: Path, source: str, expected: set[str]) -> None:
    path = tmp_path / "a.py"
    path.write_text(source, encoding="utf-8")
    known = {"nborch": tmp_path / "__init__.py", "nborch.a": path, "nborch.b": tmp_path / "b.py"}
    assert set(imports("nborch.a", path, known)) == expected


def test_circles_are_named() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2, "d": 5}, "c": {"a": 3}, "d": {"a": 4}, "e": {"a": 6}}
    assert circles(graph) == [["a", "b", "c", "d"]]
    assert loop_through(graph, ["a", "b", "c", "d"]) == ["a", "b", "c", "a"]


# -- the hooks: how the core reaches up ---------------------------------------------------------


def test_every_hook_is_registered_by_importing_nborch() -> None:
    assert {name: h.fn is not None for name, h in hooks.HOOKS.items()} == dict.fromkeys(hooks.HOOKS, True)


def test_importing_one_core_module_registers_the_hooks_too() -> None:
    # `import nborch.task` runs nborch/__init__.py first: the runner, the display and the store
    # are registered before user code runs, and none of the front ends is imported until used.
    code = (
        "import sys\n"
        "from nborch.task import task\n"
        "fronts = ('nborch.display', 'nborch.store', 'nborch.notebook')\n"
        "front = sorted(m for m in sys.modules if m.startswith(fronts))\n"
        "@task\n"
        "def one():\n"
        "    return 1\n"
        "print(front, one().run(store=False), one()._repr_html_()[:26], one().to_mermaid().split()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "1", "<div", "class='nborch-graph'>", "flowchart"]


def test_a_hook_nobody_registered_says_what_to_import() -> None:
    node = nborch.task(lambda: 1)()
    served = hooks.run_node.register(None)
    try:
        with pytest.raises(NborchError, match=r"^Node\.run\(\) needs nborch\.runner, which has not registered "
                           r"nborch\.hooks\.run_node: import nborch \(that registers every hook\)"):
            node.run(store=False)
    finally:
        hooks.run_node.register(served)
    assert node.run(store=False) == 1


def test_a_registered_function_serves_the_hook() -> None:
    node = nborch.task(lambda: 1)()
    served = hooks.node_mermaid.register(lambda n: f"drawn {n.name}")
    try:
        assert node.to_mermaid() == f"drawn {node.name}"
    finally:
        assert hooks.node_mermaid.register(served) is not served
    assert node.to_mermaid().startswith("flowchart")
