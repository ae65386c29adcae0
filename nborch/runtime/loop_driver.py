"""Driving a run's event loop to its end from sync code: a script, a notebook cell, a thread.

``run_sync(make)`` picks how:

* no running loop (a script): ``asyncio.run``;
* a running loop patched by ``nest_asyncio`` (or its fork): ``loop.run_until_complete``,
  so the run shares the notebook's loop as nest_asyncio users expect;
* a running loop without it (a plain Jupyter cell): a fresh loop on a worker thread while the
  cell waits. A kernel interrupt (KeyboardInterrupt) cancels the run, waits for it to
  unwind, then reaches the cell: nothing keeps running, and the next run works.

While a caller blocks, wait hooks (``register_wait_hook``) keep a front end's UI alive, and
``caller_blocks`` tells the run how its caller waits (``RunHandle.blocking``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

__all__ = ["caller_blocks", "caller_polls_ui", "register_wait_hook", "run_sync", "wake_on_sigint"]

log = logging.getLogger("nborch")

WaitHook = Callable[[], Any]
_wait_hooks: list[WaitHook] = []
# "thread": this run's caller blocks in another thread's wait (a plain Jupyter cell's node.run()),
# "nested": it blocks in run_until_complete on its own loop (nest_asyncio), None: it awaits
caller_blocks: contextvars.ContextVar[str | None] = contextvars.ContextVar("nborch_blocking", default=None)
# True when that blocked caller runs wait hooks (a front end's UI stays alive: RunHandle.polls_ui)
caller_polls_ui: contextvars.ContextVar[bool] = contextvars.ContextVar("nborch_polls_ui", default=False)


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


def run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run the coroutine ``make()`` returns to its end from sync code, and return its value:
    ``asyncio.run`` without a running loop, the loop itself when nest_asyncio patched it, else
    a fresh loop on a worker thread while this thread waits."""
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
def wake_on_sigint(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
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
    token = caller_blocks.set("nested")
    try:
        job = loop.create_task(coro)  # the task copies the context: it sees "nested"
    finally:
        caller_blocks.reset(token)
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
        caller_blocks.set("thread")
        caller_polls_ui.set(bool(hooks))
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

