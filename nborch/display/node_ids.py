"""The ids of drawn nodes in SVG and HTML: ``task-<name>``, ``group-<function>``, ``map-<name>``.

A task name may hold any character; its id encodes the unsafe ones, so that it is safe in SVG,
HTML and CSS selectors, and distinct for distinct names. Graphviz copies the ids from the DOT
text into the SVG, where the live display and the style blocks find each node by its id.
"""

from __future__ import annotations

import re

__all__ = ["group_id", "map_id", "node_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _sanitize(name: str) -> str:
    # Injective: "-" never survives as itself, so "a[2]" and "a-5b-2-5d-" cannot collide.
    return _UNSAFE.sub(lambda m: f"-{ord(m.group()):x}-", name)


def node_id(name: str) -> str:
    """The SVG/HTML id of a task's node: ``task-`` + the name with unsafe characters encoded."""
    return "task-" + _sanitize(name)


def group_id(base: str) -> str:
    """The SVG/HTML id of a collapsed graph's node for task function ``base``."""
    return "group-" + _sanitize(base)


def map_id(name: str) -> str:
    """The SVG/HTML id of mapped node ``name``'s node: ``map-`` + the name, encoded."""
    return "map-" + _sanitize(name)
