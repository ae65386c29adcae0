"""Graph (+ RunView) -> DOT text, and SVG that can be recoloured without laying it out again.

DOT is built as plain strings; graphviz only renders it (``render_svg``). Every node carries
``id="task-<name>"`` (``group-<base>`` in a collapsed graph) and ``class="st-<state>"``, which
graphviz copies into the SVG, so a ``<style>`` block (``state_css``) recolours nodes by id and
``SvgTemplate`` rewrites only node classes and second lines: one layout per graph shape.

Above ``collapse_over`` tasks the graph is collapsed: one node per task function (``Spec.base``)
with counts per state, because laying out hundreds of nodes takes seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NborchError
from ..graph import Graph, build_graph
from ..state import TaskState
from ..task import fn_name
from .state import RunView

if TYPE_CHECKING:
    import graphviz

    from ..task import Node

__all__ = [
    "COLLAPSE_OVER", "COLORS", "NOTEBOOK_EXTRA", "GraphModel", "SvgTemplate", "graph_dot", "graph_model",
    "group_id", "group_tasks", "node_digraph", "node_id", "node_looks", "printable", "render_svg",
    "state_css",
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
    """One drawn node: a task, or (collapsed) all the tasks of one function."""

    id: str
    key: str  # the DOT node name: the task name, or the function name for a group
    members: list[str]
    group: bool = False


@dataclass(slots=True)
class GraphModel:
    """The nodes and edges to draw; ``edges`` are (from id, to id, dashed: a parent calling a child)."""

    nodes: dict[str, DotNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, bool], None] = field(default_factory=dict)
    collapsed: bool = False


def group_tasks(graph: Graph, limit: int = COLLAPSE_OVER) -> dict[str, list[str]]:
    """Task names grouped by ``Spec.base`` (the function's name, or the task's explicit name);
    by function if that makes more than ``limit`` groups; past ``limit``, the smallest groups
    are merged into one ("… 12 more functions")."""
    specs = graph.specs
    groups: dict[str, list[str]] = {}
    for name, spec in specs.items():
        groups.setdefault(spec.base, []).append(name)
    if len(groups) > limit:  # many explicitly named tasks: group by their function instead
        groups = {}
        for name, spec in specs.items():
            groups.setdefault(fn_name(spec.task.fn), []).append(name)
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
    too many, one per function."""
    specs = graph.specs
    model = GraphModel(collapsed=len(specs) > collapse_over)
    nodes, edges = model.nodes, model.edges
    if not model.collapsed:
        for name, spec in specs.items():
            nid = node_id(name)
            nodes[nid] = DotNode(nid, name, [name])
            for up in spec.up:
                edges[(node_id(up.name), nid, False)] = None
            if spec.parent is not None and spec.parent in specs:
                edges[(node_id(spec.parent), nid, True)] = None
        return model
    group_of: dict[str, str] = {}
    for base, names in group_tasks(graph, collapse_over).items():
        gid = group_id(base)
        nodes[gid] = DotNode(gid, base, names, group=True)
        for n in names:
            group_of[n] = gid
    for name, spec in specs.items():
        gid = group_of[name]
        for up in spec.up:
            ug = group_of.get(up.name)
            if ug is not None:
                edges.pop((ug, gid, True), None)  # a data edge says more than a call edge
                edges[(ug, gid, False)] = None
        if spec.parent is not None:
            pg = group_of.get(spec.parent)
            if pg is not None and (pg, gid, False) not in edges:
                edges[(pg, gid, True)] = None
    return model


def _counts(members: list[str], tasks: dict[str, Any]) -> dict[TaskState, int]:
    counts: dict[TaskState, int] = {}
    for n in members:
        st = tasks.get(n)
        s = st.state if st is not None else S.PENDING
        counts[s] = counts.get(s, 0) + 1
    return counts


def _counts_note(counts: dict[TaskState, int]) -> str:
    return " ".join(f"{SYMBOLS[s]}{counts[s]}" for s in SYMBOLS if counts.get(s))


def _size_note(members: list[str]) -> str:
    return f"{len(members)} task{'s' if len(members) != 1 else ''}"


def node_looks(model: GraphModel, view: RunView | None) -> tuple[dict[str, TaskState], dict[str, str]]:
    """Each drawn node's state and second line, in one pass over the tasks.

    A task node shows its task's state and note; a group the most telling state among its
    members (a failure stays red while others run) and counts per state ("✓12 ▶3 ○85"), or
    its size without a view.
    """
    tasks = view.tasks if view is not None else {}
    states: dict[str, TaskState] = {}
    notes: dict[str, str] = {}
    for nid, node in model.nodes.items():
        if node.group:
            counts = _counts(node.members, tasks)
            states[nid] = next(s for s in GROUP_PRIORITY if counts.get(s))
            notes[nid] = _counts_note(counts) if view is not None else _size_note(node.members)
        else:
            st = tasks.get(node.members[0])
            states[nid] = st.state if st is not None else S.PENDING
            notes[nid] = st.note() if st is not None else ""
    return states, notes


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
    return _counts_note(_counts(members, view.tasks))


# -- DOT text -----------------------------------------------------------------------------------


