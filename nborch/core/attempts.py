"""Running one task through its attempts: the slow path of the engine (the fast path is
``Engine.launch``, which never comes here: a task with no option pays nothing for this).

**The shape.** tenacity builds a retry policy from small strategies (stop, wait, retry) that
one driver loop consults, each a pure function of a shared call state. Here most concerns do
more than decide: they wait for a rate, hold a breaker's trial call, stop a body at its
deadline, give slots back while they sleep. So each is a *step* that wraps the next one, as
middleware does, and keeps its own state for the task's run (the rate limiter it waits on, the
attempt's deadline): ``await step(args, kwargs)`` returns the task's value or raises. The
nesting is the order of the concerns, outermost first:

=============  ==============================================================================
``Cache``      the key is looked up before anything runs (a hit runs nothing below), the value
               saved after a success (``cache_step``)
``Prepare``    the executor started and the arguments readied for it, once (``body_steps``)
``Circuits``   the CircuitGroups the task is a step of admit it, once
``Retrying``   attempts until one succeeds or the policy gives up; the slots given back while
               it sleeps between two
``Rate``       every attempt waits for its start, after the back-off
``Attempt``    counted, given its Frame, published RUNNING; a failure goes up as
               ``AttemptFailed``
``Breaker``    the circuit breaker admits the attempt (a refusal is final) and records its
               outcome, a timeout's included
``Timeout``    the body must end within its time, counted from when it starts
body           on the loop, in a worker thread or on an executor (``body_steps``)
=============  ==============================================================================

A failure travels up as ``AttemptFailed`` rather than as the task's own exception, so that
``Retrying`` and the driver tell it from a cancellation of a wait or a ``Skip`` by its type.

Only the steps a task's options ask for are there. Which those are is worked out once per
options object (the nodes of one task function share theirs) and kept as a tuple of step
classes, the *composition*. Per task, ``compose`` builds the steps from it, adding what only
the task knows (its executor, its CircuitGroups, arguments left on a cluster), and
``run_task``, the driver, calls the outermost step and settles the task with what comes out.
The policy steps are in ``policy_steps``; what they decide with (``RetryPolicy``,
``CircuitBreaker``, ``RateLimiter``) are plain values and state machines in ``policies`` and
``limits``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .body_steps import Prepare, body_for
from .cache_step import Cache
from .errors import Skip
from .invocation import AS_BOUND, CANCELLED, SKIPPED, SUCCEEDED, Inv
from .policy_steps import Attempt, AttemptFailed, Breaker, Circuits, Inner, Rate, Retrying, Step, Timeout
from .remote import Remote
from .stopping import cancel

if TYPE_CHECKING:
    from .engine import Engine
    from .task_options import TaskOptions

__all__ = ["Attempts"]

Composition = tuple[bool, tuple[type[Step], ...]]  # (cache the value, the attempt's steps, innermost first)


def composition_for(opts: TaskOptions, caching: bool) -> Composition:
    """The steps ``opts`` asks for (see the module's table)."""
    steps: list[type[Step]] = []
    if opts.timeout is not None:
        steps.append(Timeout)
    if opts.breaker is not None:
        steps.append(Breaker)
    steps.append(Attempt)
    if opts.rate is not None:
        steps.append(Rate)
    if opts.retry is not None:
        steps.append(Retrying)
    return (caching and opts.cache, tuple(steps))


class Attempts:
    """Runs one task's attempts for an ``Engine`` (its slow path); the engine's scheduling
    state is reached through ``engine``."""

    __slots__ = ("engine", "compositions")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # by id() of the options, which are kept alive here so that their id is not reused
        self.compositions: dict[int, tuple[TaskOptions, Composition]] = {}

    def compose(self, inv: Inv) -> Inner:
        """The outermost step of ``inv``'s run (see the module)."""
        engine = self.engine
        opts = inv.spec.task.options
        known = self.compositions.get(id(opts))
        if known is None:
            known = self.compositions[id(opts)] = (opts, composition_for(opts, engine.cache is not None))
        caching, steps = known[1]
        ahead, inv.ahead = inv.ahead, None  # submitted already, with its arguments (submit_ahead)
        run: Inner = body_for(inv, engine, ahead)
        for step in steps:
            run = step(run, inv, engine)
        if inv.circuits:
            run = Circuits(run, inv, engine)
        if ahead is None and (inv.executor is not None or engine.remotes):
            run = Prepare(run, inv, engine)
        if caching:
            run = Cache(run, inv, engine)
        return run

    async def run_task(self, inv: Inv) -> None:
        """Run ``inv`` to a final state (the engine's slow-path job)."""
        engine = self.engine
        task = inv.spec.task
        args, kwargs = (task.args, task.kwargs) if inv.call is AS_BOUND else inv.call  # type: ignore[misc]
        inv.started = engine.clock.now()
        try:
            value = await self.compose(inv)(args, kwargs)
        except AttemptFailed as failed:
            engine.fail(inv, failed.error)
        except Skip as exc:
            inv.error = exc
            engine.settle(inv, SKIPPED)
        except asyncio.CancelledError:
            if not inv.state.is_final:
                engine.settle(inv, CANCELLED)
        except BaseException as exc:  # preparing or caching failed; KeyboardInterrupt/SystemExit; a bug
            if not inv.state.is_final:
                engine.fail(inv, exc)
            if isinstance(exc, KeyboardInterrupt):  # the user's interrupt: stop the whole run
                engine.fatal = exc
                cancel(engine)
            elif not isinstance(exc, Exception | SystemExit):
                raise
        else:
            inv.value = value
            engine.results[inv.name] = value
            if isinstance(value, Remote):
                engine.remotes += 1
            engine.settle(inv, SUCCEEDED)
