"""HTML for notebooks: a node's graph (``Node._repr_html_``), the task list shown without
Graphviz, the live display's progress bars and status line, and the click-to-zoom frame of a
run's graph. The task table is ``task_table.py``'s; its names, ``esc`` and ``state_badge``
are importable from here as before.

Colours are inline styles (``style=`` attributes), so the HTML reads the same where ``<style>``
blocks are stripped (GitHub); only the zoom needs a style block (``zoom_css``).

Everything taken from a run or a workflow (task names, exception messages, captured output)
goes through ``escaping``: an exception message can never inject markup into a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..core.errors import NborchError, safe_str
from ..core.graph import Graph, build_graph
from ..core.record import _fmt_seconds
from ..core.state import TaskState
from .dot import NOTEBOOK_EXTRA, graph_dot
from .escaping import esc, printable
from .graph_model import COLLAPSE_OVER, GraphModel, graph_model
from .looks import COLORS, group_note, node_looks, state_badge
from .state import RunView
from .svg import render_svg, svg_image
from .task_status import fmt_elapsed
from .task_table import map_duration, task_table_html

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = [
    "GRAPHVIZ_HINT", "PACKAGE_HINT", "esc", "graph_alt", "graphviz_hint", "header_html", "map_duration",
    "model_list_html", "node_html", "progress_html", "state_badge", "task_bars_html", "task_list_html",
    "task_table_html", "zoom_css", "zoomable",
]

S = TaskState

GRAPHVIZ_HINT = (
    "<p class='nborch-hint' style='color:#757575;font-size:90%;margin:4px 0'>Install Graphviz to draw "
    "this graph: its <code>dot</code> program must be on PATH (<code>apt install graphviz</code>, "
    "<code>brew install graphviz</code> or <code>conda install graphviz</code>).</p>"
)
PACKAGE_HINT = (
    "<p class='nborch-hint' style='color:#757575;font-size:90%;margin:4px 0'>Install the graphviz package "
    f"to draw this graph: it comes with nborch's notebook extra, <code>{esc(NOTEBOOK_EXTRA)}</code>.</p>"
)


def graphviz_hint() -> str:
    """Why no graph was drawn: the graphviz package is missing, or Graphviz's ``dot`` program."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return PACKAGE_HINT
    return GRAPHVIZ_HINT


def node_html(node: Node) -> str:
    """What a node shows in a notebook: its graph as inline SVG, else a task list and a hint.

    A workflow that cannot be built shows its error (escaped) instead of raising.
    """
    try:
        graph = build_graph(node)
    except NborchError as err:
        return f"<pre class='nborch-error'>{esc(type(err).__name__)}: {esc(safe_str(err))}</pre>"
    svg = render_svg(graph_dot(graph))
    if svg is not None:
        return f"<div class='nborch-graph'>{svg_image(svg, graph_alt(graph.specs))}</div>"
    return task_list_html(graph)


def graph_alt(names: Iterable[str], states: Mapping[str, TaskState] | None = None, limit: int = 30) -> str:
    """The text of a graph image: its tasks (with their states), the first ``limit`` of them."""
    names = list(names)
    shown = [f"{n} {states[n].value}" if states and n in states else n for n in names[:limit]]
    more = f", … {len(names) - limit} more" if len(names) > limit else ""
    return printable(f"graph of {len(names)} task{'s' if len(names) != 1 else ''}: " + ", ".join(shown) + more)


def task_list_html(
    graph: Graph, view: RunView | None = None, *, collapse_over: int = COLLAPSE_OVER, hint: bool = True
) -> str:
    """Every task and its state as an HTML list (one item per task function above ``collapse_over``),
    followed by a one-line hint on installing Graphviz."""
    return model_list_html(graph_model(graph, collapse_over), view, hint=hint)


def model_list_html(model: GraphModel, view: RunView | None = None, *, hint: bool = True) -> str:
    """The nodes of ``model`` as an HTML list: what is shown instead of the graph without
    Graphviz (a task per item, or a task function with its counts per state)."""
    states, notes, marks = node_looks(model, view)
    items = []
    for nid, node in model.nodes.items():
        badge = state_badge(states[nid], marks.get(nid, ""))
        if node.group:
            items.append(
                f"<li data-group='{esc(node.key)}'>{badge} <code>{esc(node.key)}</code> "
                f"<small>{len(node.members)} tasks: {esc(group_note(node.members, view))}</small></li>"
            )
        else:
            note = notes[nid]
            items.append(
                f"<li data-task='{esc(node.key)}'>{badge} <code>{esc(node.key)}</code>"
                + (f" <small>{esc(note)}</small>" if note else "") + "</li>"
            )
    body = "".join(items) or "<li><i>no tasks</i></li>"
    return (
        "<div class='nborch-tasks'><ul style='list-style:none;padding-left:0;margin:0'>" + body + "</ul>"
        + (graphviz_hint() if hint else "") + "</div>"
    )


_BAR_COLORS = {S.SUCCEEDED: COLORS[S.SUCCEEDED][0], S.FAILED: COLORS[S.FAILED][0],
               S.CANCELLED: COLORS[S.CANCELLED][0], S.UPSTREAM_FAILED: COLORS[S.UPSTREAM_FAILED][0]}


