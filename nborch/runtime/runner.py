"""Running nodes from anywhere: a script, ``await`` in a notebook, a blocking call in a cell.

``run()`` picks how to drive the loop:

* no running loop (a script): ``asyncio.run``;
* a running loop patched by ``nest_asyncio`` (or its fork): ``loop.run_until_complete``,
  so the run shares the notebook's loop as nest_asyncio users expect;
* a running loop without it (a plain Jupyter cell): a fresh loop on a worker thread while the
  cell waits. A kernel interrupt (KeyboardInterrupt) cancels the run, waits for it to
  unwind, then reaches the cell: nothing keeps running, and the next run works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import gc
import logging
import signal
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from . import capture
from ..core import hooks
from ..core.clock import SystemClock, wall_time
from ..core.engine import Engine, current_frame, is_loop_thread
from ..core.errors import DefinitionError, NborchError, RunTimeoutError, did_you_mean
from ..core.eventbus import EventBus
from ..core.executors import child_call_error, remote_task
from ..core.graph import Graph, build_graph
from ..core.limits import check_max_concurrency
from ..core.record import Run
from ..core.state import TaskState
from ..core.task import Node, Task, TaskFunction, _check_callable

__all__ = ["cancelled", "last_run", "register_display", "register_wait_hook", "run", "run_async"]

RUN_OPTIONS = (
    "max_concurrency", "state", "on_event", "clock", "display", "run_id", "capture",
    "store", "force", "resume", "name", "executor", "durable", "reuse", "timeout",
)

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


WaitHook = Callable[[], Any]
_wait_hooks: list[WaitHook] = []
# "thread": this run's caller blocks in another thread's wait (a plain Jupyter cell's node.run()),
# "nested": it blocks in run_until_complete on its own loop (nest_asyncio), None: it awaits
_blocking: contextvars.ContextVar[str | None] = contextvars.ContextVar("nborch_blocking", default=None)
_polls_ui: contextvars.ContextVar[bool] = contextvars.ContextVar("nborch_polls_ui", default=False)


def register_wait_hook(hook: WaitHook) -> Callable[[], None]:
    """Call ``hook()`` about every 0.1 s in the thread that waits for a blocking run.

    A front end uses it to keep its UI alive while a cell blocks in ``node.run()``: the
    notebook extension processes the widget messages that arrived meanwhile, so the live
    display's Cancel button works during a blocking run. A hook is asked once before the
    wait; returning False there means it cannot work in this thread (it is then left out of
    this wait, and ``RunHandle.polls_ui`` is False). A hook that raises is logged and removed.
    Returns a function that unregisters it."""
    _wait_hooks.append(hook)
    return lambda: _wait_hooks.remove(hook) if hook in _wait_hooks else None


def _call_wait_hooks(hooks: list[WaitHook]) -> list[WaitHook]:
    """Call ``hooks``; returns those that want to go on (not False, not raising)."""
    going = []
    for hook in hooks:
        try:
            if hook() is not False:
                going.append(hook)
        except Exception:  # a front end's hook must never break the wait
            log.exception("wait hook %r failed; it has been removed", hook)
            if hook in _wait_hooks:
                _wait_hooks.remove(hook)
    return going


def last_run() -> Run | None:
    """The record of the most recent run in this process (also after ``node.run()`` raised)."""
    return _last[-1] if _last else None


def cancelled() -> bool:
    """True inside a task whose run (or attempt) was cancelled: sync tasks poll this to stop early."""
    frame = current_frame()
    return bool(frame is not None and (frame.cancelled or frame.engine.cancelling))


# -- options and nodes ---------------------------------------------------------------------------


def as_node(node: Any) -> Node:
    if isinstance(node, Node):
        return node
    if isinstance(node, TaskFunction):
        return Task(node)
    _check_callable(node, "run()")
    return Task(node)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in options if k not in RUN_OPTIONS]
    if unknown:
        bad = unknown[0]
        raise DefinitionError(
            f"run() got an unknown option {bad!r}.{did_you_mean(bad, RUN_OPTIONS)} "
            f"Options: {', '.join(RUN_OPTIONS)}."
        )
    check_max_concurrency(options.get("max_concurrency"))
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not timeout > 0):
        raise DefinitionError(f"timeout= expects a number of seconds > 0 or None, got {timeout!r}")
    if options.get("executor") is not None:
        from ..core.executors import check_executor

        check_executor(options["executor"])
    if options.get("durable") and options.get("store", True) in (False, None):
        raise DefinitionError("durable=True commits each task's row as it ends, but store=False records "
                              "nothing: drop one of the two.")
    if options.get("reuse") is not None:
        _memory(options["reuse"])
    on_event = options.get("on_event")
    if on_event is not None:
        subs = on_event if isinstance(on_event, list | tuple) else [on_event]
        for s in subs:
            if not callable(s):
                raise DefinitionError(f"on_event= expects a callable or a list of callables, got {s!r}")
    return options


# -- the async core ------------------------------------------------------------------------------


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
        self.blocking = _blocking.get()
        self.polls_ui = self.blocking != "thread" or _polls_ui.get()

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
    # paused until the engine has set the run up (Engine.execute turns it back on).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        graph = build_graph(node, dedupe=dedupe)
    except BaseException:
        if gc_was_enabled:
            gc.enable()
        raise
    # a new id: 12 random hex digits, as uuid4().hex[:12] gave (importing uuid costs 4 ms: platform)
    handle = RunHandle(options.get("run_id") or os.urandom(6).hex(), graph, options)
    handle.loop, handle.task = asyncio.get_running_loop(), asyncio.current_task()
    bus = EventBus()
    try:
        recorder, cache, preset = _open_recorder(handle, graph, node, options)
    except BaseException:  # a reused run_id, an unknown resume=: nothing has run
        if gc_was_enabled:
            gc.enable()
        raise
    if recorder is not None:
        bus.subscribe(recorder)  # first: with durable=True a row is committed before others see it
    on_event = options.get("on_event")
    for s in on_event if isinstance(on_event, list | tuple) else [on_event] if on_event is not None else []:
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
    engine.gc_was_enabled = gc_was_enabled
    if recorder is not None:
        displays.append(recorder)  # closed with the others: the run's end is committed
        engine.cache = cache
        engine.force = bool(options.get("force"))
    memory = _memory(options.get("reuse"))
    plan = None
    if memory is not None:  # an incremental run: tasks that are up to date stand as they were
        from ..core.reuse import plan_reuse

        plan = plan_reuse(graph, memory, options.get("state"))
        handle.plan = plan
        engine.memory, engine.plan = memory, plan
        preset = {**plan.presets(), **(preset or {})}  # a resumed run's own presets win
    engine.preset = preset or {}
    engine.echo = not any(getattr(d, "shows_output", False) for d in displays)
    capturing = options.get("capture", True)
    if capturing:
        capture.install()
    started = wall_time()
    deadline = asyncio.timeout(options.get("timeout"))  # the whole run's; cancels it as an interrupt does
    try:
        with _wake_on_sigint(handle.loop):
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
    if deadline.expired():
        raise RunTimeoutError(record, options["timeout"])
    return record


def _memory(option: Any) -> Any:
    """``reuse=True``: the process's memory; a ``Memory``: that one; False/None: no reuse."""
    if option is None or option is False:
        return None
    from ..core.reuse import Memory, default_memory

    if option is True:
        return default_memory
    if isinstance(option, Memory):
        return option
    raise DefinitionError(f"reuse= expects True, False or a nborch.reuse.Memory, got {option!r}")


