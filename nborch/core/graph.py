"""Graph building: any node (nested freely) -> one flat, validated graph of leaf tasks.

Three passes: collect the leaf tasks (pulling in every upstream a task refers to: here), name
them (unique per run: ``fetch``, ``fetch[2]``... in call order: ``nborch.core.naming``), then
wire the edges (arguments, parameter names inside a DAG, Sequence order and piping, explicit
``>>``: ``nborch.core.wiring``). A DAG of plain tasks, the common big graph, is compiled in one
pass instead (``nborch.core.plain_dag``). Every problem is found here, before anything runs;
in-degree counting finds that there is a cycle, ``graphlib`` names it (``nborch.core.cycles``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from .cycles import check_cycles
from .errors import DefinitionError, GraphError
from .mapping import Mapped, MapTask
from .naming import name_specs
from .plain_dag import compile_plain_dag
from .specs import (
    _HOLDERS, Graph, Group, Names, Spec, dedupe_key, find_nodes, open_params_of, plan_call, single_spec,
)
from .task import INJECTED, Node, Task
from .wiring import Wiring
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
    names = names if names is not None else Names()
    if type(root) is DAG and known is None and parent is None and not dedupe:
        plain = compile_plain_dag(root, names)  # the common shape, in one pass (or None)
        if plain is not None:
            return plain
    graph = Graph(root)
    graph.names = names
    collected = _Collector(graph, known or {}, parent, dedupe)
    collected.collect(root, None, [])
    new = collected.new
    added, touched, claimed = name_specs(new, names)
    try:
        for spec in new:
            graph.specs[spec.name] = spec
        for spec in collected.planned:  # wired as collected: only the call's plan needed the names
            plan_call(spec)
        wiring = Wiring(graph, collected.is_new, collected.pipes, collected.map_tasks, collected.wired)
        wiring.wire(root)
        if wiring.problems:
            raise GraphError("\n".join(wiring.problems) if len(wiring.problems) > 1 else wiring.problems[0])
        if wiring.loose:  # else only argument edges: each runs from an older node to a newer one
            check_cycles(new, collected.is_new, bool(collected.known))
    except BaseException:
        names.forget(added, touched)
        raise
    names.owners.update(claimed)
    return graph


class _Collector:
    """The first pass: the leaf tasks of a node, each once (a new ``Spec``, or the spec already in
    the run or of an identical ``dedupe=True`` call), with the edges of upstream tasks given as
    arguments, and what the wiring pass reads: which specs are new, the steps a Sequence pipes
    into, the placeholder task of each mapped node."""

    def __init__(
        self, graph: Graph, known: dict[int, Spec], parent: str | None, dedupe: dict[Any, Spec] | None,
    ) -> None:
        self.graph = graph
        self.known = known
        self.parent = parent
        self.new: list[Spec] = []
        self.is_new: set[Spec] = set()
        self.dedupe: dict[Any, Spec] = dedupe if dedupe is not None else {}
        self.scoped: dict[int, list[Spec]] = {}  # id(DAG) -> specs created inside it
        self.pipes: dict[int, Node] = {}  # id(step Task) -> previous step, for Sequence piping
        self.map_tasks: dict[int, MapTask] = {}  # id(Mapped) -> its placeholder task
        # id(Task) of the tasks wired in full as they were collected (see wired_as_collected);
        # the wiring pass starts from it. ``planned``: those of them with upstreams as arguments
        self.wired: set[int] = set()
        self.planned: list[Spec] = []

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
        elif type(node) is Task:
            self.wired_as_collected(node, spec)
        return spec

    def wired_as_collected(self, node: Task, spec: Spec) -> None:
        """Mark ``node`` wired when collecting made all of its edges: its upstreams are plain
        tasks among its arguments (or it has none), wired already, and no parameter is left open
        (no edge by name inside a DAG, no Sequence piping, nothing injected). The wiring pass
        then skips it; only the plan of its call waits for the names (``plan_call``). Most
        tasks of a big DAG built with ``Task(fn, *upstream_tasks)`` are such."""
        if spec.refs:
            if spec.argslots is None:
                return
            if spec.ups and not self.wired.issuperset([id(u) for u in spec.ups]):
                return
        info = node.info
        if info.signature is not None and info.params and open_params_of(node):
            return
        self.wired.add(id(node))
        if spec.refs:
            self.planned.append(spec)

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

    def needs_pipe(self, step: Task) -> bool:
        info = step.info
        if info.signature is None:
            return False
        required = [p for p in info.required if p in info.positional and p not in INJECTED]
        bound = len(step.args) + sum(1 for k in step.kwargs if k in required)
        return len(required) > bound
