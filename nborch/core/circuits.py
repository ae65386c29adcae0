"""CircuitGroups in a run: one call of a group's breaker for all of the group's steps.

A ``CircuitGroup(breaker, *steps)`` counts as one call of its breaker per run: admitted when its
first step is about to start (an open circuit fails every step without running), a failure when
any step fails, a success when all succeed, nothing when the run was stopped. A task's own
``breaker=`` is per attempt instead (``policy_steps.Breaker``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CircuitOpenError
from .state import TaskState

if TYPE_CHECKING:
    from .engine import Engine
    from .graph import Group
    from .invocation import Inv
    from .policies import CircuitBreaker

__all__ = ["CircuitCall", "Circuits"]

FAILED, CANCELLED = TaskState.FAILED, TaskState.CANCELLED


class CircuitCall:
    """One run of a CircuitGroup: one call of its breaker, admitted when its first step is
    about to start, a failure when any step fails, a success when all succeed."""

    __slots__ = ("breaker", "remaining", "admitted", "refusal", "failed", "cancelled")

    def __init__(self, breaker: CircuitBreaker, steps: int) -> None:
        self.breaker = breaker
        self.remaining = steps  # steps not settled yet
        self.admitted: bool | None = None  # None: no step has started yet
        self.refusal: tuple[int, float] | None = None  # the open circuit's (failures, retry in)
        self.failed = False
        self.cancelled = False


class Circuits:
    """The CircuitGroup calls of one run, by group (``engine.circuits``)."""

    __slots__ = ("engine", "calls")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: dict[int, CircuitCall] = {}  # id(CircuitGroup's Group) -> this run's call

    def get(self, grp: Group) -> CircuitCall | None:
        return self.calls.get(id(grp))

    def call_for(self, grp: Group) -> CircuitCall:
        """This run's call of a CircuitGroup's breaker (made with the group's first step)."""
        call = self.calls.get(id(grp))
        if call is None:
            call = self.calls[id(grp)] = CircuitCall(grp.breaker, len(grp.specs))  # type: ignore[arg-type]
        return call

    def admit(self, inv: Inv) -> CircuitOpenError | None:
        """Before ``inv``'s first attempt: its CircuitGroups' calls are admitted (once per
        group and run), or the error it fails with because a group's circuit is open."""
        for call in inv.circuits:
            if call.admitted is None:
                try:
                    self.engine.publisher.emit_circuit(call.breaker, call.breaker.before_call())
                    call.admitted = True
                except CircuitOpenError as exc:
                    call.admitted = False
                    call.refusal = (exc.failures, exc.retry_in)
            if call.admitted is False:
                return CircuitOpenError(call.breaker.name, *call.refusal)  # type: ignore[misc]
        return None

    def count(self, inv: Inv, state: TaskState) -> None:
        """``inv`` settled: once every step of a group did, its breaker records the outcome."""
        emit = self.engine.publisher.emit_circuit
        for call in inv.circuits:
            call.remaining -= 1
            if state is FAILED:
                call.failed = True
            elif state is CANCELLED:
                call.cancelled = True
            if call.remaining == 0 and call.admitted:
                breaker = call.breaker
                if call.failed:
                    emit(breaker, breaker.on_failure())
                elif call.cancelled:
                    breaker.release()  # stopped: no outcome to record
                else:
                    emit(breaker, breaker.on_success())
