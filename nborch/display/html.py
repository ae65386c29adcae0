"""HTML for notebooks: a node's graph (``Node._repr_html_``), the task list shown without
Graphviz, the live display's task table, progress bars and status line, and the click-to-zoom
frame of a run's graph.

Colours are inline styles (``style=`` attributes), so the HTML reads the same where ``<style>``
blocks are stripped (GitHub); only the zoom needs a style block (``zoom_css``).

Everything taken from a run or a workflow (task names, exception messages, captured output)
goes through ``html.escape``: an exception message can never inject markup into a notebook.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from ..core.errors import NborchError, safe_str
from ..core.graph import Graph, build_graph
from ..core.record import _fmt_seconds
from ..core.state import TaskState
from .dot import (
    BAR_ORDER,
    COLLAPSE_OVER,
    COLORS,
    MARK_COLORS,
    NOTEBOOK_EXTRA,
    GraphModel,
    graph_dot,
    graph_model,
    group_note,
    map_state,
    node_looks,
    printable,
    render_svg,
    svg_image,
)
from .state import MAP_DRAWN, RunView, TaskStatus, fmt_elapsed, map_note

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = [
    "GRAPHVIZ_HINT", "PACKAGE_HINT", "esc", "graph_alt", "graphviz_hint", "header_html", "map_duration",
    "node_html", "model_list_html", "progress_html", "state_badge", "task_bars_html", "task_list_html", "task_table_html", "zoom_css", "zoomable",
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


_MARK_TITLES = {
    "cached": "succeeded without running: its value came from the cache",
    "reused": "succeeded without running: an earlier run's outcome stands",
}


def state_badge(state: TaskState, mark: str = "") -> str:
    """A small coloured label for ``state``, classed ``st-<state>`` for styling and tests; with
    a ``mark`` ("cached", "reused"), "succeeded (cached)" in the pale look of tasks that did
    not run, classed ``nb-<mark>`` too."""
    if mark:
        fill, font, _ = MARK_COLORS[mark]
        return (
            f"<span class='nborch-state st-{state.value} nb-{mark}' title='{esc(_MARK_TITLES[mark])}' "
            f"style='background:{fill};color:{font};border-radius:3px;padding:0 5px;white-space:nowrap'>"
            f"{esc(state.value)} ({mark})</span>"
        )
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


def _output_cell(st: TaskStatus) -> str:
    text = st.output
    if not text:
        return ""
    lines = st.output_lines or 1
    return (
        f"<details><summary>{lines} line{'s' if lines != 1 else ''}</summary>"
        f"<pre style='max-height:16em;overflow:auto;margin:0'>{_output_text(text)}</pre></details>"
    )


TRACEBACK_LIMIT = 8_000  # characters of a traceback kept in a snapshot (its tail)


def _traceback_text(err: BaseException) -> str:
    text = getattr(err, "traceback", None)  # an ErrorRecord from the store: the text as recorded
    if not isinstance(text, str) or not text:
        import traceback

        try:
            text = "".join(traceback.format_exception(err))
        except Exception:  # a broken exception: its one line is enough
            return ""
    return text if len(text) <= TRACEBACK_LIMIT else "…" + text[-TRACEBACK_LIMIT:]


def _error_cell(st: TaskStatus, tracebacks: bool) -> str:
    if not st.error:
        return ""
    tb = _traceback_text(st.exc) if tracebacks and st.exc is not None else ""
    if not tb:
        return esc(st.error)
    return (
        f"<details><summary>{esc(st.error)}</summary>"
        f"<pre style='max-height:24em;overflow:auto;margin:0'>{_output_text(tb)}</pre></details>"
    )


def _duration(st: TaskStatus, now: float | None) -> str:
    if st.duration is not None or st.state.is_final:
        return _fmt_seconds(st.duration)
    elapsed = st.elapsed(now)
    return fmt_elapsed(elapsed) if elapsed is not None else "-"


def _row(st: TaskStatus, now: float | None, tracebacks: bool, item: bool = False) -> str:
    mark = st.mark
    name = (f"<small style='color:#757575'>&#8627;</small> <code>{esc(st.name)}</code>" if item
            else f"<code>{esc(st.name)}</code>")
    return (
        f"<tr class='st-{st.state.value}{' nb-' + mark if mark else ''}{' nborch-item' if item else ''}' "
        f"data-task='{esc(st.name)}'><td style='text-align:left'>{name}"
        + (f" <small>&#8592; {esc(st.parent)}</small>" if st.parent else "")
        + f"</td><td style='text-align:left'>{state_badge(st.state, mark)}</td>"
        f"<td>{st.attempts or '-'}</td><td class='nborch-duration'>{esc(_duration(st, now))}</td>"
        f"<td style='text-align:left'>{_error_cell(st, tracebacks)}</td>"
        f"<td style='text-align:left'>{_output_cell(st)}</td></tr>"
    )


def _notable_first(names: Collection[str], states: Mapping[str, TaskState], limit: int) -> list[str]:
    """At most ``limit`` of ``names`` (all of ``states`` when ``names`` is ``states``): failed /
    running / retrying / cancelled ones first."""
    if names is states:  # every task: read the states in one pass, no lookups
        if len(states) <= limit:
            return list(states)
        notable = (n for n, s in states.items() if s in _NOTABLE)
        rest = (n for n, s in states.items() if s not in _NOTABLE)
    else:
        names = list(names)
        if len(names) <= limit:
            return names
        notable = (n for n in names if states.get(n) in _NOTABLE)
        rest = (n for n in names if states.get(n) not in _NOTABLE)
    picked = list(itertools.islice(notable, limit))
    if len(picked) < limit:
        picked += itertools.islice(rest, limit - len(picked))
    return picked


def map_bar_html(counts: Mapping[TaskState, int], width: str = "8em") -> str:
    """A mapped node's items as an inline bar: a segment per settled state, then the rest."""
    total = sum(counts.values())
    segs = "".join(
        f"<span class='nborch-seg st-{state.value}' style='display:inline-block;height:100%;"
        f"width:{100 * counts[state] / total:.2f}%;background:{COLORS[state][0]}'></span>"
        for state in BAR_ORDER if counts.get(state) and total
    )
    return (f"<span class='nborch-map-bar' style='display:inline-block;vertical-align:middle;width:{width};"
            f"height:8px;background:#eeeeee;border-radius:3px;overflow:hidden;white-space:nowrap;"
            f"line-height:0'>{segs}</span>")


