"""The most common graph, compiled in one pass: a ``DAG`` of plain tasks whose upstreams are
earlier members, given as their arguments (``Task(fn, *upstream_tasks, name=...)``) or with
``dag.add(task, after=[...])`` and ``>>``.

``build_graph``'s three passes (collect, name, wire) serve every shape: nested composites,
upstreams pulled in from outside the DAG, edges by parameter name, Sequence piping, ``>>``
between composites or to names, mapped nodes, ``dedupe=True``. A big DAG is mostly none of
these, and for it the general passes spend most of their work on bookkeeping the shape does not
need: which specs are new, which nodes are wired, which calls to plan. ``compile_plain_dag``
makes the same ``Graph`` (the same specs, names, edges, call plans and members, in the same
order) in one loop over the members, or returns None as soon as one member is anything else,
having changed nothing: ``build_graph`` then builds it in full. Its edges run from earlier
members to later ones, so no cycle check is needed, as with the general build's argument edges.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from .naming import name_specs
from .specs import _HOLDERS, Graph, Names, Spec, find_nodes, open_params_of, plan_call
from .task import Node, Task
from .workflow import DAG

__all__ = ["compile_plain_dag"]

_name = attrgetter("name")


def compile_plain_dag(root: DAG, names: Names) -> Graph | None:
    """The graph of ``root`` if it is a DAG of plain tasks (see the module), else None.

    A plain member: exactly a ``Task`` (not a mapped node or a composite), with no
    ``dedupe=True``, no parameter left open (nothing wired by name or injected), no node among
    its arguments other than earlier members given as arguments themselves (not inside a list
    or dict, not a keyword), and only earlier members after it (``>>``, ``after=``; not names).
    Raises what ``build_graph`` raises for a name given twice (``name_specs``)."""
    if root._after:
        return None
    graph = Graph(root)
    graph.names = names
    by_task = graph.by_task
    found: Any = by_task.get  # (its Nones are looked for before the list is used as specs)
    new: list[Spec] = []
    calls: list[tuple[Spec, list[Spec]]] = []  # the specs whose every argument is an upstream
    planned: list[Spec] = []  # those with other arguments too
    afters: list[tuple[Spec, list[Spec]]] = []  # ``>>`` and ``after=`` edges, made once all are in
    for child in root.children:
        if type(child) is not Task:
            return None
        key = id(child)
        if key in by_task:  # a node added twice is one task
            continue
        if child.options.dedupe:
            return None
        info = child.info
        if info.signature is not None and info.params and open_params_of(child):
            return None
        spec = Spec(child, root)
        if child.kwargs:
            for value in child.kwargs.values():
                if isinstance(value, _HOLDERS) and next(find_nodes(value), None) is not None:
                    return None
        args = child.args
        if args:
            ups: list[Spec] = list(map(found, map(id, args)))  # each argument's spec, if an earlier member
            if None in ups:  # a value, or a node that is not an earlier member
                slots = _slots(spec, args, by_task)
                if slots is None:
                    return None
                if slots:
                    spec.argslots = slots  # planned by plan_call once named, as the general build does
                    planned.append(spec)
            else:
                up = spec.up = dict.fromkeys(ups)  # (an upstream given twice is one edge)
                for u in up:
                    u.down.append(spec)
                calls.append((spec, ups))
                spec.refs = True
        if child._after:
            ups = list(map(found, map(id, child._after)))  # only earlier members: no cycle
            if None in ups:  # a name, a composite, a later member or one from outside
                return None
            afters.append((spec, ups))
        by_task[key] = spec
        new.append(spec)
    for spec, ups in afters:  # after every argument's edge, in member order, as the wiring pass
        for u in ups:
            _edge(u, spec)
    _, _, claimed = name_specs(new, names)  # nothing after it can fail: no name to give back
    specs = graph.specs
    for spec in new:
        specs[spec.name] = spec
    for spec, ups in calls:  # (as Spec.plan_arguments would: its values are the call's arguments)
        spec.argnames = spec.upnames = tuple(map(_name, ups))  # the names of ``up`` (see below)
    for spec, _ in afters:  # an upstream given twice and an ``after=`` edge: as many names as edges,
        spec.upnames = None  # but not the same ones (Run._edges checks only their number)
    for spec in planned:
        plan_call(spec)
    graph.nodes[id(root)] = root
    graph.members[id(root)] = new
    names.owners.update(claimed)
    return graph


def _edge(up: Spec, down: Spec) -> None:
    """An edge ``up`` -> ``down``, once."""
    if up not in down.up:
        down.up[up] = None
        up.down.append(down)


def _slots(
    spec: Spec, args: tuple[Any, ...], by_task: dict[int, Spec],
) -> list[tuple[int | str, Spec]] | None:
    """Where the earlier members among ``args`` go, (position, spec), with their edges made;
    None if an argument is or holds another node."""
    slots: list[tuple[int | str, Spec]] = []
    for i, value in enumerate(args):
        if isinstance(value, _HOLDERS):
            u = by_task.get(id(value)) if type(value) is Task else None
            if u is not None:
                _edge(u, spec)
                slots.append((i, u))
            elif isinstance(value, Node) or next(find_nodes(value), None) is not None:
                return None
    if slots:
        spec.refs = True
    return slots
