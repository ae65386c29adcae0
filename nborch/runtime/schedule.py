"""Running a node again and again: every N seconds, or on a cron expression.

``schedule(node, every=60)`` returns a ``Schedule`` handle at once; the first run starts
straight away. Where it runs depends on the caller, as ``run()`` does:

* a running event loop in the calling thread (a notebook kernel, ``asyncio.run``): an asyncio
  task on that loop, so cells stay usable and ``await handle`` waits for the end;
* no running loop (a script): a background thread with its own loop; ``handle.wait()`` blocks.

Every due tick either starts a run or is *skipped*: a run still going when the next tick is
due is never piled up on. A skipped tick is kept in ``handle.skipped`` (its time) and in the
history (a ``runs`` row with state ``skipped``), and it does not count toward ``times=``.

Runs go through ``run_async``, so a scheduled run is recorded and cached like any other (a
live display only with ``display=True``: in the background it would paint into whatever cell
is running). When the ticks fall due (``every=``, ``cron=``) is worked out in ``ticks``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging
import os
import threading
import time
from collections.abc import Generator
from typing import Any

from ..core.errors import DefinitionError, NborchError
from ..core.graph import build_graph
from ..core.record import Run
from .options import as_node, check_schedule_options
from .recording import open_store, record_skipped_tick
from .runner import last_run, run_async
from .ticks import Ticks, WallClock, make_ticks
from ..core.introspection import fn_name
from ..core.node import Node
from ..core.task import Task

__all__ = ["Schedule", "WallClock", "active_schedules", "cancel_all", "schedule"]

log = logging.getLogger("nborch")

# Schedules that have not ended. asyncio keeps only weak references to tasks, so a handle the
# caller did not keep (``nborch.schedule(p, every=60)`` in a cell) would otherwise be collected
# mid-schedule; this also lets ``cancel_all()`` (``%orch schedule --cancel``) find them.
_active: set[Schedule] = set()
_active_lock = threading.Lock()


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` is done; being cancelled meanwhile cancels it and keeps waiting, so
    a cancelled schedule ends only after every task of its run has settled."""
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()


