"""Running nodes from anywhere: ``run()``, ``run_async()``, and what ``node.run()``, ``await node``
and ``node.result`` reach through ``nborch.hooks``.

``run_async`` is the one way a run starts: it checks the options (``options``), builds the
graph, opens the store and the displays (``recording``, ``register_display``), drives the
engine on the running loop and returns the ``Run`` record. The blocking entry points hand it
to ``loop_driver.run_sync``, which drives the loop from a script, a notebook cell (with or
without nest_asyncio) or a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable
from typing import Any

from . import capture
from ..core import hooks
from ..core.clock import SystemClock, wall_time
from ..core.engine import Engine, current_frame, is_loop_thread
from ..core.errors import NborchError, RunTimeoutError
from ..core.gc_pause import GcPause
from ..core.eventbus import EventBus
from ..core.remote import child_call_error, remote_task
from ..core.stopping import release
from ..core.graph import Graph, build_graph
from ..core.record import Run
from ..core.node import Node
from .loop_driver import _wait_hooks  # noqa: F401 - read here by tests/display/test_kernel.py
from .loop_driver import caller_blocks, caller_polls_ui, register_wait_hook, run_sync, wake_on_sigint
from .options import as_node, check_options, event_subscribers, reuse_memory
from .recording import make_record, open_recorder

__all__ = ["cancelled", "last_run", "register_display", "register_wait_hook", "run", "run_async"]

DisplayFactory = Callable[["RunHandle"], Any]
log = logging.getLogger("nborch")
_display_hooks: list[DisplayFactory] = []
_last: list[Run] = []


def register_display(factory: DisplayFactory) -> Callable[[], None]:
    """Let a front end show runs: ``factory(handle)`` returns a subscriber or None.

    ``handle`` is a ``RunHandle`` (``run_id``, ``graph``, ``options``, ``cancel()``).

    The subscriber gets every event of the run; if it has ``close(run)``, that is called
    with the finished ``Run``. Returns a function that unregisters the factory. The notebook
    extension registers one; the core never imports a front end.
    """
    _display_hooks.append(factory)
    return lambda: _display_hooks.remove(factory) if factory in _display_hooks else None


def _open_displays(handle: RunHandle) -> list[Any]:
    """The subscribers the registered display factories give for this run (``display=False``:
    none; ``display=True`` and none given: console progress)."""
    want = handle.options.get("display")
    if want is False:
        return []
    subs = []
    for factory in list(_display_hooks):
        try:
            sub = factory(handle)
        except Exception:  # a display must never stop a run from starting
            log.exception("display factory %r failed", factory)
            continue
        if sub is not None:
            subs.append(sub)
    if not subs and want:
        subs.append(hooks.console_progress(handle.graph))
    return subs


def last_run() -> Run | None:
    """The record of the most recent run in this process (also after ``node.run()`` raised)."""
    return _last[-1] if _last else None


def cancelled() -> bool:
    """True inside a task whose run (or attempt) was cancelled: sync tasks poll this to stop early."""
    frame = current_frame()
    return bool(frame is not None and (frame.cancelled or frame.engine.cancelling))


class RunHandle:
    """What a display factory receives: the run's id, graph and options, and a cancel switch.

    ``blocking`` says how the caller waits: ``"thread"`` (a blocking ``node.run()`` in a
    running loop, e.g. a plain Jupyter cell: the caller's thread is blocked, and only wait
    hooks run in it), ``"nested"`` (nest_asyncio: the caller's loop keeps turning) or None (an
    awaited run, or a script). ``polls_ui`` is True when a blocking caller runs wait hooks, so
    a front end's UI (a Cancel button) keeps working."""

    def __init__(self, run_id: str, graph: Graph, options: dict[str, Any]) -> None:
        self.run_id = run_id
        self.graph = graph
        self.options = options
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.plan: Any = None  # an incremental run's nborch.reuse.Plan (what it reuses, and why)
        self.blocking = caller_blocks.get()
        self.polls_ui = self.blocking != "thread" or caller_polls_ui.get()

    def cancel(self) -> None:
        """Cancel the run from any thread (a widget's Cancel button); every task settles."""
        if self.loop is not None and self.task is not None and not self.task.done():
            try:
                self.loop.call_soon_threadsafe(self.task.cancel)
            except RuntimeError:  # the loop is closed: the run is over
                pass


async def run_async(node: Any, **options: Any) -> Run:
    """Run ``node`` on the running loop and return its ``Run``; task failures do not raise.

    Bad workflows raise ``DefinitionError`` before anything runs. Cancelling the awaiting
    coroutine cancels the run (every task settles first) and re-raises ``CancelledError``.
    ``timeout=S``: when the run has lasted S seconds it is cancelled the same way, then
    ``RunTimeoutError`` is raised with the record as ``.run``.
    """
    node = as_node(node)
    check_options(options)
    dedupe: dict[Any, Any] = {}
    # Building allocates only long-lived objects, nothing for the cyclic GC to find: it stays
    # paused until the engine has set the run up (Engine.execute ends the pause; the finally
    # below, if anything fails before, so that a failed set-up never leaves the GC off).
    pause = GcPause()
    try:
        return await _run_paused(node, options, dedupe, pause)
    finally:
        pause.end()


