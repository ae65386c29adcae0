"""The engine: runs one Graph on an asyncio loop. One scheduler for every composite.

A task starts when its trigger rule says so (counted as its upstreams settle, so rules such
as ``one_failed`` fire without waiting for the rest) and every limit it is under has room.
Async bodies run on the loop; sync bodies in ``WorkerPool`` threads, or on an executor (a
process pool, Dask: ``nborch.executors``) whose futures the loop awaits. A task waiting for a
child task, or sleeping before a retry, gives its slots back and takes them again (ahead of
new work) before it continues: recursion deeper than the limits cannot deadlock.

The engine never imports a front end: it publishes events, and that is all anyone sees.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import os
import threading
from collections import deque
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from .attempts import Attempts
from .expansion import Expansions
from .mapping import MapTask
from .children import ChildCalls
from .clock import Clock
from .errors import CircuitOpenError, DefinitionError, Skip
from .eventbus import CircuitEvent, EventBus, RunEvent, TaskEvent, TaskOutput, events
from .remote import Remote, has_remote
from .graph import _COLLECTIONS, Graph, Group, Spec
from .limits import Rates, acquire_weighted, call_values, check_pool, drop_waiter, make_pools, unhold
from .invocation import (
    AS_BOUND,
    CANCELLED,
    DECIDED,
    CircuitCall,
    FAILED,
    FINAL,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Frame,
    Inv,
    Limit,
    _frame,
    current_frame,
)
from .offload import Offload
from .policies import CircuitBreaker, Transition
from .state import RUN, TaskState, decide
from .task import Node, fn_info
from .workers import WorkerPool

__all__ = ["Engine", "Frame", "current_frame"]

_new_event = tuple.__new__  # all of TaskEvent's fields given, in order
# Ready tasks launched in one loop iteration at most; the rest wait one iteration each. When
# 100,000 tasks become ready at once, launching them all before any can finish keeps 100,000
# coroutines alive together; in bursts, early ones finish while later ones start. Every ready
# task still starts within a few milliseconds, so nothing waits on a hidden concurrency cap.
BURST = 1000

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
        self.pools = make_pools(max_concurrency)  # by name: "default" (max_concurrency=N) and named pools
        self.global_limit = self.pools.get("default")
        self.fn_limits: dict[Any, Limit] = {}
        self.group_limits: dict[int, Limit] = {}
        self.circuits: dict[int, CircuitCall] = {}  # id(CircuitGroup's Group) -> this run's call
        self.dedupe: dict[Any, Spec] = {}
        self.fatal: BaseException | None = None
        self.logs: dict[str, list[str]] = {}
        self.burst = 0
        self.deferred: deque[Inv] = deque()
        self.settling = False  # settle() is processing: further settles wait in ``queue``
        self.queue: deque[tuple[Inv, TaskState]] = deque()
        self.gc_was_enabled = gc.isenabled()  # the runner pauses the GC while it builds
        self.cache: Any = None  # a store.cache.Cache when the run caches values
        self.memory: Any = None  # an incremental run's nborch.reuse.Memory
        self.plan: Any = None  # and its nborch.reuse.Plan (items' keys join it as maps expand)
        self.force = False  # ignore cached values (still store new ones)
        # tasks that do not run (resume=, an incremental run): name -> (value, cache key, has a
        # value, the value came from the cache); each stands SUCCEEDED with reused=True
        self.preset: dict[str, tuple[Any, str | None, bool, bool]] = {}
        self.echo = True  # pass task output through to the real stream too (no display shows it)
        self.partial: dict[tuple[str, str], str] = {}  # (task, stream) -> text after its last newline
        self.executor = executor  # the run's executor= for sync tasks (None/"thread": worker threads)
        self.remotes = 0  # results left on a cluster (Remote): arguments must be checked for them
        self.pending: dict[str, Remote] = {}  # tasks running on Dask, by name: their futures
        self.attempts = Attempts(self)  # the slow path: one task's attempts
        self.children = ChildCalls(self)  # tasks that running tasks call
        self.rates = Rates(self)  # rate=: this run's limiters
        self.expansions = Expansions(self)  # mapped nodes: their items
        self.offload = Offload(self)  # executors: process pools, Dask

    # -- events ----------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return bool(events._subscribers) or bool(self.bus and self.bus._subscribers)

    @property
    def wants_pending(self) -> bool:
        """Someone wants the PENDING events of tasks added during the run (child calls, items):
        a display does; the store's recorder, alone, does not (its rows are final states)."""
        return bool(events._subscribers) or bool(self.bus and self.bus._subscribers and self.bus.wants_successes)

    def publish(self, event: Any) -> None:
        # Subscribers run outside any task's context: what they print is not that task's output.
        if _frame.get() is None:
            if self.bus is not None:
                self.bus.publish(event)
            if events._subscribers:
                events.publish(event)
        else:
            contextvars.Context().run(self._deliver, event)

    def _deliver(self, event: Any) -> None:
        if self.bus is not None:
            self.bus.publish(event)
        events.publish(event)

    def publish_threadsafe(self, event: Any) -> None:
        """Publish from any thread: subscribers always run on the engine's loop thread."""
        if threading.get_ident() == self.loop_thread:
            self.publish(event)
            return
        try:
            self.loop.call_soon_threadsafe(self.publish, event)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: an abandoned thread printing after its run
            pass

    def capture(self, name: str, stream: str, text: str) -> str:
        """File ``text`` written by task ``name``; returns what to pass through to the real
        stream: nothing when a display shows task output, else whole lines only, so that the
        output of tasks running side by side never interleaves within a line."""
        self.logs.setdefault(name, []).append(text)
        if self.listening:
            self.publish_threadsafe(TaskOutput(self.run_id, name, stream, text, self.now()))
        if not self.echo:
            return ""
        key = (name, stream)
        pending = self.partial.get(key, "") + text
        head, sep, tail = pending.rpartition("\n")
        self.partial[key] = tail
        return head + sep

    def flush_partial(self) -> list[tuple[str, str]]:
        """(stream, text) of output a task left without a final newline (written at run end)."""
        left = [(stream, text) for (_, stream), text in self.partial.items() if text]
        self.partial.clear()
        return left

    def emit(self, inv: Inv, state: TaskState, *, delay: float | None = None) -> None:
        if events._subscribers or (self.bus is not None and self.bus._subscribers):
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
                    self.run_id, inv.name, state, inv.attempts, self.now(), value, error, delay,
                    None if parent is None else parent.name, inv.cached, inv.cache_key,
                    None if state is RUNNING or state is RETRYING or state is PENDING else inv.started,
                    inv.reused,
                ))
            )

    def emit_circuit(self, breaker: CircuitBreaker, transition: Transition | None) -> None:
        if transition is not None:
            old, new = transition
            self.publish(CircuitEvent(breaker.name, old, new, self.now()))

    # -- setting up ------------------------------------------------------------------------------

    def add_specs(self, specs: list[Spec], parent: Inv | None) -> list[Inv]:
        """Add the tasks of ``specs``; a DefinitionError, before any is added, for a task in a
        pool the run does not have or that takes more slots than its pool has."""
        for spec in specs:
            opts = spec.task.options
            if opts.pool is not None or opts.slots != 1:
                check_pool(self.pools, spec)
        new = []
        for spec in specs:
            inv = Inv(spec, parent)
            if type(spec.task) is MapTask:  # a mapped placeholder: no body, no slot; it expands
                inv.simple = False
                self.invs[spec.name] = inv
                self.expansions.added(inv)
                new.append(inv)
                continue
            limits: list[Limit] = []
            opts = spec.task.options
            pool = self.global_limit if opts.pool is None else self.pools.get(opts.pool)
            if pool is not None:  # first: acquire_weighted finds it there, release pumps it first
                limits.append(pool)
                inv.weight = opts.slots
            for grp in spec.groups:
                if grp.limit:
                    lim = self.group_limits.get(id(grp))
                    if lim is None:
                        lim = self.group_limits[id(grp)] = Limit(grp.limit)
                    limits.append(lim)
            if opts.limit and not opts.limit_by:
                key = (spec.task.fn, None)
                lim = self.fn_limits.get(key)
                if lim is None:
                    lim = self.fn_limits[key] = Limit(opts.limit)
                limits.append(lim)
            inv.limits = tuple(limits)
            if opts.executor is not None or self.executor is not None:
                inv.executor = self.offload.executor_for(spec.task)
                if inv.executor is not None:
                    inv.simple = False
            if opts.breaker is not None:
                inv.breakers = (opts.breaker,)
                inv.simple = False
            if spec.groups and any(g.breaker for g in spec.groups):
                inv.circuits = tuple(self.circuit_call(g) for g in spec.groups if g.breaker is not None)
                inv.simple = False
            self.invs[spec.name] = inv
            new.append(inv)
        self.unsettled += len(new)
        return new

    def circuit_call(self, grp: Group) -> CircuitCall:
        """This run's call of a CircuitGroup's breaker (made with the group's first step)."""
        call = self.circuits.get(id(grp))
        if call is None:
            call = self.circuits[id(grp)] = CircuitCall(grp.breaker, len(grp.specs))  # type: ignore[arg-type]
        return call

    def admit(self, inv: Inv) -> CircuitOpenError | None:
        """Before ``inv``'s first attempt: its CircuitGroups' calls are admitted (once per
        group and run), or the error it fails with because a group's circuit is open."""
        for call in inv.circuits:
            if call.admitted is None:
                try:
                    self.emit_circuit(call.breaker, call.breaker.before_call())
                    call.admitted = True
                except CircuitOpenError as exc:
                    call.admitted = False
                    call.refusal = (exc.failures, exc.retry_in)
            if call.admitted is False:
                return CircuitOpenError(call.breaker.name, *call.refusal)  # type: ignore[misc]
        return None

    def count_circuits(self, inv: Inv, state: TaskState) -> None:
        """``inv`` settled: once every step of a group did, its breaker records the outcome."""
        for call in inv.circuits:
            call.remaining -= 1
            if state is FAILED:
                call.failed = True
            elif state is CANCELLED:
                call.cancelled = True
            if call.remaining == 0 and call.admitted:
                breaker = call.breaker
                if call.failed:
                    self.emit_circuit(breaker, breaker.on_failure())
                elif call.cancelled:
                    breaker.release()  # stopped: no outcome to record
                else:
                    self.emit_circuit(breaker, breaker.on_success())

    async def execute(self) -> None:
        """Run every task to a final state. Cancelling this coroutine cancels the run."""
        self.loop = asyncio.get_running_loop()
        self.run_context = contextvars.copy_context()  # where fast-path bodies settle (Engine.body)
        self.loop_thread = threading.get_ident()
        self.done = self.loop.create_future()
        self.started = self.now()
        gc.disable()
        try:
            invs = self.add_specs(list(self.graph.specs.values()), None)
        except DefinitionError:  # a task in a pool the run lacks: nothing has started
            if self.gc_was_enabled:
                gc.enable()
            raise
        self.publish(RunEvent(self.run_id, RUNNING, self.started)) if self.listening else None
        # A big run's graph lives until the run ends: freeze it out of the cyclic GC's sight so
        # collections during the run do not rescan it again and again (only when nobody else
        # froze objects, so our unfreeze cannot release theirs).
        frozen = len(invs) >= 10_000 and gc.get_freeze_count() == 0
        if frozen:
            gc.freeze()
        if self.gc_was_enabled:
            gc.enable()
        try:
            presets = [(self.invs[n], p) for n, p in self.preset.items() if n in self.invs]  # items: at expansion
            for inv, _ in presets:  # decided, all of them, before any settles and starts its downstream
                inv.call = AS_BOUND
            for inv, (value, key, has_value, cached) in presets:  # an earlier run's success
                inv.reused = True
                if has_value:  # a value stored (resume) or remembered (reuse): it feeds the downstream
                    inv.value, inv.cache_key, inv.cached = value, key, cached
                    self.results[inv.name] = value
                self.settle(inv, SUCCEEDED)
            for inv in invs:  # no upstream, or `always` (Airflow: runs before any upstream settles)
                if (inv.n_up == 0 or inv.rule == "always") and inv.state is PENDING and inv.call is None:
                    self.start(inv)
            if self.unsettled:
                await self.done
            if self.fatal is not None:
                raise self.fatal
        except BaseException:
            self.cancel()
            await self.unwind()
            raise
        finally:
            if frozen:
                gc.unfreeze()
            self.finished = self.now()
            if self.pool is not None:
                self.pool.shutdown()
            if self.listening:
                self.publish(RunEvent(self.run_id, self.outcome(), self.finished))
                await events.drain()
                if self.bus is not None:
                    await self.bus.drain()

    def outcome(self) -> TaskState:
        """CANCELLED when the run was stopped; FAILED when a task failed (its fail_fast siblings
        end CANCELLED, but the run failed); else SUCCEEDED (or CANCELLED for a cancelled task)."""
        if self.cancelling:
            return CANCELLED
        failed = cancelled = False
        for inv in self.invs.values():  # identity tests: hashing a TaskState is a Python call
            state = inv.state
            failed = failed or state is FAILED
            cancelled = cancelled or state is CANCELLED
        return FAILED if failed else CANCELLED if cancelled else SUCCEEDED

    # -- deciding and starting -------------------------------------------------------------------

    def start(self, inv: Inv) -> None:
        """The trigger rule passed: skip, queue for a slot, or launch."""
        if self.cancelling:
            self.settle(inv, CANCELLED)
            return
        spec = inv.spec
        if inv.simple and not (spec.refs or spec.pipe or spec.named or spec.wants_context or spec.wants_state):
            inv.call = AS_BOUND
        else:
            if inv.mapping is not None:  # a mapped placeholder: its inputs are there
                self.expansions.start(inv)
                return
            try:
                inv.call = self.arguments(inv)
                skip_if = spec.task.options.skip_if
                if skip_if is not None and self.call_injected(skip_if, inv):
                    inv.error = Skip("skip_if")
                    self.settle(inv, SKIPPED)
                    return
            except Exception as exc:
                self.fail(inv, exc)
                return
            if spec.task.options.limit_by:
                inv.limits = (*inv.limits, self.keyed_limit(inv))
            if self.remotes and inv.simple and has_remote(inv.call):
                inv.simple = False  # a value on a cluster must be fetched first: not the fast path
        if inv.limits:
            if self.acquire(inv, front=False):
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
                self.launch(inv)
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
            slow.add_done_callback(functools.partial(self.ended, inv))
            return
        # The fast path: the task's own coroutine (or thread future) is the job, and one done
        # callback settles it, as a hand-written scheduler would do.
        task = inv.spec.task
        args, kwargs = (task.args, task.kwargs) if inv.call is AS_BOUND else inv.call  # type: ignore[misc]
        inv.attempts = 1
        inv.started = self.now()
        frame = inv.frame = Frame(self, inv, 1)
        token = _frame.set(frame)
        if task.info.is_async:  # one coroutine runs the body and settles it (see body)
            job: Any = self.loop.create_task(self.body(inv, task.fn, args, kwargs))  # type: ignore[union-attr]
            _frame.reset(token)
        else:
            try:
                job = self.worker_pool().submit(contextvars.copy_context(), task.fn, args, kwargs)
            finally:
                _frame.reset(token)
            job.add_done_callback(functools.partial(self.finish, inv))
        inv.job = job
        # RUNNING of a single-attempt task is published only if someone wants it (a display
        # does; the recorder reads the start from the final event instead)
        if events._subscribers or (self.bus is not None and self.bus.wants_running):
            self.emit(inv, RUNNING)

    async def body(self, inv: Inv, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        """The fast path's job for an async body: the body's own coroutine awaited inline, then
        its outcome settled in the same step, as a hand-written scheduler does (no done
        callback, no second trip through the loop). Settling runs in the run's context, not the
        task's: what a body sets in its contextvars never reaches the tasks it starts. A job
        cancelled before its first step never gets here: ``stop`` settles it."""
        try:
            value = await fn(*args, **kwargs)
        except GeneratorExit:  # closed unfinished (its loop went away): nothing left to settle on
            raise
        except BaseException as exc:
            self.run_context.copy().run(self.outcome_of, inv, exc)
            if not isinstance(exc, (Exception, asyncio.CancelledError)):  # KeyboardInterrupt, SystemExit:
                job = asyncio.current_task()  # settled above: its exception is not news to log
                if job is not None:
                    job.add_done_callback(_retrieved)
                raise  # asyncio stops the loop with them, as it would without nborch
            return
        inv.job = None  # the finished asyncio Task keeps its coroutine: let both go
        if inv.state is RUNNING:  # else settled meanwhile (its run stopped): its outcome is not wanted
            inv.value = value
            self.results[inv.name] = value
            self.run_context.copy().run(self.settle, inv, SUCCEEDED)

    def outcome_of(self, inv: Inv, exc: BaseException) -> None:
        """A fast-path body (async, or sync in a worker thread) raised ``exc``; a CancelledError:
        it was cancelled (CANCELLED), or raised one itself (a failure)."""
        inv.job = None
        if inv.state in FINAL:
            return
        if isinstance(exc, asyncio.CancelledError):
            if inv.stop or self.cancelling:
                self.settle(inv, CANCELLED)
                return
        elif isinstance(exc, Skip):
            inv.error = exc
            self.settle(inv, SKIPPED)
            return
        self.fail(inv, exc)  # a CancelledError the body raised itself is a failure too
        if isinstance(exc, KeyboardInterrupt):  # the user's interrupt: stop the whole run
            self.fatal = exc
            self.cancel()

    def ended(self, inv: Inv, job: asyncio.Future[Any]) -> None:
        """Done callback of a slow-path job: ``run_task`` settles its task itself, except when
        it was cancelled before its first step (a fail_fast sibling failed at that moment)."""
        inv.job = None
        if inv.state in FINAL:
            return
        if job.cancelled():
            self.settle(inv, CANCELLED)
        else:  # pragma: no cover - run_task settles every way it ends
            self.fail(inv, job.exception() or RuntimeError("the task ended without a state"))

    def finish(self, inv: Inv, job: asyncio.Future[Any]) -> None:
        """Done callback of a fast-path job in a worker thread."""
        if inv.state in FINAL:
            inv.job = None
            if not job.cancelled():
                job.exception()  # settled meanwhile (its run stopped): its outcome is not wanted
            return
        exc = _cancelled_error(job) if job.cancelled() else job.exception()
        if exc is not None:
            self.outcome_of(inv, exc)
            return
        inv.job = None  # a finished future keeps its result: let it go
        inv.value = value = job.result()
        self.results[inv.name] = value
        self.settle(inv, SUCCEEDED)

    def fail(self, inv: Inv, exc: BaseException) -> None:
        """End ``inv`` FAILED with ``exc`` (noted with the task and attempt)."""
        inv.error = exc
        self.note(inv, exc)
        self.settle(inv, FAILED)

    def note(self, inv: Inv, exc: BaseException) -> None:
        retry = inv.spec.task.options.retry
        total = retry.max_attempts if retry is not None else 1
        attempt = max(inv.attempts, 1)
        note = f"nborch: raised in task {inv.name!r}, attempt {attempt} of {total}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)

    def count_settled(self, inv: Inv, state: TaskState) -> None:
        """Count a settled upstream of ``inv`` by its state (CANCELLED counts as upstream_failed)."""
        if state is SUCCEEDED:
            inv.n_ok += 1
        elif state is FAILED:
            inv.n_failed += 1
        elif state is SKIPPED:
            inv.n_skipped += 1
        else:
            inv.n_upfailed += 1

    def worker_pool(self) -> WorkerPool:
        if self.pool is None:
            slots = sum(p.cap for p in self.pools.values() if p is not None)
            size = max(32, slots, (os.cpu_count() or 1) + 4)
            self.pool = WorkerPool(self.loop, size)  # type: ignore[arg-type]
        return self.pool

    def keyed_limit(self, inv: Inv) -> Limit:
        opts = inv.spec.task.options
        args, kwargs = inv.call  # type: ignore[misc]  # keyed tasks always resolve their call
        key = (inv.spec.task.fn, call_values(inv, opts.limit_by, args, kwargs))
        lim = self.fn_limits.get(key)
        if lim is None:
            lim = self.fn_limits[key] = Limit(opts.limit)  # type: ignore[arg-type]
        return lim

    def acquire(self, inv: Inv, front: bool) -> bool:
        """Take a slot in every limit of ``inv``, or queue it on the first full one."""
        if inv.weight != 1:  # slots=N: N slots of its pool (nborch.limits)
            return acquire_weighted(inv, front)
        for lim in inv.limits:
            if lim.used >= lim.cap:
                if front:
                    lim.waiters.appendleft(inv)
                else:
                    lim.waiters.append(inv)
                return False
        for lim in inv.limits:
            lim.used += 1
        inv.holding = True
        return True

    def release(self, inv: Inv) -> None:
        if not inv.holding:
            return
        inv.holding = False
        if inv.weight != 1:
            inv.limits[0].used -= inv.weight - 1
        for lim in inv.limits:
            lim.used -= 1
        for lim in inv.limits:
            self.pump(lim)

    def pump(self, lim: Limit) -> None:
        waiters = lim.waiters
        while waiters and lim.used < lim.cap:
            inv = waiters.popleft()
            if lim.held:  # slots kept for the first in line (slots=N): it takes them or keeps them
                unhold(lim)
            resuming = inv.resume is not None
            if inv.state.is_final or ((self.cancelling or inv.stop) and not resuming):
                continue
            if self.acquire(inv, front=resuming):
                if resuming:
                    fut, inv.resume = inv.resume, None
                    if not fut.done():  # type: ignore[union-attr]
                        fut.set_result(None)  # type: ignore[union-attr]
                else:
                    self.launch(inv)

    async def reacquire(self, inv: Inv) -> None:
        """Take the slots back after a wait, ahead of tasks that have not started yet."""
        if not inv.limits or self.acquire(inv, front=True):
            return
        inv.resume = self.loop.create_future()  # type: ignore[union-attr]
        try:
            await inv.resume
        except BaseException:
            inv.resume = None
            raise

    # -- arguments -------------------------------------------------------------------------------

    def value_of(self, node: Node, results: Any = None) -> Any:
        return self.graph.value(node, self.results if results is None else results)

    def resolve(self, value: Any, results: Any = None) -> Any:
        if isinstance(value, Node):
            return self.value_of(value, results)
        if isinstance(value, _COLLECTIONS):
            return type(value)(self.resolve(v, results) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v, results) for k, v in value.items()}
        return value

    def arguments(self, inv: Inv, results: Any = None) -> tuple[Any, dict[str, Any]]:
        """The call of ``inv`` from the upstream values in ``results`` (default: the run's)."""
        spec = inv.spec
        task = spec.task
        names = spec.argnames
        plan = spec.argplan
        if names is not None:  # every argument is an upstream task: their values, in order
            args: Any = tuple(map((self.results if results is None else results).get, names))
            kwargs = task.kwargs
        elif plan is not None:  # upstream tasks among the arguments: one lookup each (Spec.argplan)
            got = (self.results if results is None else results).get
            positional, keywords = plan
            if positional:
                args = list(task.args)
                for i, up in positional:
                    args[i] = got(up)
                args = tuple(args)
            else:
                args = task.args
            if keywords:
                kwargs = dict(task.kwargs)
                for key, up in keywords:
                    kwargs[key] = got(up)
            else:
                kwargs = task.kwargs
        elif spec.refs:
            args = tuple(self.resolve(a, results) for a in task.args)
            kwargs = {k: self.resolve(v, results) for k, v in task.kwargs.items()}
        else:
            args, kwargs = task.args, task.kwargs
        if spec.pipe is not None:
            args = (self.value_of(spec.pipe, results), *args)
            if spec.pipe_names is not None:
                kwargs = {**kwargs, **dict(zip(spec.pipe_names, args, strict=False))}
                args = ()
        if spec.named or spec.wants_context or spec.wants_state:
            kwargs = dict(kwargs)
            if spec.named:
                for param, node in spec.named.items():
                    kwargs[param] = self.value_of(node, results)
            if spec.wants_context:
                kwargs["context"] = self.context(inv)
            if spec.wants_state:
                kwargs["state"] = self.state
        return args, kwargs

    def context(self, inv: Inv) -> MappingProxyType[str, Any]:
        """Read-only values of every upstream (transitively) that succeeded."""
        seen: dict[str, Any] = {}
        stack = list(inv.spec.up)
        while stack:
            spec = stack.pop()
            if spec.name in seen:
                continue
            seen[spec.name] = self.results.get(spec.name)
            stack.extend(spec.up)
        ordered = {name: seen[name] for name in self.invs if name in seen}
        return MappingProxyType(ordered)

    def call_injected(self, fn: Callable[..., Any], inv: Inv) -> Any:
        info = fn_info(fn)
        kwargs: dict[str, Any] = {}
        if "state" in info.params:
            kwargs["state"] = self.state
        if "context" in info.params:
            kwargs["context"] = self.context(inv)
        return fn(**kwargs)

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
        try:
            self._settle(inv, state)
            queue = self.queue
            while queue:
                inv, state = queue.popleft()
                self._settle(inv, state)
        finally:
            self.settling = False
        if self.unsettled <= 0 and self.done is not None and not self.done.done():
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
                    self.cancel_specs(grp.specs)
        if inv.holding:
            self.release(inv)
        elif inv.weight != 1:  # it may hold slots while it waits for more (nborch.limits)
            drop_waiter(self, inv)
        if inv.ahead is not None or self.pending:
            self.offload.drop_ahead(inv)
        if inv.circuits:
            self.count_circuits(inv, state)
        if inv.map_of is not None:  # an item: its placeholder may settle now (value first)
            self.expansions.settled(inv)
        bus = self.bus
        if events._subscribers or (bus is not None and bus._subscribers):
            if (state is SUCCEEDED and not events._subscribers and not bus.wants_successes  # type: ignore[union-attr]
                    and inv.cache_key is None and not inv.cached):
                bus.journal(inv)  # type: ignore[union-attr,misc]  # the recorder alone: no event built
            else:
                self.emit(inv, state)
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
            self.count_settled(d, state)
            decision = decide(d.rule, d.n_up, d.n_ok, d.n_failed, d.n_upfailed, d.n_skipped)
            if decision is None:
                continue
            if decision == RUN:
                self.start(d)
            else:
                d.call = DECIDED  # its state is decided: no later settle may decide it again
                queue.append((d, decision))  # type: ignore[arg-type]

    def stop(self, inv: Inv) -> None:
        """Cancel one unsettled task: a running job is cancelled (and settles CANCELLED when it
        unwinds), a task that has not started settles CANCELLED now; a sync body sees
        ``nborch.cancelled()`` at once."""
        inv.stop = True
        if inv.frame is not None:
            inv.frame.cancelled = True
        if inv.job is None:
            self.settle(inv, CANCELLED)
        elif not inv.job.done():
            if inv.simple and inv.spec.task.info.is_async:  # Engine.body: if it has not begun, it
                inv.job.add_done_callback(functools.partial(self.ended, inv))  # never will; this settles it
            inv.job.cancel()
        # else it has just ended: its done callback, already due, settles it with its outcome

    def cancel_specs(self, specs: list[Spec]) -> None:
        for spec in specs:
            inv = self.invs.get(spec.name)
            if inv is not None and not inv.state.is_final:
                self.stop(inv)

    def cancel(self) -> None:
        """Stop the run: cancel running tasks, mark every unstarted one CANCELLED."""
        if self.cancelling:
            return
        self.cancelling = True
        for inv in list(self.invs.values()):
            if not inv.state.is_final:
                self.stop(inv)

    async def unwind(self, grace: float = 1.0) -> None:
        """Give cancelled tasks up to ``grace`` seconds to run their cleanup (async ones are
        cancelled; sync ones see ``nborch.cancelled()`` and may return early)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace / 2
        jobs = [inv.job for inv in self.invs.values() if inv.job is not None and not inv.job.done()]
        if jobs:
            await asyncio.wait(jobs, timeout=grace)
        # sync bodies cannot be stopped, but those that poll nborch.cancelled() stop soon: wait
        # for them a little (half the grace), so that what stops stopped when the run returns
        while self.pool is not None and self.pool.running and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for inv in self.invs.values():  # a task that ignored cancellation is recorded as cancelled
            if not inv.state.is_final:
                self.settle(inv, CANCELLED)
        # a cancelled run leaves nothing queued on a cluster: wait for the executors to confirm
        executors = {id(inv.executor): inv.executor for inv in self.invs.values() if inv.executor is not None}
        for exe in executors.values():
            await exe.settle(grace)

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


def is_loop_thread(engine: Engine) -> bool:
    """True when called on the thread that runs ``engine``'s loop."""
    return engine.loop_thread == threading.get_ident()
