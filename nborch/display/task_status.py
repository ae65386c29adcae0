"""What is known of one task: during a run (``TaskStatus``, the details a ``RunView`` keeps of it)
and between runs (``KnownTask``, what the notebook knows for ``%orch graph``).

``TaskStatus`` is filled from the task's latest event (``fold_event``) or from the run's
record (``fold_record``), and keeps the tail of its captured output (``append_output``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.eventbus import TaskEvent
from ..core.record import Run, _fmt_seconds, error_line
from ..core.state import TaskState

__all__ = ["KnownTask", "TaskStatus", "fmt_elapsed"]

PENDING, RUNNING, RETRYING = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING
SUCCEEDED, FAILED = TaskState.SUCCEEDED, TaskState.FAILED
_FINAL = frozenset(s for s in TaskState if s.is_final)


def fmt_elapsed(s: float) -> str:
    """A running task's time so far, at the precision a once-a-second tick shows: "0.4s",
    "12.3s", "2m05s", "1h02m"."""
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


@dataclass(frozen=True, slots=True)
class KnownTask:
    """What the notebook knows of one task between runs, for ``%orch graph`` and ``%orch list``.

    ``state``, ``duration`` and ``run_id`` are those of its last run (None if it never ran);
    ``stale`` is None while its key is the one of its last success, else a short reason
    ("global threshold changed"); ``reused`` / ``cached``: its last success did not run it.
    """

    state: TaskState | None = None
    duration: float | None = None
    run_id: str | None = None
    stale: str | None = None
    reused: bool = False
    cached: bool = False


@dataclass(slots=True, init=False)
class TaskStatus:
    """What is known of one task: state, attempts, timing, last error, progress and output."""

    name: str
    parent: str | None
    state: TaskState
    attempts: int
    started: float | None  # the first attempt's start, on the run's clock
    ended: float | None
    duration: float | None  # set once the task is final (None if it never started)
    error: str  # one line: "ValueError: bad row" (the last attempt's, for a retrying task)
    exc: BaseException | None  # the failure itself, for its traceback in a snapshot
    cached: bool  # succeeded with a value from the cache: it did not run
    reused: bool  # succeeded because an earlier outcome stands: it did not run
    done: int | None  # progress reported through nborch.progress
    total: int | None
    output_lines: int
    _chunks: list[str] | None
    _size: int
    _trimmed: bool

    def __init__(self, name: str, parent: str | None = None) -> None:
        # by hand: a run of 100,000 tasks makes 100,000 of these, and the generated __init__
        # (every field a parameter) takes twice as long
        self.name, self.parent, self.state, self.attempts = name, parent, PENDING, 0
        self.started = self.ended = self.duration = None
        self.error, self.exc, self.cached, self.reused = "", None, False, False
        self.done = self.total = None
        self.output_lines, self._chunks, self._size, self._trimmed = 0, None, 0, False

    @property
    def output(self) -> str:
        """Captured stdout / stderr / log text (its tail, marked "…", once it grew long)."""
        chunks = self._chunks
        if not chunks:
            return ""
        if len(chunks) > 1:
            chunks[:] = ["".join(chunks)]
        text = chunks[0]
        return "…" + text if self._trimmed else text

    @property
    def has_progress(self) -> bool:
        """True once the task reported progress."""
        return self.done is not None

    @property
    def mark(self) -> str:
        """"cached" or "reused" for a task that succeeded without running (as ``Run.report``
        labels it: a value from the cache says "cached", also when resumed), else ""."""
        if self.state is not SUCCEEDED:
            return ""
        return "cached" if self.cached else "reused" if self.reused else ""

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds so far: the duration once final, else ``now - started`` (None if unknown)."""
        if self.duration is not None or self.started is None or now is None or self.state in _FINAL:
            return self.duration
        return max(now - self.started, 0.0)

    def note(self, now: float | None = None) -> str:
        """The short second line drawn under the task's name: attempts, progress, duration,
        or "cached" / "reused"; for a running task with ``now``, its time so far."""
        parts = []
        state = self.state
        final = state in _FINAL
        mark = self.mark
        if mark:
            parts.append(mark)
        if final:
            if self.attempts > 1:
                parts.append(f"{self.attempts} attempts")
        elif self.attempts > 1 or state is RETRYING:
            parts.append(f"attempt {self.attempts}")
        if not final and self.done is not None:
            parts.append(f"{self.done}/{self.total}" if self.total else f"{self.done}")
        if final:
            if self.duration is not None:
                parts.append(_fmt_seconds(self.duration))
        elif state is RUNNING and now is not None and self.started is not None:
            parts.append(fmt_elapsed(max(now - self.started, 0.0)))
        return " · ".join(parts)

    def fold_event(self, e: TaskEvent, began: float | None) -> int:
        """Fill in the task's latest event ``e`` (``began``: when it was first seen running);
        returns by how much the tasks that succeeded without running (cached or reused) change."""
        state = e.state
        if e.attempt > self.attempts:
            self.attempts = e.attempt
        if self.started is None and began is not None:
            self.started = began
        if state is RETRYING:
            self.error = error_line(e.error)
        elif state in _FINAL:
            self.ended = e.time
            if e.started is not None and e.attempt:  # the engine says when the first attempt started
                self.started = e.started
            if self.started is not None and (e.attempt or self.attempts):
                self.duration = max(e.time - self.started, 0.0)
            if state is SUCCEEDED:  # a task that succeeded after retries has no error worth showing
                self.error, self.exc = "", None
                was = self.cached or self.reused
                self.cached, self.reused = e.cached, e.reused
                return (self.cached or self.reused) - was
            self.error, self.exc = error_line(e.error), e.error if state is FAILED else None
        return 0

    def fold_record(self, run: Run) -> None:
        """Take attempts, duration, error and cache marks from the run's record."""
        name = self.name
        self.attempts = run.attempts.get(name, self.attempts)
        self.duration = run.durations.get(name, self.duration)
        err = run.errors.get(name)
        if err is not None:
            self.exc, self.error = err, error_line(err)
        elif self.state is SUCCEEDED:
            self.error, self.exc = "", None
            self.cached, self.reused = name in run.cached, name in run.reused

    def append_output(self, text: str, limit: int) -> None:
        """Add captured ``text``, keeping about the last ``limit`` characters: a task printing
        in a tight loop must not grow without bound (trimmed at twice the limit, so that
        appends stay amortized O(1))."""
        if self._chunks is None:
            self._chunks = []
        self._chunks.append(text)
        self._size += len(text)
        self.output_lines += text.count("\n")
        if self._size > 2 * limit:
            self._chunks[:] = ["".join(self._chunks)[-limit:]]
            self._size = limit
            self._trimmed = True

    def replace_output(self, text: str, limit: int) -> None:
        """Take ``text`` (its last ``limit`` characters) as the whole output, unless the output
        is as long already: what the run's record has of it at the end."""
        if len(text) == self._size:
            return
        self._chunks = []
        self._size, self.output_lines, self._trimmed = 0, 0, False
        self.append_output(text, limit)
        if self._size > limit:
            self._chunks[:] = [text[-limit:]]
            self._size, self._trimmed = limit, True
