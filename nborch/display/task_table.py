"""The task table of the live display and of snapshots: one row per task, failures first.

Each row holds a task's state (cached and reused tasks marked), attempts, duration (the time
so far for a running task), its error (with the traceback in a fold, in a snapshot) and its
captured output. A mapped node is one row with its items' counts and a bar, its items below it.
Everything taken from the run goes through ``escaping``: an exception message can never inject
markup into a notebook.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

from ..core.record import _fmt_seconds
from ..core.state import TaskState
from .escaping import esc, output_text
from .looks import BAR_ORDER, COLORS, map_state, state_badge
from .mapped_nodes import MAP_DRAWN, map_note
from .state import RunView
from .task_status import TaskStatus, fmt_elapsed

__all__ = ["TRACEBACK_LIMIT", "map_bar_html", "map_duration", "task_table_html"]

S = TaskState
# Shown first when a table has to be cut: what needs a look.
_NOTABLE = frozenset({S.FAILED, S.RETRYING, S.RUNNING, S.UPSTREAM_FAILED, S.CANCELLED})


def _output_cell(st: TaskStatus) -> str:
    text = st.output
    if not text:
        return ""
    lines = st.output_lines or 1
    return (
        f"<details><summary>{lines} line{'s' if lines != 1 else ''}</summary>"
        f"<pre style='max-height:16em;overflow:auto;margin:0'>{output_text(text)}</pre></details>"
    )


TRACEBACK_LIMIT = 8_000  # characters of a traceback kept in a snapshot (its tail)


def _traceback_text(err: BaseException) -> str:
    text = getattr(err, "traceback", None)  # an ErrorRecord from the store: the text as recorded
    if not isinstance(text, str) or not text:
        import traceback

        try:
            text = "".join(traceback.format_exception(err))
        except Exception:  # a broken exception: its one line is enough
            return ""
    return text if len(text) <= TRACEBACK_LIMIT else "…" + text[-TRACEBACK_LIMIT:]


def _error_cell(st: TaskStatus, tracebacks: bool) -> str:
    if not st.error:
        return ""
    tb = _traceback_text(st.exc) if tracebacks and st.exc is not None else ""
    if not tb:
        return esc(st.error)
    return (
        f"<details><summary>{esc(st.error)}</summary>"
        f"<pre style='max-height:24em;overflow:auto;margin:0'>{output_text(tb)}</pre></details>"
    )


def _duration(st: TaskStatus, now: float | None) -> str:
    if st.duration is not None or st.state.is_final:
        return _fmt_seconds(st.duration)
    elapsed = st.elapsed(now)
    return fmt_elapsed(elapsed) if elapsed is not None else "-"


def _row(st: TaskStatus, now: float | None, tracebacks: bool, item: bool = False) -> str:
    mark = st.mark
    name = (f"<small style='color:#757575'>&#8627;</small> <code>{esc(st.name)}</code>" if item
            else f"<code>{esc(st.name)}</code>")
    return (
        f"<tr class='st-{st.state.value}{' nb-' + mark if mark else ''}{' nborch-item' if item else ''}' "
        f"data-task='{esc(st.name)}'><td style='text-align:left'>{name}"
        + (f" <small>&#8592; {esc(st.parent)}</small>" if st.parent else "")
        + f"</td><td style='text-align:left'>{state_badge(st.state, mark)}</td>"
        f"<td>{st.attempts or '-'}</td><td class='nborch-duration'>{esc(_duration(st, now))}</td>"
        f"<td style='text-align:left'>{_error_cell(st, tracebacks)}</td>"
        f"<td style='text-align:left'>{_output_cell(st)}</td></tr>"
    )


def _notable_first(names: Collection[str], states: Mapping[str, TaskState], limit: int) -> list[str]:
    """At most ``limit`` of ``names`` (all of ``states`` when ``names`` is ``states``): failed /
    running / retrying / cancelled ones first."""
    if names is states:  # every task: read the states in one pass, no lookups
        if len(states) <= limit:
            return list(states)
        notable = (n for n, s in states.items() if s in _NOTABLE)
        rest = (n for n, s in states.items() if s not in _NOTABLE)
    else:
        names = list(names)
        if len(names) <= limit:
            return names
        notable = (n for n in names if states.get(n) in _NOTABLE)
        rest = (n for n in names if states.get(n) not in _NOTABLE)
    picked = list(itertools.islice(notable, limit))
    if len(picked) < limit:
        picked += itertools.islice(rest, limit - len(picked))
    return picked


def map_bar_html(counts: Mapping[TaskState, int], width: str = "8em") -> str:
    """A mapped node's items as an inline bar: a segment per settled state, then the rest."""
    total = sum(counts.values())
    segs = "".join(
        f"<span class='nborch-seg st-{state.value}' style='display:inline-block;height:100%;"
        f"width:{100 * counts[state] / total:.2f}%;background:{COLORS[state][0]}'></span>"
        for state in BAR_ORDER if counts.get(state) and total
    )
    return (f"<span class='nborch-map-bar' style='display:inline-block;vertical-align:middle;width:{width};"
            f"height:8px;background:#eeeeee;border-radius:3px;overflow:hidden;white-space:nowrap;"
            f"line-height:0'>{segs}</span>")


