"""``GraphModel``: the nodes and edges drawn for a graph or a recorded run, whatever their state.

Every renderer (DOT, SVG, HTML lists, Mermaid) draws a model. A node is a task, a mapped node
(``fn.map(...)``: one node for its items, with them beside it when at most ``MAP_DRAWN``), or,
above ``collapse_over`` tasks (``COLLAPSE_OVER``), all the tasks of one function (``Spec.base``),
because laying out hundreds of nodes takes seconds. A model depends only on the graph's shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.graph import Graph, Spec
from ..core.introspection import fn_name
from ..core.mapping import Mapped, MapTask
from .mapped_nodes import MAP_DRAWN, maps_from_names
from .node_ids import group_id, map_id, node_id

if TYPE_CHECKING:
    from ..core.record import Run

__all__ = ["COLLAPSE_OVER", "DrawnNode", "GraphModel", "graph_model", "group_tasks", "run_model"]

COLLAPSE_OVER = 200


@dataclass(slots=True)
class DrawnNode:
    """One drawn node: a task, (collapsed) all the tasks of one function, or a mapped node.

    A mapped node (``map``) stands for a placeholder (``key``) and its items (``members``, none
    before it expanded); with at most ``MAP_DRAWN`` items, these are drawn too, beside it."""

    id: str
    key: str  # the DOT node name: the task name, or the function name for a group
    members: list[str]
    group: bool = False
    map: bool = False
    size: int | None = None  # a mapped node's items, when its inputs are lists (known before it runs)


@dataclass(slots=True)
class GraphModel:
    """The nodes and edges to draw; ``edges`` are (from id, to id, dashed: a parent calling a
    child, or a mapped node making its items)."""

    nodes: dict[str, DrawnNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, bool], None] = field(default_factory=dict)
    collapsed: bool = False


def group_tasks(graph: Graph, limit: int = COLLAPSE_OVER) -> dict[str, list[str]]:
    """Task names grouped by ``Spec.base`` (the function's name, or the task's explicit name);
    by function if that makes more than ``limit`` groups; past ``limit``, the smallest groups
    are merged into one ("… 12 more functions")."""
    specs = graph.specs
    return _groups(
        {name: spec.base for name, spec in specs.items()},
        lambda: {name: fn_name(spec.task.fn) for name, spec in specs.items()},
        limit,
    )


def _groups(bases: dict[str, str], fallback: Any, limit: int) -> dict[str, list[str]]:
    if fallback is not None and len(set(bases.values())) > limit:  # many explicit names: by function
        bases = fallback()
    groups: dict[str, list[str]] = {}
    for name, base in bases.items():
        groups.setdefault(base, []).append(name)
    if len(groups) > limit:
        ranked = sorted(groups, key=lambda b: -len(groups[b]))
        kept = {b: groups[b] for b in ranked[: limit - 1]}
        kept[f"… {len(groups) - len(kept)} more functions"] = [
            n for b in ranked[limit - 1 :] for n in groups[b]
        ]
        groups = kept
    return groups


def graph_model(graph: Graph, collapse_over: int = COLLAPSE_OVER) -> GraphModel:
    """What to draw for ``graph``: every task, or above ``collapse_over`` tasks one node per
    ``Spec.base`` (the function's name, or the task's explicit name), and if that still gives
    too many, one per function. A mapped node is one node (its items counted on it), with its
    items beside it when it has at most ``MAP_DRAWN`` and the graph is not collapsed."""
    specs = dict(graph.specs)  # a copy: child tasks may be added meanwhile
    mapped = [name for name, spec in specs.items() if type(spec.task) is MapTask]
    if not mapped:
        return _plain_model(specs, collapse_over)
    ups = {name: [u.name for u in spec.up] for name, spec in specs.items()}
    parents = {name: spec.parent for name, spec in specs.items() if spec.parent is not None}
    maps = {p: list(graph.items.get(p, ())) for p in mapped}
    extra: list[tuple[str, str]] = []
    for name in mapped:
        spec = specs[name]
        for src in spec.elementwise or ():  # zipped item by item: no upstream of it, but its source
            extra.append((src.name, name))
        if name in graph.items and not maps[name]:  # expanded to nothing: its downstream lost the edge
            extra.extend((name, d) for d, s in specs.items() if _reads_map(s, spec, graph))
    model = _build(list(specs), ups, parents, maps, extra, collapse_over,
                   lambda names: {n: specs[n].base for n in names},
                   lambda names: {n: fn_name(specs[n].task.fn) for n in names})
    for name in mapped:
        model.nodes[map_id(name)].size = _known_size(specs[name].task.mapped)  # type: ignore[attr-defined]
    return model


def _known_size(mapped: Mapped) -> int | None:
    """How many items ``mapped`` will have, when all its inputs are lists (None: known at run time)."""
    if not all(isinstance(src, list) for _, src in mapped.sources):
        return None
    sizes = [len(src) for _, src in mapped.sources]
    return math.prod(sizes) if mapped.mode == "product" else (sizes[0] if sizes else 0)


def _plain_model(specs: dict[str, Spec], collapse_over: int) -> GraphModel:
    """``graph_model`` of a graph with no mapped node (the common case, kept lean)."""
    if len(specs) <= collapse_over:
        ups = {name: [u.name for u in spec.up] for name, spec in specs.items()}
        parents = {name: spec.parent for name, spec in specs.items() if spec.parent is not None}
        return _model(list(specs), ups, parents)
    groups = _groups({n: s.base for n, s in specs.items()},
                     lambda: {n: fn_name(s.task.fn) for n, s in specs.items()}, collapse_over)
    group_of = {n: gid for base, members in groups.items() for gid in (group_id(base),) for n in members}
    data = dict.fromkeys((group_of[u.name], group_of[n]) for n, s in specs.items() for u in s.up)
    calls = dict.fromkeys(
        (group_of[s.parent], group_of[n]) for n, s in specs.items() if s.parent is not None and s.parent in group_of
    )
    return _grouped(groups, data, calls)


def _model(names: list[str], ups: Mapping[str, list[str]], parents: Mapping[str, str]) -> GraphModel:
    """A model with a node per task (no mapped node)."""
    model = GraphModel()
    nodes, edges = model.nodes, model.edges
    known = set(names)
    for name in names:
        nid = node_id(name)
        nodes[nid] = DrawnNode(nid, name, [name])
    for name in names:
        nid = node_id(name)
        for up in ups.get(name, ()):
            if up in known:
                edges[(node_id(up), nid, False)] = None
        parent = parents.get(name)
        if parent is not None and parent in known:
            edges[(node_id(parent), nid, True)] = None
    return model


def _grouped(groups: dict[str, list[str]], data: dict[tuple[str, str], None],
             calls: dict[tuple[str, str], None]) -> GraphModel:
    """A collapsed model (no mapped node): a node per group; a data edge says more than a call edge."""
    model = GraphModel(collapsed=True)
    for base, members in groups.items():
        gid = group_id(base)
        model.nodes[gid] = DrawnNode(gid, base, members, group=True)
    edges = model.edges
    for up, down in data:
        edges[(up, down, False)] = None
    for up, down in calls:
        if (up, down) not in data:
            edges[(up, down, True)] = None
    return model


def _reads_map(spec: Spec, placeholder: Spec, graph: Graph) -> bool:
    """``spec``'s task takes the mapped node of ``placeholder`` as an argument (a reduce)."""
    by_task = graph.by_task
    return any(by_task.get(id(v)) is placeholder for v in (*spec.task.args, *spec.task.kwargs.values())
               if isinstance(v, Mapped))


