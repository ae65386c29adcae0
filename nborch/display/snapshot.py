"""Static snapshots of a run: the HTML a saved notebook keeps, and how a past run is drawn.

A snapshot is plain HTML (no widget, no script): the status line, the progress bar, the graph
coloured by state (an SVG with its colours written in, held by an ``<img>`` as a data URI: the
HTML sanitizers of untrusted notebooks and of sites keep an image where they strip inline SVG
and style blocks), fitted to the output with a click to see it at full size, the per-task
progress bars and the task table with errors (tracebacks folded), durations and output. The
live display shows one while the run starts and ends on one (``update_display``), so a saved
notebook shows the finished run without a kernel, on GitHub and nbviewer and after
``nbconvert --to html``.

Every snapshot is wrapped in ``SNAPSHOT_OPEN`` ... ``SNAPSHOT_CLOSE`` comments, so one regex
blanks it for nbval (``notebooks/nbval_sanitize.cfg``); its text form starts "nborch run ".

``run_snapshot_html(run)`` draws a ``Run`` record, also one reloaded from the store
(``nborch.Run.load(run_id)``): the edges come from ``Run.upstreams`` and ``Run.parents``. It is
what ``Run._repr_html_`` shows once this module is imported (the notebook extension imports it):
it registers itself with ``nborch.record``, which never imports the display.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from typing import Any

from ..core import record
from ..core.record import Run, _fmt_seconds
from ..core.state import TaskState
from .dot import layout_dot
from .escaping import esc
from .graph_model import COLLAPSE_OVER, GraphModel, run_model
from .html import (
    graph_alt,
    header_html,
    model_list_html,
    progress_html,
    task_bars_html,
    zoom_css,
    zoom_checkbox,
    zoomable,
)
from .looks import node_looks
from .mapped_nodes import map_note
from .state import RunView
from .svg import layout_svg, svg_image
from .svg_template import SvgTemplate
from .task_table import map_duration, task_table_html

__all__ = [
    "SNAPSHOT_CLOSE", "SNAPSHOT_OPEN", "drawn_live", "new_scope", "run_snapshot_html", "snapshot_html",
    "snapshot_text",
    "starting_html", "starting_text",
]

SNAPSHOT_OPEN = "<!-- nborch-snapshot -->"
SNAPSHOT_CLOSE = "<!-- /nborch-snapshot -->"


def new_scope() -> str:
    """A random CSS class for one display: styles of other outputs in the page never match it."""
    return "nborch-" + uuid.uuid4().hex[:10]


def _wrap(scope: str, body: str, css: str = "") -> str:
    style = f"<style>{css}</style>" if css else ""
    return f"{SNAPSHOT_OPEN}<div class='nborch-snapshot {scope}'>{style}{body}</div>{SNAPSHOT_CLOSE}"


def graph_part(
    model: GraphModel, view: RunView, template: SvgTemplate | None, toggle: str, *, now: float | None = None,
    no_dot: bool = False, image: bool = False, looks: Any = None,
) -> str:
    """The graph as shown in a snapshot (``image``: the filled SVG as an ``<img>``, which
    survives HTML sanitizers) or the live display (inline SVG), zoomable by a click, or the
    task list when Graphviz is missing; "" while no layout is ready. ``looks``: the nodes'
    ``node_looks`` and bars, when the caller made them."""
    if template is None:
        return model_list_html(model, view) if no_dot else ""
    if looks is None:
        bars: dict[str, dict[TaskState, int]] = {}
        states, notes, marks = node_looks(model, view, now, bars)
    else:  # made by the caller already: (states, notes, marks, bars)
        states, notes, marks, bars = looks
    svg = template.fill(states, notes, marks, bars)
    if image:
        svg = svg_image(svg, graph_alt(view.states, view.states))
    return f"<div class='nborch-graph'>{zoomable(svg, toggle)}</div>"


def snapshot_html(
    view: RunView, model: GraphModel, template: SvgTemplate | None, *, scope: str | None = None,
    no_dot: bool = False, table_rows: int = 40, max_bars: int = 20,
) -> str:
    """The final state of a run as static HTML: status line, progress bar, graph, task bars,
    table (errors with their tracebacks folded; past ``table_rows`` tasks, those that did not
    succeed first, and a count of the rest)."""
    scope = scope or new_scope()
    toggle = f"{scope}-zoom"
    graph = graph_part(model, view, template, toggle, no_dot=no_dot, image=True)
    body = (
        header_html(view) + progress_html(view, final=True)
        + (zoom_checkbox(toggle) + graph if graph else "")
        + task_bars_html(view, limit=max_bars)
        + task_table_html(view, limit=table_rows, tracebacks=True)
    )
    return _wrap(scope, body, zoom_css(scope, toggle) if template is not None else "")


def starting_html(view: RunView, *, scope: str | None = None) -> str:
    """What a live display's output holds besides the widget while the run goes on: its status
    line at the start. A front end that cannot show the widget shows this; the run's end
    replaces both with the final ``snapshot_html``."""
    return _wrap(scope or new_scope(), header_html(view) + progress_html(view)
                 + "<p style='color:#757575;margin:2px 0'><i>running: the final state replaces this "
                   "when the run ends</i></p>")


def snapshot_text(view: RunView, *, limit: int = 60) -> str:
    """The text form of a snapshot (``text/plain``): a summary line, then a row per task."""
    counts = ", ".join(f"{n} {s.value}" for s, n in view.counts().items() if n) or "no tasks"
    took = f" in {_fmt_seconds(view.duration)}" if view.duration is not None else ""
    lines = [f"nborch run {view.run_id} {view.status}{took}: {counts}"]
    rows = [("task", "state", "attempts", "duration", "error")]
    items = view.item_names() if view.maps else frozenset()
    # a mapped node in one row (its items' counts), then its items that did not succeed
    shown = (n for n in view.states if n not in items or view.states[n] is not TaskState.SUCCEEDED)
    names = list(itertools.islice(shown, limit + 1))
    for name in names[:limit]:
        st = view.task(name)
        if name in view.mapped:
            size = len(view.maps.get(name, ()))
            rows.append((f"{name} (map, {size} items)", map_note(view.map_counts(name)), "-",
                         map_duration(st, None), st.error))
            continue
        mark = st.mark
        rows.append(("  " + st.name if name in items else st.name, st.state.value + (f" ({mark})" if mark else ""),
                     str(st.attempts or "-"), _fmt_seconds(st.duration), st.error))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append(("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]).rstrip())
    if len(names) > limit:
        lines.append(f"… {len(names) - limit + sum(1 for _ in shown)} more tasks")
    return "\n".join(lines)


def starting_text(view: RunView) -> str:
    """The text form of a live display while its run goes on."""
    return f"nborch run {view.run_id} {view.status}: {view.settled}/{view.total} tasks settled"


# Runs a live display drew, by run id: the execution count of the cell it drew them in
_drawn_live: dict[str, int | None] = {}


def _cell_count() -> int | None:
    """The running IPython cell's execution count (None outside IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "execution_count", None) if shell is not None else None


