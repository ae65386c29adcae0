"""SVG from DOT text: Graphviz's layout (``render_svg``), kept per graph shape (``layout_svg``),
fitted to its output (``fit_style``), and as an image that survives HTML sanitizers (``svg_image``).

Graphviz runs only here, and only once per text for the last ``LAYOUTS_KEPT`` texts of a
process: a graph run again (the usual notebook loop) is drawn at once. Inline SVG carries
``FIT_STYLE``: it shrinks to the output's width (and to 70% of the window's height), never past it.
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict

__all__ = [
    "FIT_STYLE", "LAYOUTS_KEPT", "cached_layout", "fit_style", "forget_layouts", "layout_svg", "render_svg",
    "svg_image", "svg_size",
]

# Inline SVG fits its output: never wider than it, nor taller than most of the window
# (the aspect ratio kept); ``html.zoomable`` adds a click to see it at full size. A tall graph
# (a fan of many tasks, laid out left to right) is not shrunk by its height below
# ``MIN_SCALE`` of its size, up to ``TALL_LIMIT`` pixels: its labels stay legible.
FIT_STYLE = "max-width:100%;max-height:70vh;height:auto"
MIN_SCALE = 0.6
TALL_LIMIT = 1600
_SIZE = re.compile(r' width="([\d.]+)pt" height="([\d.]+)pt"')


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
