"""Where an attempt's body runs, the innermost step of a task's attempts (``nborch.core.attempts``):
on the loop (an async function), in a worker thread (a sync one), or on an executor (a process
pool, Dask); and ``Prepare``, which readies an executor and the arguments once, before the first
attempt.

A body is called as the other steps are, ``await body(args, kwargs)``, with one more argument
when the task has a timeout: the ``Timeout`` step, which the body tells when it starts
(``deadline.start()``) and asks whether the attempt ran out of time (``deadline.expired()``).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .policy_steps import Step
from .remote import prepare_for

if TYPE_CHECKING:
    import asyncio

    from .engine import Engine
    from .invocation import Inv
    from .policy_steps import Timeout

__all__ = ["Body", "ExecutorBody", "LoopBody", "Prepare", "ThreadBody", "body_for"]


class Prepare(Step):
    """Before the first attempt: the task's executor is started, and its arguments are made
    ready for it (Remotes stay remote for their own executor, are fetched for anyone else)."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        exe = self.inv.executor
        if exe is not None:
            await exe.start()
        args, kwargs = await prepare_for(exe, args, kwargs)
        return await self.inner(args, kwargs)


class Body(Step):
    """The innermost step: the task's function (its ``inner``) called with the arguments."""

    __slots__ = ()

    def __init__(self, inv: Inv, engine: Engine) -> None:
        super().__init__(inv.spec.task.fn, inv, engine)


class LoopBody(Body):
    """An async body, awaited on the loop."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any, deadline: Timeout | None = None) -> Any:
        if deadline is not None:
            deadline.start()
        return await self.inner(*args, **kwargs)


class ThreadBody(Body):
    """A sync body, in one of the run's worker threads. A thread cannot be stopped: when the
    attempt ends without the body (cancelled, timed out) the body is told (``nborch.cancelled()``),
    its result is dropped, and the child tasks it is blocked on stop; a call still queued never
    starts, and one that timed out no longer holds a worker's place."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any, deadline: Timeout | None = None) -> Any:
        pool = self.engine.worker_pool()
        frame = self.inv.frame
        assert frame is not None  # given by the Attempt step
        # with a timeout, its time counts from when a worker starts it, not from the queue
        started = None if deadline is None else self.engine.loop.create_future()  # type: ignore[union-attr]
        job = pool.submit_job(contextvars.copy_context(), self.inner, args, kwargs, on_start=started)
        if started is not None:  # resolved on the loop, later: a start after the result is stale
            start = deadline.start  # type: ignore[union-attr]
            started.add_done_callback(lambda _: job.fut.done() or start())
        try:
            return await job.fut
        except BaseException:
            frame.cancelled = True
            if not job.fut.done():
                job.fut.cancel()
            if deadline is not None and deadline.expired():
                pool.abandon(job)  # it keeps its thread until it returns, but not a worker's place
            for call in list(frame.calls or ()):
                call.cancel()
            raise


class ExecutorBody(Body):
    """A body on the task's executor (a process pool, Dask), awaited through its future. A task
    submitted ahead by its upstream (``Offload.submit_ahead``) has its first attempt's future
    already; a plain one submitted to Dask now submits its own plain downstream ahead."""

    __slots__ = ("ahead",)

    def __init__(self, inv: Inv, engine: Engine, ahead: asyncio.Future[Any] | None) -> None:
        super().__init__(inv, engine)
        self.ahead = ahead

    async def __call__(self, args: Any, kwargs: Any, deadline: Timeout | None = None) -> Any:
        inv, engine = self.inv, self.engine
        exe = inv.executor
        offload = engine.offload
        if self.ahead is not None:
            job, self.ahead = self.ahead, None
        elif exe.ahead:
            job, remote = exe.submit_remote(
                engine.loop, self.inner, args, kwargs, inv.name, offload.remote_output
            )
            if inv.spec.task.options.retry is None and engine.slots.default is None:
                offload.submit_ahead(inv, remote)
            del remote  # a failure's traceback keeps this frame: not the Dask future
        else:
            job = exe.submit(engine.loop, self.inner, args, kwargs, inv.name, offload.remote_output)
        if deadline is not None:
            deadline.start()
        return await job


def body_for(inv: Inv, engine: Engine, ahead: asyncio.Future[Any] | None) -> Body:
    """The body step of ``inv``: where its function runs."""
    if inv.executor is not None:
        return ExecutorBody(inv, engine, ahead)
    return LoopBody(inv, engine) if inv.spec.task.info.is_async else ThreadBody(inv, engine)