def drawn_live(run_id: str) -> None:
    """Say that a live display drew run ``run_id`` in the running cell (it ends on its snapshot):
    the run's own repr in that same cell (``nborch.run(...)`` as its last line) is then one
    line, not the same drawing twice."""
    _drawn_live[run_id] = _cell_count()
    while len(_drawn_live) > 64:
        del _drawn_live[next(iter(_drawn_live))]


def _drawn_above(run: Run) -> bool:
    count = _drawn_live.get(run.id, -1)
    return count is not None and count != -1 and count == _cell_count()


def run_snapshot_html(run: Run, *, collapse_over: int = COLLAPSE_OVER) -> str:
    """A ``Run`` record drawn as a snapshot: its graph coloured by the recorded states (from
    ``Run.upstreams``; a run recorded before edges were kept shows its tasks unconnected), the
    summary, the table with errors, tracebacks, attempts and durations. What ``%orch show
    RUN_ID`` and a ``Run`` (``nborch.Run.load(run_id)``) show in a notebook. In the cell
    whose live display just drew it (``drawn_live``), its status line alone, saying so."""
    view = RunView.from_run(run)
    if _drawn_above(run):
        note = ("<p style='color:#757575;margin:2px 0'><i>its graph and table are in the live display "
                "above</i></p>")
        return _wrap(new_scope(), header_html(view) + note)
    model = run_model(run, collapse_over)
    svg = layout_svg(layout_dot(model)) if model.nodes else None
    template = SvgTemplate(svg) if svg is not None else None
    html = snapshot_html(view, model, template, no_dot=svg is None and bool(model.nodes))
    if run.recorded_state in ("running", "crashed", "skipped"):
        note = {"running": "still running (as last recorded)", "crashed": "its process died before it ended",
                "skipped": "a schedule tick that did not run"}[run.recorded_state]
        html = html.replace("<div class='nborch-header'>", f"<div class='nborch-header'>[{esc(note)}] ", 1)
    return html


record.set_html_renderer(run_snapshot_html)
