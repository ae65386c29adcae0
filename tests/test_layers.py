"""The package's imports are layered: no module imports one above it, and no modules import each
other in a circle.

Read from the source with ``ast``: every import a module makes, at module level or inside a
function, except those under ``if TYPE_CHECKING:`` (type checkers read those, Python never runs
them). The layers are the package's folders, from the bottom up:

* ``nborch/core/``: nodes, composites, graph, scheduler, attempts, events, errors, state, records;
* ``nborch/runtime/``: driving the loop (``runner``), output capture, Dask, schedules;
* everything else, the front ends: display, notebook, store, cli, and the package's face
  (``nborch/__init__.py``), each named in ``FRONT_ENDS`` below.

Where the core must reach upward (``Node.run()`` needs the runner, a node's notebook repr needs
the display, ``Run.load()`` needs the store), the higher layer registers a function with
``nborch.hooks`` when it is imported. A new module goes into the folder of its layer.
"""

from __future__ import annotations

import ast
import importlib
import operator
import pickle
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import nborch
from nborch.core import hooks
from nborch.core.errors import NborchError

PACKAGE = Path(__file__).resolve().parent.parent / "nborch"

FOLDERS = {"core": "core", "runtime": "runtime"}  # a layer's folder under nborch/ by layer
# What sits outside the layer folders, at the top of the package: the front ends. A module or a
# folder that is not one of these is misplaced (the core's or the runtime's belongs in its folder).
FRONT_ENDS = {"__init__", "__main__", "cache", "cli", "demo", "display", "frontends", "notebook", "store"}
LAYERS = [*FOLDERS, "front end"]
ORDER = LAYERS

# Circles left on purpose, each with what opens it; the test fails when one of them is gone, so
# that it leaves this list too.
KNOWN_CIRCLES: list[list[str]] = []


def layer_of(module: str) -> str | None:
    """The layer of ``nborch.a.b``: the layer whose folder ``a`` is, else the front end if ``a``
    is one of ``FRONT_ENDS`` (a folder is one piece of one layer), else None: misplaced."""
    top = module.split(".")[1] if "." in module else "__init__"
    by_folder = {folder: layer for layer, folder in FOLDERS.items()}
    if top in by_folder:
        return by_folder[top]
    return "front end" if top in FRONT_ENDS else None


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
    assert not unplaced, (
        f"modules outside nborch/core/ and nborch/runtime/ that are no front end: {unplaced}; move each "
        f"into the folder of its layer, or (a front end) add it to FRONT_ENDS in {Path(__file__).name}"
    )


def test_every_layer_is_a_folder() -> None:
    for folder in FOLDERS.values():
        assert (PACKAGE / folder / "__init__.py").is_file(), f"nborch/{folder}/ is no package"
    assert {layer_of(m) for m in modules()} == set(LAYERS)


def test_core_imports_only_the_standard_library_and_cloudpickle() -> None:
    # at module level: the optional packages (IPython, graphviz, Dask, croniter) where they are used
    allowed = set(sys.stdlib_module_names) | {"cloudpickle", "nborch"}
    found = []
    for name, path in modules().items():
        if layer_of(name) not in FOLDERS:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            tops = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{name} imports {top} at line {node.lineno}" for top in tops
                      if top.split(".")[0] not in allowed]
    assert not found, "\n".join(found)


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


