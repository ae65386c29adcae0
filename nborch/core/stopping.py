"""Stopping tasks: one (``stop``: a fail_fast sibling, a child call its caller no longer
waits for), those of a group (``stop_specs``), or the whole run (``cancel``), then giving what
was cancelled a grace period to run its cleanup (``unwind``)."""

from __future__ import annotations

import asyncio
import functools
import operator
from typing import TYPE_CHECKING, Any

from .invocation import CANCELLED, FAILED, FINAL, SUCCEEDED, Inv
from .specs import Graph
from .state import TaskState

if TYPE_CHECKING:
    from .engine import Engine
    from .specs import Spec

__all__ = ["cancel", "ended", "outcome", "release", "stop", "stop_on_bug", "stop_specs", "unwind"]

_state = operator.attrgetter("state")


def outcome(engine: Engine) -> TaskState:
    """How the run ended: CANCELLED when it was stopped; FAILED when a task failed (its
    fail_fast siblings end CANCELLED, but the run failed); else SUCCEEDED (or CANCELLED for a
    cancelled task)."""
    if engine.cancelling:
        return CANCELLED
    if engine.first_failure is not None:  # set by the first task that settles FAILED
        return FAILED
    # `in` over the states compares in C, identity first (hashing a TaskState is a Python call)
    return CANCELLED if CANCELLED in map(_state, engine.invs.values()) else SUCCEEDED


def stop(engine: Engine, inv: Inv) -> None:
    """Cancel one unsettled task: a running job is cancelled (and settles CANCELLED when it
    unwinds), a task that has not started settles CANCELLED now; a sync body sees
    ``nborch.cancelled()`` at once."""
    inv.stop = True
    if inv.frame is not None:
        inv.frame.cancelled = True
    if inv.job is None:
        engine.settle(inv, CANCELLED)
    elif not inv.job.done():
        # the fast path's jobs settle themselves (jobs.body; a worker's then, see WorkerPool.submit_job),
        # but not once cancelled: a body that has not begun never will, and a worker's late
        # outcome is discarded. This settles them.
        if inv.simple:
            inv.job.add_done_callback(functools.partial(ended, engine, inv))
        inv.job.cancel()
    # else it has just ended: its done callback, already due, settles it with its outcome


def ended(engine: Engine, inv: Inv, job: asyncio.Future[Any]) -> None:
    """Done callback of a slow-path job: ``run_task`` settles its task itself, except when
    it was cancelled before its first step (a fail_fast sibling failed at that moment)."""
    inv.job = None
    if inv.state in FINAL:
        return
    if job.cancelled():
        engine.settle(inv, CANCELLED)
    else:  # pragma: no cover - run_task settles every way it ends
        engine.fail(inv, job.exception() or RuntimeError("the task ended without a state"))


def stop_specs(engine: Engine, specs: list[Spec]) -> None:
    for spec in specs:
        inv = engine.invs.get(spec.name)
        if inv is not None and not inv.state.is_final:
            stop(engine, inv)


def cancel(engine: Engine) -> None:
    """Stop the run: cancel running tasks, mark every unstarted one CANCELLED."""
    if engine.cancelling:
        return
    engine.cancelling = True
    for inv in list(engine.invs.values()):
        if not inv.state.is_final:
            stop(engine, inv)


def stop_on_bug(engine: Engine, exc: Exception, inv: Inv, doing: str = "settling") -> None:
    """Settling (or launching) ``inv`` raised ``exc`` in the engine's own frames (a bug, or
    no thread to be had): stop the run (what was queued is cancelled with the rest) and have
    it raise ``exc``, instead of leaving it waiting for a task that will never be settled."""
    if engine.fatal is None:
        exc.add_note(f"nborch: raised in the engine while {doing} task {inv.name!r}; the run was stopped")
        engine.fatal = exc
    cancel(engine)
    if engine.done is not None and not engine.done.done():
        engine.done.set_result(None)


async def unwind(engine: Engine, grace: float = 1.0) -> None:
    """Give cancelled tasks up to ``grace`` seconds to run their cleanup (async ones are
    cancelled; sync ones see ``nborch.cancelled()`` and may return early)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace / 2
    jobs = [inv.job for inv in engine.invs.values() if inv.job is not None and not inv.job.done()]
    if jobs:
        await asyncio.wait(jobs, timeout=grace)
    # sync bodies cannot be stopped, but those that poll nborch.cancelled() stop soon: wait
    # for them a little (half the grace), so that what stops stopped when the run returns
    while engine.pool is not None and engine.pool.running and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for inv in engine.invs.values():  # a task that ignored cancellation is recorded as cancelled
        if not inv.state.is_final:
            engine.settle(inv, CANCELLED)
    # a cancelled run leaves nothing queued on a cluster: wait for the executors to confirm
    executors = {id(inv.executor): inv.executor for inv in engine.invs.values() if inv.executor is not None}
    for exe in executors.values():
        await exe.settle(grace)


def release(engine: Engine) -> None:
    """Let a finished run's bookkeeping be freed by reference counting as soon as its ``Run``
    record is dropped, instead of by a full collection of the cyclic GC some time later.

    The engine and its helpers (slots, publisher, attempts...) reference each other, so the
    engine lives until the GC finds it; what it holds (every task's ``Inv``) must therefore not
    stay with it. Each spec's downstream list references specs that reference it back as an
    upstream, and a group's specs reference it back: those links are only needed while the run
    is going. Measured (3.11, 2,000-task layered DAG, the record dropped): 7 objects a task left
    for the GC before, none now. Called once the record is made and the displays are closed."""
    graph = engine.graph
    for spec in graph.specs.values():
        spec.down = ()  # type: ignore[assignment]  # nothing may join an ended run: append fails loudly
    for group in graph.groups:
        group.specs = []
    engine.graph = Graph(graph.root)  # the caller's handle keeps the graph itself
    engine.invs = engine.offload.invs = {}  # the record keeps the run's own dict
    engine.first_failure = None
    engine.deferred.clear()
    engine.queue.clear()