def map_duration(st: TaskStatus, now: float | None) -> str:
    """A mapped node's time: from its expansion to its last item's end (its placeholder makes no
    attempt, so it has no duration of its own), or so far."""
    if st.state.is_final and st.duration is None and st.started is not None and st.ended is not None:
        return _fmt_seconds(max(st.ended - st.started, 0.0))
    return _duration(st, now)


def _map_rows(view: RunView, name: str, now: float | None, tracebacks: bool, fold: bool) -> str:
    """A mapped node's rows: one for the node (its state, items' counts and bar, duration, the
    first failure), then its items: in a fold (``fold``: a static snapshot), failed / running
    ones first, at most ``MAP_DRAWN``; else (the live table, rewritten at every repaint, where
    a fold would close) the items that failed, retry or run, at most 5."""
    st = view.task(name)
    items = view.maps.get(name, [])
    states = view.states
    counts = view.map_counts(name)
    state = map_state(counts, st.state)
    failed = counts.get(TaskState.FAILED, 0)
    error = ""
    if failed:
        first = view.task(next(n for n in items if states.get(n) is TaskState.FAILED))
        more = f" (and {failed - 1} more)" if failed > 1 else ""
        error = f"<code>{esc(first.name)}</code>: {esc(first.error)}{esc(more)}"
    elif st.error:
        error = esc(st.error)
    size = f"{len(items)} item{'s' if len(items) != 1 else ''}" if name in view.maps else "items at run time"
    head = (
        f"<tr class='st-{state.value} nborch-map' data-task='{esc(name)}'><td style='text-align:left'>"
        f"<code>{esc(name)}</code> <small>map · {esc(size)}</small></td>"
        f"<td style='text-align:left;white-space:nowrap'>{state_badge(state)}"
        + (f" {map_bar_html(counts)} <span class='nborch-map-counts'>{esc(map_note(counts))}</span>"
           if items else "")
        + f"</td><td>-</td><td class='nborch-duration'>{esc(map_duration(st, now))}</td>"
        f"<td style='text-align:left'>{error}</td><td></td></tr>"
    )
    if not items:
        return head
    if not fold:
        if not any(counts.get(s) for s in _NOTABLE):  # nothing to list: no pass over the items
            return head
        shown = list(itertools.islice((n for n in items if states.get(n) in _NOTABLE), 5))
        return head + "".join(_row(view.task(n), now, tracebacks, item=True) for n in shown)
    shown = _notable_first(items, states, MAP_DRAWN)
    rows = "".join(_row(view.task(n), now, tracebacks, item=True) for n in shown)
    rest = len(items) - len(shown)
    if rest:
        rows += (f"<tr><td colspan='6' style='text-align:left'>… {rest} more items "
                 f"(<code>run.items({esc(repr(name))})</code> lists them all)</td></tr>")
    return head + (
        f"<tr class='nborch-items' data-map='{esc(name)}'><td colspan='6' style='text-align:left;padding:0'>"
        f"<details><summary>{len(items)} items: {esc(map_note(counts))}</summary>"
        f"<table class='nborch-table' style='margin-left:1.5em'><tbody>{rows}</tbody></table>"
        "</details></td></tr>"
    )


def task_table_html(
    view: RunView, *, limit: int = 60, now: float | None = None, tracebacks: bool = False,
    fold: bool | None = None,
) -> str:
    """The task table: state (cached and reused tasks marked), attempts, duration (the time
    so far for a running task, given ``now``), error (with its traceback in a fold when
    ``tracebacks``) and the task's captured output. Past ``limit`` rows, failed / running /
    retrying tasks come first. A mapped node is one row with its items' counts and a bar, its
    items below it (``fold``, the default with ``tracebacks``: in a fold; else only those that
    failed or run)."""
    fold = tracebacks if fold is None else fold
    states = view.states
    items = view.item_names() if view.maps else frozenset()
    every: Collection[str] = [n for n in states if n not in items] if items else states
    count = len(every)
    names = _notable_first(every, states, limit)
    hidden = count - len(names)
    mapped = view.mapped
    body = [_map_rows(view, n, now, tracebacks, fold) if n in mapped else _row(view.task(n), now, tracebacks)
            for n in names]
    if hidden:
        counts = view.counts()
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        body.append(f"<tr><td colspan='6' style='text-align:left'>… {hidden} more tasks (all: {esc(summary)})</td></tr>")
    return (
        "<table class='nborch-table'><thead><tr><th style='text-align:left'>task</th>"
        "<th style='text-align:left'>state</th><th>attempts</th><th>duration</th>"
        "<th style='text-align:left'>error</th><th style='text-align:left'>output</th></tr></thead><tbody>"
        + "".join(body) + "</tbody></table>"
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
