"""Console progress for scripts and the CLI: a rich progress bar and a closing summary table."""

from __future__ import annotations

from typing import Any

from ..core.eventbus import TaskEvent
from ..core.graph import Graph
from ..core.record import Run, _fmt_seconds, error_line
from ..core.state import TaskState
from .looks import map_state
from .mapped_nodes import map_counts, map_note, maps_from_names
from .escaping import printable


def _text(text: str) -> str:
    """A task name or message as rich markup shows it literally: ``[x]`` is not a style, and
    control characters (ESC...) are written as escapes instead of reaching the terminal."""
    from rich.markup import escape

    return escape(printable(text))

__all__ = ["FAILURES_PER_MAP", "ConsoleProgress"]

_STYLE = {
    TaskState.SUCCEEDED: "green",
    TaskState.FAILED: "bold red",
    TaskState.UPSTREAM_FAILED: "dark_orange",
    TaskState.SKIPPED: "grey50",
    TaskState.CANCELLED: "magenta",
    TaskState.RUNNING: "blue",
    TaskState.RETRYING: "yellow",
    TaskState.PENDING: "white",
}


FAILURES_PER_MAP = 3  # failed items of one mapped node printed as they happen; the table has the rest


class ConsoleProgress:
    """A run subscriber: one bar for the whole run (tasks settled / total), the running
    tasks' names beside it, a bar per mapped node (its items settled, "37 ✓ 2 ✗ 61 …"), a line
    per failure or retry (the first ``FAILURES_PER_MAP`` of a mapped node's items), and a
    summary table at the end (a mapped node in one row; its failed items after it)."""

    def __init__(self, graph: Graph, *, console: Any = None, transient: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.graph = graph
        self.total = len(graph)
        self.running: dict[str, None] = {}
        self.states: dict[str, TaskState] = {}  # items of mapped nodes, as their events said
        self.map_bars: dict[str, Any] = {}  # mapped node -> its progress bar
        self.map_counts: dict[str, dict[TaskState, int]] = {}  # mapped node -> its items per state
        self.map_failures: dict[str, int] = {}
        self.progress = Progress(
            TextColumn("[bold]{task.fields[what]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=transient,
        )
        self.bar = self.progress.add_task("", total=self.total, what="nborch")
        self.progress.start()

    def _map_of(self, task: str) -> str | None:
        spec = self.graph.specs.get(task)
        item = spec.item if spec is not None else None
        return item[0] if item is not None else None

    def _map_event(self, placeholder: str, task: str, state: TaskState) -> None:
        """Count ``task``'s new state in its mapped node's bar (counts kept as events come: a
        map of 10,000 items is not counted again at each)."""
        old = self.states.get(task)
        self.states[task] = state
        counts = self.map_counts.get(placeholder)
        if counts is None:
            counts = self.map_counts[placeholder] = dict.fromkeys(TaskState, 0)
        if old is not None:
            counts[old] -= 1
        counts[state] += 1
        size = len(self.graph.items.get(placeholder, ()))
        shown = dict(counts)
        shown[TaskState.PENDING] += size - sum(counts.values())  # items no event told of yet
        settled = size - shown[TaskState.PENDING] - counts[TaskState.RUNNING] - counts[TaskState.RETRYING]
        bar = self.map_bars.get(placeholder)
        if bar is None:
            bar = self.map_bars[placeholder] = self.progress.add_task("", total=size, what=_text(placeholder))
        self.progress.update(bar, total=size, completed=settled, description=map_note(shown))

    def __call__(self, event: Any) -> None:
        if not isinstance(event, TaskEvent):
            return
        state = event.state
        placeholder = self._map_of(event.task)
        if state is TaskState.PENDING:  # a child task or an item appeared
            self.total += 1
            self.progress.update(self.bar, total=self.total)
            if placeholder is not None:
                self._map_event(placeholder, event.task, state)
            return
        if placeholder is not None:
            self._map_event(placeholder, event.task, state)
        if state is TaskState.RUNNING:
            if placeholder is None:
                self.running[event.task] = None
        elif state is TaskState.RETRYING:
            self.progress.console.print(
                f"[yellow]↻ {_text(event.task)}[/] attempt {event.attempt} failed "
                f"({_text(error_line(event.error))}); retrying in {event.delay or 0:.2f}s",
                markup=True, highlight=False,
            )
        elif state.is_final:
            self.running.pop(event.task, None)
            self.progress.advance(self.bar)
            if state is TaskState.FAILED:
                shown = self.map_failures.get(placeholder, 0) if placeholder is not None else 0
                if placeholder is not None:
                    self.map_failures[placeholder] = shown + 1
                if shown < FAILURES_PER_MAP:
                    self.progress.console.print(
                        f"[bold red]✗ {_text(event.task)}[/] {_text(error_line(event.error))}", markup=True,
                        highlight=False,
                    )
                elif shown == FAILURES_PER_MAP:
                    self.progress.console.print(
                        f"[bold red]✗[/] more items of {_text(placeholder or '')} failed: the table at "
                        "the end lists them", markup=True, highlight=False,
                    )
        names = list(self.running)
        label = ", ".join(map(_text, names[:4])) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        self.progress.update(self.bar, description=f"running {label}" if names else "")

    def close(self, run: Run) -> None:
        from rich.table import Table

        self.progress.update(self.bar, description="")
        self.progress.stop()
        table = Table(title=run.summary(), title_justify="left")
        for col in ("task", "state", "attempts", "duration", "error"):
            table.add_column(col)
        maps = maps_from_names(run.states)
        items = {n for members in maps.values() for n in members}
        # a mapped node is one row; its failed items come with the failures
        shown = [(n, s) for n, s in run.states.items() if n not in items or s is not TaskState.SUCCEEDED]
        if len(shown) > 40:  # a summary, not a dump: the failures first, then the rest
            shown.sort(key=lambda kv: kv[1] is TaskState.SUCCEEDED)
            hidden = len(shown) - 40
            shown = shown[:40]
        else:
            hidden = 0
        for name, state in shown:
            if name in maps:
                counts = map_counts(maps[name], run.states)
                mstate = map_state(counts, state)
                table.add_row(
                    f"{_text(name)} (map, {len(maps[name])} items)",
                    f"[{_STYLE.get(mstate, 'white')}]{_text(map_note(counts))}[/]",
                    "-", _fmt_seconds(run.durations.get(name)), _text(error_line(run.errors.get(name))),
                )
                continue
            table.add_row(
                ("  " if name in items else "") + _text(name),
                f"[{_STYLE.get(state, 'white')}]{state.value}[/]",
                str(run.attempts.get(name, 0)),
                _fmt_seconds(run.durations.get(name)),
                _text(error_line(run.errors.get(name))),
            )
        if hidden:
            table.add_row(f"… {hidden} more", "", "", "", "")
        self.console.print(table)
