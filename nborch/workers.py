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

__all__ = ["WorkerPool"]


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # cancelled or timed out meanwhile: the late result is discarded
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class WorkerPool:
    """Runs callables in daemon threads and resolves asyncio futures on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = max(1, size)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a job
        self._pending = 0  # jobs queued and not yet taken
        self._blocked = 0  # workers waiting on a child task: they do not count toward size
        self._closed = False

    def submit(
        self, ctx: contextvars.Context, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> asyncio.Future[Any]:
        """Run ``ctx.run(fn, *args, **kwargs)`` in a worker; the future gets its outcome."""
        fut = self.loop.create_future()
        self._jobs.put((fut, ctx, fn, args, kwargs))
        with self._lock:
            self._pending += 1
            spawn = self._should_spawn()
        if spawn:
            self._spawn()
        return fut

    def _should_spawn(self) -> bool:  # called with the lock held
        if self._closed or self._pending <= self._idle or self._threads - self._blocked >= self.size:
            return False
        self._threads += 1
        return True

    def _spawn(self) -> None:
        threading.Thread(target=self._work, name="nborch-worker", daemon=True).start()

    def _work(self) -> None:
        get, call_soon, lock = self._jobs.get, self.loop.call_soon_threadsafe, self._lock
        while True:
            with lock:
                self._idle += 1
            job = get()
            with lock:
                self._idle -= 1
                if job is not None:
                    self._pending -= 1
            if job is None:
                break
            fut, ctx, fn, args, kwargs = job
            try:
                value, ok = ctx.run(fn, *args, **kwargs), True
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                value, ok = exc, False
            try:
                call_soon(_deliver, fut, ok, value)
            except RuntimeError:  # the loop is closed: the run is over, nobody wants this value
                pass
            del job, fut, value
        with lock:
            self._threads -= 1

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
