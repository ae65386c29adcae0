"""Pausing the cyclic GC while a run builds what lives as long as it (its graph, its tasks, a
map's items): such objects give the GC nothing to find, and collecting while they are made
rescans them again and again.

A pause is process-wide and counted (``GcPause``): runs in other threads, or overlapping in
one loop, pause and resume in any order, and the GC comes back on when the last pause ends,
if it was on when the first began. Each pause ends once, however often ``end`` is called, so
a caller can end it in a ``finally`` whatever happened before (a run that fails while it is set
up must not leave the GC off for the rest of the process)."""

from __future__ import annotations

import gc
import threading

__all__ = ["GcPause"]

_lock = threading.Lock()
_depth = 0  # pauses begun and not ended
_was_enabled = False  # whether the GC was on when the first of them began


class GcPause:
    """One pause of the cyclic GC: begun when made, ended by ``end()`` (or the ``with`` block)."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        global _depth, _was_enabled
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _depth += 1
        self.open = True

    def end(self) -> None:
        """End this pause (once; later calls do nothing)."""
        global _depth
        if not self.open:
            return
        self.open = False
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()

    def __enter__(self) -> GcPause:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
