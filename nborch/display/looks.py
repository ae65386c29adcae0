"""How each state and each drawn node looks: colours by state, marks, second lines, badges.

One place for the palette (``COLORS``, ``MARK_COLORS``, the borders), for what a node of a
``GraphModel`` shows of a run (``node_looks``) and for the coloured label of a state in HTML
(``state_badge``): the DOT text, the SVG template, its style block, the HTML tables and lists
and Mermaid all read them from here, so that they agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from ..core.state import TaskState
from .escaping import esc
from .graph_model import DrawnNode, GraphModel
from .mapped_nodes import map_counts, map_note
from .state import RunView

__all__ = [
    "BAR_ORDER", "BAR_TRACK", "BORDER", "COLORS", "FAILED_BORDER", "GROUP_PRIORITY", "MARK_COLORS",
    "STALE_BORDER", "SYMBOLS", "counts_note", "group_note", "map_look", "map_state", "node_classes",
    "node_colors", "node_looks", "node_notes", "node_states", "state_badge",
]

S = TaskState
COLORS: dict[TaskState, tuple[str, str]] = {  # state -> (fill, text)
    S.PENDING: ("#e0e0e0", "#212121"),
    S.RUNNING: ("#1e88e5", "#ffffff"),
    S.RETRYING: ("#ffb300", "#212121"),
    S.SUCCEEDED: ("#43a047", "#ffffff"),
    S.FAILED: ("#e53935", "#ffffff"),
    S.UPSTREAM_FAILED: ("#fb8c00", "#212121"),
    S.SKIPPED: ("#f5f5f5", "#9e9e9e"),
    S.CANCELLED: ("#8e24aa", "#ffffff"),
}
# Succeeded without running: a pale green, bordered in the succeeded colour (fill, text, border)
MARK_COLORS: dict[str, tuple[str, str, str]] = {
    "cached": ("#c8e6c9", "#1b5e20", "#43a047"),
    "reused": ("#c8e6c9", "#1b5e20", "#43a047"),
}
BORDER = "#616161"
FAILED_BORDER = "#b71c1c"
STALE_BORDER = "#6d4c41"
SYMBOLS: dict[TaskState, str] = {
    S.SUCCEEDED: "✓", S.FAILED: "✗", S.RUNNING: "▶", S.RETRYING: "↻", S.PENDING: "○",
    S.UPSTREAM_FAILED: "⊘", S.SKIPPED: "↷", S.CANCELLED: "■",
}
# A group takes the colour of its most telling member: a failure stays red while others run.
GROUP_PRIORITY = (S.FAILED, S.RETRYING, S.RUNNING, S.UPSTREAM_FAILED, S.CANCELLED, S.PENDING,
                  S.SKIPPED, S.SUCCEEDED)
# A mapped node's progress bar: its items by state, in this order, then the rest (the track)
BAR_ORDER = (S.SUCCEEDED, S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED, S.SKIPPED, S.RUNNING, S.RETRYING)
BAR_TRACK = "#ffffff"


def node_colors(state: TaskState, mark: str) -> tuple[str, str, str]:
    """(fill, text, border) colours of a node in ``state``, or with ``mark`` ("cached", "reused")."""
    if mark:
        return MARK_COLORS[mark]
    fill, font = COLORS[state]
    return fill, font, FAILED_BORDER if state is S.FAILED else BORDER


def node_classes(state: TaskState, mark: str) -> str:
    """A node's CSS classes: ``st-<state>``, and ``nb-<mark>`` when it has a mark."""
    return f"st-{state.value} nb-{mark}" if mark else f"st-{state.value}"


def _counts(members: list[str], states: Mapping[str, TaskState]) -> dict[TaskState, int]:
    get, pending = states.get, S.PENDING
    return dict(Counter(get(n, pending) for n in members))


def counts_note(counts: dict[TaskState, int]) -> str:
    """Counts per state as a group's second line: "✓12 ▶3 ○85"."""
    return " ".join(f"{SYMBOLS[s]}{counts[s]}" for s in SYMBOLS if counts.get(s))


def _size_note(members: list[str]) -> str:
    return f"{len(members)} task{'s' if len(members) != 1 else ''}"


def map_state(counts: Mapping[TaskState, int], placeholder: TaskState) -> TaskState:
    """A mapped node's state: its items' most telling one (``GROUP_PRIORITY``: a failed item
    keeps it red while others run), or its placeholder's while it has no items."""
    return next((s for s in GROUP_PRIORITY if counts.get(s)), placeholder)