def dot_lines(model: GraphModel, states: dict[str, TaskState], notes: dict[str, str] | None) -> list[str]:
    """The body lines of the DOT text (one statement each, tab-indented, newline-terminated)."""
    lines = []
    for nid, node in model.nodes.items():
        state = states.get(nid, S.PENDING)
        fill, font = COLORS[state]
        note = notes.get(nid) if notes is not None else None
        name = _q(node.key)
        label = name if note is None else name[:-1] + "\\n" + _q(note)[1:]  # "\n": DOT's line break
        lines.append(
            f'\t{_dot_key(node.key)} [id={_q(nid)}, class="st-{state.value}", label={label}, '
            f"fillcolor={_q(fill)}, fontcolor={_q(font)}]\n"
        )
    keys = {nid: _dot_key(node.key) for nid, node in model.nodes.items()}
    for up, down, dashed in model.edges:
        lines.append(f"\t{keys[up]} -> {keys[down]}{' [style=dashed]' if dashed else ''}\n")
    return lines


def _source(body: list[str]) -> str:
    head = (
        f"digraph nborch {{\n\tgraph [{_attrs(GRAPH_ATTR)}]\n\tnode [{_attrs(NODE_ATTR)}]\n"
        f"\tedge [{_attrs(EDGE_ATTR)}]\n"
    )
    return head + "".join(body) + "}\n"


def graph_dot(graph: Graph, view: RunView | None = None, *, collapse_over: int = COLLAPSE_OVER) -> str:
    """DOT text for ``graph``; with a ``view``, nodes are coloured by state with a second line
    for attempts / duration. Dashed edges go from a parent task to the child tasks it called."""
    model = graph_model(graph, collapse_over)
    states, notes = node_looks(model, view)
    return _source(dot_lines(model, states, notes if view is not None or model.collapsed else None))


def layout_dot(model: GraphModel) -> str:
    """DOT text that depends only on the graph's shape: every node pending, placeholder notes.

    Two models with equal ``layout_dot`` lay out the same, so the text doubles as a shape key.
    """
    notes = {nid: GROUP_PLACEHOLDER if n.group else TASK_PLACEHOLDER for nid, n in model.nodes.items()}
    return _source(dot_lines(model, {}, notes))


def node_digraph(node: Node) -> graphviz.Digraph:
    """``node``'s workflow as a ``graphviz.Digraph`` (collapsed above 200 tasks). Raises
    NborchError, saying which extra to install, when the graphviz package is missing."""
    try:
        import graphviz
    except ImportError as err:
        raise NborchError(
            "node.graph() needs the graphviz package, which comes with nborch's notebook extra: "
            f"{NOTEBOOK_EXTRA} (node.to_mermaid() needs nothing)"
        ) from err

    model = graph_model(build_graph(node))
    notes = node_notes(model, None) if model.collapsed else None
    return graphviz.Digraph(
        "nborch", graph_attr=GRAPH_ATTR, node_attr=NODE_ATTR, edge_attr=EDGE_ATTR,
        body=dot_lines(model, {}, notes),
    )


def render_svg(dot_text: str) -> str | None:
    """Lay ``dot_text`` out as inline SVG (no XML prolog); None when Graphviz is not installed."""
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
    return svg[start:] if start >= 0 else svg


# -- recolouring a laid-out graph ---------------------------------------------------------------

_NODE_G = re.compile(r'<g id="((?:task|group)&#45;[^"]*)" class="node [^"]*">(.*?)</g>', re.S)


class SvgTemplate:
    """A laid-out SVG whose node classes and second lines can be rewritten without graphviz.

    ``fill(states, notes)`` returns the SVG with ``class="node st-<state>"`` and the note text
    of every node set; the layout (positions, sizes, edges) is the one graphviz made.
    """

    def __init__(self, svg: str) -> None:
        self.parts: list[Any] = []  # str pieces, with ("class", id) / ("note", id) slots between
        self.ids: set[str] = set()
        pos = 0
        for m in _NODE_G.finditer(svg):
            nid = m.group(1).replace("&#45;", "-")
            self.ids.add(nid)
            self.parts.append(svg[pos : m.start()] + f'<g id="{m.group(1)}" ')
            self.parts.append(("class", nid))
            body_start = m.start(2)
            body = m.group(2)
            first, last = body.find("<text"), body.rfind("<text")
            if first != last:  # two lines: the second one is the note
                open_end = body.index(">", last) + 1
                close = body.index("</text>", open_end)
                self.parts.append(">" + body[:open_end])
                self.parts.append(("note", nid))
                pos = body_start + close
            else:
                self.parts.append(">")
                pos = body_start
        self.parts.append(svg[pos:])

    def fill(self, states: dict[str, TaskState], notes: dict[str, str]) -> str:
        """The SVG with every node's state class and second line set."""
        import html

        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part[0] == "class":
                state = states.get(part[1], S.PENDING)
                out.append(f'class="node st-{state.value}"')
            else:
                out.append(html.escape(notes.get(part[1], ""), quote=False))
        return "".join(out)


def state_css(scope: str, states: dict[str, TaskState]) -> str:
    """CSS colouring each node of the SVG inside ``.<scope>`` by its state, addressed by id.

    Swapping this (small) style block recolours a graph with no new layout and no new SVG.
    """
    by_state: dict[TaskState, list[str]] = {}
    for nid, state in states.items():
        by_state.setdefault(state, []).append(nid)
    rules = []
    for state, ids in by_state.items():
        fill, font = COLORS[state]
        sel = ",".join(f"#{i}" for i in ids)
        rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{fill:{fill}}}")
        rules.append(f".{scope} :is({sel})>text{{fill:{font}}}")
        if state is S.FAILED:
            rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{stroke:#b71c1c;stroke-width:2}}")
    return "\n".join(rules)
