"""``visualize(node, path)``: write a workflow's graph to ``.svg``, ``.png`` or ``.mmd`` by suffix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import DefinitionError, NborchError
from ..core.graph import build_graph
from .dot import NOTEBOOK_EXTRA, graph_dot
from .mermaid import graph_mermaid

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = ["SUFFIXES", "visualize"]

SUFFIXES = (".svg", ".png", ".mmd")


def visualize(node: Node, path: str | os.PathLike[str] | None = None) -> str:
    """Write ``node``'s graph to ``path`` and return the path; with no path, return Mermaid text.

    The suffix picks the format: ``.svg`` and ``.png`` are drawn by Graphviz (collapsed above
    200 tasks), ``.mmd`` is Mermaid text. Raises DefinitionError for any other suffix, and
    NborchError when an image is asked for but Graphviz's ``dot`` is not installed.
    """
    graph = build_graph(node)
    if path is None:
        return graph_mermaid(graph)
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        got = f"suffix {suffix!r}" if suffix else "no suffix"
        raise DefinitionError(
            f"visualize() writes .svg, .png or .mmd files, but {str(path)!r} has {got}. "
            "Use one of: " + ", ".join(SUFFIXES) + "."
        )
    if suffix == ".mmd":
        target.write_text(graph_mermaid(graph), encoding="utf-8")
        return str(path)
    try:
        import graphviz
        from graphviz.backend import ExecutableNotFound
    except ImportError as err:
        raise NborchError(
            f"writing {str(path)!r} needs the graphviz package, which comes with nborch's notebook extra: "
            f"{NOTEBOOK_EXTRA} (a .mmd file needs nothing)"
        ) from err
    try:
        data = graphviz.Source(graph_dot(graph)).pipe(format=suffix[1:])
    except ExecutableNotFound as err:
        raise NborchError(
            f"visualize({str(path)!r}) needs Graphviz's dot program on PATH: apt install graphviz, "
            "brew install graphviz or conda install graphviz (or write a .mmd file, which needs nothing)"
        ) from err
    target.write_bytes(data)
    return str(path)
