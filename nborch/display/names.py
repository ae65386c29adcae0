"""Task names where they are drawn: printable text, and the ids of their nodes in SVG and HTML.

A task name may hold any character. ``printable`` writes control characters as Python escapes
wherever a name is shown (DOT, SVG, HTML, Mermaid); ``node_id``, ``group_id`` and ``map_id``
encode a name into an id that is safe in SVG, HTML and CSS selectors, and distinct for
distinct names.
"""

from __future__ import annotations

import re

__all__ = ["group_id", "map_id", "node_id", "printable"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# What must never reach DOT, SVG (XML 1.0), HTML or Mermaid raw: control characters (C0, DEL,
# C1), line and paragraph separators, lone surrogates (not encodable) and XML's two noncharacters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, keep: str = "") -> str:
    """``text`` with control characters (NUL, ESC, newlines...) written as Python escapes
    (``\\x00``, ``\\x1b``, ``\\n``), except those in ``keep``: how a task name is shown in DOT, SVG,
    HTML and Mermaid, where a raw one would be invalid, cut the string, or vanish."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


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
