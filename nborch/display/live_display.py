"""``LiveDisplay``: the live run display for Jupyter (ipywidgets), a thin skin over a ``RunView``.

Layout of ``.widget`` (a VBox classed ``nborch-live`` and its random scope), each part classed
for styling and browser tests::

    HBox[ header HTML (.nborch-header-box)  |  Cancel Button (.nborch-cancel) ]
          the <style> block (node colours by state, zoom), the status line, the progress bar
    graph HTML (.nborch-graph-box)         the SVG, fitted to the output; a click zooms it
    table HTML (.nborch-table-box)         per-task progress bars, then the task table
    zoom HTML (.nborch-zoom-box, hidden)   the checkbox that holds the zoom (never rewritten)

Its life: the display shows nothing until the run has lasted ``show_after`` (0.25 s): a run
over by then shows its final snapshot only. Then the widget is displayed (with ``display_id``),
beside a starting snapshot for front ends that cannot render widgets; when the run ends, that
output is updated to the final snapshot (``snapshot.py``: text/html + text/plain, no widget),
and the widgets are closed. A saved notebook therefore holds the finished run as plain HTML.

How it stays cheap: an event is only appended to a list; the repaint folds the batch
(``RunView.apply_all``) at most every ``interval`` (0.1 s), and less often when repaints are
costly (at most ``budget``, 5%, of the time goes to them), and writes widget traits only (a
trait sends a message only when its value changed). While a task runs, a repaint comes at
least every ``tick`` (1 s), so its time so far keeps counting; while nothing runs and no event
comes, nothing is repainted. Recolouring rewrites the small style block; the SVG text (node
classes and second lines) is refreshed at most every ``svg_interval``; the graph is laid out
again only when its shape changed (child tasks), at most every ``layout_interval``
(``live_layout.py``). Runs of more than 200 tasks are drawn collapsed by task function. Six widgets share one layout and one
style model: ten comm channels per display.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.clock import SystemClock
from ..core.record import Run
from ..runtime.runner import RunHandle
from ..core.state import TaskState
from .graph_model import COLLAPSE_OVER
from .html import header_html, progress_html, task_bars_html, zoom_checkbox, zoom_css
from .live_layout import LiveLayout
from .looks import node_looks
from .snapshot import (
    drawn_live,
    graph_part,
    new_scope,
    snapshot_html,
    snapshot_text,
    starting_html,
    starting_text,
)
from .state import RunView
from .svg_template import state_css
from .task_table import task_table_html

if TYPE_CHECKING:
    import ipywidgets as w

__all__ = ["STOP_TEXT", "LiveDisplay", "Publisher"]

log = logging.getLogger("nborch.display")
_monotonic = SystemClock.now  # the real clock, to time repaints (the run's may be fake)

# A publisher shows a bundle: publish(bundle, display_id, update)
Publisher = Callable[[dict[str, Any], str, bool], None]

CANCEL_TIP = "Cancel the run: every task settles, then the display shows where it stopped"
STOP_TEXT = "Cancel: interrupt the kernel (■)"
STOP_TIP = (
    "This run blocks the cell, so the notebook cannot deliver a click to it: interrupt the kernel to "
    "cancel it (■ in the toolbar, or Kernel ▸ Interrupt Kernel). An awaited run (await dag.run_async()) "
    "can be cancelled from here."
)


def _layout_css(scope: str) -> str:
    return (
        f".{scope} .widget-hbox{{align-items:center;justify-content:space-between;gap:8px}}"
        f".{scope} .nborch-header-box{{flex:1 1 auto;min-width:0}}"
        f".{scope} .nborch-cancel{{width:auto;flex:0 0 auto}}"
        f".{scope} .widget-html-content{{width:100%}}"
    )


class LiveDisplay:
    """A run subscriber that shows the run live in a notebook: graph, progress, task table.

    Build it from the ``RunHandle`` a display factory receives; ``nborch`` then calls it with
    every event (on the run's loop thread) and ``close(run)`` at the end, which shows the final
    snapshot. ``publish`` shows bundles (default: in the running kernel's cell; a test passes a
    recorder); ``published`` keeps what was shown, ``snapshot`` the final HTML. ``repaints``
    and ``layouts`` count the work done, for tests and benchmarks.
    """

    shows_output = True  # task output goes into the table, not to the cell's stream
    # The RUNNING events of single-attempt tasks (what the bus reads when it subscribes us): they
    # cost a few µs a task, for nothing while the widget is not on screen. A runner whose handle
    # can say what runs (``running()``) and switch them on later (``listen_running()``) gets
    # them only from the showing on; without, from the start.
    wants_running = True

    def __init__(
        self,
        handle: RunHandle,
        *,
        collapse_over: int = COLLAPSE_OVER,
        interval: float = 0.1,
        tick: float = 1.0,
        show_after: float = 0.25,
        budget: float = 0.05,
        svg_interval: float = 0.5,
        layout_interval: float = 1.0,
        table_rows: int = 60,
        snapshot_rows: int = 40,
        max_bars: int = 20,
        publish: Publisher | None = None,
    ) -> None:
        import ipywidgets  # noqa: F401  # here, so that widget_factory can report a missing ipywidgets

        self.handle = handle
        self.graph = handle.graph
        self.view = RunView(handle.graph)
        self.view.run_id = handle.run_id
        self.clock = handle.options.get("clock") or SystemClock()
        self.collapse_over, self.interval, self.tick, self.show_after = collapse_over, interval, tick, show_after
        self.budget, self.svg_interval, self.layout_interval = budget, svg_interval, layout_interval
        self.table_rows, self.snapshot_rows, self.max_bars = table_rows, snapshot_rows, max_bars
        self.publish: Publisher = publish if publish is not None else (lambda bundle, display_id, update: None)
        self.published: list[tuple[str, dict[str, Any]]] = []  # ("display" | "update", bundle)
        self.snapshot: str | None = None
        # A random scope: CSS from older outputs in the same page (earlier sessions) must not match.
        self.scope = new_scope()
        self.toggle = f"{self.scope}-zoom"
        self.display_id = uuid.uuid4().hex
        self.repaints = 0
        self.closed = False  # no more live repaints (the run ended, or repainting failed)
        self.finished = False  # close(run) was called
        self.shown = False  # the widget is on screen
        self.widget: w.VBox | None = None
        self._events: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # a repaint is already due within ``interval``
        self._dirty = False  # something to paint that no event announced (a layout, a late SVG)
        self._cost = 0.0  # the last repaint's, in seconds
        self._painted_at = float("-inf")  # loop time of the last repaint
        self._svg_at = float("-inf")  # loop time the graph's SVG text last changed
        self._late_running = callable(getattr(handle, "running", None)) and callable(
            getattr(handle, "listen_running", None)
        )
        if self._late_running:
            self.wants_running = False
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop: close() shows the final state
            self._loop = None
        # the graph's model and layout are made when the widget shows (or at the end): a run
        # over by then pays for them once
        self._layout = LiveLayout(handle.graph, collapse_over=collapse_over, interval=layout_interval,
                                  loop=self._loop, ready=self._layout_ready)
        if self._loop is not None:
            if show_after <= 0:
                self._show()
            else:
                self._timer = self._loop.call_later(show_after, self._tick)
                self._soon = True  # events wait for the first showing

    # -- the widgets -------------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as w

        HTMLStyle = w.widgets.widget_string.HTMLStyle  # not re-exported by ipywidgets
        # One layout and one style model for every part (each would be a comm channel of its
        # own); the arrangement is CSS in the header's style block.
        layout, style = w.Layout(), HTMLStyle()
        self.header = w.HTML(layout=layout, style=style, _dom_classes=("nborch-header-box",))
        polls = getattr(self.handle, "polls_ui", True)
        self.cancel_button = w.Button(
            description="Cancel" if polls else STOP_TEXT, icon="stop", button_style="warning" if polls else "",
            tooltip=CANCEL_TIP if polls else STOP_TIP, disabled=not polls, layout=layout,
            _dom_classes=("nborch-cancel",) if polls else ("nborch-cancel", "nborch-cancel-stop"),
        )
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.graph_html = w.HTML(layout=layout, style=style, _dom_classes=("nborch-graph-box",))
        self.table = w.HTML(layout=layout, style=style, _dom_classes=("nborch-table-box",))
        self.zoom = w.HTML(zoom_checkbox(self.toggle), layout=layout, style=style, _dom_classes=("nborch-zoom-box",))
        top = w.HBox([self.header, self.cancel_button], layout=layout)
        self.widget = w.VBox([top, self.graph_html, self.table, self.zoom], layout=layout,
                             _dom_classes=("nborch-live", self.scope))
        self.model_id = self.widget.model_id  # kept: a closed widget has none
        self._parts = (self.widget, top, self.header, self.cancel_button, self.graph_html, self.table, self.zoom,
                       layout, style, self.cancel_button.style)

    def _show(self) -> None:
        """Make the widgets, paint them and display them (with the starting snapshot beside)."""
        self._build()
        self.shown = True
        if self._late_running:  # what runs now, and from now on every start
            self.view.apply_all(self._take())
            self.view.running(self.handle.running())  # type: ignore[attr-defined]
            self.handle.listen_running()  # type: ignore[attr-defined]
        self._repaint()
        assert self.widget is not None
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = starting_html(self.view, scope=self.scope)
        bundle["text/plain"] = starting_text(self.view)
        self._publish(bundle, update=False)

    def _publish(self, bundle: dict[str, Any], *, update: bool) -> None:
        self.published.append(("update" if update else "display", bundle))
        self.publish(bundle, self.display_id, update)

    # -- events ------------------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        """Keep ``event`` for the next repaint, which comes later (coalesced), on the run's loop."""
        self._events.append(event)
        if not self._soon and not self.closed:
            self._schedule(max(self.interval, self._cost / self.budget))

    def _schedule(self, delay: float) -> None:
        loop = self._loop
        if loop is None or self.closed:
            return
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._tick)
        self._soon = delay <= max(self.interval, self._cost / self.budget)

    def _tick(self) -> None:
        self._timer = None
        self._soon = False
        if self.closed:
            return
        try:
            if not self.shown:
                self._show()
            else:
                changed = self.view.apply_all(self._take())
                if len(self.graph.specs) > len(self.view.states):  # child tasks were added
                    changed = self.view.sync(self.graph) or changed
                ticking = self.view.active and self._loop is not None \
                    and self._loop.time() - self._painted_at >= self.tick * 0.9
                if changed or ticking or self._dirty:
                    self._repaint()
            if self.view.active:  # its time so far keeps counting
                self._schedule(self.tick)
        except Exception:  # a display must never break a run, nor spam the loop's error log
            log.exception("nborch live display failed to repaint; it stops updating")
            self.closed = True

    def _take(self) -> list[Any]:
        events, self._events = self._events, []
        return events

    def cancel(self) -> None:
        """Cancel the run (what the Cancel button does); every task settles, then it closes."""
        if self.widget is not None:
            self.cancel_button.disabled = True
            self.cancel_button.description = "Cancelling…"
        self.handle.cancel()

    def close(self, run: Run) -> None:
        """Show the final snapshot (the output's only content from now on); close the widgets."""
        if self.finished:
            return
        self.finished = self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        view = self.view
        view.apply_all(self._take())
        view.finish(run)
        layout = self._layout
        layout.update(final=True)
        self.snapshot = snapshot_html(view, layout.model, layout.template, scope=self.scope, no_dot=layout.no_dot,
                                      table_rows=self.snapshot_rows, max_bars=self.max_bars)
        self.repaints += 1
        self._publish({"text/html": self.snapshot, "text/plain": snapshot_text(view)}, update=self.shown)
        drawn_live(run.id)
        if self.widget is not None:
            for part in self._parts:  # the snapshot replaced them: free their comm channels
                part.close()

    # -- layout and painting ----------------------------------------------------------------------------------

    def _repaint(self) -> None:
        started = _monotonic()
        self.repaints += 1
        self._dirty = False
        view = self.view
        view.apply_all(self._take())
        now = self.clock.now()
        wait = self._layout.update()
        if wait:
            self._schedule(wait)
        css = _layout_css(self.scope) + zoom_css(self.scope, self.toggle)
        looks = None
        if self._layout.template is not None:  # each node's look, once: the style block and the SVG share it
            bars: dict[str, dict[TaskState, int]] = {}
            states, notes, marks = node_looks(self._layout.model, view, now, bars)
            looks = (states, notes, marks, bars)
            css += "\n" + state_css(self.scope, states, marks)
        self.header.value = f"<style>{css}</style>" + header_html(view, now=now) + progress_html(view)
        self._paint_graph(now, looks)
        self.table.value = task_bars_html(view, limit=self.max_bars) + task_table_html(
            view, limit=self.table_rows, now=now
        )
        if self._loop is not None:
            self._painted_at = self._loop.time()
        self._cost = _monotonic() - started

    def _layout_ready(self) -> None:
        """A layout made in the worker thread was installed: paint it."""
        if self.shown:
            self._dirty = True
            self._schedule(0.0)

    def _paint_graph(self, now: float, looks: Any = None) -> None:
        layout = self._layout
        if layout.template is None and not layout.no_dot:
            if not self.graph_html.value:
                self.graph_html.value = "<i style='color:#757575'>drawing the graph…</i>"
            return
        t = self._loop.time() if self._loop is not None else 0.0
        wait = float("-inf") if layout.fresh else self._svg_at + self.svg_interval - t
        if wait > 0 and self._loop is not None:  # the colours are right already (style block): the
            self._dirty = True  # node texts follow shortly, and the SVG is not even made now
            self._schedule(wait)
            return
        value = graph_part(layout.model, self.view, layout.template, self.toggle, now=now, no_dot=layout.no_dot,
                           looks=looks)
        if value != self.graph_html.value:
            self.graph_html.value = value
            self._svg_at = t
            layout.fresh = False

    @property
    def layouts(self) -> int:
        """How many layouts were installed (for tests and benchmarks)."""
        return self._layout.count

    # -- showing it --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<nborch live display: {self.view.settled}/{self.view.total} tasks settled, {self.view.status}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self.snapshot is not None:
            return {"text/html": self.snapshot, "text/plain": snapshot_text(self.view)}
        if self.widget is None:
            self._build()
            self._repaint()
        assert self.widget is not None
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = starting_html(self.view, scope=self.scope)
        bundle["text/plain"] = repr(self)  # what front ends without widgets (and nbval) see
        return bundle
