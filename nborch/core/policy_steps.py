"""The steps of a task's attempts that options add: retrying, rate, breaker, circuit groups,
timeout, and the attempt itself (``nborch.core.attempts`` composes them; read its docstring
first).

A step wraps the next one (``inner``) and is called like it, ``await step(args, kwargs)``: it
returns the task's value or raises. An attempt that failed travels up as ``AttemptFailed``
(raised by ``Attempt``, or by ``Breaker`` for a call it refused), so that the steps above it
tell a failure, which a retry may follow, from a cancellation or a ``Skip``, which end the task.
Each step is made for one task's run and keeps that run's state (the rate limiter it waits on,
the deadline of the attempt under way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import CircuitOpenError, Skip, TaskTimeoutError
from .invocation import RETRYING, RUNNING, Frame, Inv, _frame

if TYPE_CHECKING:
    from .engine import Engine
    from .limits import RateLimiter
    from .policies import CircuitBreaker, RetryPolicy

__all__ = [
    "Attempt", "AttemptFailed", "Breaker", "Circuits", "Rate", "Retrying", "Step", "Timeout",
    "counts_as_failure",
]

Inner = Callable[..., Awaitable[Any]]


class AttemptFailed(Exception):  # noqa: N818 - not an error of its own: it carries the attempt's
    """An attempt of the task failed with ``error``; ``final``: no retry may follow (a breaker
    refused the call). Internal: the driver fails the task with ``error``, never with this."""

    def __init__(self, error: BaseException, final: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.final = final


def counts_as_failure(exc: BaseException, inv: Inv, engine: Engine) -> bool:
    """True if an attempt that raised ``exc`` failed (a breaker records it, a retry may follow);
    False for a ``Skip``, a cancellation the engine asked for, or KeyboardInterrupt/SystemExit.
    A CancelledError that nobody asked for (the body raised it itself) is a failure."""
    if isinstance(exc, asyncio.CancelledError):
        return not (inv.stop or engine.cancelling)
    return isinstance(exc, Exception) and not isinstance(exc, Skip)


class Step:
    """One concern of a task's run, wrapped around the next step (``inner``)."""

    __slots__ = ("inner", "inv", "engine")

    def __init__(self, inner: Inner, inv: Inv, engine: Engine) -> None:
        self.inner = inner
        self.inv = inv
        self.engine = engine

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError  # each step says what it does around ``inner``


class Circuits(Step):
    """The task is a step of CircuitGroups: their calls are admitted before it starts (once per
    group and run), or it fails with the open circuit's CircuitOpenError without running."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        refused = self.engine.circuits.admit(self.inv)
        if refused is not None:
            raise refused
        return await self.inner(args, kwargs)


class Retrying(Step):
    """``retry=``/``retries=``: attempts until one succeeds or the policy gives up. Between two,
    the task gives its slots back while it sleeps and takes them again (ahead of new work)."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        inv = self.inv
        policy: RetryPolicy = inv.spec.task.options.retry  # type: ignore[assignment]
        while True:
            try:
                return await self.inner(args, kwargs)
            except AttemptFailed as failed:
                if failed.final or not policy.should_retry(failed.error, inv.attempts):
                    raise
                error = failed.error
            # outside the except clause: the next attempt's errors do not chain to this one's
            await self.pause(policy.delay_for(inv.attempts, error), error)

    async def pause(self, delay: float, error: BaseException) -> None:
        """The wait before the next attempt, published as RETRYING with its delay."""
        inv, engine = self.inv, self.engine
        inv.error = error
        inv.state = RETRYING
        engine.publisher.emit(inv, RETRYING, delay=delay)
        if delay > 0:
            engine.slots.release(inv)
            await engine.clock.sleep(delay)
            await engine.slots.reacquire(inv)
        else:
            await asyncio.sleep(0)
        inv.state = RUNNING


class Rate(Step):
    """``rate=``: every attempt starts when the task's rate allows (``nborch.core.limits``)."""

    __slots__ = ("limiter",)

    def __init__(self, inner: Inner, inv: Inv, engine: Engine) -> None:
        super().__init__(inner, inv, engine)
        self.limiter: RateLimiter | None = None  # found at the first attempt, from its arguments

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        rates = self.engine.rates
        if self.limiter is None:
            self.limiter = rates.limiter(self.inv, args, kwargs)
        await rates.turn(self.inv, self.limiter)
        return await self.inner(args, kwargs)


class Attempt(Step):
    """One attempt: counted, given its ``Frame``, published RUNNING; what it raises, if it is a
    failure (``counts_as_failure``), goes up as ``AttemptFailed``."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        inv, engine = self.inv, self.engine
        inv.attempts += 1
        frame = inv.frame = Frame(engine, inv, inv.attempts)
        _frame.set(frame)
        engine.publisher.emit(inv, RUNNING)
        try:
            return await self.inner(args, kwargs)
        except AttemptFailed:
            raise
        except BaseException as exc:
            if counts_as_failure(exc, inv, engine):
                raise AttemptFailed(exc) from None
            raise


class Breaker(Step):
    """``breaker=``: each attempt asks the circuit breaker first (a refusal fails the task, with
    no retry), and the breaker records its outcome; one that ends without an outcome (cancelled,
    skipped) is forgotten."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        engine = self.engine
        breaker: CircuitBreaker = self.inv.spec.task.options.breaker  # type: ignore[assignment]
        try:
            engine.publisher.emit_circuit(breaker, breaker.before_call())
        except CircuitOpenError as refusal:
            raise AttemptFailed(refusal, final=True) from None
        try:
            value = await self.inner(args, kwargs)
        except BaseException as exc:
            if counts_as_failure(exc, self.inv, engine):
                engine.publisher.emit_circuit(breaker, breaker.on_failure())
            else:
                breaker.release()
            raise
        engine.publisher.emit_circuit(breaker, breaker.on_success())
        return value


class Timeout(Step):
    """``timeout=``: each attempt's body must end within ``seconds`` of its start, else it is
    stopped and the attempt fails with TaskTimeoutError. The body says when it starts
    (``start``): a sync body waiting in the worker queue is not timed yet."""

    __slots__ = ("seconds", "scope")
    seconds: float
    scope: asyncio.Timeout | None  # the attempt under way's; None once it is over

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        self.seconds = self.inv.spec.task.options.timeout  # type: ignore[assignment]
        self.scope = scope = asyncio.timeout(None)
        try:
            async with scope:
                return await self.inner(args, kwargs, self)
        except TimeoutError:
            if scope.expired():
                raise TaskTimeoutError(self.inv.name, self.seconds) from None
            raise  # the body's own TimeoutError
        finally:
            self.scope = None

    def start(self) -> None:
        """The body started: its time runs from now."""
        if self.scope is not None:  # else the attempt is over
            self.scope.reschedule(self.engine.loop.time() + self.seconds)  # type: ignore[union-attr]

    def expired(self) -> bool:
        """True once the attempt under way ran out of time."""
        return self.scope is not None and self.scope.expired()
