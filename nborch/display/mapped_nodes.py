"""Mapped nodes (``fn.map(...)``) in every display: their items found by name, counted by state,
and the counts written the same way on a node, in a table row, in Mermaid and on the console.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from ..core.mapping import item_base
from ..core.state import TaskState

__all__ = ["MAP_DRAWN", "map_counts", "map_note", "maps_from_names", "text_bar"]

PENDING, RUNNING, RETRYING = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING
SUCCEEDED, FAILED = TaskState.SUCCEEDED, TaskState.FAILED

# A mapped node (``fn.map(...)``) is drawn as one node with its items' counts and a progress bar;
# with at most this many items, its items are drawn too (and its table row opens on them).
MAP_DRAWN = 20
# How a mapped node counts its items: settled states, then "…" for the items still to settle.
MAP_SYMBOLS = ((SUCCEEDED, "✓"), (FAILED, "✗"), (TaskState.UPSTREAM_FAILED, "⊘"),
               (TaskState.CANCELLED, "■"), (TaskState.SKIPPED, "↷"))


def maps_from_names(names: Iterable[str]) -> dict[str, list[str]]:
    """The mapped nodes among a run's task names: placeholder -> its items (``NAME:0``,
    ``NAME:1``...: a name, a colon and digits, whose NAME is a task of the run too), in index
    order. What a run reloaded from the store says of its maps."""
    names = list(names)
    known = set(names)
    found: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        head = item_base(name)
        if head is not None and head in known:
            found.setdefault(head, []).append((int(name[len(head) + 1:]), name))
    return {head: [n for _, n in sorted(items)] for head, items in found.items()}


def map_counts(items: Iterable[str], states: Mapping[str, TaskState]) -> dict[TaskState, int]:
    """How many of ``items`` are in each state (pending when ``states`` lacks them)."""
    get = states.get
    return dict(Counter(get(n, PENDING) for n in items))


def map_note(counts: Mapping[TaskState, int]) -> str:
    """A mapped node's counts as shown on its node, in its table row and on the console:
    "37 ✓ 2 ✗ 61 …" (succeeded, failed, then those still to settle); "0 items" for none."""
    parts = [f"{counts[s]} {sym}" for s, sym in MAP_SYMBOLS if counts.get(s)]
    still = counts.get(PENDING, 0) + counts.get(RUNNING, 0) + counts.get(RETRYING, 0)
    if still:
        parts.append(f"{still} …")
    return " ".join(parts) or "0 items"


def text_bar(counts: Mapping[TaskState, int], width: int = 12) -> str:
    """A progress bar in text, settled items of all: "▰▰▰▰▱▱▱▱▱▱▱▱" (in Mermaid)."""
    total = sum(counts.values())
    still = counts.get(PENDING, 0) + counts.get(RUNNING, 0) + counts.get(RETRYING, 0)
    done = round(width * (total - still) / total) if total else width
    return "▰" * done + "▱" * (width - done)
