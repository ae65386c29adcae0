"""The engine: runs one Graph on an asyncio loop. One scheduler for every composite.

A task starts when its trigger rule says so (counted as its upstreams settle, so rules such
as ``one_failed`` fire without waiting for the rest) and every limit it is under has room.
Async bodies run on the loop; sync bodies in ``WorkerPool`` threads, or on an executor (a
process pool, Dask: ``nborch.executors``) whose futures the loop awaits. A task waiting for a
child task, or sleeping before a retry, gives its slots back and takes them again (ahead of
new work) before it continues: recursion deeper than the limits cannot deadlock.

The engine is the hot loop: start, launch, settle. Around it, modules of functions that take
the engine: ``run_tasks`` (adding tasks: an Inv per Spec), ``jobs`` (the fast path's body
coroutine and done callbacks) and ``stopping`` (stop a task, cancel the run, unwind). What it
consults lives in collaborators that own their state, one each per engine: ``slots`` (limits
and pools), ``circuits`` (CircuitGroups), ``attempts`` (the slow path: a task's attempts,
composed of steps), ``children`` (child calls, plain ones inline), ``expansions`` (mapped
items), ``offload`` (executors), ``rates``, ``output`` (what tasks print) and ``publisher``
(events).

The engine never imports a front end: it publishes events, and that is all anyone sees.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import sys
import threading
from collections import deque
from typing import Any

from .arguments import call_injected, call_of
from .attempts import Attempts
from .children import ChildCalls
from .circuits import Circuits
from .clock import Clock
from .errors import DefinitionError, Skip
from .eventbus import EventBus, RunEvent, events
from .expansion import Expansions
from .gc_pause import Freezer, GcPause
from .graph import Graph, Spec
from .invocation import (
    AS_BOUND, CANCELLED, DECIDED, FAILED, FINAL, PENDING, RUNNING, SKIPPED, SUCCEEDED, Frame, Inv, _frame,
    count_settled, current_frame, note_attempt,
)
from .jobs import body, finish
from .limits import Rates
from .offload import Offload
from .output import Output
from .publishing import Publisher
from .remote import Remote, has_remote
from .run_tasks import add_specs, settle_presets
from .slots import Slots, drop_waiter
from .state import RUN, TaskState, decide
from .stopping import cancel, ended, outcome, stop_on_bug, stop_specs, unwind
from .workers import WorkerPool

__all__ = ["Engine", "Frame", "current_frame"]

# Ready tasks launched in one loop iteration at most; the rest wait one iteration each. When
# 100,000 tasks become ready at once, launching them all before any can finish keeps 100,000
# coroutines alive together; in bursts, early ones finish while later ones start. Every ready
# task still starts within a few milliseconds, so nothing waits on a hidden concurrency cap.
BURST = 1000

# Python 3.12+: a fast-path async body takes its first step inside launch(), as an eager
# asyncio.Task (asyncio.eager_task_factory's mechanism, with the task current as usual), so a
# body that ends without suspending never waits in the loop's ready queue for a step of its
# own. First steps never nest (``stepping``: a call made in one gets a plain task), and what
# they settle goes through settle()'s queue, so neither the stack nor the launch burst grows.
# NBORCH_EAGER=0 turns it off (each body's first step in a loop iteration of its own, as on 3.11).
EAGER = sys.version_info >= (3, 12) and os.environ.get("NBORCH_EAGER", "1") != "0"


class Engine:
    """Executes a graph once. Build one per run; ``await engine.execute()``."""

    def __init__(
        self,
        graph: Graph,
        *,
        run_id: str,
        clock: Clock,
        max_concurrency: int | dict[str, int | None] | None = None,
        state: Any = None,
        bus: EventBus | None = None,
        executor: Any = None,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.clock = clock
        self.now = clock.now
        self.state = state
        self.bus = bus
        self.max_concurrency = max_concurrency
        self.invs: dict[str, Inv] = {}
        self.results: dict[str, Any] = {}
        self.first_failure: Inv | None = None
        self.unsettled = 0
        self.cancelling = False
        self.started = 0.0
        self.finished = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.run_context = contextvars.Context()
        self.loop_thread: int | None = None
        self.pool: WorkerPool | None = None
        self.done: asyncio.Future[None] | None = None
        self.slots = Slots(self, max_concurrency)  # max_concurrency, its pools, limit=, Parallel(limit=)
        self.circuits = Circuits(self)  # this run's calls of its CircuitGroups' breakers
        self.dedupe: dict[Any, Spec] = {}
        self.fatal: BaseException | None = None
        self.output = Output(self)  # what tasks printed and logged
        self.burst = 0
        self.deferred: deque[Inv] = deque()
        self.settling = False  # settle() is processing: further settles wait in ``queue``
        self.queue: deque[tuple[Inv, TaskState]] = deque()
        self.stepping = False  # a body's eager first step is running (see launch)
        self.gc_pause: GcPause | None = None  # the runner's pause of the GC while it built; ended here
        self.freezer = Freezer()  # a big run's objects, out of the GC's sight while it runs
        self.cache: Any = None  # a store.cache.Cache when the run caches values
        self.memory: Any = None  # an incremental run's nborch.reuse.Memory
        self.plan: Any = None  # and its nborch.reuse.Plan (items' keys join it as maps expand)
        self.force = False  # ignore cached values (still store new ones)
        # tasks that do not run (resume=, an incremental run): name -> (value, cache key, has a
        # value, the value came from the cache); each stands SUCCEEDED with reused=True
        self.preset: dict[str, tuple[Any, str | None, bool, bool]] = {}
        self.executor = executor  # the run's executor= for sync tasks (None/"thread": worker threads)
        self.remotes = 0  # results left on a cluster (Remote): arguments must be checked for them
        self.pending: dict[str, Remote] = {}  # tasks running on Dask, by name: their futures
        self.attempts = Attempts(self)  # the slow path: one task's attempts
        self.children = ChildCalls(self)  # tasks that running tasks call
        self.rates = Rates(self)  # rate=: this run's limiters
        self.expansions = Expansions(self)  # mapped nodes: their items
        self.offload = Offload(self)  # executors: process pools, Dask
        self.publisher = Publisher(self)  # events to subscribers

    async def execute(self) -> None:
        """Run every task to a final state. Cancelling this coroutine cancels the run."""
        self.loop = asyncio.get_running_loop()
        self.run_context = contextvars.copy_context()  # where fast-path bodies settle (jobs.body)
        self.loop_thread = threading.get_ident()
        self.done = self.loop.create_future()
        self.started = self.now()
        try:  # the GC stays paused while the run is set up (add_specs may raise DefinitionError:
            with GcPause():  # a task in a pool the run lacks; nothing has started)
                invs = add_specs(self, list(self.graph.specs.values()), None)
                if self.publisher.listening:
                    self.publisher.publish(RunEvent(self.run_id, RUNNING, self.started))
                # A big run's graph lives until the run ends: freeze it out of the cyclic GC's
                # sight so collections during the run do not rescan it again and again
                self.freezer.grew(len(invs))
        finally:
            if self.gc_pause is not None:
                self.gc_pause.end()
        try:
            settle_presets(self)
            for inv in invs:  # no upstream, or `always` (Airflow: runs before any upstream settles)
                if (inv.n_up == 0 or inv.rule == "always") and inv.state is PENDING and inv.call is None:
                    self.start(inv)
            if self.unsettled:
                await self.done
            if self.fatal is not None:
                raise self.fatal
        except BaseException:
            cancel(self)
            await unwind(self)
            raise
        finally:
            self.freezer.thaw()
            self.finished = self.now()
            if self.pool is not None:
                self.pool.shutdown()
            if self.publisher.listening:
                self.publisher.publish(RunEvent(self.run_id, outcome(self), self.finished))
                await events.drain()
                if self.bus is not None:
                    await self.bus.drain()

    # -- deciding and starting -------------------------------------------------------------------

    def start(self, inv: Inv) -> None:
        """The trigger rule passed: skip, queue for a slot, or launch."""
        if self.cancelling:
            self.settle(inv, CANCELLED)
            return
        spec = inv.spec
        plain = inv.simple and not (spec.pipe or spec.named or spec.wants_context or spec.wants_state)
        if plain and not spec.refs:
            inv.call = AS_BOUND
        elif plain and spec.argnames is not None and not self.remotes:
            # every argument an upstream task (call_of's first case, inline: the common call)
            inv.call = (tuple(map(self.results.get, spec.argnames)), spec.task.kwargs)
        else:
            if inv.mapping is not None:  # a mapped placeholder: its inputs are there
                self.expansions.start(inv)
                return
            try:
                inv.call = call_of(self, inv)
                skip_if = spec.task.options.skip_if
                if skip_if is not None and call_injected(self, skip_if, inv):
                    inv.error = Skip("skip_if")
                    self.settle(inv, SKIPPED)
                    return
            except Exception as exc:
                self.fail(inv, exc)
                return
            if spec.task.options.limit_by:
                inv.limits = (*inv.limits, self.slots.keyed(inv))
            if self.remotes and inv.simple and has_remote(inv.call):
                inv.simple = False  # a value on a cluster must be fetched first: not the fast path
        if inv.limits:
            if self.slots.acquire(inv, front=False):
                self.launch(inv)
        elif self.burst < BURST:
            self.burst += 1
            self.launch(inv)
        else:
            self.deferred.append(inv)
            if len(self.deferred) == 1:
                self.loop.call_soon(self.drain)  # type: ignore[union-attr]

    def drain(self) -> None:
        """Launch deferred ready tasks, BURST per loop iteration (see BURST)."""
        self.burst = 0
        deferred = self.deferred
        while deferred and self.burst < BURST:
            inv = deferred.popleft()
            if inv.state is PENDING and not self.cancelling:
                self.burst += 1
                try:
                    self.launch(inv)
                except Exception as exc:  # in a loop callback: raised on, the run would hang
                    stop_on_bug(self, exc, inv, "launching")
            elif inv.state is PENDING:
                self.settle(inv, CANCELLED)
        if deferred:
            self.loop.call_soon(self.drain)  # type: ignore[union-attr]
        else:
            self.burst = 0

    def launch(self, inv: Inv) -> None:
        inv.state = RUNNING
        if not inv.simple:
            slow = inv.job = self.loop.create_task(self.attempts.run_task(inv))  # type: ignore[union-attr]
            slow.add_done_callback(functools.partial(ended, self, inv))
            return
        # The fast path: the task's own coroutine (or thread future) is the job, and one done
        # callback settles it, as a hand-written scheduler would do.
        task = inv.spec.task
        args, kwargs = (task.args, task.kwargs) if inv.call is AS_BOUND else inv.call  # type: ignore[misc]
        inv.attempts = 1
        inv.started = self.now()
        frame = inv.frame = Frame(self, inv, 1)
        token = _frame.set(frame)
        # RUNNING of a single-attempt task is published only if someone wants it (a display
        # does; the recorder reads the start from the final event instead)
        if events._subscribers or (self.bus is not None and self.bus.wants_running):
            self.publisher.emit(inv, RUNNING)
        if task.info.is_async:  # one coroutine runs the body and settles it (see body)
            if EAGER and not self.stepping:  # not inside another first step: the stack stays flat
                outer = self.settling
                self.settling = self.stepping = True  # what the step settles waits for the step to end
                try:
                    job: Any = asyncio.Task(body(self, inv, task.fn, args, kwargs), loop=self.loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
                finally:  # (a KeyboardInterrupt in the step comes through here: its outcome is queued)
                    self.settling, self.stepping = outer, False
                    _frame.reset(token)
                    if not outer and self.queue:  # settled in its step, outside any settle: settle it now
                        self.settle(*self.queue.popleft())
                if job.done():  # it ended in its first step (and settled): nothing to hold on to
                    return
            else:
                job = self.loop.create_task(body(self, inv, task.fn, args, kwargs))  # type: ignore[union-attr]
                _frame.reset(token)
        else:
            try:
                # finish settles it in the step that delivers its outcome (see submit_job)
                job = self.worker_pool().submit_job(
                    contextvars.copy_context(), task.fn, args, kwargs, None, functools.partial(finish, self, inv)
                ).fut
            finally:
                _frame.reset(token)
        inv.job = job

    def fail(self, inv: Inv, exc: BaseException) -> None:
        """End ``inv`` FAILED with ``exc`` (noted with the task and attempt)."""
        inv.error = exc
        note_attempt(inv, exc)
        self.settle(inv, FAILED)

    def worker_pool(self) -> WorkerPool:
        if self.pool is None:
            slots = sum(p.cap for p in self.slots.pools.values() if p is not None)
            size = max(32, slots, (os.cpu_count() or 1) + 4)
            self.pool = WorkerPool(self.loop, size, self.run_context)  # type: ignore[arg-type]
        return self.pool

    # -- settling --------------------------------------------------------------------------------

    def settle(self, inv: Inv, state: TaskState) -> None:
        """Give ``inv`` its final state, then decide its downstream.

        Never re-entrant: a settle asked for while another is being processed (a task that
        ``start`` skips at once, a downstream decided UPSTREAM_FAILED, a fail_fast sibling) is
        queued and processed after it, so every settled task has been counted for all of its
        downstream before any of them is started or settled. Trigger rules are therefore
        always decided on complete counts, as Airflow decides them after each state change.
        """
        if self.settling:
            if inv.state is PENDING and inv.call is None:
                inv.call = DECIDED  # its state is decided: nothing may start or decide it now
            self.queue.append((inv, state))
            return
        self.settling = True
        queue = self.queue
        bug: Exception | None = None
        try:
            self._settle(inv, state)
            while queue:
                inv, state = queue.popleft()
                self._settle(inv, state)
        except Exception as exc:  # a bug: raised on, it would end the caller (a task's job, a
            queue.clear()  # done callback) and leave the run waiting forever (stop_on_bug)
            bug = exc
        except BaseException:  # a KeyboardInterrupt from a body's eager first step (launch): the
            while queue:  # run is stopping, nothing new starts; what was queued still settles
                self._settle(*queue.popleft())
            raise
        finally:
            self.settling = False
        if bug is not None:
            stop_on_bug(self, bug, inv)
        elif self.unsettled <= 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _settle(self, inv: Inv, state: TaskState) -> None:
        if inv.state in FINAL:
            return
        queue = self.queue
        inv.state = state
        inv.finished = self.now()
        if not inv.started:
            inv.started = inv.finished
        if state is FAILED:
            for grp in inv.spec.groups:  # before the slot is freed: no sibling may take it
                if grp.fail_fast:
                    stop_specs(self, grp.specs)
        if inv.holding:
            self.slots.release(inv)
        elif inv.weight != 1:  # it may hold slots while it waits for more (nborch.core.slots)
            drop_waiter(self.slots, inv)
        if inv.ahead is not None or self.pending:
            self.offload.drop_ahead(inv)
        if inv.circuits:
            self.circuits.count(inv, state)
        if inv.map_of is not None:  # an item: its placeholder may settle now (value first)
            self.expansions.settled(inv)
        bus = self.bus
        if events._subscribers or (bus is not None and bus._subscribers):
            if (state is SUCCEEDED and not events._subscribers and not bus.wants_successes  # type: ignore[union-attr]
                    and inv.cache_key is None and not inv.cached):
                # the recorder alone: no event built (eventbus.Journal)
                journal = bus.journal  # type: ignore[union-attr]
                journal.entries.append(inv)  # type: ignore[union-attr]
                if inv.finished >= journal.due:  # type: ignore[union-attr]
                    bus.overdue(inv.finished)  # type: ignore[union-attr]  # (which never raises)
            else:
                self.publisher.emit(inv, state)
        self.unsettled -= 1
        if inv.waiters:
            for fut in inv.waiters:
                if not fut.done():
                    fut.set_result(None)
            inv.waiters = None
        if state is not SUCCEEDED:
            frame = inv.frame
            if frame is not None and state is CANCELLED:
                frame.cancelled = True
                if frame.calls:  # a sync body blocked on child tasks: they stop with it
                    for call in list(frame.calls):
                        call.cancel()
            if inv.in_flight and state is CANCELLED:  # now, before a freed slot can start one
                for new, waits in list(inv.in_flight):
                    self.children.drop_children(new, waits)
            if state is FAILED and self.first_failure is None:
                self.first_failure = inv
        inv.frame = None  # a body still running (abandoned) keeps its own, through its context
        invs = self.invs
        for dspec in inv.spec.down:
            d = invs.get(dspec.name)
            if d is None or d.state is not PENDING or d.call is not None:
                continue  # not in this run yet, or already decided (one_success fires early)
            if self.cancelling:  # a stopped run starts nothing and decides nothing
                d.call = DECIDED
                queue.append((d, CANCELLED))
                continue
            if state is SUCCEEDED and d.rule == "all_success":  # the common case, kept inline
                d.n_ok += 1
                if d.n_ok == d.n_up:
                    self.start(d)
                continue
            count_settled(d, state)
            decision = decide(d.rule, d.n_up, d.n_ok, d.n_failed, d.n_upfailed, d.n_skipped)
            if decision is None:
                continue
            if decision == RUN:
                self.start(d)
            else:
                d.call = DECIDED  # its state is decided: no later settle may decide it again
                queue.append((d, decision))  # type: ignore[arg-type]

def is_loop_thread(engine: Engine) -> bool:
    """True when called on the thread that runs ``engine``'s loop."""
    return engine.loop_thread == threading.get_ident()
