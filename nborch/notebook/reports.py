"""What ``%orch`` shows: the task list, the run history, why a task will run (``%orch why``),
and the short block a failed run raises (``CellTaskFailed``'s message).

The tables have a text ``__repr__`` and an HTML ``_repr_html_``; nothing here runs a task.
"""

from __future__ import annotations

import html
import traceback
from typing import Any

from ..core.record import Run, _fmt_seconds, error_line
from ..core.state import TaskState
from .workflow import NotebookWorkflow

__all__ = ["HistoryTable", "TaskList", "explain", "failure_message"]


def explain(name: str, plan: Any, workflow: NotebookWorkflow) -> str:
    """``%orch why NAME``: one or two lines."""
    why = plan.why.get(name, "")
    if name in plan.reused:
        lines = [f"{name} is up to date and will be reused: {why.removeprefix('up to date: ')}"]
    else:
        lines = [f"{name} will run: {why}"]
    cell = workflow.cells.get(name)
    if cell is not None and cell.options.get("cache"):
        miss = None
        last = workflow.last_run
        if last is not None:
            miss = last.cache_misses.get(name)
            if name in last.cached:
                miss = "its last run was a disk-cache hit"
        lines.append(f"  disk cache: {miss}" if miss else "  disk cache: not tried yet in this kernel")
    return "\n".join(lines)


def failure_message(record: Run, cells: dict[str, Any]) -> str:
    """The short error block: the failed task, its exception, and the failing line of its cell."""
    if record.error is None:
        cancelled = [n for n, s in record.states.items() if s is TaskState.CANCELLED]
        return f"run {record.id} was cancelled ({len(cancelled)} tasks cancelled)"
    name = record.first_failure or "?"
    err = record.error
    lines = [f"task {name!r} failed: {error_line(err, 300)}"]
    cell = cells.get(name)
    if cell is not None:
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if frame.filename == cell.filename:
                source = cell.source.splitlines()
                lineno = frame.lineno or 0
                text = source[lineno - 1].strip() if 0 < lineno <= len(source) else ""
                lines.append(f"  cell {name!r}, line {frame.lineno}: {text}")
                break
    others = [n for n, e in record.errors.items() if n != name]
    if others:
        lines.append(f"  also failed: {', '.join(others)}")
    blocked = [n for n, s in record.states.items() if s is TaskState.UPSTREAM_FAILED]
    if blocked:
        lines.append(f"  not run (upstream failed): {', '.join(blocked)}")
    lines.append("  values of the tasks that succeeded are in the namespace; the record is _orch_run")
    return "\n".join(lines)


class HistoryTable:
    """``%orch history``: recorded runs, newest first."""

    def __init__(self, rows: list[tuple[str, ...]]) -> None:
        from ..store import HISTORY_HEAD

        self.HEAD = HISTORY_HEAD
        self.rows = rows

    def __repr__(self) -> str:
        return _table_text(self.HEAD, self.rows)

    def _repr_html_(self) -> str:
        return _table_html(self.HEAD, self.rows, "nborch-history")


def _table_text(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    table = [head, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


def _table_html(head: tuple[str, ...], rows: list[tuple[str, ...]], css: str) -> str:
    esc = html.escape
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{css}'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


class TaskList:
    """``%orch list``: tasks, dependencies, trigger rules, and each task's last known state,
    duration and run (from every run of this notebook: targeted, other flows, interrupted);
    a task whose key changed since its last success is marked stale, with the reason."""

    def __init__(self, workflow: NotebookWorkflow, plan: Any = None) -> None:
        seen = workflow.memory.seen
        stale = plan.stale if plan is not None else {}
        self.rows: list[tuple[str, ...]] = []
        for name, cell in workflow.cells.items():
            last = seen.get(name)
            label = "-" if last is None else last.state.value
            if last is not None and (last.reused or last.cached):
                label += " (reused)" if last.reused else " (cached)"
            if name in stale:
                label += f" (stale: {stale[name]})"
            self.rows.append(
                (
                    name,
                    ", ".join(workflow.dependencies(name)) or "-",
                    cell.options.get("trigger_rule", "all_success"),
                    label,
                    _fmt_seconds(last.duration) if last is not None and last.duration is not None else "-",
                    last.run_id if last is not None else "-",
                )
            )

    HEAD = ("task", "depends on", "trigger", "last state", "duration", "run")

    def __repr__(self) -> str:
        return _table_text(self.HEAD, self.rows)

    def _repr_html_(self) -> str:
        return _table_html(self.HEAD, self.rows, "nborch-list")