def _open_store(option: Any) -> Any:
    """``store=True`` (default): the store at $NBORCH_HOME or ./.nborch; False/None: no
    recording and no cache; a path or a SqliteStore: that one. A store that cannot be used
    (damaged, read-only) gives one warning, and None: the run goes on unrecorded."""
    if option is False or option is None:
        return None
    return hooks.open_store(option)


def _open_recorder(handle: RunHandle, graph: Graph, node: Node, options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(recorder, cache, resume presets) of a run about to start, or Nones without a store.
    Raises before anything runs for a ``run_id`` recorded already or an unknown ``resume=``."""
    store = _open_store(options.get("store", True))
    if store is None:
        return None, None, {}
    cache = hooks.open_cache(store, handle.run_id)
    preset = resume_plan(store, graph, options["resume"], cache) if options.get("resume") else {}
    recorder = hooks.start_recording(store, handle.run_id, name=options.get("name") or getattr(node, "name", None),
                               durable=bool(options.get("durable")), given_id=bool(options.get("run_id")))
    return recorder, cache, preset


def resume_plan(store: Any, graph: Graph, run_id: str | Run, cache: Any) -> dict[str, Preset]:
    """Tasks of ``run_id`` that need not run again: name -> (value, cache key, stored, stored).
    ``run_id`` may be the ``Run`` record itself (a front end that keeps more values than the
    store, or wants a task to run again, hands it in with its ``results`` and ``states``).

    Everything that did not succeed runs again, with everything downstream of it (a task that
    succeeded under ``all_done`` despite a failed upstream runs again once that upstream has),
    and so does any succeeded task whose value a re-run task needs but which was not stored
    (values are stored by ``cache=True``, and a run that did not succeed keeps the rest it can
    pickle, see ``store.sqlite.keep_for_resume``). A succeeded task that nothing re-run needs
    stands as it was, without a value when none was stored (``stored`` False): it is reported
    as reused, and no value is made up for it.

    The items of a mapped node (``name:i``) are planned one by one: a re-run map expands again,
    and its items that succeeded stand (their presets are taken when the item is made), so one
    failed item of thousands runs alone. An item also depends on its map's concrete sources:
    if one of those runs again, so do all the items.
    """
    from ..core.mapping import MapTask, item_base

    previous = run_id if isinstance(run_id, Run) else hooks.load_run(run_id, store)
    maps = {n for n, spec in graph.specs.items() if type(spec.task) is MapTask}

    def known(name: str) -> bool:
        return name in graph.specs or item_base(name) in maps

    ups: dict[str, list[str]] = {n: [u.name for u in spec.up] for n, spec in graph.specs.items()}
    for name in previous.states:
        if name not in graph.specs and known(name):
            base = item_base(name)
            assert base is not None  # known(name) and not a spec: an item
            sources = [u.name for u in graph.specs[base].up]  # the map's concrete sources
            ups[name] = [u for u in previous.upstreams.get(name, ()) if known(u)] + sources
            ups[base].append(name)  # the map's value is its items' values
    succeeded = {n for n, s in previous.states.items() if s is TaskState.SUCCEEDED and known(n)}
    stored = {n: (previous.results[n], previous.cache_keys.get(n)) for n in succeeded if n in previous.results}
    rerun = {n for n in ups if n not in succeeded}
    down: dict[str, list[str]] = {}
    for name, its_ups in ups.items():
        for up in its_ups:
            down.setdefault(up, []).append(name)
    frontier = list(rerun)
    while frontier:  # what depends on a re-run task runs again
        for d in down.get(frontier.pop(), ()):
            if d not in rerun:
                rerun.add(d)
                frontier.append(d)
    frontier = list(rerun)
    while frontier:  # what a re-run task needs and cannot be read back runs again
        for up in ups.get(frontier.pop(), ()):
            if up in succeeded and up not in stored and up not in rerun:
                rerun.add(up)
                frontier.append(up)
    return {
        n: (*stored[n], True, stored[n][1] is not None) if n in stored else (None, None, False, False)
        for n in succeeded if n not in rerun
    }


Preset = tuple[Any, "str | None", bool, bool]  # value, cache key, has a value, from the cache


def _open_displays(handle: RunHandle) -> list[Any]:
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


def make_record(engine: Engine, node: Node, started: float) -> Run:
    try:
        value = engine.graph.value(node, engine.results)
    except KeyError:  # pragma: no cover - every node of the graph has a spec
        value = None
    record = Run(
        engine.run_id,
        results=engine.results,
        value=value,
        started=started,
        finished=wall_time(),
        duration=max(engine.finished - engine.started, 0.0),
        first_failure=engine.first_failure.name if engine.first_failure is not None else None,
        invs=engine.invs,
        logs={name: "".join(parts) for name, parts in engine.logs.items()},
    )
    record.stopped = engine.cancelling
    record.name = getattr(node, "name", None)
    record.item_names = [name for names in engine.graph.items.values() for name in names]
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


def run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        return asyncio.run(make())
    if getattr(loop, "_nest_patched", False):
        return _run_nested(loop, make())
    return _run_in_thread(make)


@contextlib.contextmanager
def _wake_on_sigint(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While a run is awaited on the main thread's loop, a SIGINT also wakes that loop.

    ipykernel interrupts an awaited cell from its SIGINT handler with a plain ``call_soon``,
    which does not wake a loop asleep in ``select()`` (ipython/ipykernel#881): while every task
    of the run is in a thread, a process or on Dask, the cancel waited for the next completion,
    possibly minutes (and was lost if the run ended then). asyncio.Runner's own handler wakes
    the loop; this wraps whatever handler is installed to do the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIG_IGN, SIG_DFL, or not set from Python
        yield
        return

    def waking(signum: int, frame: Any) -> None:
        try:
            handler(signum, frame)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(lambda: None)

    signal.signal(signal.SIGINT, waking)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is waking:  # not replaced meanwhile
            signal.signal(signal.SIGINT, handler)


def _run_nested(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on the notebook's own (nest_asyncio-patched) loop.

    A SIGINT must not land as KeyboardInterrupt in whatever task code happens to run: for
    the duration of the run it cancels the run instead, and KeyboardInterrupt is raised
    here once every task has settled.
    """
    token = _blocking.set("nested")
    try:
        job = loop.create_task(coro)  # the task copies the context: it sees "nested"
    finally:
        _blocking.reset(token)
    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.append(True)
        loop.call_soon_threadsafe(job.cancel)

    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # pragma: no cover - not the main interpreter
            previous = None
    try:
        result = loop.run_until_complete(job)
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt
    return result


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run on a fresh loop in a worker thread while this thread waits (a running loop that
    cannot be re-entered: a plain Jupyter cell, or ``node.run()`` inside ``asyncio.run``).

    The wait is on an event the worker sets once ``asyncio.run`` has returned (every task
    settled, the record made), never on ``Thread.join`` alone: an interrupted join can mark a
    live thread as finished (python/cpython#90882), which let KeyboardInterrupt reach the cell
    while the run was still unwinding. An interrupt cancels the run, waits for that event
    (further interrupts while it unwinds are absorbed: the unwinding is bounded), then
    re-raises KeyboardInterrupt.
    """
    box: dict[str, Any] = {}
    started = threading.Event()
    finished = threading.Event()

    async def main() -> Any:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await make()

    hooks = _call_wait_hooks(list(_wait_hooks)) if _wait_hooks else []  # those that can work here

    def target() -> None:
        _blocking.set("thread")
        _polls_ui.set(bool(hooks))
        try:
            box["result"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            started.set()
            finished.set()

    ctx = contextvars.copy_context()  # the caller's contextvars stay visible in the run
    worker = threading.Thread(target=ctx.run, args=(target,), name="nborch-loop", daemon=True)
    with _interruptible():
        try:
            # inside the try: the run may be far along (and an interrupt arrive) before start()
            # returns, since the new thread need not hand the GIL back at once
            worker.start()
            while not finished.wait(0.1):  # short waits keep KeyboardInterrupt prompt everywhere
                if hooks:
                    hooks = _call_wait_hooks(hooks)
        except BaseException:  # KeyboardInterrupt (kernel Stop, Ctrl-C): cancel, wait, re-raise
            _cancel_and_wait(box, started, finished)
            raise
    worker.join()  # it has set ``finished``: only its last instructions are left
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _cancel_and_wait(box: dict[str, Any], started: threading.Event, finished: threading.Event) -> None:
    for _ in range(50):  # at most 5 s: an interrupt inside Thread.start() may have kept it from starting
        try:
            if started.wait(0.1):
                break
        except KeyboardInterrupt:  # another interrupt while it starts: keep waiting
            continue
    else:
        return
    loop, job = box.get("loop"), box.get("task")
    if loop is not None and job is not None:
        try:
            loop.call_soon_threadsafe(job.cancel)
        except RuntimeError:  # its loop is closed: the run is over
            pass
    while True:
        try:
            finished.wait()
            return
        except KeyboardInterrupt:  # another interrupt while it unwinds: keep waiting
            continue


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Inside ``asyncio.run`` on the main thread, asyncio's SIGINT handler only cancels the
    main task, which cannot run while this thread blocks in a wait, so the first Ctrl-C would
    be lost. For the wait, SIGINT raises KeyboardInterrupt here instead."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGINT)
        handler = getattr(handler, "func", handler)  # asyncio installs a functools.partial
        if getattr(handler, "__func__", None) is getattr(asyncio.runners.Runner, "_on_sigint", ()):
            try:
                previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            except ValueError:  # pragma: no cover - not the main interpreter
                previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


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
