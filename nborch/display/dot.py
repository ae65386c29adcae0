"""DOT text for a graph or a run, and the ``graphviz.Digraph`` objects a notebook shows.

DOT is built as plain strings from a ``GraphModel`` (what is drawn) and the looks of its nodes
(``looks``); graphviz only renders it (``svg.render_svg``). Every node carries
``id="task-<name>"`` (``group-<base>`` in a collapsed graph, ``map-<name>`` for a mapped node)
and ``class="st-<state>"``, which graphviz copies into the SVG, so that ``svg_template`` can
recolour it without laying it out again: ``layout_dot`` is the text of that one layout per graph
shape. ``node_digraph`` draws a workflow (``node.graph()``), ``status_digraph`` what the
notebook knows of each of its tasks (``%orch graph``).

The names of the modules this one was split into are importable from here as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import NborchError
from ..core.graph import Graph, build_graph
from ..core.mapping import item_base
from ..core.record import _fmt_seconds
from ..core.state import TaskState
from .escaping import esc, printable
from .graph_model import COLLAPSE_OVER, DrawnNode, GraphModel, graph_model, group_tasks, run_model
from .looks import (
    BAR_ORDER,
    BAR_TRACK,
    BORDER,
    COLORS,
    GROUP_PRIORITY,
    MARK_COLORS,
    STALE_BORDER,
    counts_note,
    map_look,
    map_state,
    node_classes,
    node_colors,
    node_looks,
    node_notes,
)
from .mapped_nodes import map_counts, map_note
from .node_ids import group_id, map_id, node_id
from .state import RunView
from .svg import (
    FIT_STYLE,
    cached_layout,
    fit_style,
    forget_layouts,
    layout_svg,
    render_svg,
    svg_image,
    svg_size,
)
from .svg_template import SvgTemplate, state_css
from .task_status import KnownTask

if TYPE_CHECKING:
    import graphviz

    from ..core.node import Node

__all__ = [
    "COLLAPSE_OVER", "COLORS", "FIT_STYLE", "MARK_COLORS", "NOTEBOOK_EXTRA", "GraphModel", "SvgTemplate",
    "cached_layout", "components", "fit_style", "forget_layouts", "graph_attrs", "graph_dot", "graph_model",
    "group_id", "group_tasks", "layout_svg", "map_id", "map_look", "map_state", "node_digraph", "node_id",
    "node_looks", "printable", "render_svg", "run_model", "state_css", "status_digraph", "svg_image",
    "svg_size",
]

# How to get what the notebook needs (IPython, ipywidgets, graphviz): said by every message about one
NOTEBOOK_EXTRA = 'pip install "nborch[notebook]"'

S = TaskState

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
# Graphs of at least this many unconnected parts pack them in rows and columns (DOT's
# ``packmode=array``), instead of one tall column of independent tasks.
PACK_OVER = 6


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
        fill, font, border = node_colors(state, mark)
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
            f'\t{_dot_key(node.key)} [id={_q(nid)}, class="{node_classes(state, mark)}", label={label}, '
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
            notes[nid] = " ".join(filter(None, [counts_note(counts), f"◌{stale} stale" if stale else ""]))
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
    nid: str, dn: DrawnNode, known: Mapping[str, Any], states: dict[str, TaskState], notes: dict[str, str],
    extra: dict[str, dict[str, str]], labels: dict[str, str],
) -> None:
    """A mapped node of ``%orch graph``: its items' last states (``known`` holds them as
    ``NAME:0``...) counted on it with a bar, or its own state before it ever expanded."""
    items = [n for n in known if item_base(n) == dn.key]
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
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        f"<TR><TD>{esc(name)}</TD></TR><TR><TD>{esc(note)}</TD></TR>"
        '<TR><TD><TABLE BORDER="1" COLOR="#ffffff" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>'
        + "".join(cells) + "</TR></TABLE></TD></TR></TABLE>>"
    )
