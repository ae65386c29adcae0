"""Graph (+ RunView) -> DOT text, and SVG that can be recoloured without laying it out again.

DOT is built as plain strings; graphviz only renders it (``render_svg``). Every node carries
``id="task-<name>"`` (``group-<base>`` in a collapsed graph) and ``class="st-<state>"``, which
graphviz copies into the SVG, so a ``<style>`` block (``state_css``) recolours nodes by id and
``SvgTemplate`` rewrites only node classes, colours and second lines: one layout per graph
shape (and one per process for a shape seen before: ``layout_svg`` keeps the last few).
Colours are also written into the SVG itself, so a static copy (a saved notebook, GitHub,
nbconvert) shows them where ``<style>`` blocks are stripped. Inline SVG carries ``FIT_STYLE``:
it shrinks to the output's width (and to 70% of the window's height), never past it.

Above ``collapse_over`` tasks the graph is collapsed: one node per task function (``Spec.base``)
with counts per state, because laying out hundreds of nodes takes seconds.
"""

from __future__ import annotations

import html
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.errors import NborchError
from ..core.record import _fmt_seconds
from ..core.graph import Graph, Spec, build_graph
from ..core.introspection import fn_name
from ..core.mapping import Mapped, MapTask
from ..core.state import TaskState
from .state import MAP_DRAWN, KnownTask, RunView, fmt_elapsed, map_counts, map_note, maps_from_names

if TYPE_CHECKING:
    import graphviz

    from ..core.node import Node
    from ..core.record import Run

__all__ = [
    "COLLAPSE_OVER", "COLORS", "FIT_STYLE", "MARK_COLORS", "NOTEBOOK_EXTRA", "GraphModel", "SvgTemplate",
    "cached_layout", "components", "fit_style", "forget_layouts", "graph_attrs", "graph_dot", "graph_model",
    "group_id", "group_tasks", "layout_svg", "map_id", "map_look", "map_state", "node_digraph", "node_id",
    "node_looks", "printable", "render_svg", "run_model", "state_css", "status_digraph", "svg_image",
    "svg_size",
]

COLLAPSE_OVER = 200
# How to get what the notebook needs (IPython, ipywidgets, graphviz): said by every message about one
NOTEBOOK_EXTRA = 'pip install "nborch[notebook]"'

S = TaskState
COLORS: dict[TaskState, tuple[str, str]] = {  # state -> (fill, text)
    S.PENDING: ("#e0e0e0", "#212121"),
    S.RUNNING: ("#1e88e5", "#ffffff"),
    S.RETRYING: ("#ffb300", "#212121"),
    S.SUCCEEDED: ("#43a047", "#ffffff"),
    S.FAILED: ("#e53935", "#ffffff"),
    S.UPSTREAM_FAILED: ("#fb8c00", "#212121"),
    S.SKIPPED: ("#f5f5f5", "#9e9e9e"),
    S.CANCELLED: ("#8e24aa", "#ffffff"),
}
# Succeeded without running: a pale green, bordered in the succeeded colour (fill, text, border)
MARK_COLORS: dict[str, tuple[str, str, str]] = {
    "cached": ("#c8e6c9", "#1b5e20", "#43a047"),
    "reused": ("#c8e6c9", "#1b5e20", "#43a047"),
}
BORDER = "#616161"
FAILED_BORDER = "#b71c1c"
STALE_BORDER = "#6d4c41"
SYMBOLS: dict[TaskState, str] = {
    S.SUCCEEDED: "✓", S.FAILED: "✗", S.RUNNING: "▶", S.RETRYING: "↻", S.PENDING: "○",
    S.UPSTREAM_FAILED: "⊘", S.SKIPPED: "↷", S.CANCELLED: "■",
}
# A group takes the colour of its most telling member: a failure stays red while others run.
GROUP_PRIORITY = (S.FAILED, S.RETRYING, S.RUNNING, S.UPSTREAM_FAILED, S.CANCELLED, S.PENDING,
                  S.SKIPPED, S.SUCCEEDED)

GRAPH_ATTR = {"rankdir": "LR", "bgcolor": "transparent", "nodesep": "0.25", "ranksep": "0.4"}
NODE_ATTR = {"shape": "box", "style": "rounded,filled", "fontname": "Helvetica,Arial,sans-serif",
             "fontsize": "11", "color": "#616161", "penwidth": "1"}
EDGE_ATTR = {"color": "#9e9e9e", "arrowsize": "0.7"}

# Second lines drawn when a graph is laid out for later filling: wide enough for the notes
# that replace them, so the boxes need not grow.
TASK_PLACEHOLDER = "00 attempts · 00.00ms"
GROUP_PLACEHOLDER = "✓0000 ✗000 ▶000 ○0000"
MAP_PLACEHOLDER = "0000 ✓ 000 ✗ 000 ⊘ 0000 …"
MAP_HEIGHT = "0.62"  # inches: a mapped node's two lines and its progress bar

