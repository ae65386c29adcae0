"""``RunView``: a run's events folded into per-task status, the state every renderer shares.

Pure Python (no IPython, widgets or graphviz): the widget, the DOT text and the HTML table only
read a ``RunView``. It is itself a subscriber (``run(node, on_event=view)``), and
``finish(run)`` reconciles it with the final ``Run`` record, which has the last word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..eventbus import CircuitEvent, RunEvent, TaskEvent, TaskOutput, TaskProgress
from ..graph import Graph
from ..record import Run, _fmt_seconds, error_line
from ..state import TaskState

__all__ = ["RunView", "TaskStatus"]

PENDING, RUNNING, RETRYING = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING


@dataclass(slots=True)
class TaskStatus:
    """What is known of one task: state, attempts, timing, last error, progress and output."""

    name: str
    parent: str | None = None
    state: TaskState = PENDING
    attempts: int = 0
    started: float | None = None  # the first attempt's start, on the run's clock
    ended: float | None = None
    duration: float | None = None  # set once the task is final (None if it never started)
    error: str = ""  # one line: "ValueError: bad row" (the last attempt's, for a retrying task)
    done: int | None = None  # progress reported through nborch.progress
    total: int | None = None
    output_lines: int = 0
    _chunks: list[str] = field(default_factory=list, repr=False)
    _size: int = 0
    _trimmed: bool = False

    @property
    def output(self) -> str:
        """Captured stdout / stderr / log text (its tail, marked "…", once it grew long)."""
        if len(self._chunks) > 1:
            self._chunks[:] = ["".join(self._chunks)]
        text = self._chunks[0] if self._chunks else ""
        return "…" + text if self._trimmed else text

    @property
    def has_progress(self) -> bool:
        """True once the task reported progress."""
        return self.done is not None

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds so far: the duration once final, else ``now - started`` (None if unknown)."""
        if self.duration is not None or self.started is None or now is None:
            return self.duration
        return max(now - self.started, 0.0)

    def note(self) -> str:
        """The short second line drawn under the task's name: attempts, progress, duration."""
        parts = []
        final = self.state.is_final
        if final:
            if self.attempts > 1:
                parts.append(f"{self.attempts} attempts")
        elif self.attempts > 1 or self.state is RETRYING:
            parts.append(f"attempt {self.attempts}")
        if not final and self.done is not None:
            parts.append(f"{self.done}/{self.total}" if self.total else f"{self.done}")
        if final and self.duration is not None:
            parts.append(_fmt_seconds(self.duration))
        return " · ".join(parts)