def map_look(
    node: DrawnNode, known: Mapping[str, TaskState], view: RunView | None, now: float | None = None
) -> tuple[TaskState, str, dict[TaskState, int]]:
    """A mapped node's state, second line and its items' counts: the most telling state of its
    items (a failure stays red while others run) and "37 ✓ 2 ✗ 61 …"; before it expanded (or
    with no items), its placeholder's state and "items at run time" / "0 items"."""
    if view is not None and node.key in view.maps:  # counted once per repaint, with the table's
        counts = view.map_counts(node.key)
    else:
        counts = map_counts(node.members, known)
    if node.members:
        return map_state(counts, S.PENDING), map_note(counts), counts
    if view is None:
        size = node.size
        return S.PENDING, "map" if size is None else f"map · {size} item{'s' if size != 1 else ''}", counts
    state = known.get(node.key, S.PENDING)
    if state is S.PENDING or state is S.RUNNING:
        return state, "items at run time", counts
    if state is S.SUCCEEDED:
        return state, "0 items", counts
    return state, view.task(node.key).note(now), counts


def node_looks(
    model: GraphModel, view: RunView | None, now: float | None = None,
    bars: dict[str, dict[TaskState, int]] | None = None,
) -> tuple[dict[str, TaskState], dict[str, str], dict[str, str]]:
    """Each drawn node's state, second line and mark, in one pass over the tasks.

    A task node shows its task's state and note (with ``now``, a running task's time so far);
    its mark is "cached" or "reused" when it succeeded without running. A group shows the
    most telling state among its members (a failure stays red while others run) and counts
    per state ("✓12 ▶3 ○85"), or its size without a view; it is marked when every member is.
    Marks are given only for marked nodes. A mapped node looks as ``map_look`` says; its
    items' counts go to ``bars`` (its progress bar), when given.
    """
    known: Mapping[str, TaskState] = view.states if view is not None else {}
    states: dict[str, TaskState] = {}
    notes: dict[str, str] = {}
    marks: dict[str, str] = {}
    for nid, node in model.nodes.items():
        if node.map:
            states[nid], notes[nid], counts = map_look(node, known, view, now)
            if bars is not None:
                bars[nid] = counts
            members = node.members
            if view is not None and view.not_run and members and counts.get(S.SUCCEEDED) == len(members):
                found = {view.mark(n) for n in node.members}
                if len(found) == 1 and "" not in found:
                    marks[nid] = found.pop()
        elif node.group:
            counts = _counts(node.members, known)
            states[nid] = next(s for s in GROUP_PRIORITY if counts.get(s))
            notes[nid] = counts_note(counts) if view is not None else _size_note(node.members)
            if view is not None and view.not_run and counts.get(S.SUCCEEDED) == len(node.members):
                found = {view.mark(n) for n in node.members}
                if len(found) == 1 and "" not in found:
                    marks[nid] = found.pop()
        else:
            name = node.members[0]
            if view is None or name not in known:
                states[nid], notes[nid] = S.PENDING, ""
                continue
            st = view.task(name)
            states[nid] = st.state
            notes[nid] = st.note(now)
            mark = st.mark
            if mark:
                marks[nid] = mark
    return states, notes, marks


def node_states(model: GraphModel, view: RunView | None) -> dict[str, TaskState]:
    """Each drawn node's state (see ``node_looks``)."""
    return node_looks(model, view)[0]


def node_notes(model: GraphModel, view: RunView | None) -> dict[str, str]:
    """Each drawn node's second line (see ``node_looks``)."""
    return node_looks(model, view)[1]


def group_note(members: list[str], view: RunView | None) -> str:
    """A collapsed node's second line: counts per state ("✓12 ▶3 ○85"), or its size."""
    if view is None:
        return _size_note(members)
    return counts_note(_counts(members, view.states))


_MARK_TITLES = {
    "cached": "succeeded without running: its value came from the cache",
    "reused": "succeeded without running: an earlier run's outcome stands",
}


def state_badge(state: TaskState, mark: str = "") -> str:
    """A small coloured label for ``state``, classed ``st-<state>`` for styling and tests; with
    a ``mark`` ("cached", "reused"), "succeeded (cached)" in the pale look of tasks that did
    not run, classed ``nb-<mark>`` too."""
    if mark:
        fill, font, _ = MARK_COLORS[mark]
        return (
            f"<span class='nborch-state st-{state.value} nb-{mark}' title='{esc(_MARK_TITLES[mark])}' "
            f"style='background:{fill};color:{font};border-radius:3px;padding:0 5px;white-space:nowrap'>"
            f"{esc(state.value)} ({mark})</span>"
        )
    fill, font = COLORS[state]
    return (
        f"<span class='nborch-state st-{state.value}' style='background:{fill};color:{font};"
        f"border-radius:3px;padding:0 5px;white-space:nowrap'>{esc(state.value)}</span>"
    )
