"""``LiveLayout``: the live display's graph, laid out again whenever its shape changes.

A run's shape changes while it goes (child tasks appear, maps expand into items). The model of
the current shape (``GraphModel``) is made again when the graph grew; Graphviz lays it out in a
worker thread, one layout at a time, at most every ``interval`` (and never more often than five
times its last cost), and not at all for a shape laid out before in this process
(``svg.layout_svg``). At the end (``update(final=True)``) the layout is made synchronously, or the
one in flight is used if it is of the final shape. Without Graphviz (or when it fails) ``no_dot``
is set and the display shows the task list instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from ..core.clock import SystemClock
from ..core.graph import Graph
from .dot import layout_dot
from .graph_model import GraphModel, graph_model
from .svg import cached_layout, layout_svg
from .svg_template import SvgTemplate

__all__ = ["LiveLayout"]

log = logging.getLogger("nborch.display")
_monotonic = SystemClock.now  # the real clock, to time layouts (the run's may be fake)


def _render_timed(src: str) -> tuple[str | None, float]:
    start = _monotonic()
    svg = layout_svg(src)
    return svg, _monotonic() - start


class LiveLayout:
    """The model and the laid-out SVG template of a live run's graph.

    ``model``, ``template`` (None until laid out, or without Graphviz) and ``no_dot`` are what
    the display paints; ``count`` counts the layouts installed. ``fresh`` is set by each new
    layout and cleared by the display once it painted the SVG made from it. ``ready`` is called
    on ``loop`` when a layout made in the worker thread was installed.
    """

    def __init__(
        self, graph: Graph, *, collapse_over: int, interval: float, loop: asyncio.AbstractEventLoop | None,
        ready: Callable[[], None],
    ) -> None:
        self.graph, self.collapse_over, self.interval = graph, collapse_over, interval
        self.loop, self.ready = loop, ready
        self.model = GraphModel()
        self.template: SvgTemplate | None = None
        self.no_dot = False
        self.count = 0
        self.fresh = False
        self.finished = False  # update(final=True) was called: a late worker's layout is dropped
        self._model_n = -1
        self._src = ""  # the layout_dot of the model
        self._laid_src: str | None = None  # the layout_dot of the template
        self._job: tuple[str, Future[tuple[str | None, float]]] | None = None
        self._at = float("-inf")
        self._cost = 0.0

    def update(self, final: bool = False) -> float:
        """Lay the graph out again if its shape changed: in a worker thread, throttled, except
        without a loop and at the end (``final``), where it is synchronous. Returns how long to
        wait before asking again (a layout is due but throttled), else 0.0."""
        if final:
            self.finished = True
        if len(self.graph.specs) != self._model_n:
            self.model = graph_model(self.graph, self.collapse_over)
            self._model_n = len(self.graph.specs)
            self._src = layout_dot(self.model)
        if self.no_dot or self._src == self._laid_src:
            return 0.0
        if final:
            self._finish()
            return 0.0
        if self._job is not None:  # one at a time; its completion triggers another look
            return 0.0
        src = self._src
        cached = cached_layout(src)
        if cached is not None:  # a shape seen before in this process: no Graphviz, no thread
            self._install(src, cached, 0.0)
            return 0.0
        loop = self.loop
        if loop is None:
            return 0.0  # the final update lays it out
        wait = self._at + max(self.interval, 5 * self._cost) - loop.time()
        if wait > 0:  # shapes keep changing while child tasks appear: not one layout per change
            return wait
        self._at = loop.time()
        job: Future[tuple[str | None, float]] = Future()
        self._job = (src, job)

        def work() -> None:
            try:
                job.set_result(_render_timed(src))
            except BaseException as exc:  # delivered to whoever reads the job
                job.set_exception(exc)
            try:
                loop.call_soon_threadsafe(self._done, src, job)
            except RuntimeError:  # the loop closed: the run is over and the final update did its own layout
                pass

        # A thread of its own, not the loop's executor: the final update may block on this very job.
        threading.Thread(target=work, name="nborch-layout", daemon=True).start()
        return 0.0

    def _done(self, src: str, job: Future[tuple[str | None, float]]) -> None:
        if self._job is None or self._job[1] is not job or self.finished:
            return
        self._job = None
        try:
            svg, cost = job.result()
        except Exception:
            log.exception("Graphviz failed to lay out the graph; showing a task list instead")
            svg, cost = None, 0.0
        self._install(src, svg, cost)
        self.ready()

    def _finish(self) -> None:
        """At the end: use the layout in flight if it is of the final shape, else lay out now."""
        pending, self._job = self._job, None
        src = self._src
        if pending is not None and pending[0] == src:
            try:
                self._install(src, *pending[1].result())
                return
            except Exception:
                log.exception("Graphviz failed to lay out the graph")
        try:
            self._install(src, *_render_timed(src))
        except Exception:
            log.exception("Graphviz failed to lay out the graph; showing a task list instead")
            self._install(src, None, 0.0)

    def _install(self, src: str, svg: str | None, cost: float) -> None:
        self.count += 1
        self._cost = cost
        if svg is None:  # no Graphviz: the task list (with the hint) replaces the drawing
            self.no_dot = True
            self.template = None
            return
        self.template = SvgTemplate(svg)
        self._laid_src = src
        self.fresh = True