def map_duration(st: TaskStatus, now: float | None) -> str:
    """A mapped node's time: from its expansion to its last item's end (its placeholder makes no
    attempt, so it has no duration of its own), or so far."""
    if st.state.is_final and st.duration is None and st.started is not None and st.ended is not None:
        return _fmt_seconds(max(st.ended - st.started, 0.0))
    return _duration(st, now)


def _map_rows(view: RunView, name: str, now: float | None, tracebacks: bool, fold: bool) -> str:
    """A mapped node's rows: one for the node (its state, items' counts and bar, duration, the
    first failure), then its items: in a fold (``fold``: a static snapshot), failed / running
    ones first, at most ``MAP_DRAWN``; else (the live table, rewritten at every repaint, where
    a fold would close) the items that failed, retry or run, at most 5."""
    st = view.task(name)
    items = view.maps.get(name, [])
    states = view.states
    counts = view.map_counts(name)
    state = map_state(counts, st.state)
    failed = counts.get(TaskState.FAILED, 0)
    error = ""
    if failed:
        first = view.task(next(n for n in items if states.get(n) is TaskState.FAILED))
        more = f" (and {failed - 1} more)" if failed > 1 else ""
        error = f"<code>{esc(first.name)}</code>: {esc(first.error)}{esc(more)}"
    elif st.error:
        error = esc(st.error)
    size = f"{len(items)} item{'s' if len(items) != 1 else ''}" if name in view.maps else "items at run time"
    head = (
        f"<tr class='st-{state.value} nborch-map' data-task='{esc(name)}'><td style='text-align:left'>"
        f"<code>{esc(name)}</code> <small>map · {esc(size)}</small></td>"
        f"<td style='text-align:left;white-space:nowrap'>{state_badge(state)}"
        + (f" {map_bar_html(counts)} <span class='nborch-map-counts'>{esc(map_note(counts))}</span>"
           if items else "")
        + f"</td><td>-</td><td class='nborch-duration'>{esc(map_duration(st, now))}</td>"
        f"<td style='text-align:left'>{error}</td><td></td></tr>"
    )
    if not items:
        return head
    if not fold:
        if not any(counts.get(s) for s in _NOTABLE):  # nothing to list: no pass over the items
            return head
        shown = list(itertools.islice((n for n in items if states.get(n) in _NOTABLE), 5))
        return head + "".join(_row(view.task(n), now, tracebacks, item=True) for n in shown)
    shown = _notable_first(items, states, MAP_DRAWN)
    rows = "".join(_row(view.task(n), now, tracebacks, item=True) for n in shown)
    rest = len(items) - len(shown)
    if rest:
        rows += (f"<tr><td colspan='6' style='text-align:left'>… {rest} more items "
                 f"(<code>run.items({esc(repr(name))})</code> lists them all)</td></tr>")
    return head + (
        f"<tr class='nborch-items' data-map='{esc(name)}'><td colspan='6' style='text-align:left;padding:0'>"
        f"<details><summary>{len(items)} items: {esc(map_note(counts))}</summary>"
        f"<table class='nborch-table' style='margin-left:1.5em'><tbody>{rows}</tbody></table>"
        "</details></td></tr>"
    )


def task_table_html(
    view: RunView, *, limit: int = 60, now: float | None = None, tracebacks: bool = False,
    fold: bool | None = None,
) -> str:
    """The task table: state (cached and reused tasks marked), attempts, duration (the time
    so far for a running task, given ``now``), error (with its traceback in a fold when
    ``tracebacks``) and the task's captured output. Past ``limit`` rows, failed / running /
    retrying tasks come first. A mapped node is one row with its items' counts and a bar, its
    items below it (``fold``, the default with ``tracebacks``: in a fold; else only those that
    failed or run)."""
    fold = tracebacks if fold is None else fold
    states = view.states
    items = view.item_names() if view.maps else frozenset()
    every: Collection[str] = [n for n in states if n not in items] if items else states
    count = len(every)
    names = _notable_first(every, states, limit)
    hidden = count - len(names)
    mapped = view.mapped
    body = [_map_rows(view, n, now, tracebacks, fold) if n in mapped else _row(view.task(n), now, tracebacks)
            for n in names]
    if hidden:
        counts = view.counts()
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        body.append(f"<tr><td colspan='6' style='text-align:left'>… {hidden} more tasks (all: {esc(summary)})</td></tr>")
    return (
        "<table class='nborch-table'><thead><tr><th style='text-align:left'>task</th>"
        "<th style='text-align:left'>state</th><th>attempts</th><th>duration</th>"
        "<th style='text-align:left'>error</th><th style='text-align:left'>output</th></tr></thead><tbody>"
        + "".join(body) + "</tbody></table>"
    )