class Schedule:
    """A running schedule: ``cancel()``, ``runs``, ``skipped``, ``wait()`` / ``await handle``.

    Made by ``nborch.schedule()``; see there. Safe to use from any thread.
    """

    def __init__(
        self,
        node: Node,
        ticks: Ticks,
        *,
        times: int | None,
        clock: Any,
        options: dict[str, Any],
    ) -> None:
        self.node = node
        self.ticks = ticks
        self.times = times
        self.clock = clock
        self.options = options
        self.name: str | None = options.get("name") or getattr(node, "name", None)
        self.error: BaseException | None = None  # what stopped the schedule, if not cancel/times
        self.next_due: float | None = None  # when the next tick is due (the clock's time)
        self.mode = "loop"  # or "thread": where it runs, decided by start()
        self._runs: list[Run] = []
        self._skipped: list[float] = []
        self._started = 0  # runs started: what times= counts
        self._cancel_requested = False
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None  # the run in progress, if any
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._store_opened = False

    # -- what users read ---------------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        """The ``Run`` records of the finished runs, in order (a cancelled run included)."""
        return list(self._runs)

    @property
    def skipped(self) -> list[float]:
        """The times of the ticks skipped because a run was still going (seconds since the epoch)."""
        return list(self._skipped)

    @property
    def running(self) -> bool:
        """True until the schedule has ended (``times`` reached, cancelled, or an error)."""
        return not self._done.is_set()

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._cancel_requested

    def __repr__(self) -> str:
        if self.running:
            state = "cancelling" if self._cancel_requested else "running"
            if self._current is not None and not self._current.done():
                state += ", a run in progress"
        elif self.error is not None:
            state = f"stopped by {type(self.error).__name__}: {self.error}"
        else:
            state = "cancelled" if self._cancel_requested else "done"
        runs = self.runs
        failed = sum(1 for r in runs if not r.ok)
        limit = f" (times={self.times})" if self.times is not None else ""
        name = self.name
        if not name:
            name = fn_name(self.node.fn) if isinstance(self.node, Task) else type(self.node).__name__
        counts = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
        if failed:
            counts += f" ({failed} not ok)"
        return f"<Schedule of {name} {self.ticks}{limit}: {state}; {counts}, {len(self._skipped)} skipped>"

    # -- control -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop: no further ticks, and the run in progress is cancelled (every task settles).

        Returns at once, from any thread; ``wait()`` / ``await handle`` then return once the
        run has unwound. Cancelling an ended schedule does nothing.
        """
        self._cancel_requested = True  # set before reading _task: _main checks it after setting _task
        loop, task = self._loop, self._task
        if loop is None or task is None or task.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: the schedule is over
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the schedule ends (``times`` reached or cancelled); False on timeout.

        Raises what stopped the schedule, if something did (a task failure does not: see each
        ``Run``). Ctrl-C while waiting cancels the schedule, waits for it to settle and
        re-raises. On the loop the schedule runs on, use ``await handle`` instead.
        """
        if self.mode == "loop" and self.running:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not None and running is self._loop:
                raise NborchError(
                    "handle.wait() would block the event loop this schedule runs on; "
                    "use `await handle` (or `await handle.wait_async()`) instead."
                )
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._done.is_set():
                step = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if step <= 0:
                    return False
                self._done.wait(step)  # short waits keep KeyboardInterrupt prompt everywhere
        except BaseException:  # KeyboardInterrupt: stop the schedule cleanly, then re-raise
            self.cancel()
            self._done.wait()
            raise
        if self.error is not None:
            raise self.error
        return True

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``wait()`` for async code: await the end without blocking the loop; False on timeout.

        Cancelling the awaiting coroutine does not cancel the schedule (use ``cancel()``).
        """
        running = asyncio.get_running_loop()
        if self._task is not None and self._loop is running:
            # asyncio.wait neither cancels the task when we are cancelled nor raises if it was
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                return False
        elif not self._done.is_set():  # it runs on another thread's loop
            ended = await running.run_in_executor(None, self._done.wait, timeout)
            if not ended:
                return False
        if self.error is not None:
            raise self.error
        return True

    def __await__(self) -> Generator[Any, None, list[Run]]:
        """``await handle``: wait for the end, then return the runs."""

        async def until_done() -> list[Run]:
            await self.wait_async()
            return self.runs

        return until_done().__await__()

    # -- running -----------------------------------------------------------------------------

    def start(self) -> Schedule:
        """Start ticking: on the running loop if there is one in this thread, else on a thread."""
        with _active_lock:
            _active.add(self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self.mode = "loop"
            self._loop = loop
            self._task = loop.create_task(self._main(), name=f"nborch-schedule-{self.name or id(self)}")
            # cancel() before the task's first step skips _main's body (and its finally)
            self._task.add_done_callback(lambda _: self._finish())
            return self
        self.mode = "thread"
        ctx = contextvars.copy_context()  # the caller's contextvars stay visible in the runs
        # daemon: an endless schedule must not keep a script alive past its end (wait() does)
        self._thread = threading.Thread(target=ctx.run, args=(self._thread_main,),
                                        name="nborch-schedule", daemon=True)
        self._thread.start()
        return self

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - _main keeps its errors
            self.error = self.error or exc
            self._finish()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            if self._cancel_requested:  # cancelled before the thread got here
                return
            due = self.clock.now()  # the first run starts at once
            behind = 0  # ticks handled in a row without sleeping
            while True:
                if self._current is not None and not self._current.done():
                    self._skip(due)
                else:
                    self._start_run()
                    if self.times is not None and self._started >= self.times:
                        break
                due = self.ticks.next(due)
                self.next_due = due
                # Re-read the clock after each sleep: a sleep may end early, and if the loop was
                # blocked past several ticks each of them is handled (a run or a skip) in turn.
                now = self.clock.now()
                if now < due:
                    behind = 0
                    while now < due:
                        await self.clock.sleep(due - now)
                        now = self.clock.now()
                else:
                    behind += 1
                    if behind % 1000 == 0:  # an interval shorter than handling a tick: let the loop breathe
                        await asyncio.sleep(0)
            self.next_due = None
            if self._current is not None:
                await _settle(self._current)  # cancelled meanwhile: cancels the run, waits it out
        except asyncio.CancelledError:  # cancel(), or the loop shutting down
            if self._current is not None:
                self._current.cancel()
                await _settle(self._current)
        except Exception as exc:  # a broken clock, a run that could not start: stop, keep it
            self.error = self.error or exc
            if self._current is not None:
                self._current.cancel()
                await _settle(self._current)
        finally:
            self._finish()

    def _start_run(self) -> None:
        self._started += 1
        run_id = os.urandom(6).hex()
        assert self._loop is not None
        self._current = self._loop.create_task(self._one_run(run_id), name=f"nborch-run-{run_id}")

    async def _one_run(self, run_id: str) -> None:
        try:
            record = await run_async(self.node, run_id=run_id, **self.options)
        except asyncio.CancelledError:
            # run_async re-raises after every task settled; its record is the process's last
            # run (set just before, with no await in between). Cancelled before it began: none.
            found = last_run()
            if found is None or found.id != run_id:
                return
            record = found
        except Exception as exc:  # not a task failure (those are in the Run): stop the schedule
            self.error = self.error or exc
            if self._task is not None:
                self._task.cancel()
            return
        self._runs.append(record)

    def _skip(self, tick: float) -> None:
        self._skipped.append(tick)
        store = self._skip_store()
        if store is None:
            return
        try:
            record_skipped_tick(store, self.name, tick)
        except Exception:  # recording must never break the schedule
            log.exception("could not record a skipped tick of %r", self)

    def _skip_store(self) -> Any:
        # the runs' own store (store=False/None: nothing is recorded, as for the runs)
        if not self._store_opened:
            self._store_opened = True
            try:
                self._store = open_store(self.options.get("store", True))
            except Exception:
                log.exception("could not open the store to record skipped ticks")
        return self._store

    def _finish(self) -> None:
        self.next_due = None
        self._done.set()
        with _active_lock:
            _active.discard(self)


def schedule(
    node: Any,
    *,
    every: float | datetime.timedelta | None = None,
    cron: str | None = None,
    times: int | None = None,
    clock: Any = None,
    **run_options: Any,
) -> Schedule:
    """Run ``node`` every ``every`` seconds or on a ``cron`` expression; returns a ``Schedule``.

    ``nborch.schedule(pipeline, every=60)``, ``nborch.schedule(report, cron="0 9 * * 1-5")``
    (croniter, local time). The first run starts at once. ``times=N`` stops after N runs
    (skipped ticks do not count); without it the schedule goes on until ``handle.cancel()``.

    In a notebook (a running loop in this thread) it runs in the background on that loop;
    in a script it runs on a background thread: call ``handle.wait()``. A run still going
    when the next tick is due makes that tick skipped (``handle.skipped`` and the history),
    never a second run at the same time.

    ``**run_options`` go to every run (``max_concurrency=``, ``store=``, ``force=``, ``name=``,
    ``display=``...; not ``run_id=``). Runs in the background show no live display unless
    ``display=True`` is passed. ``clock=`` is the scheduler's own time source (``now()`` in
    seconds since the epoch and ``async sleep(seconds)``; tests pass a fake one); it is not
    passed to the runs.

    Everything is checked before anything runs: a bad argument raises ``DefinitionError``.
    """
    if every is None and cron is None:
        raise DefinitionError(
            "schedule() needs every= (seconds between runs) or cron= (a cron expression, "
            "e.g. '*/5 * * * *')"
        )
    if every is not None and cron is not None:
        raise DefinitionError("schedule() takes one of every= (seconds) or cron= (an expression), not both")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise DefinitionError(f"times= expects an integer >= 1 or None, got {times!r}")
    if clock is not None and not all(callable(getattr(clock, a, None)) for a in ("now", "sleep")):
        raise DefinitionError(f"clock= expects an object with now() and async sleep(seconds), got {clock!r}")
    check_schedule_options(run_options)
    ticks = make_ticks(every, cron)
    node = as_node(node)  # once: a plain function becomes one Task that every run shares
    build_graph(node)  # a bad workflow fails here, not at the first tick
    options = dict(run_options)
    # Background runs would paint their live display into whatever cell happens to be running.
    options.setdefault("display", False)
    return Schedule(node, ticks, times=times, clock=clock or WallClock(), options=options).start()


def active_schedules() -> list[Schedule]:
    """The schedules of this process that have not ended."""
    with _active_lock:
        return list(_active)


def cancel_all() -> int:
    """Cancel every schedule that has not ended (``%orch schedule --cancel``); returns how many."""
    schedules = active_schedules()
    for s in schedules:
        s.cancel()
    return len(schedules)