# Inline SVG fits its output: never wider than it, nor taller than most of the window
# (the aspect ratio kept); ``html.zoomable`` adds a click to see it at full size. A tall graph
# (a fan of many tasks, laid out left to right) is not shrunk by its height below
# ``MIN_SCALE`` of its size, up to ``TALL_LIMIT`` pixels: its labels stay legible.
FIT_STYLE = "max-width:100%;max-height:70vh;height:auto"
MIN_SCALE = 0.6
TALL_LIMIT = 1600
# Graphs of at least this many unconnected parts pack them in rows and columns (DOT's
# ``packmode=array``), instead of one tall column of independent tasks.
PACK_OVER = 6
_SIZE = re.compile(r' width="([\d.]+)pt" height="([\d.]+)pt"')

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# What must never reach DOT, SVG (XML 1.0), HTML or Mermaid raw: control characters (C0, DEL,
# C1), line and paragraph separators, lone surrogates (not encodable) and XML's two noncharacters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, keep: str = "") -> str:
    """``text`` with control characters (NUL, ESC, newlines...) written as Python escapes
    (``\\x00``, ``\\x1b``, ``\\n``), except those in ``keep``: how a task name is shown in DOT, SVG,
    HTML and Mermaid, where a raw one would be invalid, cut the string, or vanish."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


def _sanitize(name: str) -> str:
    # Injective: "-" never survives as itself, so "a[2]" and "a-5b-2-5d-" cannot collide.
    return _UNSAFE.sub(lambda m: f"-{ord(m.group()):x}-", name)


def node_id(name: str) -> str:
    """The SVG/HTML id of a task's node: ``task-`` + the name with unsafe characters encoded."""
    return "task-" + _sanitize(name)


def group_id(base: str) -> str:
    """The SVG/HTML id of a collapsed graph's node for task function ``base``."""
    return "group-" + _sanitize(base)


def _q(text: str) -> str:
    """A DOT double-quoted string showing ``text``: control characters written as escapes
    (``printable``), backslashes doubled so ``\\N``-style escapes stay literal."""
    return '"' + printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_key(name: str) -> str:
    """The DOT node name of a task: ``_q`` of the name with its backslashes doubled first, so that
    distinct names stay distinct nodes ("x\\ny" is not "x y", NUL is not the text "\\x00")."""
    return _q(name.replace("\\", "\\\\"))


def _attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())


# -- the model: what is drawn, independent of the run's state -----------------------------------


@dataclass(slots=True)
class DotNode:
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

    nodes: dict[str, DotNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, bool], None] = field(default_factory=dict)
    collapsed: bool = False


def map_id(name: str) -> str:
    """The SVG/HTML id of mapped node ``name``'s node: ``map-`` + the name, encoded."""
    return "map-" + _sanitize(name)


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
        nodes[nid] = DotNode(nid, name, [name])
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
        model.nodes[gid] = DotNode(gid, base, members, group=True)
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
            nodes[gid] = DotNode(gid, base, members, group=True)
            rep.update(dict.fromkeys(members, gid))
    for name in names:
        if name in maps:
            mid = map_id(name)
            nodes[mid] = DotNode(mid, name, maps[name], map=True)
            rep[name] = mid
            shown = not collapsed and len(maps[name]) <= MAP_DRAWN
            for item in maps[name]:
                if shown:
                    nid = rep[item] = node_id(item)
                    nodes[nid] = DotNode(nid, item, [item])
                    edges[(mid, nid, True)] = None
                else:
                    rep[item] = mid
        elif name not in items and not collapsed:
            nid = rep[name] = node_id(name)
            nodes[nid] = DotNode(nid, name, [name])
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


def _look(state: TaskState, mark: str) -> tuple[str, str, str]:
    """(fill, text, border) colours of a node."""
    if mark:
        return MARK_COLORS[mark]
    fill, font = COLORS[state]
    return fill, font, FAILED_BORDER if state is S.FAILED else BORDER


def _classes(state: TaskState, mark: str) -> str:
    return f"st-{state.value} nb-{mark}" if mark else f"st-{state.value}"


def _counts(members: list[str], states: Mapping[str, TaskState]) -> dict[TaskState, int]:
    get, pending = states.get, S.PENDING
    return dict(Counter(get(n, pending) for n in members))


def _counts_note(counts: dict[TaskState, int]) -> str:
    return " ".join(f"{SYMBOLS[s]}{counts[s]}" for s in SYMBOLS if counts.get(s))


def _size_note(members: list[str]) -> str:
    return f"{len(members)} task{'s' if len(members) != 1 else ''}"


