"""Text from a run or a workflow made safe to show: task names, exception messages, captured output.

A task name may hold any character. ``printable`` writes control characters as Python escapes
wherever text is drawn (DOT, SVG, HTML, Mermaid), where a raw one would be invalid, cut the
string, or vanish; ``esc`` and ``output_text`` escape markup too, so that an exception message
can never inject markup into a notebook.
"""

from __future__ import annotations

import html
import re

__all__ = ["esc", "output_text", "printable"]

# What must never reach DOT, SVG (XML 1.0), HTML or Mermaid raw: control characters (C0, DEL,
# C1), line and paragraph separators, lone surrogates (not encodable) and XML's two noncharacters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # terminal colour codes in captured output


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


def esc(text: str) -> str:
    """``text`` for HTML: markup escaped, control characters written as escapes (``printable``)."""
    return html.escape(printable(text))


def output_text(text: str) -> str:
    """Captured output for a ``<pre>``: colour codes dropped, other control characters (but
    tabs and line breaks) written as escapes."""
    return html.escape(printable(_ANSI.sub("", text), keep="\t\n\r"))