_CALL_SUFFIX = re.compile(r"(\[\d+\]|\d+)$")


def run_model(run: Run, collapse_over: int = COLLAPSE_OVER) -> GraphModel:
    """What to draw for a run from its record alone (``Run.upstreams`` and ``Run.parents``, as
    the store keeps them): mapped nodes found by their items' names (``NAME:0``...); collapsed
    above ``collapse_over`` nodes by the names' function part ("fetch[3]" and "fetch3" are
    calls of "fetch")."""
    names = list(run.states)
    maps = maps_from_names(names)
    ups, parents = run.upstreams, run.parents
    if maps:
        return _build(names, ups, parents, maps, [], collapse_over,
                      lambda names: {n: _CALL_SUFFIX.sub("", n) for n in names}, None)
    if len(names) <= collapse_over:
        return _model(names, ups, parents)
    groups = _groups({n: _CALL_SUFFIX.sub("", n) for n in names}, None, collapse_over)
    group_of = {n: gid for base, members in groups.items() for gid in (group_id(base),) for n in members}
    data = dict.fromkeys((group_of[u], group_of[n]) for n in names for u in ups.get(n, ()) if u in group_of)
    calls = dict.fromkeys(
        (group_of[p], group_of[n]) for n, p in parents.items() if n in group_of and p in group_of
    )
    return _grouped(groups, data, calls)