def map_state(counts: Mapping[TaskState, int], placeholder: TaskState) -> TaskState:
    """A mapped node's state: its items' most telling one (``GROUP_PRIORITY``: a failed item
    keeps it red while others run), or its placeholder's while it has no items."""
    return next((s for s in GROUP_PRIORITY if counts.get(s)), placeholder)


def map_look(
    node: DotNode, known: Mapping[str, TaskState], view: RunView | None, now: float | None = None
) -> tuple[TaskState, str, dict[TaskState, int]]:
    """A mapped node's state, second line and its items' counts: the most telling state of its
    items (a failure stays red while others run) and "37 ✓ 2 ✗ 61 …"; before it expanded (or
    with no items), its placeholder's state and "items at run time" / "0 items"."""
    if view is not None and node.key in view.maps:  # counted once per repaint, with the table's
        counts = view.map_counts(node.key)
    else:
        counts = map_counts(node.members, known)
    if node.members:
        return map_state(counts, S.PENDING), map_note(counts), counts
    if view is None:
        size = node.size
        return S.PENDING, "map" if size is None else f"map · {size} item{'s' if size != 1 else ''}", counts
    state = known.get(node.key, S.PENDING)
    if state is S.PENDING or state is S.RUNNING:
        return state, "items at run time", counts
    if state is S.SUCCEEDED:
        return state, "0 items", counts
    return state, view.task(node.key).note(now), counts


def node_looks(
    model: GraphModel, view: RunView | None, now: float | None = None,
    bars: dict[str, dict[TaskState, int]] | None = None,
) -> tuple[dict[str, TaskState], dict[str, str], dict[str, str]]:
    """Each drawn node's state, second line and mark, in one pass over the tasks.

    A task node shows its task's state and note (with ``now``, a running task's time so far);
    its mark is "cached" or "reused" when it succeeded without running. A group shows the
    most telling state among its members (a failure stays red while others run) and counts
    per state ("✓12 ▶3 ○85"), or its size without a view; it is marked when every member is.
    Marks are given only for marked nodes. A mapped node looks as ``map_look`` says; its
    items' counts go to ``bars`` (its progress bar), when given.
    """
    known: Mapping[str, TaskState] = view.states if view is not None else {}
    states: dict[str, TaskState] = {}
    notes: dict[str, str] = {}
    marks: dict[str, str] = {}
    for nid, node in model.nodes.items():
        if node.map:
            states[nid], notes[nid], counts = map_look(node, known, view, now)
            if bars is not None:
                bars[nid] = counts
            members = node.members
            if view is not None and view.not_run and members and counts.get(S.SUCCEEDED) == len(members):
                found = {view.mark(n) for n in node.members}
                if len(found) == 1 and "" not in found:
                    marks[nid] = found.pop()
        elif node.group:
            counts = _counts(node.members, known)
            states[nid] = next(s for s in GROUP_PRIORITY if counts.get(s))
            notes[nid] = _counts_note(counts) if view is not None else _size_note(node.members)
            if view is not None and view.not_run and counts.get(S.SUCCEEDED) == len(node.members):
                found = {view.mark(n) for n in node.members}
                if len(found) == 1 and "" not in found:
                    marks[nid] = found.pop()
        else:
            name = node.members[0]
            if view is None or name not in known:
                states[nid], notes[nid] = S.PENDING, ""
                continue
            st = view.task(name)
            states[nid] = st.state
            notes[nid] = st.note(now)
            mark = st.mark
            if mark:
                marks[nid] = mark
    return states, notes, marks


def node_states(model: GraphModel, view: RunView | None) -> dict[str, TaskState]:
    """Each drawn node's state (see ``node_looks``)."""
    return node_looks(model, view)[0]


def node_notes(model: GraphModel, view: RunView | None) -> dict[str, str]:
    """Each drawn node's second line (see ``node_looks``)."""
    return node_looks(model, view)[1]


def group_note(members: list[str], view: RunView | None) -> str:
    """A collapsed node's second line: counts per state ("✓12 ▶3 ○85"), or its size."""
    if view is None:
        return _size_note(members)
    return _counts_note(_counts(members, view.states))


# -- DOT text -----------------------------------------------------------------------------------


