"""Events and the bus that carries them: the only way the engine talks to the outside.

Events are frozen, past-the-fact records. ``nborch.events`` is the process-wide bus (the seed
systems' users expect one); a run also takes its own subscribers through ``on_event=``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .state import TaskState

__all__ = [
    "CircuitEvent", "Event", "EventBus", "Journal", "RunEvent", "TaskEvent", "TaskOutput", "TaskProgress",
    "TaskWaiting", "events",
]

log = logging.getLogger("nborch.events")


class TaskEvent(NamedTuple):
    """A task entered ``state``. ``task`` is the task's unique name in its run.

    ``attempt`` counts from 1; for RETRYING it is the attempt that just failed and ``delay``
    the planned wait before the next one. ``parent`` names the task that called this one
    while it was running (a child task), else None. ``cached`` is True on a SUCCEEDED whose
    value came from the cache (or from the run being resumed); ``cache_key`` is the key.
    ``started`` is set on final states: when the task's first attempt started. ``reused`` is
    True on a SUCCEEDED of a task that did not run because an earlier run's outcome stands
    (resume); its ``result`` is None unless its value was stored (then ``cached`` is True).

    A NamedTuple rather than a frozen dataclass: it is immutable all the same, and it is
    built four times faster (0.4 µs against 1.8 µs), which matters at two events per task.
    """

    run_id: str
    task: str
    state: TaskState
    attempt: int = 0
    time: float = 0.0
    result: Any = None
    error: BaseException | None = None
    delay: float | None = None
    parent: str | None = None
    cached: bool = False
    cache_key: str | None = None
    started: float | None = None
    reused: bool = False


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A run started (RUNNING) or finished (SUCCEEDED, FAILED or CANCELLED)."""

    run_id: str
    state: TaskState
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class CircuitEvent:
    """A circuit breaker changed state; ``breaker`` is the breaker's name."""

    breaker: str
    old_state: str
    new_state: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """A task wrote ``text`` to ``stream`` ("stdout", "stderr" or "log")."""

    run_id: str
    task: str
    stream: str
    text: str
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """A task reported progress through ``nborch.progress``: ``done`` of ``total`` (None: unknown)."""

    run_id: str
    task: str
    done: int
    total: int | None
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskWaiting:
    """A task ready to start ``attempt`` waits for ``reason`` ("rate": its ``rate=``) without
    holding a slot; ``until`` is when its turn is expected, on the run's clock. It is not
    running: its state stays PENDING (or RETRYING), and its next RUNNING ends the wait."""

    run_id: str
    task: str
    reason: str
    attempt: int
    until: float | None = None
    time: float = 0.0


Event = TaskEvent | RunEvent | CircuitEvent | TaskOutput | TaskProgress | TaskWaiting
Subscriber = Callable[[Any], Any]


class Journal:
    """How a subscriber (the store's recorder) takes a run's plain successes without events.

    The engine appends each such task's record (its ``Inv``) to ``entries``: a C call, no
    event built, no Python frame. When the task's finish time (the engine's clock) reaches
    ``due``, it then calls ``overdue(now)``, which the subscriber uses to commit on time from
    a loop too busy to run its timer; ``due`` is ``-inf`` while the subscriber has set no time
    (it hears of the next entry). The subscriber takes ``entries`` by replacing the list; the
    event bus calls ``overdue`` for the engine (``EventBus.overdue``), guarded as a subscriber."""

    __slots__ = ("due", "entries", "overdue")

    def __init__(self, overdue: Callable[[float], None]) -> None:
        self.entries: list[Any] = []
        self.due = -float("inf")
        self.overdue = overdue


class EventBus:
    """Delivers each published event to every subscriber, in subscription order.

    Sync callbacks are called in the publisher's thread; async ones are scheduled on the
    running loop (a run waits for them before it returns). A subscriber that raises is
    logged and unsubscribed, so a broken observer can never break a run; one that says
    ``keep_on_error = True`` (nborch's recorder and displays) is logged and kept, so that one
    bad event cannot cost a run its record or its display.
    """

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self.wants_running = False
        # A subscriber with a ``journal`` (the store's recorder) takes the plain successes
        # (no cache key) from it instead of events (see ``Journal``). ``wants_successes``:
        # some subscriber needs them as events all the same.
        self.journal: Journal | None = None
        self._journal_owner: Subscriber | None = None  # the subscriber whose journal it is
        self.wants_successes = False
        self._lock = threading.Lock()
        self._pending: set[asyncio.Task[Any]] = set()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback`` (sync or async); returns a function that unsubscribes it."""
        if not callable(callback):
            raise TypeError(f"subscribe() expected a callable, got {callback!r}")
        with self._lock:
            self._subscribers = (*self._subscribers, callback)
            self._update()

        def unsubscribe() -> None:
            self.unsubscribe(callback)

        return unsubscribe

    def unsubscribe(self, callback: Subscriber) -> None:
        """Remove ``callback``; a callback that is not subscribed is ignored."""
        with self._lock:
            subs = list(self._subscribers)
            if callback in subs:
                subs.remove(callback)
            self._subscribers = tuple(subs)
            self._update()

    def clear(self) -> None:
        """Remove every subscriber."""
        with self._lock:
            self._subscribers = ()
            self._update()

    def _update(self) -> None:
        # A subscriber may say it has no use for the RUNNING events of single-attempt tasks
        # (``wants_running = False``, as the store's recorder does), so they are not built.
        self.wants_running = any(getattr(s, "wants_running", True) for s in self._subscribers)
        # (only a Journal: a user's subscriber may have a ``journal`` of its own)
        found = [(s, j) for s in self._subscribers if isinstance(j := getattr(s, "journal", None), Journal)]
        self._journal_owner, self.journal = found[0] if len(found) == 1 else (None, None)
        self.wants_successes = len(found) != len(self._subscribers) or len(found) > 1

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return self._subscribers

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Any) -> None:
        """Hand ``event`` to every subscriber; never raises, never awaits."""
        for callback in self._subscribers:
            try:
                outcome = callback(event)
                if outcome is not None and inspect.isawaitable(outcome):
                    self._schedule(callback, outcome)
            except Exception:
                self._drop(callback)

    def overdue(self, now: float) -> None:
        """The engine's journal reached its ``due`` time: call its ``overdue`` as ``publish``
        calls a subscriber (never raises: a subscriber's failure must not stop the engine)."""
        try:
            self.journal.overdue(now)  # type: ignore[union-attr]
        except Exception:
            self._drop(self._journal_owner)  # type: ignore[arg-type]

    def _schedule(self, callback: Subscriber, awaitable: Any) -> None:
        async def deliver() -> None:
            try:
                await awaitable
            except Exception:
                self._drop(callback)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(deliver())
            return
        job = loop.create_task(deliver())
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    def _drop(self, callback: Subscriber) -> None:
        if getattr(callback, "keep_on_error", False):  # nborch's own (recorder, displays)
            log.exception("event subscriber %r failed on one event; it stays subscribed", callback)
            return
        log.exception("event subscriber %r raised; it has been unsubscribed", callback)
        self.unsubscribe(callback)

    async def drain(self) -> None:
        """Wait until the async subscribers scheduled on this loop have had their events."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._pending if t.get_loop() is loop]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)


events = EventBus()
"""The process-wide bus: ``nborch.events.subscribe(print)``."""
