"""``LiveDisplay``: the live run display for Jupyter (ipywidgets), a thin skin over a ``RunView``.

Layout of ``.widget`` (a VBox), each part classed for styling and browser tests::

    HBox[ header HTML (.nborch-header)  |  Cancel Button (.nborch-cancel) ]
    style HTML (.nborch-style, hidden)     the <style> block colouring graph nodes by state
    graph HTML (.nborch-graph)             the SVG, laid out once per graph shape
    IntProgress (.nborch-progress)         tasks settled / total
    VBox (.nborch-task-bars)               one bar per task that reports nborch.progress (once one does)
    table HTML (.nborch-table)             state, attempts, duration, error, output per task

How it stays cheap: events only fold into the view and arm one timer; the repaint runs at
most every ``interval`` (0.1 s) on the run's loop, and writes widget traits only. Recolouring
rewrites the small style block; the SVG text (node classes and second lines) is refreshed at
most every ``svg_interval``; graphviz runs only when the graph's shape changed (child tasks),
in a worker thread, at most every ``layout_interval`` (longer if layouts are slow). Runs of
more than 200 tasks are drawn collapsed by task function.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import sys
import threading
import uuid
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..clock import SystemClock
from ..record import Run
from ..runner import RunHandle
from ..state import TaskState
from .dot import (
    COLLAPSE_OVER,
    NOTEBOOK_EXTRA,
    SvgTemplate,
    graph_model,
    layout_dot,
    node_looks,
    printable,
    render_svg,
    state_css,
)
from .html import header_html, task_list_html, task_table_html
from .state import RunView

if TYPE_CHECKING:
    import ipywidgets as w

__all__ = ["LiveDisplay", "widget_factory"]

log = logging.getLogger("nborch.display")
_monotonic = SystemClock.now  # the real clock, to time layouts (the run's clock may be fake)

_BAR_STYLE = {TaskState.SUCCEEDED: "success", TaskState.FAILED: "danger", TaskState.CANCELLED: "warning",
              TaskState.UPSTREAM_FAILED: "warning"}


def _render_timed(src: str) -> tuple[str | None, float]:
    start = _monotonic()
    svg = render_svg(src)
    return svg, _monotonic() - start


class LiveDisplay:
    """A run subscriber that shows the run live in a notebook: graph, progress, task table.

    Build it from the ``RunHandle`` a display factory receives; ``nborch`` then calls it with
    every event (on the run's loop thread) and ``close(run)`` at the end, which paints the
    final states. ``repaints`` and ``layouts`` count the work done, for tests and benchmarks.
    """

    shows_output = True  # task output goes into the table, not to the cell's stream

    def __init__(
        self,
        handle: RunHandle,
        *,
        collapse_over: int = COLLAPSE_OVER,
        interval: float = 0.1,
        svg_interval: float = 0.5,
        layout_interval: float = 1.0,
        table_rows: int = 60,
        max_bars: int = 20,
    ) -> None:
        import ipywidgets as w  # here, so that widget_factory can report a missing ipywidgets

        self._w = w
        self.handle = handle
        self.graph = handle.graph
        self.view = RunView(handle.graph)
        self.view.run_id = handle.run_id
        self.clock = handle.options.get("clock") or SystemClock()
        self.collapse_over, self.interval, self.svg_interval = collapse_over, interval, svg_interval
        self.layout_interval, self.table_rows, self.max_bars = layout_interval, table_rows, max_bars
        # A random scope: CSS from older outputs in the same page (earlier sessions) must not match.
        self.scope = "nborch-" + uuid.uuid4().hex[:10]
        self.repaints = 0
        self.layouts = 0
        self.closed = False  # no more live repaints (the run ended, or repainting failed)
        self.finished = False  # close(run) was called
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # a repaint is already due within ``interval``
        self._model = graph_model(self.graph, collapse_over)
        self._model_n = len(self.graph.specs)
        self._model_src = layout_dot(self._model)
        self._laid_src: str | None = None  # the layout_dot of the SVG shown
        self._template: SvgTemplate | None = None
        self._no_dot = False
        self._layout_job: tuple[str, Future[tuple[str | None, float]]] | None = None
        self._layout_at = float("-inf")
        self._layout_cost = 0.0
        self._svg_at = float("-inf")
        self._bars: dict[str, tuple[w.HBox, w.IntProgress, w.HTML]] = {}

        self.header = w.HTML()
        self.header.add_class("nborch-header")
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning",
                                      tooltip="Cancel the run (an awaited run; for a blocking one use Stop)")
        self.cancel_button.add_class("nborch-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.style = w.HTML(layout=w.Layout(display="none"))
        self.style.add_class("nborch-style")
        self.graph_html = w.HTML("<i>drawing the graph…</i>")
        self.graph_html.add_class("nborch-graph")
        self.progress = w.IntProgress(value=0, min=0, max=max(len(self.view), 0), layout=w.Layout(width="100%"))
        self.progress.add_class("nborch-progress")
        self.task_bars: w.VBox | None = None  # made when a task first reports progress
        self.table = w.HTML()
        self.table.add_class("nborch-table")
        top = w.HBox([self.header, self.cancel_button], layout=w.Layout(align_items="center",
                                                                        justify_content="space-between"))
        self.widget = w.VBox([top, self.style, self.graph_html, self.progress, self.table])
        self.widget.add_class("nborch-live")
        self._layout()
        self._repaint()

    # -- events ------------------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        """Fold ``event`` in; the repaint comes later (coalesced), on the run's loop."""
        if self.view.apply(event) and not self._soon and not self.closed:
            self._schedule(self.interval)

    def _schedule(self, delay: float) -> None:
        if self.closed:
            return
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside a loop: close() paints the final state
                return
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._tick)
        self._soon = delay <= self.interval  # a later timer (a throttled layout) must not hold events back

    def _tick(self) -> None:
        self._timer = None
        self._soon = False
        if self.closed:
            return
        try:
            self._repaint()
        except Exception:  # a display must never break a run, nor spam the loop's error log
            log.exception("nborch live display failed to repaint; it stops updating")
            self.closed = True

    def cancel(self) -> None:
        """Cancel the run (what the Cancel button does); every task settles, then it closes."""
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        self.handle.cancel()

    def close(self, run: Run) -> None:
        """Paint the final states from the ``Run`` record; no updates after this."""
        if self.finished:
            return
        self.finished = self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.view.finish(run)
        self._repaint(final=True)
        ending = {TaskState.SUCCEEDED: "success", TaskState.CANCELLED: "warning"}
        self.progress.bar_style = ending.get(self.view.run_state, "danger")  # type: ignore[arg-type]
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancel"
        self.cancel_button.layout.visibility = "hidden"

    # -- layout ------------------------------------------------------------------------------------

    def _layout(self, final: bool = False) -> None:
        """Lay the graph out again if its shape changed: in a worker thread, throttled,
        except at the start without a loop and at the end (``final``), where it is synchronous."""
        if len(self.graph.specs) != self._model_n:
            self._model = graph_model(self.graph, self.collapse_over)
            self._model_n = len(self.graph.specs)
            self._model_src = layout_dot(self._model)
        if self._no_dot or self._model_src == self._laid_src:
            return
        if final:
            self._finish_layout()
            return
        if self._layout_job is not None:  # one at a time; its completion triggers another look
            return
        src = self._model_src
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._install(src, *_render_timed(src))
            return
        wait = self._layout_at + max(self.layout_interval, 5 * self._layout_cost) - loop.time()
        if wait > 0:  # shapes keep changing while child tasks appear: not one layout per change
            self._schedule(wait)
            return
        self._loop = loop
        self._layout_at = loop.time()
        job: Future[tuple[str | None, float]] = Future()
        self._layout_job = (src, job)

        def work() -> None:
            try:
                job.set_result(_render_timed(src))
            except BaseException as exc:  # delivered to whoever reads the job
                job.set_exception(exc)
            try:
                loop.call_soon_threadsafe(self._layout_done, src, job)
            except RuntimeError:  # the loop closed: the run is over and close() did its own layout
                pass

        # A thread of its own, not the loop's executor: close() may block on this very job.
        threading.Thread(target=work, name="nborch-layout", daemon=True).start()

    def _layout_done(self, src: str, job: Future[tuple[str | None, float]]) -> None:
        if self._layout_job is None or self._layout_job[1] is not job or self.finished:
            return
        self._layout_job = None
        try:
            svg, cost = job.result()
        except Exception:
            log.exception("Graphviz failed to lay out the graph; showing a task list instead")
            svg, cost = None, 0.0
        self._install(src, svg, cost)
        self._schedule(0.0)

    def _finish_layout(self) -> None:
        """At the end: use the layout in flight if it is of the final shape, else lay out now."""
        pending, self._layout_job = self._layout_job, None
        src = self._model_src
        if pending is not None and pending[0] == src:
            try:
                self._install(src, *pending[1].result())
                return
            except Exception:
                log.exception("Graphviz failed to lay out the graph")
        self._install(src, *_render_timed(src))

    def _install(self, src: str, svg: str | None, cost: float) -> None:
        self.layouts += 1
        self._layout_cost = cost
        if svg is None:  # no Graphviz: the task list (with the hint) replaces the drawing
            self._no_dot = True
            self._template = None
            return
        self._template = SvgTemplate(svg)
        self._laid_src = src
        self._svg_at = float("-inf")

    # -- painting ----------------------------------------------------------------------------------

    def _repaint(self, final: bool = False) -> None:
        self.repaints += 1
        view = self.view
        now = self.clock.now()
        self._layout(final)
        self.header.value = header_html(view, now=None if final else now)
        total = view.total
        if self.progress.max != total:
            self.progress.max = total
        self.progress.value = min(view.settled, total)
        self._paint_graph(final)
        self._paint_bars()
        self.table.value = task_table_html(view, limit=self.table_rows, now=now)

    def _paint_graph(self, final: bool) -> None:
        view = self.view
        if self._no_dot:
            self.graph_html.value = task_list_html(self.graph, view, collapse_over=self.collapse_over)
            return
        if self._template is None:
            return
        states, notes = node_looks(self._model, view)
        self.style.value = (
            f"<style>.{self.scope}{{overflow:auto}}\n{state_css(self.scope, states)}</style>"
        )
        svg = self._template.fill(states, notes)
        value = f"<div class='{self.scope}'>{svg}</div>"
        if value == self.graph_html.value:
            return
        t = self._loop.time() if self._loop is not None else 0.0
        wait = self._svg_at + self.svg_interval - t
        if final or wait <= 0 or self._loop is None:
            self.graph_html.value = value
            self._svg_at = t
        else:  # the colours are already right (style block); the node texts follow shortly
            self._schedule(wait)

    def _paint_bars(self) -> None:
        view = self.view
        names = view.progressing
        if not names:
            return
        w = self._w
        tasks = view.tasks
        active = [n for n in names if not tasks[n].state.is_final][: self.max_bars]
        recent = [n for n in reversed(names) if tasks[n].state.is_final][: self.max_bars - len(active)]
        shown = set(active) | set(recent)
        for name in [n for n in self._bars if n not in shown]:  # older finished bars make room
            box = self._bars.pop(name)[0]
            for widget in (*box.children, box):
                widget.close()
        for name in [n for n in names if n in shown]:
            st = tasks[name]
            parts = self._bars.get(name)
            if parts is None:
                label = w.HTML(f"<code>{html.escape(printable(name))}</code>", layout=w.Layout(width="30%"))
                bar = w.IntProgress(min=0, max=1, layout=w.Layout(flex="1"))
                bar.add_class("nborch-task-progress")
                text = w.HTML(layout=w.Layout(width="8em"))
                parts = self._bars[name] = (w.HBox([label, bar, text]), bar, text)
            _, bar, text = parts
            done = st.done or 0
            top = st.total if st.total else max(done, 1)
            if bar.max != top:
                bar.max = top
            bar.value = min(done, top)
            bar.bar_style = _BAR_STYLE.get(st.state, "")
            text.value = f"{done}/{st.total}" if st.total else f"{done}"
        boxes = tuple(self._bars[n][0] for n in names if n in self._bars)
        if self.task_bars is None:
            self.task_bars = w.VBox(boxes)
            self.task_bars.add_class("nborch-task-bars")
            children = list(self.widget.children)
            children.insert(children.index(self.progress) + 1, self.task_bars)
            self.widget.children = tuple(children)
        elif boxes != self.task_bars.children:
            self.task_bars.children = boxes

    # -- showing it --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<nborch live display: {self.view.settled}/{self.view.total} tasks settled, {self.view.status}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)  # what front ends without widgets (and nbval) see
        return bundle


@functools.cache
def _warn_no_ipywidgets() -> None:
    """Say once per process that the live display needs ipywidgets."""
    print(
        "nborch: the live display needs ipywidgets, which comes with nborch's notebook extra: "
        f"{NOTEBOOK_EXTRA}; showing console progress instead",
        file=sys.stderr, flush=True,
    )


def widget_factory(handle: RunHandle) -> Any:
    """A display factory for ``nborch.register_display``: inside an IPython kernel, show and
    return a ``LiveDisplay``; elsewhere (a terminal IPython, a script) None. In a kernel without
    ipywidgets: console progress, after saying once what to install."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from rich.console import Console

        from .console import ConsoleProgress

        _warn_no_ipywidgets()
        # plain text on the cell's stderr: rich's own Jupyter output would need ipywidgets too
        return ConsoleProgress(handle.graph, console=Console(stderr=True, force_jupyter=False))
    live = LiveDisplay(handle)
    display(live)
    return live