def dot_lines(
    model: GraphModel, states: dict[str, TaskState], notes: dict[str, str] | None,
    marks: dict[str, str] | None = None, extra: dict[str, dict[str, str]] | None = None,
    labels: dict[str, str] | None = None, *, bar_room: bool = True,
) -> list[str]:
    """The body lines of the DOT text (one statement each, tab-indented, newline-terminated).
    ``extra``: more attributes per node id (a stale node's dashed border and tooltip);
    ``labels``: DOT label values (HTML-like ones, ``<...>``) that replace the name and note;
    ``bar_room``: mapped nodes are drawn taller, for the progress bar ``SvgTemplate`` adds."""
    lines = []
    nodes = model.nodes
    order, _, sortv = layout_order(model)
    for nid in order:
        node = nodes[nid]
        state = states.get(nid, S.PENDING)
        mark = marks.get(nid, "") if marks else ""
        fill, font, border = _look(state, mark)
        note = notes.get(nid) if notes is not None else None
        name = _q(node.key)
        label = name if note is None else name[:-1] + "\\n" + _q(note)[1:]  # "\n": DOT's line break
        if labels and nid in labels:
            label = labels[nid]
        more = "".join(f", {k}={_q(v)}" for k, v in extra[nid].items()) if extra and nid in extra else ""
        if sortv:
            more += f", sortv={sortv[nid]}"
        if bar_room and node.map and not (labels and nid in labels):  # room under its two lines for its bar
            more += f", height={MAP_HEIGHT}, labelloc=t"
        colors = f", color={_q(border)}" if border != BORDER else ""
        lines.append(
            f'\t{_dot_key(node.key)} [id={_q(nid)}, class="{_classes(state, mark)}", label={label}, '
            f"fillcolor={_q(fill)}, fontcolor={_q(font)}{colors}{more}]\n"
        )
    keys = {nid: _dot_key(node.key) for nid, node in model.nodes.items()}
    for up, down, dashed in model.edges:
        lines.append(f"\t{keys[up]} -> {keys[down]}{' [style=dashed]' if dashed else ''}\n")
    return lines


def parts(model: GraphModel) -> list[list[str]]:
    """The unconnected parts of ``model`` (call edges connect too): node ids, the parts in the
    order of their first node, each part's nodes in the model's order."""
    order = {nid: i for i, nid in enumerate(model.nodes)}
    parent = {nid: nid for nid in model.nodes}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for up, down, _ in model.edges:
        a, b = root(up), root(down)
        if a != b:
            first, second = (a, b) if order[a] < order[b] else (b, a)
            parent[second] = first
    out: dict[str, list[str]] = {}
    for nid in model.nodes:
        out.setdefault(root(nid), []).append(nid)
    return list(out.values())


def components(model: GraphModel) -> int:
    """How many unconnected parts ``model`` has."""
    return len(parts(model))


def layout_order(model: GraphModel) -> tuple[list[str], int, dict[str, int]]:
    """How to declare the nodes so that unconnected parts read top to bottom: the node order,
    how many parts to pack per column (0: not packed) and each packed node's ``sortv``.

    Left to right, Graphviz stacks unconnected parts bottom up; packed (``array_uR``: R per
    column, in ``sortv`` order) it fills each column bottom up. So the parts are declared
    (and sorted) in the order that shows the first one at the top of the first column."""
    groups = parts(model)
    if len(groups) < 2:
        return list(model.nodes), 0, {}
    if len(model.nodes) < PACK_OVER or len(groups) < PACK_OVER:
        return [nid for group in reversed(groups) for nid in group], 0, {}
    rows = math.ceil(math.sqrt(len(groups)))
    placed = [g for i in range(0, len(groups), rows) for g in reversed(groups[i : i + rows])]
    sortv = {nid: i for i, group in enumerate(placed) for nid in group}
    return [nid for group in placed for nid in group], rows, sortv


def graph_attrs(model: GraphModel, rows: int | None = None) -> dict[str, str]:
    """The graph's DOT attributes: ``GRAPH_ATTR``, plus packing for many unconnected parts."""
    if rows is None:
        rows = layout_order(model)[1]
    if rows:
        return {**GRAPH_ATTR, "pack": "true", "packmode": f"array_u{rows}"}
    return GRAPH_ATTR


def _source(body: list[str], model: GraphModel) -> str:
    head = (
        f"digraph nborch {{\n\tgraph [{_attrs(graph_attrs(model))}]\n\tnode [{_attrs(NODE_ATTR)}]\n"
        f"\tedge [{_attrs(EDGE_ATTR)}]\n"
    )
    return head + "".join(body) + "}\n"


def graph_dot(graph: Graph, view: RunView | None = None, *, collapse_over: int = COLLAPSE_OVER) -> str:
    """DOT text for ``graph``; with a ``view``, nodes are coloured by state with a second line
    for attempts / duration. Dashed edges go from a parent task to the child tasks it called."""
    model = graph_model(graph, collapse_over)
    states, notes, marks = node_looks(model, view)
    if view is None and not model.collapsed:  # a definition: a map's second line only ("map · 30 items")
        notes = {nid: notes[nid] for nid, n in model.nodes.items() if n.map}
    return _source(dot_lines(model, states, notes, marks, bar_room=False), model)


