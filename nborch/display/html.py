"""HTML for notebooks: a node's graph (``Node._repr_html_``), the task list shown without
Graphviz, the live display's task table and status line.

Everything taken from a run or a workflow (task names, exception messages, captured output)
goes through ``html.escape``: an exception message can never inject markup into a notebook.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from ..errors import NborchError, safe_str
from ..graph import Graph, build_graph
from ..record import _fmt_seconds
from ..state import TaskState
from .dot import (
    COLLAPSE_OVER,
    COLORS,
    GROUP_PRIORITY,
    NOTEBOOK_EXTRA,
    graph_dot,
    group_note,
    group_tasks,
    printable,
    render_svg,
)
from .state import RunView, TaskStatus

if TYPE_CHECKING:
    from ..task import Node

__all__ = [
    "GRAPHVIZ_HINT", "PACKAGE_HINT", "esc", "graphviz_hint", "header_html", "node_html", "state_badge",
    "task_list_html", "task_table_html",
]

S = TaskState
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # terminal colour codes in captured output


def esc(text: str) -> str:
    """``text`` for HTML: markup escaped, control characters written as escapes (``printable``)."""
    return html.escape(printable(text))


def _output_text(text: str) -> str:
    """Captured output for a ``<pre>``: colour codes dropped, other control characters (but
    tabs and line breaks) written as escapes."""
    return html.escape(printable(_ANSI.sub("", text), keep="\t\n\r"))

GRAPHVIZ_HINT = (
    "<p class='nborch-hint' style='color:#757575;font-size:90%;margin:4px 0'>Install Graphviz to draw "
    "this graph: its <code>dot</code> program must be on PATH (<code>apt install graphviz</code>, "
    "<code>brew install graphviz</code> or <code>conda install graphviz</code>).</p>"
)
PACKAGE_HINT = (
    "<p class='nborch-hint' style='color:#757575;font-size:90%;margin:4px 0'>Install the graphviz package "
    f"to draw this graph: it comes with nborch's notebook extra, <code>{esc(NOTEBOOK_EXTRA)}</code>.</p>"
)
# Shown first when a table has to be cut: what needs a look.
_NOTABLE = frozenset({S.FAILED, S.RETRYING, S.RUNNING, S.UPSTREAM_FAILED, S.CANCELLED})


def graphviz_hint() -> str:
    """Why no graph was drawn: the graphviz package is missing, or Graphviz's ``dot`` program."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return PACKAGE_HINT
    return GRAPHVIZ_HINT


def state_badge(state: TaskState) -> str:
    """A small coloured label for ``state``, classed ``st-<state>`` for styling and tests."""
    fill, font = COLORS[state]
    return (
        f"<span class='nborch-state st-{state.value}' style='background:{fill};color:{font};"
        f"border-radius:3px;padding:0 5px;white-space:nowrap'>{esc(state.value)}</span>"
    )


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
        return f"<div class='nborch-graph'>{svg}</div>"
    return task_list_html(graph)


def task_list_html(
    graph: Graph, view: RunView | None = None, *, collapse_over: int = COLLAPSE_OVER, hint: bool = True
) -> str:
    """Every task and its state as an HTML list (one item per task function above ``collapse_over``),
    followed by a one-line hint on installing Graphviz."""
    tasks = view.tasks if view is not None else {}
    items = []
    if len(graph.specs) <= collapse_over:
        for name in graph.specs:
            st = tasks.get(name)
            state = st.state if st is not None else S.PENDING
            note = st.note() if st is not None else ""
            items.append(
                f"<li data-task='{esc(name)}'>{state_badge(state)} <code>{esc(name)}</code>"
                + (f" <small>{esc(note)}</small>" if note else "") + "</li>"
            )
    else:
        for base, names in group_tasks(graph, collapse_over).items():
            present = {tasks[n].state if n in tasks else S.PENDING for n in names}
            state = next(s for s in GROUP_PRIORITY if s in present)
            items.append(
                f"<li data-group='{esc(base)}'>{state_badge(state)} <code>{esc(base)}</code> "
                f"<small>{len(names)} tasks: {esc(group_note(names, view))}</small></li>"
            )
    body = "".join(items) or "<li><i>no tasks</i></li>"
    return (
        "<div class='nborch-tasks'><ul style='list-style:none;padding-left:0;margin:0'>" + body + "</ul>"
        + (graphviz_hint() if hint else "") + "</div>"
    )


def _output_cell(st: TaskStatus) -> str:
    text = st.output
    if not text:
        return ""
    lines = st.output_lines or 1
    return (
        f"<details><summary>{lines} line{'s' if lines != 1 else ''}</summary>"
        f"<pre style='max-height:16em;overflow:auto;margin:0'>{_output_text(text)}</pre></details>"
    )


def task_table_html(view: RunView, *, limit: int = 60, now: float | None = None) -> str:
    """The task table: state, attempts, duration (so far, for running tasks), error and the
    task's captured output. Past ``limit`` rows, failed / running / retrying tasks come first."""
    rows = list(view.tasks.values())
    hidden = 0
    if len(rows) > limit:
        notable = [st for st in rows if st.state in _NOTABLE]
        rest = [st for st in rows if st.state not in _NOTABLE]
        shown = (notable + rest)[:limit]
        hidden = len(rows) - len(shown)
        rows = shown
    body = []
    for st in rows:
        elapsed = st.elapsed(now)
        body.append(
            f"<tr class='st-{st.state.value}' data-task='{esc(st.name)}'>"
            f"<td style='text-align:left'><code>{esc(st.name)}</code>"
            + (f" <small>&#8592; {esc(st.parent)}</small>" if st.parent else "")
            + f"</td><td style='text-align:left'>{state_badge(st.state)}</td>"
            f"<td>{st.attempts}</td><td>{esc(_fmt_seconds(elapsed))}</td>"
            f"<td style='text-align:left'>{esc(st.error)}</td>"
            f"<td style='text-align:left'>{_output_cell(st)}</td></tr>"
        )
    if hidden:
        counts = view.counts()
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        body.append(f"<tr><td colspan='6' style='text-align:left'>… {hidden} more tasks (all: {esc(summary)})</td></tr>")
    return (
        "<table class='nborch-table'><thead><tr><th>task</th><th>state</th><th>attempts</th>"
        "<th>duration</th><th>error</th><th>output</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def header_html(view: RunView, *, now: float | None = None) -> str:
    """One status line: the run's state, tasks settled of total, counts of the notable states."""
    state = view.run_state
    # before its RunEvent a run is "starting", drawn like a pending task
    badge = state_badge(state) if state is not None else state_badge(S.PENDING).replace(">pending<", ">starting<")
    counts = view.counts()
    extra = ", ".join(f"{counts[s]} {s.value}" for s in (S.RUNNING, S.RETRYING, S.FAILED, S.UPSTREAM_FAILED,
                                                          S.SKIPPED, S.CANCELLED) if counts[s])
    elapsed = ""
    if view.started is not None:
        end = view.finished if view.finished is not None else now
        if end is not None:
            elapsed = f" in {_fmt_seconds(max(end - view.started, 0.0))}"
    run = f"run <code>{esc(view.run_id)}</code> " if view.run_id else ""
    breakers = "".join(
        f" · circuit <code>{esc(name)}</code> {esc(state_)}" for name, state_ in view.breakers.items()
    )
    return (
        f"<div class='nborch-header'><b>nborch</b> {run}{badge} "
        f"{view.settled}/{view.total} tasks settled{esc(elapsed)}"
        + (f" ({esc(extra)})" if extra else "") + breakers + "</div>"
    )
