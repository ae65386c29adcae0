"""Console progress for scripts and the CLI: a rich progress bar and a closing summary table."""

from __future__ import annotations

from typing import Any

from ..eventbus import TaskEvent
from ..graph import Graph
from ..record import Run, _fmt_seconds, error_line
from ..state import TaskState
from .dot import printable


def _text(text: str) -> str:
    """A task name or message as rich markup shows it literally: ``[x]`` is not a style, and
    control characters (ESC...) are written as escapes instead of reaching the terminal."""
    from rich.markup import escape

    return escape(printable(text))

__all__ = ["ConsoleProgress"]

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


class ConsoleProgress:
    """A run subscriber: one bar for the whole run (tasks settled / total), the running
    tasks' names beside it, a line per failure or retry, and a summary table at the end."""

    def __init__(self, graph: Graph, *, console: Any = None, transient: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.total = len(graph)
        self.running: dict[str, None] = {}
        self.progress = Progress(
            TextColumn("[bold]nborch[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=transient,
        )
        self.bar = self.progress.add_task("", total=self.total)
        self.progress.start()

    def __call__(self, event: Any) -> None:
        if not isinstance(event, TaskEvent):
            return
        state = event.state
        if state is TaskState.PENDING:  # a child task appeared
            self.total += 1
            self.progress.update(self.bar, total=self.total)
            return
        if state is TaskState.RUNNING:
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
                self.progress.console.print(
                    f"[bold red]✗ {_text(event.task)}[/] {_text(error_line(event.error))}", markup=True,
                    highlight=False,
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
        shown = list(run.states.items())
        if len(shown) > 40:  # a summary, not a dump: the failures first, then the rest
            shown.sort(key=lambda kv: kv[1] is TaskState.SUCCEEDED)
            hidden = len(shown) - 40
            shown = shown[:40]
        else:
            hidden = 0
        for name, state in shown:
            table.add_row(
                _text(name),
                f"[{_STYLE.get(state, 'white')}]{state.value}[/]",
                str(run.attempts.get(name, 0)),
                _fmt_seconds(run.durations.get(name)),
                _text(error_line(run.errors.get(name))),
            )
        if hidden:
            table.add_row(f"… {hidden} more", "", "", "", "")
        self.console.print(table)