def layout_dot(model: GraphModel) -> str:
    """DOT text that depends only on the graph's shape: every node pending, placeholder notes.

    Two models with equal ``layout_dot`` lay out the same, so the text doubles as a shape key.
    """
    notes = {nid: MAP_PLACEHOLDER if n.map else GROUP_PLACEHOLDER if n.group else TASK_PLACEHOLDER
             for nid, n in model.nodes.items()}
    return _source(dot_lines(model, {}, notes), model)


def _digraph(body: list[str], what: str, model: GraphModel) -> graphviz.Digraph:
    try:
        import graphviz
    except ImportError as err:
        raise NborchError(
            f"{what} needs the graphviz package, which comes with nborch's notebook extra: "
            f"{NOTEBOOK_EXTRA} (node.to_mermaid() needs nothing)"
        ) from err
    return _shown_digraph()("nborch", graph_attr=graph_attrs(model), node_attr=NODE_ATTR, edge_attr=EDGE_ATTR,
                            body=body)


_DIGRAPH: list[type] = []


def _shown_digraph() -> type:
    """``graphviz.Digraph`` that shows itself in a notebook as an image too (``text/html``
    holding the SVG as a data URI, fitted to the output, beside graphviz's ``image/svg+xml``):
    JupyterLab refuses to show an SVG output of an untrusted notebook (one received from
    someone else), but shows the image."""
    if not _DIGRAPH:
        import graphviz

        class Digraph(graphviz.Digraph):
            __doc__ = graphviz.Digraph.__doc__

            def _repr_mimebundle_(
                self, include: Any = None, exclude: Any = None, **kwargs: Any
            ) -> dict[str, Any]:
                bundle: dict[str, Any] = super()._repr_mimebundle_(include, exclude, **kwargs)
                svg = bundle.get("image/svg+xml")
                if isinstance(svg, str) and "<svg" in svg:
                    bundle["text/html"] = f"<div class='nborch-graph'>{svg_image(svg, 'graph')}</div>"
                return bundle

        Digraph.__qualname__ = "Digraph"
        globals()["Digraph"] = Digraph  # importable by its name, as pickle wants
        _DIGRAPH.append(Digraph)
    return _DIGRAPH[0]


def node_digraph(node: Node) -> graphviz.Digraph:
    """``node``'s workflow as a ``graphviz.Digraph`` (collapsed above 200 tasks). Raises
    NborchError, saying which extra to install, when the graphviz package is missing."""
    model = graph_model(build_graph(node))
    notes = node_notes(model, None)
    if not model.collapsed:  # a map's second line only ("map · 30 items")
        notes = {nid: notes[nid] for nid, n in model.nodes.items() if n.map}
    return _digraph(dot_lines(model, {}, notes, bar_room=False), "node.graph()", model)


def _known_note(k: KnownTask | None) -> str:
    if k is None or k.state is None:
        return "never run"
    if k.state is S.SUCCEEDED and (k.cached or k.reused):
        return "cached" if k.cached else "reused"
    if k.state.is_final and k.duration is not None:
        return f"{k.state.value} · {_fmt_seconds(k.duration)}"
    return k.state.value


