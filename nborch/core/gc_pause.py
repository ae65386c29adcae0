"""Keeping a run's long-lived objects out of the cyclic GC's way. ``GcPause`` pauses the GC
while a run builds what lives as long as it (its graph, its tasks, a map's items): such
objects give the GC nothing to find, and collecting while they are made rescans them again
and again. ``Freezer`` freezes a big run's objects out of the GC's sight while the run goes on.

A pause is process-wide and counted (``GcPause``): runs in other threads, or overlapping in
one loop, pause and resume in any order, and the GC comes back on when the last pause ends,
if it was on when the first began. Each pause ends once, however often ``end`` is called, so
a caller can end it in a ``finally`` whatever happened before (a run that fails while it is set
up must not leave the GC off for the rest of the process)."""

from __future__ import annotations

import gc
import threading

__all__ = ["FREEZE_AT", "FROZEN_AT_START", "Freezer", "GcPause"]

# Tasks added to a run before what there is is frozen out of the GC's sight. Below it a run's
# graph is scanned twice on its way to the oldest generation (once when the pause ends, once more
# in the next second-generation collection): benchmarks/gc_cost.py (3.11, a process holding a
# million objects) at 1,000 tasks 1.7-5.6 µs a task in collections, 0.12-0.36 frozen; at 5,000,
# 2.3-8.5 and 0.30-0.68 (the VM's speed varied 3x in one day). It was 10,000 until then. The
# price of a freeze, kept rare by this threshold: what was young when it froze (cyclic garbage
# too) goes to the oldest generation when the run ends, and waits for a full collection.
FREEZE_AT = 1_000
# What the interpreter itself keeps frozen (Python 3.12.1 starts with 375 objects there; 3.11 and
# 3.13 with none): more than this means someone froze objects, and a run must not unfreeze them.
FROZEN_AT_START = gc.get_freeze_count()

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


class Freezer:
    """One run's freezing of objects out of the cyclic GC's sight (``gc.freeze``).

    ``grew(added)``: ``added`` tasks joined the run (its graph at the start, a map's items as
    it expands, child tasks as they are called). Each time ``FREEZE_AT`` have joined, every
    object there is is frozen, so that collections during the run do not rescan a big run's
    tasks again and again (measured: a child task of fib(22) spent 10 µs in collections, 3-5
    with this); only when nobody else froze objects, so that ``thaw`` cannot release theirs.
    ``thaw()``, at the run's end, unfreezes what the run froze. The price: cyclic garbage that
    is old when a freeze happens waits for the run's end (young garbage, most of it, is
    collected as usual; after a fib(22) run the GC found 42 objects)."""

    __slots__ = ("frozen", "unfrozen")

    def __init__(self) -> None:
        self.frozen = False  # this run froze what objects there were
        self.unfrozen = 0  # tasks that joined since the last freeze

    def grew(self, added: int) -> None:
        self.unfrozen += added
        if self.unfrozen >= FREEZE_AT and (self.frozen or gc.get_freeze_count() <= FROZEN_AT_START):
            gc.freeze()
            self.frozen = True
            self.unfrozen = 0

    def thaw(self) -> None:
        if self.frozen:
            self.frozen = False
            gc.unfreeze()
