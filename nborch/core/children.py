"""Child tasks: a running task that awaits (or reads ``.result`` of) a node runs it inside its
own run. Kept apart from the scheduler proper; each ``Engine`` has one.

The waiting parent gives its slots back and takes them again before it continues, so
recursion deeper than the limits cannot deadlock; a wait on one of the caller's own ancestors
is a ``CycleError`` instead of a hang.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .arguments import value_of
from .errors import CycleError, Skip
from .eventbus import events
from .graph import Spec, build_graph, single_spec
from .invocation import AS_BOUND, RUNNING, Frame, _frame, count_settled
from .jobs import outcome_of, succeeded
from .remote import materialize
from .run_tasks import add_specs
from .state import RUN, TaskState, decide
from .stopping import stop
from .task import Node, Task

if TYPE_CHECKING:
    from .engine import Engine, Inv

PENDING, SUCCEEDED, FAILED = TaskState.PENDING, TaskState.SUCCEEDED, TaskState.FAILED
SKIPPED, UPSTREAM_FAILED, CANCELLED = TaskState.SKIPPED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED

__all__ = ["ChildCalls"]

# Child calls nested inline (ChildCalls.inline) at most, one in another: each level is one more
# coroutine that resuming the innermost goes through; deeper calls get asyncio tasks of their own.
INLINE_DEPTH = 64


class ChildCalls:
    """Runs the child tasks of an ``Engine``'s running tasks (inside the same run)."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine


    async def call_child(self, node: Node, parent: Inv) -> Any:
        """Run ``node`` inside this run on behalf of the running task ``parent``."""
        engine = self.engine
        if engine.cancelling or parent.stop or parent.state.is_final:  # a stopped task starts nothing
            raise asyncio.CancelledError(f"task {parent.name!r} was cancelled")
        me = asyncio.current_task()
        frame = parent.frame
        if me is not None and me is not parent.job and frame is not None:
            # a sync parent's call (its own asyncio task): cancelled with the parent's attempt
            if frame.calls is None:
                frame.calls = set()
            frame.calls.add(me)
            try:
                return await self.call(node, parent)
            finally:
                frame.calls.discard(me)
        return await self.call(node, parent, me is not None and me is parent.job)

    async def call(self, node: Node, parent: Inv, own: bool = False) -> Any:
        """``own``: the call is made by ``parent``'s own coroutine (not from a task it started,
        such as asyncio.gather's): a plain new call may run inline (see ``inline``)."""
        engine = self.engine
        graph = engine.graph
        spec = (single_spec(node, graph.names, parent.name)
                if type(node) is Task and id(node) not in graph.by_task else None)
        if spec is not None:  # one new call of a plain function: no graph to build, check or merge
            graph.specs[spec.name] = spec
            graph.by_task[id(node)] = spec
            targets = [spec]
            new = add_specs(engine, targets, parent)
            engine.freezer.grew(1)
            inv = new[0]
            frame = parent.frame
            if (own and inv.simple and not (spec.wants_context or spec.wants_state) and spec.task.info.is_async
                    and (parent.holding or not parent.limits) and inv.limits == parent.limits and inv.weight == 1
                    and frame is not None and frame.depth < INLINE_DEPTH):
                return await self.inline(inv, parent, frame.depth + 1)
        else:
            part = build_graph(node, names=graph.names, known=graph.by_task, parent=parent.name,
                               dedupe=engine.dedupe)
            targets = part.leaves(node)
            self.check_wait_cycle(targets, parent)
            new_specs = [s for s in part.specs.values() if s.name not in engine.invs]
            graph.merge(part)
            new = add_specs(engine, new_specs, parent)
            engine.freezer.grew(len(new))
        if self.engine.publisher.wants_pending:
            for inv in new:
                self.engine.publisher.emit(inv, PENDING)
        for inv in new:
            ready = inv.n_up == 0
            if not ready:
                for up in inv.spec.up:
                    u = self.engine.invs[up.name]
                    if u.state.is_final:
                        count_settled(inv, u.state)
                decision = decide(inv.spec.task.options.trigger_rule, inv.n_up, inv.n_ok, inv.n_failed,
                                  inv.n_upfailed, inv.n_skipped)
                if decision is None:
                    continue
                if decision != RUN:
                    self.engine.settle(inv, decision)  # type: ignore[arg-type]
                    continue
            if inv.state is PENDING and inv.call is None:
                self.engine.start(inv)
        waits = []
        for spec in targets:
            inv = self.engine.invs[spec.name]
            if not inv.state.is_final:
                fut = self.engine.loop.create_future()  # type: ignore[union-attr]
                if inv.waiters is None:
                    inv.waiters = []
                inv.waiters.append(fut)
                waits.append(fut)
        if waits:
            parent.waiting += 1
            if parent.waiting == 1:
                self.engine.slots.release(parent)
            call = (new, waits)
            if parent.in_flight is None:
                parent.in_flight = []
            parent.in_flight.append(call)  # settling the parent CANCELLED drops them at once
            try:
                if len(waits) == 1:
                    await waits[0]
                else:
                    await asyncio.gather(*waits)
            except asyncio.CancelledError:  # the caller timed out or was cancelled
                self.drop_children(new, waits)
                raise
            finally:
                parent.in_flight.remove(call)
                parent.waiting -= 1
                if parent.waiting == 0 and not self.engine.cancelling and not parent.state.is_final:
                    await self.engine.slots.reacquire(parent)
        for spec in targets:
            inv = self.engine.invs[spec.name]
            if inv.state is FAILED and inv.error is not None:
                raise inv.error
            if inv.state is UPSTREAM_FAILED and inv.mapping is not None and inv.error is not None:
                raise inv.error  # a mapped child: its first failed item's error
            if inv.state in (CANCELLED, UPSTREAM_FAILED):
                cause = self.first_failed_upstream(inv)
                if cause is not None and cause.error is not None:
                    raise cause.error
                raise asyncio.CancelledError(f"child task {inv.name!r} was cancelled")
        value = value_of(self.engine, node)
        return (await materialize(value)) if self.engine.remotes else value

    async def inline(self, inv: Inv, parent: Inv, depth: int) -> Any:
        """Run the new child task ``inv`` in its caller's coroutine, in the slots its caller
        holds and cannot use while it waits (the child needs just those: the same limits, one
        slot): no asyncio task, no future, no trip through the loop, as a plain ``await`` of its
        function would. It is a full task all the same: its own state, events, output and row.
        What it sets in contextvars stays in its caller's context, as it would after a plain
        ``await``. A caller stopped meanwhile (a timeout, the run cancelled) stops it with it."""
        engine = self.engine
        if engine.publisher.wants_pending:
            engine.publisher.emit(inv, PENDING)
        task = inv.spec.task
        inv.call = AS_BOUND
        inv.state = RUNNING
        inv.attempts = 1
        inv.started = engine.now()
        frame = inv.frame = Frame(engine, inv, 1, depth)
        inv.job = me = asyncio.current_task()  # stopping the child cancels what runs it: its caller's wait
        if events._subscribers or (engine.bus is not None and engine.bus.wants_running):
            engine.publisher.emit(inv, RUNNING)
        if parent.holding:  # its caller's slots, lent for the call (none without limits)
            parent.holding, inv.holding = False, True
        parent.waiting += 1  # a call it makes meanwhile from another asyncio task neither frees nor retakes them
        token = _frame.set(frame)
        try:
            value = await task.fn(*task.args, **task.kwargs)
        except GeneratorExit:
            raise
        except BaseException as exc:
            _frame.reset(token)
            self.give_back(inv, parent)
            if isinstance(exc, asyncio.CancelledError) and me is not None and me.cancelling():
                inv.stop = True  # cancelled from outside (its caller's timeout, the run): not its own failure
            engine.run_context.copy().run(outcome_of, engine, inv, exc)
            if isinstance(exc, Skip) and inv.error is exc:  # skipped (its settle may be queued): its
                return None  # caller gets None, as from a skipped child in its own task
            raise
        _frame.reset(token)
        self.give_back(inv, parent)
        inv.job = None
        if inv.state is RUNNING:  # else settled meanwhile (its run stopped)
            succeeded(engine, inv, value)
        elif inv.state is CANCELLED:
            raise asyncio.CancelledError(f"child task {inv.name!r} was cancelled")
        return (await materialize(value)) if engine.remotes else value

    def give_back(self, inv: Inv, parent: Inv) -> None:
        """An inline child ended: the slots it holds go back to its caller (it may have given
        them up itself meanwhile, waiting for a child of its own, and taken them again). They are
        released instead if its caller has settled meanwhile, or is still waiting for calls it
        made from other asyncio tasks (those take the caller's slots back when they end)."""
        parent.waiting -= 1
        if not inv.holding:
            return
        if parent.state.is_final or parent.waiting:  # its other calls (from other asyncio tasks)
            self.engine.slots.release(inv)  # still wait: it takes its slots back when the last ends (call)
        else:
            inv.holding, parent.holding = False, True

    def drop_children(self, new: list[Inv], waits: list[asyncio.Future[None]]) -> None:
        """The task that started ``new`` stopped waiting for them (its attempt timed out or was
        cancelled): cancel those nobody else waits for, so nothing runs on its behalf."""
        mine = set(map(id, waits))
        for inv in new:
            if not inv.state.is_final and all(id(w) in mine or w.done() for w in inv.waiters or ()):
                stop(self.engine, inv)

    def first_failed_upstream(self, inv: Inv) -> Inv | None:
        stack, seen = list(inv.spec.up), set()
        while stack:
            spec = stack.pop()
            if spec.name in seen:
                continue
            seen.add(spec.name)
            u = self.engine.invs.get(spec.name)
            if u is not None and u.state is FAILED:
                return u
            stack.extend(spec.up)
        return None

    def check_wait_cycle(self, targets: list[Spec], parent: Inv) -> None:
        """Raise CycleError if ``parent`` would wait on itself or on one of its callers."""
        chain: list[Inv] = []  # parent and its callers, listed when a target is already in the run
        for spec in targets:
            inv = self.engine.invs.get(spec.name)
            if inv is None or inv.state.is_final:  # a new call (the common case) cannot be a caller
                continue
            if not chain:
                p: Inv | None = parent
                while p is not None:
                    chain.append(p)
                    p = p.parent
            if inv in chain:
                names = [c.name for c in reversed(chain[: chain.index(inv) + 1])]
                raise CycleError(
                    [*names, inv.name],
                    "A task cannot wait for an identical call of itself (dedupe=True makes equal calls one).",
                )
            # waiting on a task that (transitively) waits for the parent would hang as well
            stack, seen = list(spec.up), set()
            while stack:
                s = stack.pop()
                if s.name in seen:
                    continue
                seen.add(s.name)
                if any(c.name == s.name for c in chain):
                    raise CycleError([parent.name, spec.name, s.name],
                                     "The awaited task depends on the task awaiting it.")
                stack.extend(s.up)