def _cut(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def status_digraph(node: Node, known: Mapping[str, KnownTask | Any]) -> graphviz.Digraph:
    """``node``'s workflow coloured by what is known of each task (``%orch graph``).

    ``known`` maps task names to ``KnownTask`` (or any object with its attributes: ``state``,
    ``duration``, ``run_id``, ``stale``, ``reused``, ``cached``); a task it lacks never ran.
    Each node takes its last state's colour (pale green when its last success did not run
    it) and says it on its second line ("succeeded · 1.20s", "reused", "never run"). A stale
    task (``stale`` set: its key changed since its last success) has a dashed brown border,
    "stale: <reason>" as its second line, and its last state, duration and run id in the
    tooltip. Above 200 tasks one node per function, with counts per state and of stale tasks.
    """
    model = graph_model(build_graph(node))
    states: dict[str, TaskState] = {}
    notes: dict[str, str] = {}
    marks: dict[str, str] = {}
    extra: dict[str, dict[str, str]] = {}
    labels: dict[str, str] = {}
    for nid, dn in model.nodes.items():
        if dn.map:
            _known_map(nid, dn, known, states, notes, extra, labels)
            continue
        if dn.group:
            counts: dict[TaskState, int] = {}
            stale = 0
            for name in dn.members:
                k = known.get(name)
                state = getattr(k, "state", None) or S.PENDING
                counts[state] = counts.get(state, 0) + 1
                stale += bool(getattr(k, "stale", None))
            states[nid] = next(s for s in GROUP_PRIORITY if counts.get(s))
            notes[nid] = " ".join(filter(None, [_counts_note(counts), f"◌{stale} stale" if stale else ""]))
            if stale:
                extra[nid] = {"style": "rounded,filled,dashed", "color": STALE_BORDER, "penwidth": "2",
                              "tooltip": f"{stale} of {len(dn.members)} tasks are stale"}
            continue
        k = known.get(dn.members[0])
        state = getattr(k, "state", None)
        states[nid] = state if state is not None else S.PENDING
        if state is S.SUCCEEDED and (getattr(k, "cached", False) or getattr(k, "reused", False)):
            marks[nid] = "cached" if getattr(k, "cached", False) else "reused"
        note = _known_note(k)
        reason = getattr(k, "stale", None)
        run_id = getattr(k, "run_id", None)
        tip = note + (f" (run {run_id})" if run_id else "")
        if reason:
            notes[nid] = "stale: " + _cut(printable(str(reason)))
            extra[nid] = {"style": "rounded,filled,dashed", "color": STALE_BORDER, "penwidth": "2",
                          "tooltip": f"stale: {printable(str(reason))}; last: {tip}"}
        else:
            notes[nid] = note
            extra[nid] = {"tooltip": tip}
    body = dot_lines(model, states, notes, marks, extra, labels, bar_room=False)
    return _digraph(body, "%orch graph", model)


def _known_map(
    nid: str, dn: DotNode, known: Mapping[str, Any], states: dict[str, TaskState], notes: dict[str, str],
    extra: dict[str, dict[str, str]], labels: dict[str, str],
) -> None:
    """A mapped node of ``%orch graph``: its items' last states (``known`` holds them as
    ``NAME:0``...) counted on it with a bar, or its own state before it ever expanded."""
    prefix = dn.key + ":"
    items = [n for n in known if n.startswith(prefix) and n[len(prefix):].isdigit()]
    k = known.get(dn.key)
    if items:
        counts = map_counts(items, {n: getattr(known[n], "state", None) or S.PENDING for n in items})
        states[nid] = map_state(counts, S.PENDING)
        notes[nid] = map_note(counts)
        labels[nid] = _bar_label(dn.key, notes[nid], counts)
    else:
        state = getattr(k, "state", None)
        states[nid] = state if state is not None else S.PENDING
        size = "map" if dn.size is None else f"map · {dn.size} item{'s' if dn.size != 1 else ''}"
        notes[nid] = _known_note(k) if state is not None else f"{size} · never run"
    reason = getattr(k, "stale", None)
    if reason:
        extra[nid] = {"style": "rounded,filled,dashed", "color": STALE_BORDER, "penwidth": "2",
                      "tooltip": f"stale: {printable(str(reason))}"}
        if not items:
            notes[nid] = "stale: " + _cut(printable(str(reason)))


def _bar_label(name: str, note: str, counts: Mapping[TaskState, int], width: int = 100) -> str:
    """A DOT HTML-like label: ``name``, ``note`` and a progress bar of ``counts`` (a row of
    cells as wide as each state's share, white for what is still to settle)."""
    total = sum(counts.values()) or 1
    cells, used = [], 0
    for state in BAR_ORDER:
        n = counts.get(state, 0)
        if n:
            w = max(1, round(width * n / total))
            used += w
            cells.append(f'<TD WIDTH="{w}" HEIGHT="4" FIXEDSIZE="TRUE" BGCOLOR="{COLORS[state][0]}"></TD>')
    if used < width:
        cells.append(f'<TD WIDTH="{width - used}" HEIGHT="4" FIXEDSIZE="TRUE" BGCOLOR="{BAR_TRACK}"></TD>')
    text = lambda t: html.escape(printable(t))  # noqa: E731
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        f"<TR><TD>{text(name)}</TD></TR><TR><TD>{text(note)}</TD></TR>"
        '<TR><TD><TABLE BORDER="1" COLOR="#ffffff" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>'
        + "".join(cells) + "</TR></TABLE></TD></TR></TABLE>>"
    )


def render_svg(dot_text: str) -> str | None:
    """Lay ``dot_text`` out as inline SVG (no XML prolog) that fits its output (``FIT_STYLE``);
    None when Graphviz is not installed."""
    try:
        import graphviz
        from graphviz.backend import ExecutableNotFound
    except ImportError:
        return None
    try:
        svg: str = graphviz.Source(dot_text).pipe(format="svg", encoding="utf-8")
    except ExecutableNotFound:
        return None
    start = svg.find("<svg")
    if start < 0:
        return svg
    svg = svg[start:]
    return f'<svg style="{fit_style(svg)}"' + svg[4:]


def svg_size(svg: str) -> tuple[float, float] | None:
    """The CSS pixel size of a Graphviz SVG (its ``width="..pt"`` and ``height``), or None."""
    m = _SIZE.search(svg[:400])
    if m is None:
        return None
    return float(m.group(1)) * 4 / 3, float(m.group(2)) * 4 / 3


