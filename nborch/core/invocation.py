"""One task's life in one run (``Inv``), what its running code can reach (``Frame``), the
slot pools of limits (``Limit``), and the state names the engine's modules share."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import TYPE_CHECKING, Any

from .state import TaskState
from .task_options import DEFAULT_OPTIONS, TaskOptions

if TYPE_CHECKING:
    from .circuits import CircuitCall
    from .engine import Engine
    from .expansion import MapWait
    from .graph import Spec
    from .policies import CircuitBreaker

__all__ = ["Frame", "Inv", "Limit", "count_settled", "current_frame", "note_attempt"]

PENDING, RUNNING, RETRYING = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING
SUCCEEDED, FAILED, SKIPPED = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED
UPSTREAM_FAILED, CANCELLED = TaskState.UPSTREAM_FAILED, TaskState.CANCELLED
FINAL = frozenset({SUCCEEDED, FAILED, UPSTREAM_FAILED, SKIPPED, CANCELLED})
AS_BOUND: Any = ("as bound",)  # Inv.call marker: the task's own args and kwargs, nothing to resolve
DECIDED: Any = ("decided",)  # Inv.call marker: its trigger rule decided a final state, queued to settle


class Frame:
    """What a running task's code can reach through ``current_frame()``: its engine and run."""

    __slots__ = ("engine", "inv", "cancelled", "attempt", "calls", "depth")

    def __init__(self, engine: Engine, inv: Inv, attempt: int, depth: int = 0) -> None:
        self.engine = engine
        self.inv = inv
        self.attempt = attempt
        self.cancelled = False
        self.calls: set[Any] | None = None  # child calls a sync body is blocked on (their asyncio tasks)
        self.depth = depth  # child calls run inline in their caller's coroutine, one in another (ChildCalls)


_frame: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("nborch_frame", default=None)
current_frame = _frame.get


class Limit:
    """A counting slot pool (max_concurrency and its named pools, a Parallel's limit, a task's
    limit=). ``held``: free slots kept for the first waiter, which needs more (``nborch.core.slots``)."""

    __slots__ = ("cap", "used", "waiters", "held")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0  # slots taken, and those held
        self.waiters: deque[Inv] = deque()
        self.held = 0


class Inv:
    """One task's life in one run."""

    __slots__ = (
        "spec", "name", "state", "value", "error", "attempts", "started", "finished",
        "n_up", "n_ok", "n_failed", "n_upfailed", "n_skipped", "limits", "holding",
        "job", "resume", "waiters", "frame", "call", "parent", "breakers", "stop", "rule", "simple",
        "waiting", "cache_key", "cached", "size", "executor", "ahead", "circuits", "reused", "in_flight",
        "cache_miss", "mapping", "map_of", "map_left", "map_state", "weight",
    )

    def __init__(self, spec: Spec, parent: Inv | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.state = PENDING
        self.value: Any = None
        self.error: BaseException | None = None
        self.attempts = 0
        self.started = 0.0
        self.finished = 0.0
        self.n_up = len(spec.up)
        self.n_ok = self.n_failed = self.n_upfailed = self.n_skipped = 0
        self.limits: tuple[Limit, ...] = ()
        self.holding = False
        self.job: asyncio.Task[None] | None = None
        self.resume: asyncio.Future[None] | None = None
        self.waiters: list[asyncio.Future[None]] | None = None
        self.frame: Frame | None = None
        self.call: tuple[Any, dict[str, Any]] | None = None
        self.parent = parent
        self.breakers: tuple[CircuitBreaker, ...] = ()
        self.stop = False  # cancellation requested by the engine (run cancel or fail_fast)
        self.waiting = 0  # child calls this task is waiting on (gather may await several)
        self.cache_key: str | None = None
        self.cached = False
        self.reused = False  # it did not run: an earlier run's outcome stands (resume, reuse)
        self.cache_miss: str | None = None  # a cache=True task that ran: why the disk cache missed
        # mapping (nborch.expansion): a placeholder's [maps it waits for, inputs ready], an
        # item's placeholder, a placeholder's items still unsettled and its outcome so far
        self.mapping: MapWait | None = None
        self.map_of: Inv | None = None
        self.map_left = 0
        self.map_state: TaskState = SUCCEEDED
        # the child calls it waits on: (the tasks each call added, its waiter futures)
        self.in_flight: list[tuple[list[Inv], list[asyncio.Future[None]]]] | None = None
        self.size: int | None = None
        self.executor: Any = None  # an Executor when the body runs in a process pool or on Dask
        self.ahead: asyncio.Future[Any] | None = None  # submitted ahead to Dask (see submit_ahead)
        self.circuits: tuple[CircuitCall, ...] = ()  # the CircuitGroups this task is a step of
        self.weight = 1  # slots it takes of its pool, limits[0] (slots=N in a pool with a size)
        opts = spec.task.options
        if opts is DEFAULT_OPTIONS:  # most tasks: no option set, their answers known already
            self.rule, self.simple = _DEFAULT_RULE, _DEFAULT_SIMPLE
        else:
            self.rule, self.simple = opts.trigger_rule, is_simple(opts)


def is_simple(opts: TaskOptions) -> bool:
    """No retry, timeout, skip_if, limit_by, cache or rate: the body runs without a wrapper
    coroutine (the fast path)."""
    return (
        opts.retry is None and opts.timeout is None and opts.skip_if is None and not opts.limit_by
        and not opts.cache and opts.rate is None
    )


_DEFAULT_RULE, _DEFAULT_SIMPLE = DEFAULT_OPTIONS.trigger_rule, is_simple(DEFAULT_OPTIONS)


def note_attempt(inv: Inv, exc: BaseException) -> None:
    """Add to ``exc`` the note naming the task and attempt it was raised in (once)."""
    retry = inv.spec.task.options.retry
    total = retry.max_attempts if retry is not None else 1
    attempt = max(inv.attempts, 1)
    note = f"nborch: raised in task {inv.name!r}, attempt {attempt} of {total}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def count_settled(inv: Inv, state: TaskState) -> None:
    """Count a settled upstream of ``inv`` by its state (CANCELLED counts as upstream_failed)."""
    if state is SUCCEEDED:
        inv.n_ok += 1
    elif state is FAILED:
        inv.n_failed += 1
    elif state is SKIPPED:
        inv.n_skipped += 1
    else:
        inv.n_upfailed += 1
