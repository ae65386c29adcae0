"""Wiring a graph's new tasks, once they are collected and named: the edges from arguments that
are not plain upstream tasks, from parameter names inside a DAG, from Sequence order and piping,
and from explicit ``>>`` and ``after=``. Problems are collected (``problems``), not raised, so
that one GraphError names them all."""

from __future__ import annotations

import itertools

from .errors import did_you_mean
from .mapping import Mapped, MapTask
from .scopes import ScopeIndex
from .specs import _LEAVES, Graph, Spec, open_params_of, plan_call
from .task import INJECTED, Node, Task
from .workflow import Composite, Sequence

__all__ = ["Wiring"]


class Wiring:
    """The edge pass over one graph. It reads what collecting found (the new specs, the steps a
    Sequence pipes into, the placeholder task of each mapped node) and owns what wiring learns:
    the nodes wired, the problems, each node's ends, and whether an edge may close a cycle."""

    def __init__(
        self, graph: Graph, is_new: set[Spec], pipes: dict[int, Node], map_tasks: dict[int, MapTask],
        wired: set[int] | None = None,
    ) -> None:
        self.graph = graph
        self.is_new = is_new
        self.pipes = pipes  # id(step Task) -> previous step, for Sequence piping
        self.map_tasks = map_tasks  # id(Mapped) -> its placeholder task
        self.scopes = ScopeIndex(graph)
        self.wired: set[int] = wired if wired is not None else set()  # (those wired as collected)
        self.problems: list[str] = []
        self.end_cache: dict[tuple[int, str], list[Spec]] = {}
        self.loose = False  # an edge was made other than from a task's arguments (see edge)

    def edge(self, up: Spec, down: Spec) -> None:
        """An edge ``up`` -> ``down`` (once; none from a task to itself)."""
        if up is down or up in down.up:
            return
        self.loose = True  # an edge not from an argument: it may close a cycle (check_cycles)
        down.up[up] = None
        up.down.append(down)

    def sinks(self, node: Node) -> list[Spec]:
        """The leaves of ``node`` with no downstream inside it (asked once it is wired)."""
        return self.ends(node, "down")

    def sources(self, node: Node) -> list[Spec]:
        """The leaves of ``node`` with no upstream inside it (asked once it is wired)."""
        return self.ends(node, "up")

    def ends(self, node: Node, side: str) -> list[Spec]:
        if isinstance(node, _LEAVES):
            return [self.graph.by_task[id(node)]]
        key = (id(node), side)
        found = self.end_cache.get(key)
        if found is None:
            leaves = self.graph.leaves(node)
            inside = set(leaves)
            found = [s for s in leaves if inside.isdisjoint(getattr(s, side))]
            self.end_cache[key] = found
        return found

    def after(self, down: Node, up: Node) -> None:
        """``down`` runs after ``up``: every end of ``up`` before every start of ``down``."""
        if isinstance(down, Task) and isinstance(up, Task):  # the common case, kept cheap
            if id(up) not in self.wired:
                self.wire(up)
            by_task = self.graph.by_task
            self.edge(by_task[id(up)], by_task[id(down)])
            return
        self.wire(up)
        ups = self.sinks(up)
        for d in self.sources(down):
            for u in ups:
                self.edge(u, d)

    def wire(self, node: Node) -> None:
        """Wire ``node`` and all it holds or refers to, once."""
        key = id(node)
        if key in self.wired:
            return
        self.wired.add(key)
        if isinstance(node, Mapped):
            placeholder = self.map_tasks.get(key)
            if placeholder is not None:
                self.wire(placeholder)
            for _, src in node.sources:
                if isinstance(src, Node):
                    self.wire(src)
            return
        if isinstance(node, Task):
            spec = self.graph.by_task[key]
            if spec in self.is_new and spec.task is node:
                self.wire_task(spec)
        else:
            assert isinstance(node, Composite)
            wired = self.wired
            for child in node.children:
                if id(child) not in wired:  # (most leaves of a big DAG were wired as collected)
                    self.wire(child)
            if isinstance(node, Sequence):
                for prev, step in itertools.pairwise(node.children):
                    self.after(step, prev)
        for up in node._after:
            if isinstance(up, str):
                self.after_name(node, up)
            else:
                self.after(node, up)

    def after_name(self, node: Node, name: str) -> None:
        """``node`` runs after the task named ``name`` in its DAG (a problem if none or several)."""
        scopes = self.scopes
        scope = scopes.scope_of(node)
        matches = scopes.match_name(name, scope)
        if not matches:
            known = scopes.scope_names(scope)
            self.problems.append(
                f"{self.label(node)} runs after {name!r}, but no task has that name.{did_you_mean(name, known)}"
            )
            return
        if len(matches) > 1:
            self.problems.append(
                f"{self.label(node)} runs after {name!r}, which matches several tasks: "
                f"{', '.join(repr(m.name) for m in matches)}. Use the full name."
            )
            return
        for d in self.sources(node):
            self.edge(matches[0], d)

    def label(self, node: Node) -> str:
        """How a problem names ``node``."""
        if isinstance(node, Task):
            return f"task {self.graph.by_task[id(node)].name!r}"
        return repr(node)

    def wire_task(self, spec: Spec) -> None:
        """A new task's edges from its arguments, its parameter names and its Sequence's piping."""
        task = spec.task
        slots = spec.argslots
        if slots is not None:  # upstream tasks as arguments, the common case: edges made (collect_args)
            wired = self.wired
            for up in spec.ups:  # the upstreams this call pulled in are wired from here
                if id(up) not in wired:
                    self.wire(up)
            plan_call(spec)
        elif spec.refs:
            for node in spec.ups:
                self.wire(node)
                for u in self.sinks(node):
                    self.edge(u, spec)
            spec.ups = ()
        info = task.info
        if info.signature is None or not info.params:
            return
        open_params = open_params_of(task)
        piped = self.will_pipe(spec)
        if not open_params:
            return
        named: dict[str, Node] = {}
        for p in open_params:
            if p in INJECTED:
                if p == "context":
                    spec.wants_context = True
                else:
                    spec.wants_state = True
                continue
            if piped and p == piped:
                continue
            if spec.scope is not None:
                matches = [m for m in self.scopes.match_name(p, spec.scope) if m is not spec]
                if len(matches) > 1:
                    self.problems.append(
                        f"task {spec.name!r}: parameter {p!r} matches several tasks "
                        f"({', '.join(repr(m.name) for m in matches)}). Rename the tasks with name= "
                        "or pass the upstream explicitly."
                    )
                    continue
                if matches:
                    named[p] = matches[0].task
                    self.edge(matches[0], spec)
                    continue
            if p in info.required:
                known = self.scopes.scope_names(spec.scope) if spec.scope is not None else []
                hint = did_you_mean(p, known) if known else ""
                where = "no task in the DAG has that name" if spec.scope is not None else "it is not inside a DAG"
                self.problems.append(
                    f"task {spec.name!r} needs {p!r}, but no argument was given and {where}.{hint}"
                )
        spec.named = named or None

    def will_pipe(self, spec: Spec) -> str | None:
        """The parameter the enclosing Sequence pipes the previous step's value into, if any."""
        prev = self.pipes.get(id(spec.task))
        if prev is None:
            return None
        self.wire(prev)
        spec.pipe = prev
        for u in self.sinks(prev):
            self.edge(u, spec)
        info = spec.task.info
        names = [p for p in info.positional if p not in INJECTED]
        if not names:
            return None
        if info.positional[0] != names[0]:
            # an injected parameter (state, context) comes first: pass the piped value and the
            # bound arguments by name, so they land in the right parameters
            spec.pipe_names = tuple(names[: 1 + len(spec.task.args)])
        return names[0]