class RunView:
    """Per-task status of one run, built from its events (call it with each event).

    ``version`` grows on every change and ``shape`` whenever tasks are added (child tasks
    appeared), so a renderer can tell "repaint" from "lay out again" cheaply. Per-state
    counts are kept up to date as events arrive: reading them is O(1).
    """

    def __init__(self, graph: Graph | None = None, *, output_limit: int = 20_000) -> None:
        self.tasks: dict[str, TaskStatus] = {}
        self.run_id: str | None = None
        self.run_state: TaskState | None = None  # None until the run started
        self.started: float | None = None
        self.finished: float | None = None
        self.breakers: dict[str, str] = {}
        self.progressing: dict[str, None] = {}  # tasks that reported progress, in first-report order
        self.version = 0
        self.shape = 0
        self.output_limit = output_limit
        self._counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        if graph is not None:
            self.sync(graph)

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def total(self) -> int:
        """How many tasks the run has (so far: child tasks add to it)."""
        return len(self.tasks)

    @property
    def settled(self) -> int:
        """How many tasks reached a final state."""
        c = self._counts
        return len(self.tasks) - c[PENDING] - c[RUNNING] - c[RETRYING]

    def counts(self) -> dict[TaskState, int]:
        """Tasks per state (states with no task included, as 0)."""
        return dict(self._counts)

    @property
    def status(self) -> str:
        """The run's state in a word: "starting", "running", or its final state."""
        if self.run_state is None:
            return "starting"
        return self.run_state.value

    # -- folding events ----------------------------------------------------------------------------

    def add(self, name: str, parent: str | None = None) -> TaskStatus:
        """Add a task (PENDING) if it is new; return its status."""
        st = self.tasks.get(name)
        if st is None:
            st = self.tasks[name] = TaskStatus(name, parent)
            self._counts[PENDING] += 1
            self.shape += 1
            self.version += 1
        return st

    def sync(self, graph: Graph) -> bool:
        """Add the graph's tasks this view does not know yet; True if any were added."""
        if len(graph.specs) == len(self.tasks):
            return False
        before = len(self.tasks)
        for name, spec in graph.specs.items():
            if name not in self.tasks:
                self.add(name, spec.parent)
        return len(self.tasks) != before

    def __call__(self, event: Any) -> bool:
        """A RunView is a subscriber: ``run(node, on_event=view)``."""
        return self.apply(event)

    def apply(self, event: Any) -> bool:
        """Fold one event in; True if anything a renderer shows changed."""
        if isinstance(event, TaskEvent):
            self._task_event(event)
        elif isinstance(event, TaskProgress):
            st = self.add(event.task)
            if event.task not in self.progressing:
                self.progressing[event.task] = None
            st.done, st.total = event.done, event.total
        elif isinstance(event, TaskOutput):
            self._output(self.add(event.task), event.text)
        elif isinstance(event, RunEvent):
            self.run_id = event.run_id
            self.run_state = event.state
            if event.state is RUNNING:
                self.started = event.time
            else:
                self.finished = event.time
        elif isinstance(event, CircuitEvent):
            self.breakers[event.breaker] = event.new_state
        else:
            return False
        self.version += 1
        return True

    def _set_state(self, st: TaskStatus, state: TaskState) -> None:
        if st.state is not state:
            self._counts[st.state] -= 1
            self._counts[state] += 1
            st.state = state

    def _task_event(self, e: TaskEvent) -> None:
        st = self.tasks.get(e.task)
        if st is None:
            st = self.add(e.task, e.parent)
        elif e.parent is not None and st.parent is None:
            st.parent = e.parent
        state = e.state
        if e.attempt > st.attempts:
            st.attempts = e.attempt
        if state is RUNNING:
            if st.started is None:
                st.started = e.time
        elif state is RETRYING:
            st.error = error_line(e.error)
        elif state.is_final:
            st.ended = e.time
            if st.started is not None:
                st.duration = max(e.time - st.started, 0.0)
            # a task that succeeded after retries no longer has an error worth showing
            st.error = "" if state is TaskState.SUCCEEDED else error_line(e.error)
        self._set_state(st, state)

    def _output(self, st: TaskStatus, text: str) -> None:
        st._chunks.append(text)
        st._size += len(text)
        st.output_lines += text.count("\n")
        # Keep the tail: a task printing in a tight loop must not grow the view without bound.
        # Trimming at twice the limit keeps appends amortized O(1).
        limit = self.output_limit
        if st._size > 2 * limit:
            st._chunks[:] = ["".join(st._chunks)[-limit:]]
            st._size = limit
            st._trimmed = True

    # -- the end -----------------------------------------------------------------------------------

    def finish(self, run: Run) -> None:
        """Take the final states, attempts, durations, errors and output from the ``Run``.

        Only tasks the events left behind are corrected (the per-task tables of a big run
        are not built when the events already told everything).
        """
        tasks = self.tasks
        stale = [
            name for name, state in run.states.items()
            if (st := tasks.get(name)) is None or st.state is not state
            or (st.duration is None and st.started is not None)
        ]
        if stale:
            durations, attempts, errors, parents = run.durations, run.attempts, run.errors, run.parents
            for name in stale:
                state = run.states[name]
                st = self.add(name, parents.get(name))
                self._set_state(st, state)
                st.attempts = attempts.get(name, st.attempts)
                st.duration = durations.get(name, st.duration)
                if name in errors:
                    st.error = error_line(errors[name])
                elif state is TaskState.SUCCEEDED:
                    st.error = ""
        for name, log in run.logs.items():  # output a thread wrote just before the end
            st = self.add(name)
            if log and len(log) != st._size:
                st._chunks.clear()
                st._size, st.output_lines, st._trimmed = 0, 0, False
                self._output(st, log)
                if st._size > self.output_limit:
                    st._chunks[:] = [log[-self.output_limit :]]
                    st._size, st._trimmed = self.output_limit, True
        self.run_id = run.id
        c = self._counts
        self.run_state = (
            TaskState.CANCELLED if c[TaskState.CANCELLED] else TaskState.FAILED if c[TaskState.FAILED]
            else TaskState.SUCCEEDED
        )
        self.version += 1
