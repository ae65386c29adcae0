"""What a run tells its subscribers: task events, circuit events, and the rest published from
any thread. Subscribers (a display, the store's recorder, ``on_event=``) always run on the
engine's loop thread and outside any task's context, so what they print is nobody's output.
Nothing is built when nobody listens."""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from .eventbus import CircuitEvent, TaskEvent, events
from .invocation import FAILED, PENDING, RETRYING, RUNNING, SKIPPED, SUCCEEDED, Inv, _frame
from .policies import CircuitBreaker, Transition
from .state import TaskState
from .workers import call_from_thread

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Publisher"]

_new_event = tuple.__new__  # all of TaskEvent's fields given, in order


class Publisher:
    """Publishes one run's events to the run's bus and the global ``nborch.events``
    (``engine.publisher``)."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def listening(self) -> bool:
        """Someone subscribes: the run's bus or ``nborch.events``."""
        bus = self.engine.bus
        return bool(events._subscribers) or bool(bus and bus._subscribers)

    @property
    def wants_pending(self) -> bool:
        """Someone wants the PENDING events of tasks added during the run (child calls, items):
        a display does; the store's recorder, alone, does not (its rows are final states)."""
        bus = self.engine.bus
        return bool(events._subscribers) or bool(bus and bus._subscribers and bus.wants_successes)

    def publish(self, event: Any) -> None:
        # Subscribers run outside any task's context: what they print is not that task's output.
        if _frame.get() is None:
            bus = self.engine.bus
            if bus is not None:
                bus.publish(event)
            if events._subscribers:
                events.publish(event)
        else:
            contextvars.Context().run(self._deliver, event)

    def _deliver(self, event: Any) -> None:
        bus = self.engine.bus
        if bus is not None:
            bus.publish(event)
        events.publish(event)

    def publish_threadsafe(self, event: Any) -> None:
        """Publish from any thread: subscribers always run on the engine's loop thread."""
        if threading.get_ident() == self.engine.loop_thread:
            self.publish(event)
            return
        # from a worker, in order with its outcome; a closed loop: an abandoned thread printing
        # after its run (dropped)
        call_from_thread(self.engine.loop, self.engine.pool, self.publish, event)  # type: ignore[arg-type]

    def emit(self, inv: Inv, state: TaskState, *, delay: float | None = None) -> None:
        """Publish ``inv``'s ``state`` as a TaskEvent (built only if someone listens)."""
        engine = self.engine
        if events._subscribers or (engine.bus is not None and engine.bus._subscribers):
            # identity tests only: TaskState's hash is Enum.__hash__, a Python call
            if state is SUCCEEDED:
                value, error = inv.value, None
            else:
                value = None
                error = inv.error if (state is FAILED or state is RETRYING or state is SKIPPED
                                      or inv.mapping is not None) else None  # a map: its first failed item's
            parent = inv.parent
            self.publish(
                _new_event(TaskEvent, (  # TaskEvent(...) without its Python-level __new__: 2x faster
                    engine.run_id, inv.name, state, inv.attempts, engine.now(), value, error, delay,
                    None if parent is None else parent.name, inv.cached, inv.cache_key,
                    None if state is RUNNING or state is RETRYING or state is PENDING else inv.started,
                    inv.reused,
                ))
            )

    def emit_circuit(self, breaker: CircuitBreaker, transition: Transition | None) -> None:
        if transition is not None:
            old, new = transition
            self.publish(CircuitEvent(breaker.name, old, new, self.engine.now()))