def _build(
    names: list[str], ups: Mapping[str, list[str]], parents: Mapping[str, str], maps: Mapping[str, list[str]],
    extra: list[tuple[str, str]], collapse_over: int, bases: Any, fallback: Any,
) -> GraphModel:
    """The model of ``names`` (items of maps among them): a node per task, a node per mapped
    node (``maps``: placeholder -> its items) with its items when few, or, past
    ``collapse_over`` nodes, a node per function group and per mapped node, no item drawn.
    ``extra``: more data edges (task names)."""
    items = {n: p for p, members in maps.items() for n in members}
    plain = [n for n in names if n not in items and n not in maps]
    drawn_items = sum(len(m) for m in maps.values() if len(m) <= MAP_DRAWN)
    collapsed = len(plain) + len(maps) + drawn_items > collapse_over
    model = GraphModel(collapsed=collapsed)
    nodes, edges = model.nodes, model.edges
    rep: dict[str, str] = {}  # task name -> the id of the node that shows it
    if collapsed:
        fallback_of = (lambda: fallback(plain)) if fallback is not None else None
        groups = _groups(bases(plain), fallback_of, max(collapse_over - len(maps), 1))
        for base, members in groups.items():
            gid = group_id(base)
            nodes[gid] = DrawnNode(gid, base, members, group=True)
            rep.update(dict.fromkeys(members, gid))
    for name in names:
        if name in maps:
            mid = map_id(name)
            nodes[mid] = DrawnNode(mid, name, maps[name], map=True)
            rep[name] = mid
            shown = not collapsed and len(maps[name]) <= MAP_DRAWN
            for item in maps[name]:
                if shown:
                    nid = rep[item] = node_id(item)
                    nodes[nid] = DrawnNode(nid, item, [item])
                    edges[(mid, nid, True)] = None
                else:
                    rep[item] = mid
        elif name not in items and not collapsed:
            nid = rep[name] = node_id(name)
            nodes[nid] = DrawnNode(nid, name, [name])
    data: dict[tuple[str, str], None] = {}
    for name in names:
        down = rep.get(name)
        if down is None:
            continue
        for up in ups.get(name, ()):
            u = rep.get(up)
            if u is not None and u != down:
                data[(u, down)] = None
    for up, down in extra:
        u, d = rep.get(up), rep.get(down)
        if u is not None and d is not None and u != d:
            data[(u, d)] = None
    for up, down in data:
        edges[(up, down, False)] = None
    for name, parent in parents.items():
        u, d = rep.get(parent), rep.get(name)
        if u is not None and d is not None and u != d and (u, d) not in data:
            edges[(u, d, True)] = None
    return model
