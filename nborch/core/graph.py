"""Graph building: any node (nested freely) -> one flat, validated graph of leaf tasks.

Three passes: collect the leaf tasks (pulling in every upstream a task refers to), name them
(unique per run: ``fetch``, ``fetch[2]``... in call order), then wire the edges (arguments,
parameter names inside a DAG, Sequence order and piping, explicit ``>>``). Every problem is
found here, before anything runs; in-degree counting finds that there is a cycle, ``graphlib`` names it.
"""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Iterable
from typing import Any

from .errors import CycleError, DefinitionError, GraphError, did_you_mean
from .mapping import Mapped, MapTask
from .naming import name_specs
from .specs import (
    _HOLDERS, _LEAVES, Graph, Group, Names, Spec, dedupe_key, find_nodes, open_params_of, single_spec,
)
from .task import INJECTED, Node, Task
from .workflow import DAG, CircuitGroup, Composite, Parallel, Sequence

__all__ = ["Graph", "Group", "Names", "Spec", "build_graph", "find_nodes", "open_params_of", "single_spec"]


def build_graph(
    root: Node,
    *,
    names: Names | None = None,
    known: dict[int, Spec] | None = None,
    parent: str | None = None,
    dedupe: dict[Any, Spec] | None = None,
) -> Graph:
    """Flatten and validate ``root``.

    ``names``, ``known`` and ``dedupe`` extend a running graph (child tasks): the run's
    names, the Task ids already in the run, and the run's ``dedupe=True`` calls.
    Raises DefinitionError (GraphError, CycleError, InvalidTaskError) naming the culprit.
    """
    return _Builder(root, names if names is not None else Names(), known or {}, parent, dedupe).build()


