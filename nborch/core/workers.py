"""The thread pool that runs sync task bodies without blocking the event loop.

Why not ``loop.run_in_executor``: a sync task that waits for a child task (``fib(n - 1).result``)
blocks its worker thread. A fixed-size pool then deadlocks once every worker waits on a child
that needs a worker. This pool does what Java's ForkJoinPool calls managed blocking: a worker
that blocks on a child is not counted, so another thread may start in its place.
Threads are daemons, so work abandoned by a timeout or a cancelled run cannot hold up exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .remote import resolve

__all__ = ["Job", "WorkerPool", "call_from_thread", "current_pool"]

_local = threading.local()  # .pool: the WorkerPool whose worker this thread is


def current_pool() -> WorkerPool | None:
    """The pool whose worker thread is calling, if any."""
    return getattr(_local, "pool", None)


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    resolve(fut, ok, value)  # a late result is discarded; a StopIteration cannot hang the run


def _started(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def call_from_thread(
    loop: asyncio.AbstractEventLoop, pool: WorkerPool | None, fn: Callable[..., Any], *args: Any
) -> bool:
    """From another thread: call ``fn(*args)`` on ``loop``. From one of ``pool``'s workers, in
    order with the outcomes the pool delivers (see ``WorkerPool.call_soon``). False if the
    loop is closed (nothing will be called)."""
    if pool is not None and current_pool() is pool:
        return pool.call_soon(fn, *args)
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True


class Job:
    """One call queued for (or running in) a worker thread."""

    __slots__ = ("fut", "ctx", "fn", "args", "kwargs", "on_start", "then", "running", "abandoned")

    def __init__(
        self, fut: asyncio.Future[Any], ctx: contextvars.Context, fn: Callable[..., Any], args: Any,
        kwargs: Any, on_start: asyncio.Future[None] | None,
        then: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> None:
        self.fut, self.ctx, self.fn, self.args, self.kwargs = fut, ctx, fn, args, kwargs
        self.on_start = on_start  # resolved on the loop when the body starts
        self.then = then  # called on the loop right after fut gets the outcome (see submit_job)
        self.running = False
        self.abandoned = False  # its caller gave up on it (a timeout): it no longer holds a slot


class WorkerPool:
    """Runs callables in daemon threads and resolves asyncio futures on ``loop``.

    A job whose future is already done when a worker takes it (its run was cancelled, its
    timeout fired, a fail_fast sibling failed) is dropped without running: nothing starts
    after cancellation. Workers blocked on a child task (``blocking()``) and calls abandoned by
    a timeout (``abandon()``) do not count toward ``size``, so neither can starve the run.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, size: int, context: contextvars.Context | None = None
    ) -> None:
        self.loop = loop
        # where the ``then`` of submit_job runs (a fresh copy for each batch): the run's context
        self.context = context if context is not None else contextvars.copy_context()
        self.size = max(1, size)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a job
        self._pending = 0  # jobs queued and not yet taken
        self._blocked = 0  # workers waiting on a child task: they do not count toward size
        self._abandoned = 0  # workers still running a call whose caller gave up on it
        self._running = 0  # calls running now
        self._closed = False
        # outcomes waiting for the loop: one wake-up (call_soon_threadsafe, a write to the
        # loop's self-pipe) delivers all that finish before the loop gets to them
        # (future, ok, value, then), or (None, True, (fn, args), None) for a call_soon
        self._done: list[tuple[asyncio.Future[Any] | None, bool, Any, Any]] = []

    def submit(
        self, ctx: contextvars.Context, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> asyncio.Future[Any]:
        """Run ``ctx.run(fn, *args, **kwargs)`` in a worker; the future gets its outcome."""
        return self.submit_job(ctx, fn, args, kwargs).fut

    def submit_job(
        self, ctx: contextvars.Context, fn: Callable[..., Any], args: Any, kwargs: Any,
        on_start: asyncio.Future[None] | None = None,
        then: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> Job:
        """``submit``, returning the ``Job`` (for ``abandon``); ``on_start`` is resolved on the
        loop when a worker starts the body (a timeout counts from there, not from the queue).

        ``then(fut)`` is called on the loop as soon as the future has the outcome, in the same
        step: what a done callback does, without its own trip through the loop (one Handle
        and one loop iteration a task). It is not called if the future was done first
        (cancelled): whoever cancels it adds the done callback it needs."""
        job = Job(self.loop.create_future(), ctx, fn, args, kwargs, on_start, then)
        self._jobs.put(job)
        with self._lock:
            self._pending += 1
            spawn = self._should_spawn()
        if spawn:
            self._spawn()
        return job

    def abandon(self, job: Job) -> None:
        """The caller gave up on ``job`` (its timeout fired): if it is still running, its thread
        stops counting toward ``size`` until it returns, and another worker may start."""
        with self._lock:
            if not job.running or job.abandoned:
                return
            job.abandoned = True
            self._abandoned += 1
            spawn = self._should_spawn()
        if spawn:
            self._spawn()

    def _should_spawn(self) -> bool:  # called with the lock held
        busy = self._threads - self._blocked - self._abandoned
        if self._closed or self._pending <= self._idle or busy >= self.size:
            return False
        self._threads += 1
        return True

    def _spawn(self) -> None:
        threading.Thread(target=self._work, name="nborch-worker", daemon=True).start()

    def _work(self) -> None:
        get, call_soon, lock = self._jobs.get, self.loop.call_soon_threadsafe, self._lock
        _local.pool = self
        while True:
            with lock:
                self._idle += 1
            job = get()
            skip = False
            with lock:
                self._idle -= 1
                if job is not None:
                    self._pending -= 1
                    # cancelled, timed out or its run ended while it waited: never start it
                    skip = job.fut.done()
                    job.running = not skip
                    self._running += not skip
            if job is None:
                break
            if skip:
                continue
            fut, then = job.fut, job.then
            try:
                if job.on_start is not None:
                    call_soon(_started, job.on_start)
                value, ok = job.ctx.run(job.fn, *job.args, **job.kwargs), True
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                value, ok = exc, False
            with lock:
                job.running = False
                self._running -= 1
                if job.abandoned:
                    self._abandoned -= 1
                done = self._done
                done.append((fut, ok, value, then))
                wake = len(done) == 1  # the first since the loop last took them wakes it
            if wake:
                self._wake()
            del job, fut, value, then
        with lock:
            self._threads -= 1

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From a worker: call ``fn(*args)`` on the loop, in order with the outcomes this pool
        delivers (what a body printed reaches its subscribers before its task's success does).
        False if the loop is closed (nothing will be called)."""
        if self.loop.is_closed():
            return False
        with self._lock:
            done = self._done
            done.append((None, True, (fn, args), None))
            wake = len(done) == 1
        if wake:
            self._wake()
        return True

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._deliver_done, context=self.context.copy())
        except RuntimeError:  # the loop is closed: the run is over, nobody wants these values
            with self._lock:
                self._done = []

    def _deliver_done(self) -> None:
        """On the loop: hand every finished call's outcome to its future (and its ``then``)."""
        with self._lock:
            done, self._done = self._done, []
        for i, (fut, ok, value, then) in enumerate(done):
            try:
                if fut is None:  # a call_soon
                    value[0](*value[1])
                    continue
                if fut.done():  # cancelled meanwhile: the late outcome is discarded
                    continue
                _deliver(fut, ok, value)
                if then is not None:
                    then(fut)
            except Exception as exc:  # as the loop does with a callback that raises
                self.loop.call_exception_handler(
                    {"message": "Exception in a worker pool's callback", "exception": exc}
                )
            except BaseException:  # KeyboardInterrupt: the rest are delivered on the next turn
                self._requeue(done[i + 1:])
                raise

    def _requeue(self, rest: list[tuple[asyncio.Future[Any] | None, bool, Any, Any]]) -> None:
        if not rest:
            return
        with self._lock:
            wake = not self._done  # else a wake-up is due already
            self._done[:0] = rest
        if wake:
            self._wake()

    @property
    def running(self) -> int:
        """Calls running now that no timeout gave up on (a cancelled run waits for them)."""
        with self._lock:
            return self._running - self._abandoned

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """Mark the calling worker as blocked (waiting on a child), so one more may start."""
        with self._lock:
            self._blocked += 1
            spawn = self._should_spawn()
        if spawn:
            self._spawn()
        try:
            yield
        finally:
            with self._lock:
                self._blocked -= 1

    def shutdown(self) -> None:
        """Let idle workers exit; busy ones exit when their (abandoned) job returns."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._jobs.put(None)