def fit_style(svg: str) -> str:
    """The inline style that makes ``svg`` fit its output (``FIT_STYLE``), letting a tall
    graph keep ``MIN_SCALE`` of its height (up to ``TALL_LIMIT`` pixels)."""
    size = svg_size(svg)
    if size is None:
        return FIT_STYLE
    tall = min(size[1] * MIN_SCALE, TALL_LIMIT)
    if tall <= 700:  # 70vh of a usual window: the plain rule
        return FIT_STYLE
    return f"max-width:100%;max-height:max(70vh,{tall:.0f}px);height:auto"


def svg_image(svg: str, alt: str) -> str:
    """``svg`` (from ``render_svg``) as an ``<img>`` holding it as a data URI, at the same fit.

    What a snapshot keeps: HTML sanitizers (JupyterLab's for an untrusted notebook, one
    received from someone else) drop inline ``<svg>`` (leaving its text strewn over the
    output) but keep an image, so a shared notebook still shows its graphs."""
    import base64

    # width:auto: with the width attribute alone, max-height would squeeze the image's height
    # and not its width (a distorted graph); auto keeps its proportions within both limits
    style = fit_style(svg) + ";width:auto"
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    if body.startswith('<svg style="'):  # the inline fit: the <img> carries it instead
        body = "<svg" + body[body.index('"', 12) + 1 :]
    data = base64.b64encode(body.encode("utf-8")).decode("ascii")
    size = svg_size(body)
    dims = f" width='{size[0]:.0f}' height='{size[1]:.0f}'" if size else ""
    return (f"<img class='nborch-graph-img' alt='{html.escape(alt)}'{dims} style='{style}' "
            f"src='data:image/svg+xml;base64,{data}'/>")


_layouts: OrderedDict[str, str | None] = OrderedDict()
_layouts_lock = threading.Lock()
LAYOUTS_KEPT = 16


def layout_svg(dot_text: str) -> str | None:
    """``render_svg(dot_text)``, kept for the last ``LAYOUTS_KEPT`` texts of this process: a
    graph run again (the usual notebook loop) is drawn at once, without Graphviz. Thread-safe."""
    with _layouts_lock:
        if dot_text in _layouts:
            _layouts.move_to_end(dot_text)
            return _layouts[dot_text]
    svg = render_svg(dot_text)
    if svg is not None:  # "no Graphviz" is not remembered: it may be installed meanwhile
        with _layouts_lock:
            _layouts[dot_text] = svg
            while len(_layouts) > LAYOUTS_KEPT:
                _layouts.popitem(last=False)
    return svg


def cached_layout(dot_text: str) -> str | None:
    """The SVG ``layout_svg`` kept for ``dot_text``, or None (nothing is laid out here)."""
    with _layouts_lock:
        if dot_text in _layouts:
            _layouts.move_to_end(dot_text)
            return _layouts[dot_text]
    return None


def forget_layouts() -> None:
    """Drop the layouts ``layout_svg`` kept (benchmarks measure a cold start with it)."""
    with _layouts_lock:
        _layouts.clear()


# -- recolouring a laid-out graph ---------------------------------------------------------------

_NODE_G = re.compile(r'<g id="((?:task|group|map)&#45;[^"]*)" class="node [^"]*">(.*?)</g>', re.S)
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
_SHAPE = re.compile(r'<(?:path|polygon)[^>]* (?:d|points)="([^"]*)"')
# A mapped node's progress bar: its items by state, in this order, then the rest (the track)
BAR_ORDER = (S.SUCCEEDED, S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED, S.SKIPPED, S.RUNNING, S.RETRYING)
BAR_TRACK = "#ffffff"


def bar_svg(box: tuple[float, float, float, float], counts: Mapping[TaskState, int]) -> str:
    """SVG rects of a mapped node's progress bar at the bottom of its ``box`` (x0, y0, x1, y1):
    a white track, then a segment per state of its items, as wide as their share."""
    x0, _, x1, y1 = box
    left, width, top, height = x0 + 8, max(x1 - x0 - 16, 1.0), y1 - 8, 4.0
    total = sum(counts.values())
    out = [f'<rect class="nborch-map-bar" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
           f'height="{height:.1f}" rx="1.5" fill="{BAR_TRACK}" stroke="{BAR_TRACK}" stroke-width="0.8"/>']
    x = left
    for state in BAR_ORDER:
        n = counts.get(state, 0)
        if not n or not total:
            continue
        w = width * n / total
        out.append(f'<rect class="nborch-map-seg st-{state.value}" x="{x:.2f}" y="{top:.1f}" width="{w:.2f}" '
                   f'height="{height:.1f}" fill="{COLORS[state][0]}"/>')
        x += w
    return "".join(out)


