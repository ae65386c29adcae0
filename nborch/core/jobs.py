"""The fast path's jobs (see ``Engine.launch``): an async body's own coroutine, which settles
its outcome in its own step (``body``), and what settles a body in a worker thread as the
pool delivers its outcome (``finish``). ``outcome_of`` turns what a body raised into its task's state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import Skip
from .invocation import CANCELLED, DECIDED, FINAL, RUNNING, SKIPPED, SUCCEEDED, Inv
from .stopping import cancel

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["body", "finish", "outcome_of", "succeeded"]


async def body(engine: Engine, inv: Inv, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """The fast path's job for an async body: the body's own coroutine awaited inline, then
    its outcome settled in the same step, as a hand-written scheduler does (no done
    callback, no second trip through the loop). Settling runs in the run's context, not the
    task's: what a body sets in its contextvars never reaches the tasks it starts. A job
    cancelled before its first step never gets here: ``stop`` settles it."""
    if inv.job is None:  # an eager first step (see launch): the job is known from the start
        inv.job = asyncio.current_task()
    try:
        value = await fn(*args, **kwargs)
    except GeneratorExit:  # closed unfinished (its loop went away): nothing left to settle on
        raise
    except BaseException as exc:
        engine.run_context.copy().run(outcome_of, engine, inv, exc)
        if not isinstance(exc, (Exception, asyncio.CancelledError)):  # KeyboardInterrupt, SystemExit:
            job = asyncio.current_task()  # settled above: its exception is not news to log
            if job is not None:
                job.add_done_callback(_retrieved)
            raise  # asyncio stops the loop with them, as it would without nborch
        return
    # the finished asyncio Task keeps its coroutine, and the call its arguments: let them go
    # (kept, they would outlive the run and each add to what the cyclic GC rescans)
    inv.job, inv.call = None, DECIDED
    if inv.state is RUNNING:  # else settled meanwhile (its run stopped): its outcome is not wanted
        succeeded(engine, inv, value)


def succeeded(engine: Engine, inv: Inv, value: Any) -> None:
    """A body running in a task's coroutine (``body``, or an inline child call) returned
    ``value``: settle it SUCCEEDED, in the run's context, not the task's."""
    inv.value = value
    engine.results[inv.name] = value
    if engine.settling:  # an eager first step (launch), or inside a settle: it waits its turn
        engine.queue.append((inv, SUCCEEDED))
    else:
        engine.run_context.copy().run(engine.settle, inv, SUCCEEDED)


def outcome_of(engine: Engine, inv: Inv, exc: BaseException) -> None:
    """A fast-path body (async, or sync in a worker thread) raised ``exc``; a CancelledError:
    it was cancelled (CANCELLED), or raised one itself (a failure)."""
    inv.job = None
    if inv.state in FINAL:
        return
    if isinstance(exc, asyncio.CancelledError):
        if inv.stop or engine.cancelling:
            engine.settle(inv, CANCELLED)
            return
    elif isinstance(exc, Skip):
        inv.error = exc
        engine.settle(inv, SKIPPED)
        return
    engine.fail(inv, exc)  # a CancelledError the body raised itself is a failure too
    if isinstance(exc, KeyboardInterrupt):  # the user's interrupt: stop the whole run
        engine.fatal = exc
        cancel(engine)


def finish(engine: Engine, inv: Inv, job: asyncio.Future[Any]) -> None:
    """Settles a fast-path job in a worker thread: called by the pool in the step that gives
    its future the outcome (``WorkerPool.submit_job``'s ``then``)."""
    if inv.state in FINAL:
        inv.job = None
        if not job.cancelled():
            job.exception()  # settled meanwhile (its run stopped): its outcome is not wanted
        return
    exc = _cancelled_error(job) if job.cancelled() else job.exception()
    if exc is not None:
        outcome_of(engine, inv, exc)
        return
    inv.job, inv.call = None, DECIDED  # a finished future keeps its result; the call, its arguments
    inv.value = value = job.result()
    engine.results[inv.name] = value
    engine.settle(inv, SUCCEEDED)


def _retrieved(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()


def _cancelled_error(job: asyncio.Future[Any]) -> BaseException:
    """The CancelledError a cancelled job raises (with its traceback, where it has one)."""
    try:
        job.result()
    except asyncio.CancelledError as err:
        return err
    return asyncio.CancelledError()  # pragma: no cover - a cancelled job always raises