async def _run_paused(node: Node, options: dict[str, Any], dedupe: dict[Any, Any], pause: GcPause) -> Run:
    graph = build_graph(node, dedupe=dedupe)
    # a new id: 12 random hex digits, as uuid4().hex[:12] gave (importing uuid costs 4 ms: platform)
    handle = RunHandle(options.get("run_id") or os.urandom(6).hex(), graph, options)
    handle.loop, handle.task = asyncio.get_running_loop(), asyncio.current_task()
    bus = EventBus()
    recorder, cache, preset = open_recorder(handle.run_id, graph, node, options)  # may raise: a
    # reused run_id, an unknown resume= (nothing has run)
    if recorder is not None:
        bus.subscribe(recorder)  # first: with durable=True a row is committed before others see it
    for s in event_subscribers(options):
        bus.subscribe(s)
    displays = _open_displays(handle)
    for d in displays:
        bus.subscribe(d)
    engine = Engine(
        graph,
        run_id=handle.run_id,
        clock=options.get("clock") or SystemClock(),
        max_concurrency=options.get("max_concurrency"),
        state=options.get("state"),
        bus=bus,
        executor=options.get("executor"),
    )
    engine.dedupe = dedupe
    engine.gc_pause = pause
    if recorder is not None:
        displays.append(recorder)  # closed with the others: the run's end is committed
        engine.cache = cache
        engine.force = bool(options.get("force"))
    memory = reuse_memory(options.get("reuse"))
    plan = None
    if memory is not None:  # an incremental run: tasks that are up to date stand as they were
        from ..core.reuse import plan_reuse

        plan = plan_reuse(graph, memory, options.get("state"))
        handle.plan = plan
        engine.memory, engine.plan = memory, plan
        preset = {**plan.presets(), **(preset or {})}  # a resumed run's own presets win
    engine.preset = preset or {}
    engine.output.echo = not any(getattr(d, "shows_output", False) for d in displays)
    capturing = options.get("capture", True)
    if capturing:
        capture.install()
    started = wall_time()
    deadline = asyncio.timeout(options.get("timeout"))  # the whole run's; cancels it as an interrupt does
    try:
        with wake_on_sigint(handle.loop):
            async with deadline:
                await engine.execute()
    except TimeoutError:
        if not deadline.expired():  # a TimeoutError of the run's own, not its deadline
            raise
    finally:
        if engine.remotes:  # values left on a cluster come back once, in one batch, for the record
            try:
                await engine.offload.materialize_results()
            except Exception:  # lost on the cluster: the record keeps the Remote handles
                log.exception("could not fetch the values of run %s from the cluster", handle.run_id)
        if capturing:
            capture.flush(engine)
            capture.uninstall()
        record = make_record(engine, node, started)
        if plan is not None and memory is not None:
            record.reasons = plan.why
            memory.record(record, plan.keys)
        _last[:] = [record]
        for d in displays:
            close = getattr(d, "close", None)
            if close is not None:
                try:
                    close(record)
                except Exception:  # a display must never break a run
                    log.exception("display %r failed to close", d)
        release(engine)  # what the record does not keep is freed with it, not by the GC later
    if deadline.expired():
        raise RunTimeoutError(record, options["timeout"])
    return record


async def run_node_async(node: Node, options: dict[str, Any]) -> Any:
    record = await run_async(node, **options)
    record.raise_for_failure()
    if record.cancelled:
        raise asyncio.CancelledError(f"run {record.id} was cancelled")
    return record.value


# -- sync entry points ---------------------------------------------------------------------------


def run(node: Any, **options: Any) -> Run:
    """Run ``node`` to the end, blocking; return its ``Run`` (task failures do not raise).

    Works in a script, in a notebook cell (with or without nest_asyncio) and in a thread.
    """
    return run_sync(lambda: run_async(node, **options))


def run_node(node: Node, options: dict[str, Any]) -> Any:
    return run_sync(lambda: run_node_async(node, options))


# -- awaiting and .result inside and outside runs ------------------------------------------------


async def await_node(node: Node) -> Any:
    frame = current_frame()
    if frame is None and remote_task() is not None:
        raise child_call_error(node)
    if frame is not None:
        engine = frame.engine
        if engine.loop is asyncio.get_running_loop() and not engine.done.done():  # type: ignore[union-attr]
            return await engine.children.call_child(node, frame.inv)
    return await run_node_async(node, {})


def blocking_result(node: Node) -> Any:
    frame = current_frame()
    if frame is None:
        if remote_task() is not None:
            raise child_call_error(node)
        return run_node(node, {})
    engine = frame.engine
    if is_loop_thread(engine):
        raise NborchError(
            f"{node!r}.result was read inside the async task {frame.inv.name!r}, which would block "
            "the event loop. Write `await node` there instead."
        )
    if frame.cancelled or engine.done is None or engine.done.done():
        raise asyncio.CancelledError(f"task {frame.inv.name!r} was cancelled")
    future = asyncio.run_coroutine_threadsafe(engine.children.call_child(node, frame.inv), engine.loop)  # type: ignore[arg-type]
    assert engine.pool is not None
    try:
        with engine.pool.blocking():
            return future.result()
    except concurrent.futures.CancelledError:  # this attempt was abandoned or cancelled
        raise asyncio.CancelledError(f"task {frame.inv.name!r} was cancelled") from None


# The core reaches the runner through nborch.hooks (a Node's run(), run_async(), await, .result).
hooks.run_node.register(run_node)
hooks.run_node_async.register(run_node_async)
hooks.await_node.register(await_node)
hooks.blocking_result.register(blocking_result)