class _Builder:
    def __init__(
        self, root: Node, names: Names, known: dict[int, Spec], parent: str | None,
        dedupe: dict[Any, Spec] | None,
    ) -> None:
        self.graph = Graph(root)
        self.graph.names = names
        self.names = names
        self.known = known
        self.parent = parent
        self.new: list[Spec] = []
        self.is_new: set[Spec] = set()
        self.dedupe: dict[Any, Spec] = dedupe if dedupe is not None else {}
        self.wired: set[int] = set()
        self.problems: list[str] = []
        self.end_cache: dict[tuple[int, str], list[Spec]] = {}
        self.scoped: dict[int, list[Spec]] = {}  # id(DAG) -> specs created inside it
        self.pipes: dict[int, Node] = {}  # id(step Task) -> previous step, for Sequence piping
        self.index: dict[int, dict[str, list[Spec]]] = {}  # id(scope) -> name/base -> specs
        self.map_tasks: dict[int, MapTask] = {}  # id(Mapped) -> its placeholder task
        self.loose = False  # an edge was made other than from a task's arguments (see edge)

    def build(self) -> Graph:
        self.collect(self.graph.root, None, [])
        self.added, self.touched, self.claimed = name_specs(self.new, self.names)
        try:
            for spec in self.new:
                self.graph.specs[spec.name] = spec
            self.wire(self.graph.root)
            if self.problems:
                raise GraphError("\n".join(self.problems) if len(self.problems) > 1 else self.problems[0])
            self.check_cycles()
        except BaseException:
            self.names.forget(self.added, self.touched)
            raise
        self.names.owners.update(self.claimed)
        return self.graph

    # -- pass 1: collect leaves -----------------------------------------------------------------

    def collect(self, node: Node, scope: DAG | None, groups: list[Group]) -> list[Spec]:
        g = self.graph
        key = id(node)
        if isinstance(node, Mapped):
            return self.collect_mapped(node, scope, groups)
        if isinstance(node, Task):
            return [self.collect_task(node, scope, groups)]
        if not isinstance(node, Composite):  # pragma: no cover - guarded by iter_nodes
            raise DefinitionError(f"not a node: {node!r}")
        if key in g.members:
            return g.members[key]
        g.nodes[key] = node
        g.members[key] = []  # placeholder against self-containment
        inner = groups
        if isinstance(node, Parallel | CircuitGroup) and (
            getattr(node, "limit", None) or getattr(node, "fail_fast", False) or isinstance(node, CircuitGroup)
        ):
            grp = Group(node)
            g.groups.append(grp)
            inner = [*groups, grp]
        child_scope = node if isinstance(node, DAG) else scope
        leaves: dict[Spec, None] = {}
        for child in node.children:
            if type(child) is Task:  # the common case: no list made for one leaf
                leaves[self.collect_task(child, child_scope, inner)] = None
                continue
            for s in self.collect(child, child_scope, inner):
                leaves[s] = None
        if isinstance(node, DAG):  # a DAG also runs (and reports) the upstreams its tasks pulled in
            for s in self.scoped.get(key, ()):
                leaves[s] = None
        g.members[key] = list(leaves)
        if isinstance(node, Sequence):
            for prev, step in itertools.pairwise(node.children):
                if isinstance(step, Task) and self.needs_pipe(step):
                    self.pipes.setdefault(id(step), prev)
        self.collect_after(node, scope)
        return g.members[key]

    def collect_task(self, node: Task, scope: DAG | None, groups: list[Group]) -> Spec:
        g = self.graph
        key = id(node)
        spec = g.by_task.get(key)
        if spec is not None:
            for grp in groups:
                if spec not in grp.specs:
                    spec.groups = [*spec.groups, grp]
                    grp.specs.append(spec)
            return spec
        found = self.known.get(key) if self.known else None
        if found is None and node.options.dedupe:
            found = self.dedupe_match(node)
        if found is not None:
            g.nodes[key] = node  # its id maps to another node's spec: keep it alive
            g.by_task[key] = found
            return found
        spec = Spec(node, scope, self.parent)  # a new spec keeps its node alive (spec.task)
        self.new.append(spec)
        self.is_new.add(spec)
        if scope is not None:
            scoped = self.scoped.get(id(scope))
            if scoped is None:
                scoped = self.scoped[id(scope)] = []
            scoped.append(spec)
        if node.options.dedupe:
            self.remember_dedupe(node, spec)
        if groups:
            spec.groups = list(groups)
            for grp in groups:
                grp.specs.append(spec)
        g.by_task[key] = spec
        if node.args or node.kwargs:
            self.collect_args(node, spec, scope)
        if node._after:
            self.collect_after(node, scope)
        return spec

    def collect_args(self, node: Task, spec: Spec, scope: DAG | None) -> None:
        """Collect the nodes among ``node``'s arguments (``spec.ups``). Where each is an upstream
        task itself, not inside a list or dict, its edge is made now and where it goes is noted
        (``spec.argslots``): such edges cannot close a cycle (a task's arguments existed before
        it), so a graph made of them alone needs no cycle check (``loose``)."""
        by_task = self.graph.by_task
        up_specs = spec.up
        ups: list[Node] = []
        slots: list[tuple[int | str, Spec]] | None = []
        pairs: Iterable[tuple[int | str, Any]] = (
            (*enumerate(node.args), *node.kwargs.items()) if node.kwargs else enumerate(node.args)
        )
        pulled: list[Node] = []  # upstream tasks this call pulled into the graph (wire_task wires them)
        for where, value in pairs:
            if isinstance(value, Task):  # the common case: an upstream task itself
                ups.append(value)
                u = by_task.get(id(value))
                if u is None:
                    u = self.collect(value, scope, [])[0]  # a Mapped's is its placeholder
                    pulled.append(value)
                if slots is not None:
                    if type(value) is MapTask:  # its value is a list made at run time
                        slots = None
                        continue
                    slots.append((where, u))
                    if u is not spec and u not in up_specs:
                        up_specs[u] = None
                        u.down.append(spec)
            elif isinstance(value, _HOLDERS):
                for up in find_nodes(value):
                    ups.append(up)
                    slots = None
                    self.collect(up, scope, [])
        if ups:
            spec.refs = True
            spec.ups = ups if slots is None else pulled
            spec.argslots = slots

    def collect_mapped(self, node: Mapped, scope: DAG | None, groups: list[Group]) -> list[Spec]:
        """A mapped node becomes one placeholder task (``MapTask``) that waits for its dynamic
        sources and the nodes among its fixed values; the maps it zips item by item are
        collected too, but are no upstream of it (it expands as soon as they did)."""
        g = self.graph
        key = id(node)
        found = g.by_task.get(key) or self.known.get(key)
        if found is not None:
            g.by_task[key] = found
            return [found]
        elementwise = node.mode == "zip"
        waits: list[Node] = [src for _, src in node.sources
                             if isinstance(src, Node) and not (elementwise and isinstance(src, Mapped))]
        for value in node.fixed.values():
            waits.extend(find_nodes(value))
        placeholder = MapTask(node, waits)
        self.map_tasks[key] = placeholder
        (spec,) = self.collect(placeholder, scope, groups)
        g.by_task[key] = spec
        g.nodes[key] = node
        if elementwise:
            spec.elementwise = [self.collect(src, scope, [])[0] for _, src in node.sources if isinstance(src, Mapped)]
        return [spec]

    def collect_after(self, node: Node, scope: DAG | None) -> None:
        by_task = self.graph.by_task
        for up in node._after:
            if isinstance(up, Node) and id(up) not in by_task:
                self.collect(up, scope, [])

    def dedupe_match(self, task: Task) -> Spec | None:
        if not task.options.dedupe:
            return None
        key = dedupe_key(task)
        return self.dedupe.get(key) if key is not None else None

    def remember_dedupe(self, task: Task, spec: Spec) -> None:
        if task.options.dedupe:
            key = dedupe_key(task)
            if key is not None:
                self.dedupe.setdefault(key, spec)

    # -- pass 2, names: nborch.core.naming.name_specs ---------------------------------------------

    # -- pass 3: edges --------------------------------------------------------------------------

    def edge(self, up: Spec, down: Spec) -> None:
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
            for child in node.children:
                self.wire(child)
            if isinstance(node, Sequence):
                for prev, step in itertools.pairwise(node.children):
                    self.after(step, prev)
        for up in node._after:
            if isinstance(up, str):
                self.after_name(node, up)
            else:
                self.after(node, up)

    def needs_pipe(self, step: Task) -> bool:
        info = step.info
        if info.signature is None:
            return False
        required = [p for p in info.required if p in info.positional and p not in INJECTED]
        bound = len(step.args) + sum(1 for k in step.kwargs if k in required)
        return len(required) > bound

    def after_name(self, node: Node, name: str) -> None:
        scope = self.scope_of(node)
        matches = self.match_name(name, scope)
        if not matches:
            known = self.scope_names(scope)
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

    def scope_of(self, node: Node) -> DAG | None:
        if isinstance(node, Task):
            return self.graph.by_task[id(node)].scope
        leaves = self.graph.leaves(node)
        return leaves[0].scope if leaves else None

    def scope_specs(self, scope: DAG | None) -> list[Spec]:
        if scope is not None and id(scope) in self.graph.members:
            return self.graph.members[id(scope)]
        return list(self.graph.specs.values())

    def scope_names(self, scope: DAG | None) -> list[str]:
        return [s.name for s in self.scope_specs(scope)]

    def match_name(self, name: str, scope: DAG | None) -> list[Spec]:
        index = self.index.get(id(scope))
        if index is None:
            index = {}
            for s in self.scope_specs(scope):
                index.setdefault(s.base, []).append(s)
                if s.name != s.base:
                    index.setdefault("\0" + s.name, []).append(s)
            self.index[id(scope)] = index
        # a base name matches every call of that function (so a parameter named 'fetch' is
        # ambiguous when fetch ran twice); a full name like 'fetch[2]' matches that call only
        return index.get(name) or index.get("\0" + name, [])

    def label(self, node: Node) -> str:
        if isinstance(node, Task):
            return f"task {self.graph.by_task[id(node)].name!r}"
        return repr(node)

    def wire_task(self, spec: Spec) -> None:
        task = spec.task
        slots = spec.argslots
        if slots is not None:  # upstream tasks as arguments, the common case: edges made (collect_args)
            wired = self.wired
            for up in spec.ups:  # the upstreams this call pulled in are wired from here
                if id(up) not in wired:
                    self.wire(up)
            spec.plan_arguments([(w, u.name) for w, u in slots if type(w) is int],
                                [(w, u.name) for w, u in slots if type(w) is str])
            spec.argslots, spec.ups = None, ()  # wired: a 100,000-task run keeps no more of them
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
                matches = [m for m in self.match_name(p, spec.scope) if m is not spec]
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
                known = self.scope_names(spec.scope) if spec.scope is not None else []
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

    def check_cycles(self) -> None:
        """Kahn's algorithm over the new specs (what the engine's in-degree counting will do):
        a spec never freed is on a cycle or below one. Only then does ``graphlib`` name a cycle."""
        new = self.new
        if not self.loose:  # only argument edges: each runs from an older node to a newer one
            return
        is_new = self.is_new
        known = bool(self.known)  # child tasks: upstreams already in the run are no constraint
        indeg: dict[Spec, int] = {}
        ready: list[Spec] = []
        for spec in new:
            n = sum(1 for u in spec.up if u in is_new) if known else len(spec.up)
            if n:
                indeg[spec] = n
            else:
                ready.append(spec)
        freed = len(ready)
        while ready:
            for d in ready.pop().down:
                left = indeg.get(d)
                if left is not None:
                    if left == 1:
                        del indeg[d]
                        ready.append(d)
                        freed += 1
                    else:
                        indeg[d] = left - 1
        if freed == len(new):
            return
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for spec in self.new:
            sorter.add(spec.name, *(u.name for u in spec.up))
        try:
            sorter.prepare()
        except graphlib.CycleError as err:
            cycle = list(err.args[1])  # graphlib lists it upstream -> downstream already
            raise CycleError(cycle) from None
