"""Every error nborch raises on its own account.

```
NborchError
├── DefinitionError(ValueError)        a bad workflow, raised before anything runs
│   ├── InvalidTaskError(TypeError)    something that is not a task where a task belongs
│   └── GraphError                     an edge or a name that cannot be resolved
│       └── CycleError                 also a graphlib.CycleError; .cycle holds the names
├── TaskTimeoutError(TimeoutError)     an attempt ran past its ``timeout=``
├── RunTimeoutError(TimeoutError)      a whole run passed ``run(..., timeout=)`` and was cancelled
└── CircuitOpenError                   a breaker refused the call without running it
```

A task's own exception is never wrapped: ``node.run()`` re-raises it with a note saying
which task and attempt it came from.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CircuitOpenError",
    "CycleError",
    "DefinitionError",
    "GraphError",
    "InvalidTaskError",
    "NborchError",
    "RunTimeoutError",
    "Skip",
    "TaskTimeoutError",
    "did_you_mean",
    "error_line",
    "safe_str",
]


class NborchError(Exception):
    """Base class of the errors nborch raises itself."""


class DefinitionError(NborchError, ValueError):
    """The workflow is wrong; raised while it is being built, before any task runs."""


class InvalidTaskError(DefinitionError, TypeError):
    """A value that is not a task (or a composite of tasks) was given where one belongs."""


class GraphError(DefinitionError):
    """An edge of the graph cannot be resolved: unknown, duplicate or ambiguous names."""


class CycleError(GraphError, graphlib.CycleError):
    """Tasks depend on each other in a circle; ``.cycle`` lists the names along it."""

    def __init__(self, cycle: Sequence[str], detail: str = "") -> None:
        self.cycle = list(cycle)
        path = " -> ".join(repr(name) for name in self.cycle)
        message = f"tasks form a cycle: {path}."
        super().__init__(f"{message} {detail or 'Remove one of these dependencies.'}")


class TaskTimeoutError(NborchError, TimeoutError):
    """One attempt of a task ran longer than its ``timeout=``."""

    def __init__(self, task: str, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(f"task {task!r} timed out after {timeout:g}s")


class RunTimeoutError(NborchError, TimeoutError):
    """A whole run passed its ``run(..., timeout=)`` deadline and was cancelled (every task
    settled first); ``.run`` is its record, ``.timeout`` the deadline in seconds."""

    def __init__(self, run: Any, timeout: float) -> None:
        self.run = run
        self.timeout = timeout
        left = sum(1 for s in run.states.values() if s.value == "cancelled")
        super().__init__(f"run {run.id} timed out after {timeout:g}s and was cancelled ({left} tasks cancelled)")


class CircuitOpenError(NborchError):
    """A circuit breaker is open, so the task failed at once without running."""

    def __init__(self, breaker: str, failures: int, retry_in: float) -> None:
        self.breaker = breaker
        self.failures = failures
        self.retry_in = retry_in
        super().__init__(
            f"circuit {breaker!r} is open after {failures} consecutive failures; "
            f"next trial call allowed in {max(retry_in, 0.0):.1f}s"
        )


class Skip(Exception):  # noqa: N818 - it reads as a verb at the raise site: raise Skip("why")
    """Raise inside a task to end it SKIPPED instead of FAILED."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A " Did you mean 'x'?" suffix, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or ``<exception str() failed>`` when its ``__str__`` raises, as ``traceback``
    shows it: every place that turns a task's error into text must survive any exception."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def error_line(err: BaseException | None, width: int = 80) -> str:
    """An error on one line, cut to ``width``: "ValueError: bad row" (``safe_str``: never raises)."""
    if err is None:
        return ""
    message = safe_str(err)
    kind = getattr(err, "type_name", None) or type(err).__name__  # an ErrorRecord: the original type
    text = f"{kind}: {message}" if message else kind
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