def upward(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import of a module in a higher layer (a misplaced module counts as the front end)."""
    return [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)}) at line {line}"
        for a, targets in sorted(graph.items())
        for b, line in targets.items()
        if ORDER.index(layer_of(b) or ORDER[-1]) > ORDER.index(layer_of(a) or ORDER[-1])
    ]


def test_no_module_imports_a_higher_layer() -> None:
    found = upward(import_graph())
    assert not found, "a lower layer imports a higher one (register a hook instead):\n" + "\n".join(found)


def test_an_upward_import_is_named() -> None:
    graph = {
        "nborch.core.task": {"nborch.runtime.runner": 3, "nborch.core.errors": 4},
        "nborch.core.record": {"nborch.display.html": 7},
        "nborch.runtime.runner": {"nborch.store": 9, "nborch.core.engine": 10},
        "nborch.display.html": {"nborch.core.state": 5, "nborch.runtime.runner": 6},
    }
    assert upward(graph) == [
        "nborch.core.record (core) imports nborch.display.html (front end) at line 7",
        "nborch.core.task (core) imports nborch.runtime.runner (runtime) at line 3",
        "nborch.runtime.runner (runtime) imports nborch.store (front end) at line 9",
    ]


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
        "from nborch.core.task import task\n"
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


# -- the old module paths: nborch.engine is nborch.core.engine ----------------------------------

# the modules at the top of the package before the core and the runtime had folders of their own
OLD_PATHS = {
    "attempts", "capture", "children", "clock", "dask_executor", "engine", "errors", "eventbus", "executors",
    "expansion", "graph", "hooks", "invocation", "keys", "limits", "mapping", "offload", "pickling",
    "policies", "progress", "record", "registry", "reuse", "runner", "schedule", "state", "task", "workers",
    "workflow",
}


def test_every_old_path_is_an_alias_of_the_moved_module() -> None:
    assert set(nborch._MOVED) == OLD_PATHS
    for name, layer in nborch._MOVED.items():
        assert importlib.import_module(f"nborch.{name}") is importlib.import_module(f"nborch.{layer}.{name}")
        assert not (PACKAGE / f"{name}.py").exists()  # a module there would hide the alias


def test_old_paths_reach_the_same_module_in_a_fresh_process() -> None:
    code = (
        "import pickle, sys\n"
        "from unittest import mock\n"
        "import nborch.engine, nborch.core.engine\n"
        "from nborch.graph import build_graph\n"
        "from nborch.core.graph import build_graph as built\n"
        "import nborch.keys\n"  # a module that import nborch does not load
        "import nborch.core.reuse\n"
        "with mock.patch('nborch.reuse.default_memory', 'patched'):\n"
        "    patched = nborch.core.reuse.default_memory\n"
        "print(nborch.engine is nborch.core.engine, build_graph is built,\n"
        "      sys.modules['nborch.keys'] is sys.modules['nborch.core.keys'], nborch.keys.__spec__.name,\n"
        "      patched, pickle.loads(pickle.dumps(nborch.errors.NborchError)) is nborch.core.errors.NborchError,\n"
        "      pickle.loads(b'cnborch.record\\nRun\\n.') is nborch.core.record.Run,\n"
        "      nborch.progress.__name__, nborch.schedule.__name__, nborch.runner.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "nborch.core.keys", "patched", "True", "True",
                                  "progress", "schedule", "nborch.runtime.runner"]


# Classes that moved out of nborch.core.task and nborch.core.executors into modules of their own.
# A pickle names a class by its module: one written before the move names the old module, which
# must still hold the class (protocol 2 writes each class as a "module\nname" line to swap).
MOVED_CLASSES = [
    ("nborch.core.task_options", "nborch.core.task", "TaskOptions"),
    ("nborch.core.introspection", "nborch.core.task", "FnInfo"),
    ("nborch.core.node", "nborch.core.task", "Node"),
    ("nborch.core.remote", "nborch.core.executors", "RemoteError"),
    ("nborch.core.remote", "nborch.core.executors", "RemoteTraceback"),
    ("nborch.core.remote", "nborch.core.executors", "Executor"),
    ("nborch.core.remote", "nborch.core.executors", "Remote"),
    ("nborch.core.process_pool", "nborch.core.executors", "ProcessExecutor"),
]


@pytest.mark.parametrize(("new", "old", "name"), MOVED_CLASSES, ids=[f"{o}.{n}" for _, o, n in MOVED_CLASSES])
def test_a_moved_class_is_found_under_its_old_module(new: str, old: str, name: str) -> None:
    moved = getattr(importlib.import_module(new), name)
    assert moved.__module__ == new
    for module in (old, old.replace("nborch.core.", "nborch.")):  # and the flat path before that
        assert pickle.loads(f"c{module}\n{name}\n.".encode()) is moved


def _as_if_pickled_before_the_split(blob: bytes) -> bytes:
    for new, old, _ in MOVED_CLASSES:
        blob = blob.replace(f"{new}\n".encode(), f"{old}\n".encode())
    return blob


def test_a_task_pickled_before_the_split_loads_and_runs() -> None:
    task = nborch.Task(operator.add, 1, 2, retries=3, name="add")
    old = _as_if_pickled_before_the_split(pickle.dumps(task, protocol=2))
    assert b"nborch.core.task\nTaskOptions\n" in old and b"nborch.core.task\nFnInfo\n" in old

    loaded = pickle.loads(old)

    assert loaded.options == task.options and loaded.options.retry.max_attempts == 4
    assert loaded.info == task.info
    assert loaded.run(store=False) == 3


def test_a_remote_error_pickled_before_the_split_loads() -> None:
    from nborch.core.remote import RemoteError

    error = RemoteError("KeyError", "'id'", "TypeError: two arguments needed")
    old = _as_if_pickled_before_the_split(pickle.dumps(error, protocol=2))
    assert b"nborch.core.executors\nRemoteError\n" in old

    loaded = pickle.loads(old)

    assert type(loaded) is RemoteError
    assert (loaded.type_name, loaded.message, str(loaded)) == ("KeyError", "'id'", "KeyError: 'id'")
    assert loaded.__notes__ == error.__notes__
