"""Graph -> Mermaid flowchart text (``flowchart TD``), for Markdown cells, docs and ``.mmd`` files.

Ids are the task names made safe (letters, digits, ``_``; Mermaid keywords such as ``end``
and names starting with a digit get a ``t_`` prefix; clashes a ``_2`` suffix); the real name goes in the quoted label, with
every character that Mermaid or HTML would interpret written as an entity code (``#60;``).
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from ..core.graph import Graph, build_graph
from ..core.mapping import MapTask
from .graph_model import graph_model
from .looks import COLORS, node_looks
from .mapped_nodes import map_counts, text_bar
from .escaping import printable
from .state import RunView

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = ["graph_mermaid", "node_mermaid"]

_RESERVED = frozenset({"end", "graph", "subgraph", "flowchart", "style", "class", "classdef", "click",
                       "linkstyle", "direction", "default", "call", "href"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_LABEL_UNSAFE = re.compile(r'[<>"&#`\\\[\]{}()|;]')


def _label(name: str) -> str:
    """A quoted Mermaid label showing ``name`` literally (nothing in it is markup)."""
    name = printable(name)  # a newline or NUL would end the label, or vanish
    return '"' + _LABEL_UNSAFE.sub(lambda m: f"#{ord(m.group())};", name) + '"'


def _ids(names: list[str]) -> dict[str, str]:
    """Readable, unique, safe Mermaid ids for ``names``, stable in their order."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = _UNSAFE.sub("_", name) or "task"
        if base.lower() in _RESERVED or base[0].isdigit():
            base = "t_" + base
        candidate, i = base, 2
        while candidate in used:
            candidate, i = f"{base}_{i}", i + 1
        used.add(candidate)
        out[name] = candidate
    return out


def graph_mermaid(graph: Graph, view: RunView | None = None) -> str:
    """Mermaid ``flowchart TD`` text for ``graph``: a node per task, an arrow per dependency, a
    dotted arrow from a parent task to each child task it called; with a ``view``, nodes get
    classes (``st_failed``...) coloured like the live display. A mapped node is one node
    ("fetch" over "map", or with a view its items' counts and a text bar: "37 ✓ 2 ✗ 61 …" over
    "▰▰▰▱▱▱"), with dotted arrows to its items when it has at most ``MAP_DRAWN``."""
    if any(type(spec.task) is MapTask for spec in list(graph.specs.values())):
        return _mapped_mermaid(graph, view)
    specs = graph.specs
    ids = _ids(list(specs))
    lines = ["flowchart TD"]
    for name in specs:
        lines.append(f"    {ids[name]}[{_label(name)}]")
    for name, spec in specs.items():
        for up in spec.up:
            if up.name in ids:
                lines.append(f"    {ids[up.name]} --> {ids[name]}")
        if spec.parent is not None and spec.parent in ids:
            lines.append(f"    {ids[spec.parent]} -.-> {ids[name]}")
    if view is not None:
        by_state: dict[str, list[str]] = {}
        for name in specs:
            state = view.states.get(name)
            if state is not None:
                by_state.setdefault(state.value, []).append(ids[name])
        for state, (fill, font) in COLORS.items():
            if state.value in by_state:
                lines.append(f"    classDef st_{state.value} fill:{fill},color:{font}")
                lines.append(f"    class {','.join(by_state[state.value])} st_{state.value}")
    return "\n".join(lines) + "\n"


def _mapped_mermaid(graph: Graph, view: RunView | None) -> str:
    model = graph_model(graph, collapse_over=sys.maxsize)
    ids = _ids([n.key for n in model.nodes.values()])
    by_id = {nid: ids[n.key] for nid, n in model.nodes.items()}
    states, notes, _ = node_looks(model, view)
    lines = ["flowchart TD"]
    for nid, node in model.nodes.items():
        label = _label(node.key)
        if node.map:
            counts = map_counts(node.members, view.states) if view is not None else {}
            extra = [notes[nid]] + ([text_bar(counts)] if view is not None and node.members else [])
            label = label[:-1] + "".join("<br/>" + _label(t)[1:-1] for t in extra) + '"'
        lines.append(f"    {by_id[nid]}[{label}]")
    for up, down, dashed in model.edges:
        lines.append(f"    {by_id[up]} {'-.->' if dashed else '-->'} {by_id[down]}")
    if view is not None:
        by_state: dict[str, list[str]] = {}
        for nid, state in states.items():
            by_state.setdefault(state.value, []).append(by_id[nid])
        for state, (fill, font) in COLORS.items():
            if state.value in by_state:
                lines.append(f"    classDef st_{state.value} fill:{fill},color:{font}")
                lines.append(f"    class {','.join(by_state[state.value])} st_{state.value}")
    return "\n".join(lines) + "\n"


def node_mermaid(node: Node) -> str:
    """``node``'s workflow as Mermaid text (what ``Node.to_mermaid()`` returns)."""
    return graph_mermaid(build_graph(node))
