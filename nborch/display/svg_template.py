"""``SvgTemplate``: a laid-out SVG whose nodes are recoloured and relabelled without Graphviz.

Every node of the DOT text carries ``id="task-<name>"`` (``group-<base>``, ``map-<name>``) and
``class="st-<state>"``, which Graphviz copies into the SVG. So a graph is laid out once per
shape (every node pending, placeholder notes: ``dot.layout_dot``), and then ``SvgTemplate.fill``
rewrites only node classes, colours, second lines and mapped nodes' progress bars, while
``state_css`` recolours the nodes by id from a small ``<style>`` block. Colours are also written
into the SVG itself, so a static copy (a saved notebook, GitHub, nbconvert) shows them where
``<style>`` blocks are stripped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from ..core.state import TaskState
from .looks import BAR_ORDER, BAR_TRACK, BORDER, COLORS, FAILED_BORDER, node_classes, node_colors

__all__ = ["SvgTemplate", "bar_svg", "state_css"]

S = TaskState

_NODE_G = re.compile(r'<g id="((?:task|group|map)&#45;[^"]*)" class="node [^"]*">(.*?)</g>', re.S)
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
_SHAPE = re.compile(r'<(?:path|polygon)[^>]* (?:d|points)="([^"]*)"')


def bar_svg(box: tuple[float, float, float, float], counts: Mapping[TaskState, int]) -> str:
    """SVG rects of a mapped node's progress bar at the bottom of its ``box`` (x0, y0, x1, y1):
    a white track, then a segment per state of its items, as wide as their share."""
    x0, _, x1, y1 = box
    left, width, top, height = x0 + 8, max(x1 - x0 - 16, 1.0), y1 - 8, 4.0
    total = sum(counts.values())
    out = [f'<rect class="nborch-map-bar" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
           f'height="{height:.1f}" rx="1.5" fill="{BAR_TRACK}" stroke="{BAR_TRACK}" stroke-width="0.8"/>']
    x = left
    for state in BAR_ORDER:
        n = counts.get(state, 0)
        if not n or not total:
            continue
        w = width * n / total
        out.append(f'<rect class="nborch-map-seg st-{state.value}" x="{x:.2f}" y="{top:.1f}" width="{w:.2f}" '
                   f'height="{height:.1f}" fill="{COLORS[state][0]}"/>')
        x += w
    return "".join(out)


class SvgTemplate:
    """A laid-out SVG whose node classes, colours and second lines can be rewritten without
    graphviz.

    ``fill(states, notes, marks)`` returns the SVG with ``class="node st-<state>"`` (plus
    ``nb-cached`` / ``nb-reused``), the colours of that look written into each node's shape
    and text, and every node's second line set; the layout (positions, sizes, edges) is the
    one graphviz made (from ``layout_dot``: every node drawn pending).
    """

    _COLORED = re.compile(f'(fill="{COLORS[S.PENDING][0]}" stroke="{BORDER}"|fill="{COLORS[S.PENDING][1]}")')

    def __init__(self, svg: str) -> None:
        self.parts: list[Any] = []  # str pieces, with (slot, id) pairs between them
        self.ids: set[str] = set()
        self.boxes: dict[str, tuple[float, float, float, float]] = {}  # mapped nodes' shapes
        pos = 0
        for m in _NODE_G.finditer(svg):
            nid = m.group(1).replace("&#45;", "-")
            self.ids.add(nid)
            if nid.startswith("map-"):
                shape = _SHAPE.search(m.group(2))
                numbers = [float(v) for v in _NUMBERS.findall(shape.group(1))] if shape else []
                if len(numbers) >= 4:
                    xs, ys = numbers[0::2], numbers[1::2]
                    self.boxes[nid] = (min(xs), min(ys), max(xs), max(ys))
            self.parts.append(svg[pos : m.start()] + f'<g id="{m.group(1)}" ')
            self.parts.append(("class", nid))
            body_start = m.start(2)
            body = m.group(2)
            first, last = body.find("<text"), body.rfind("<text")
            if first != last:  # two lines: the second one is the note
                open_end = body.index(">", last) + 1
                close = body.index("</text>", open_end)
                self.parts.append(">")
                self._colored(body[:open_end], nid)
                self.parts.append(("note", nid))
                pos = body_start + close
            else:
                self.parts.append(">")
                self._colored(body, nid)
                pos = m.end(2)
            if nid in self.boxes:  # its progress bar, drawn over the shape, under nothing
                self.parts.append(svg[pos : m.end(2)])
                self.parts.append(("bar", nid))
                pos = m.end(2)
        self.parts.append(svg[pos:])

    def _colored(self, text: str, nid: str) -> None:
        for i, piece in enumerate(self._COLORED.split(text)):
            if i % 2 == 0:
                if piece:
                    self.parts.append(piece)
            else:
                self.parts.append(("shape" if piece.startswith('fill="#e0') else "font", nid))

    def fill(
        self, states: dict[str, TaskState], notes: dict[str, str], marks: dict[str, str] | None = None,
        bars: Mapping[str, Mapping[TaskState, int]] | None = None,
    ) -> str:
        """The SVG with every node's state class, colours and second line set, and each mapped
        node's progress bar (``bars``: its items per state)."""
        looks: dict[str, tuple[str, str, str]] = {}
        for nid in self.ids:
            state = states.get(nid, S.PENDING)
            mark = marks.get(nid, "") if marks else ""
            fill, font, border = node_colors(state, mark)
            width = ' stroke-width="2"' if border == FAILED_BORDER else ""
            looks[nid] = (f'class="node {node_classes(state, mark)}"', f'fill="{fill}" stroke="{border}"{width}',
                          f'fill="{font}"')
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            slot, nid = part
            if slot == "note":
                out.append(html.escape(notes.get(nid, ""), quote=False))
            elif slot == "bar":
                out.append(bar_svg(self.boxes[nid], bars.get(nid, {}) if bars else {}))
            else:
                out.append(looks[nid][0 if slot == "class" else 1 if slot == "shape" else 2])
        return "".join(out)


def state_css(scope: str, states: dict[str, TaskState], marks: dict[str, str] | None = None) -> str:
    """CSS colouring each node of the SVG inside ``.<scope>`` by its state (or its mark),
    addressed by id.

    Swapping this (small) style block recolours a graph with no new layout and no new SVG.
    """
    by_look: dict[tuple[TaskState, str], list[str]] = {}
    for nid, state in states.items():
        mark = marks.get(nid, "") if marks else ""
        by_look.setdefault((state, mark), []).append(nid)
    rules = []
    for (state, mark), ids in by_look.items():
        fill, font, border = node_colors(state, mark)
        sel = ",".join(f"#{i}" for i in ids)
        rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{fill:{fill}}}")
        rules.append(f".{scope} :is({sel})>text{{fill:{font}}}")
        if border != BORDER:
            width = ";stroke-width:2" if state is S.FAILED and not mark else ""
            rules.append(f".{scope} :is({sel})>:is(path,polygon,ellipse){{stroke:{border}{width}}}")
    return "\n".join(rules)