class SvgTemplate:
    """A laid-out SVG whose node classes, colours and second lines can be rewritten without
    graphviz.

    ``fill(states, notes, marks)`` returns the SVG with ``class="node st-<state>"`` (plus
    ``nb-cached`` / ``nb-reused``), the colours of that look written into each node's shape
    and text, and every node's second line set; the layout (positions, sizes, edges) is the
    one graphviz made (from ``layout_dot``: every node drawn pending).
    """

    _COLORED = re.compile(f'(fill="{COLORS[S.PENDING][0]}" stroke="{BORDER}"|fill="{COLORS[S.PENDING][1]}")')

    def __init__(self, svg: str) -> None:
        self.parts: list[Any] = []  # str pieces, with (slot, id) pairs between them
        self.ids: set[str] = set()
        self.boxes: dict[str, tuple[float, float, float, float]] = {}  # mapped nodes' shapes
        pos = 0
        for m in _NODE_G.finditer(svg):
            nid = m.group(1).replace("&#45;", "-")
            self.ids.add(nid)
            if nid.startswith("map-"):
                shape = _SHAPE.search(m.group(2))
                numbers = [float(v) for v in _NUMBERS.findall(shape.group(1))] if shape else []
                if len(numbers) >= 4:
                    xs, ys = numbers[0::2], numbers[1::2]
                    self.boxes[nid] = (min(xs), min(ys), max(xs), max(ys))
            self.parts.append(svg[pos : m.start()] + f'<g id="{m.group(1)}" ')
            self.parts.append(("class", nid))
            body_start = m.start(2)
            body = m.group(2)
            first, last = body.find("<text"), body.rfind("<text")
            if first != last:  # two lines: the second one is the note
                open_end = body.index(">", last) + 1
                close = body.index("</text>", open_end)
                self.parts.append(">")
                self._colored(body[:open_end], nid)
                self.parts.append(("note", nid))
                pos = body_start + close
            else:
                self.parts.append(">")
                self._colored(body, nid)
                pos = m.end(2)
            if nid in self.boxes:  # its progress bar, drawn over the shape, under nothing
                self.parts.append(svg[pos : m.end(2)])
                self.parts.append(("bar", nid))
                pos = m.end(2)
        self.parts.append(svg[pos:])

    def _colored(self, text: str, nid: str) -> None:
        for i, piece in enumerate(self._COLORED.split(text)):
            if i % 2 == 0:
                if piece:
                    self.parts.append(piece)
            else:
                self.parts.append(("shape" if piece.startswith('fill="#e0') else "font", nid))

    def fill(
        self, states: dict[str, TaskState], notes: dict[str, str], marks: dict[str, str] | None = None,
        bars: Mapping[str, Mapping[TaskState, int]] | None = None,
    ) -> str:
        """The SVG with every node's state class, colours and second line set, and each mapped
        node's progress bar (``bars``: its items per state)."""
        looks: dict[str, tuple[str, str, str]] = {}
        for nid in self.ids:
            state = states.get(nid, S.PENDING)
            mark = marks.get(nid, "") if marks else ""
            fill, font, border = _look(state, mark)
            width = ' stroke-width="2"' if border == FAILED_BORDER else ""
            looks[nid] = (f'class="node {_classes(state, mark)}"', f'fill="{fill}" stroke="{border}"{width}',
                          f'fill="{font}"')
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            slot, nid = part
            if slot == "note":
                out.append(html.escape(notes.get(nid, ""), quote=False))
            elif slot == "bar":
                out.append(bar_svg(self.boxes[nid], bars.get(nid, {}) if bars else {}))
            else:
                out.append(looks[nid][0 if slot == "class" else 1 if slot == "shape" else 2])
        return "".join(out)


def state_css(scope: str, states: dict[str, TaskState], marks: dict[str, str] | None = None) -> str:
    """CSS colouring each node of the SVG inside ``.<scope>`` by its state (or its mark),
    addressed by id.

    Swapping this (small) style block recolours a graph with no new layout and no new SVG.
    """
    by_look: dict[tuple[TaskState, str], list[str]] = {}
    for nid, state in states.items():
        mark = marks.get(nid, "") if marks else ""
        by_look.setdefault((state, mark), []).append(nid)
    rules = []
    for (state, mark), ids in by_look.items():
        fill, font, border = _look(state, mark)
        sel = ",".join(f"#{i}" for i in ids)
        rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{fill:{fill}}}")
        rules.append(f".{scope} :is({sel})>text{{fill:{font}}}")
        if border != BORDER:
            width = ";stroke-width:2" if state is S.FAILED and not mark else ""
            rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{stroke:{border}{width}}}")
    return "\n".join(rules)