def _bar(done: int, total: int, color: str, css: str, label: str = "") -> str:
    pct = 100.0 if total <= 0 else min(max(done / total, 0.0), 1.0) * 100
    width = f"{pct:.1f}".rstrip("0").rstrip(".") + "%"
    return (
        f"<div class='{css}' style='background:#eeeeee;border-radius:3px;height:8px;overflow:hidden;flex:1'>"
        f"<div class='nborch-bar' style='width:{width};height:100%;background:{color}'></div></div>"
        + (f"<span style='margin-left:6px;white-space:nowrap'>{esc(label)}</span>" if label else "")
    )


def progress_html(view: RunView, *, final: bool = False) -> str:
    """The run's progress bar (tasks settled of total): blue while it runs, then the colour of
    how it ended."""
    state = view.run_state if final else None
    color = _BAR_COLORS.get(state, COLORS[S.RUNNING][0]) if state is not None else COLORS[S.RUNNING][0]
    return f"<div style='display:flex;margin:4px 0'>{_bar(view.settled, view.total, color, 'nborch-progress')}</div>"


def task_bars_html(view: RunView, *, limit: int = 20) -> str:
    """One bar per task that reported ``nborch.progress`` (running ones first, then the most
    recently finished, at most ``limit``); "" when none did."""
    names = view.progressing
    if not names:
        return ""
    states = view.states
    active = [n for n in names if not states[n].is_final][:limit]
    recent = [n for n in reversed(names) if states[n].is_final][: limit - len(active)]
    shown = set(active) | set(recent)
    rows = []
    for name in (n for n in names if n in shown):
        st = view.task(name)
        done = st.done or 0
        top = st.total if st.total else max(done, 1)
        text = f"{done}/{st.total}" if st.total else f"{done}"
        color = _BAR_COLORS.get(st.state, COLORS[S.RUNNING][0])
        rows.append(
            f"<div class='nborch-task-progress' data-task='{esc(name)}' style='display:flex;align-items:center;"
            f"gap:6px;margin:2px 0'><code style='width:30%;overflow:hidden;text-overflow:ellipsis'>{esc(name)}</code>"
            f"{_bar(done, top, color, 'nborch-task-bar', text)}</div>"
        )
    return "<div class='nborch-task-bars'>" + "".join(rows) + "</div>"


def zoomable(svg: str, toggle: str) -> str:
    """``svg`` in a frame that a click switches between fitting the output and its full size
    (scrollable), through the checkbox ``#<toggle>`` (see ``zoom_css``)."""
    return (
        f"<label for='{toggle}' class='nborch-svg' title='click: full size / fit to the output' "
        f"style='display:block;cursor:zoom-in'>{svg}</label>"
    )


def zoom_checkbox(toggle: str) -> str:
    """The hidden checkbox that holds a graph's zoom (kept out of HTML that is rewritten)."""
    return f"<input type='checkbox' id='{toggle}' class='nborch-zoom' style='display:none'/>"


def zoom_css(scope: str, toggle: str) -> str:
    """CSS for ``zoomable``: checked, the graph inside ``.<scope>`` shows at full size in a
    scrollable frame. Without it (a stripped style block) the graph still fits the output.
    The checkbox is the graph's sibling in a snapshot, or elsewhere in the live display
    (whose graph HTML is rewritten, which would reset a checkbox inside it)."""
    frames = [f".{scope}:has(#{toggle}:checked) .nborch-svg", f"#{toggle}:checked + .nborch-graph .nborch-svg"]
    return (
        f"{', '.join(frames)}{{overflow:auto;max-height:80vh;cursor:zoom-out!important}}"
        f"{', '.join(f + s for f in frames for s in (' svg', ' img'))}"
        "{max-width:none!important;max-height:none!important}"
    )


def header_html(view: RunView, *, now: float | None = None) -> str:
    """One status line: the run's state, tasks settled of total, the time so far (given
    ``now``) or the run's duration, counts of the notable states."""
    state = view.run_state
    # before its RunEvent a run is "starting", drawn like a pending task
    badge = state_badge(state) if state is not None else state_badge(S.PENDING).replace(">pending<", ">starting<")
    counts = view.counts()
    extra = ", ".join(f"{counts[s]} {s.value}" for s in (S.RUNNING, S.RETRYING, S.FAILED, S.UPSTREAM_FAILED,
                                                          S.SKIPPED, S.CANCELLED) if counts[s])
    marked = view.not_run
    if marked:
        extra = ", ".join(filter(None, [extra, f"{marked} not run (cached or reused)"]))
    elapsed = ""
    if view.started is not None and view.finished is not None:
        elapsed = f" in {_fmt_seconds(max(view.finished - view.started, 0.0))}"
    elif view.duration is not None and state is not None and state.is_final:
        elapsed = f" in {_fmt_seconds(view.duration)}"
    elif view.started is not None and now is not None:
        elapsed = f" for {fmt_elapsed(max(now - view.started, 0.0))}"
    run = f"run <code>{esc(view.run_id)}</code> " if view.run_id else ""
    breakers = "".join(
        f" · circuit <code>{esc(name)}</code> {esc(state_)}" for name, state_ in view.breakers.items()
    )
    return (
        f"<div class='nborch-header'><b>nborch</b> {run}{badge} "
        f"{view.settled}/{view.total} tasks settled<span class='nborch-elapsed'>{esc(elapsed)}</span>"
        + (f" ({esc(extra)})" if extra else "") + breakers + "</div>"
    )
