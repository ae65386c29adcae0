"""Running one task through its attempts: retries with back-off, timeouts, circuit breakers,
the cache, executors. The slow path of the engine (the fast path is ``Engine.launch``), kept
apart from the scheduler proper; ``Engine`` inherits it."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import CircuitOpenError, Skip, TaskTimeoutError
from .executors import Remote, has_remote, materialize, prepare_for
from .invocation import AS_BOUND, CANCELLED, FAILED, RETRYING, RUNNING, SKIPPED, SUCCEEDED, Frame, Inv, _frame

if TYPE_CHECKING:
    from .policies import CircuitBreaker

__all__ = ["Attempts"]


class Attempts:
    """The ``Engine`` methods that run one task's attempts."""

    # -- running one task ------------------------------------------------------------------------

    async def run_task(self, inv: Inv) -> None:
        spec = inv.spec
        task = spec.task
        fn = task.fn
        opts = task.options
        retry = opts.retry
        timeout = opts.timeout
        is_async = task.info.is_async
        args, kwargs = (task.args, task.kwargs) if inv.call is AS_BOUND else inv.call  # type: ignore[misc]
        inv.started = self.now()
        # the key hashes remote arguments where they are, before they are prepared
        if opts.cache and self.cache is not None and await self.from_cache(inv, fn, args, kwargs):
            return
        exe = inv.executor
        ahead, inv.ahead = inv.ahead, None
        if ahead is not None:
            pass  # submitted already, with its arguments (submit_ahead)
        elif exe is not None or self.remotes:
            try:  # Remotes stay remote for their own executor, are fetched for anyone else
                if exe is not None:
                    await exe.start()
                args, kwargs = await prepare_for(exe, args, kwargs)
            except asyncio.CancelledError:
                self.settle(inv, CANCELLED)
                return
            except Exception as exc:
                self.fail(inv, exc)
                return
        if inv.circuits:
            refused = self.admit(inv)
            if refused is not None:  # a CircuitGroup's circuit is open: fail without running
                self.fail(inv, refused)
                return
        try:
            while True:
                inv.attempts += 1
                frame = inv.frame = Frame(self, inv, inv.attempts)
                _frame.set(frame)
                self.emit(inv, RUNNING)
                admitted: list[CircuitBreaker] = []
                try:
                    for b in inv.breakers:
                        self.emit_circuit(b, b.before_call())  # raises CircuitOpenError when open
                        admitted.append(b)
                    if ahead is not None:
                        job, ahead = ahead, None
                    elif exe is not None and exe.ahead:
                        job, remote = exe.submit_remote(
                            self.loop, fn, args, kwargs, inv.name, self.remote_output
                        )
                        if retry is None and self.global_limit is None:
                            self.submit_ahead(inv, remote)
                        del remote  # a failure's traceback keeps this frame: not the Dask future
                    elif exe is not None:
                        job = exe.submit(self.loop, fn, args, kwargs, inv.name, self.remote_output)
                    if exe is not None:
                        if timeout is None:
                            value = await job
                        else:
                            value = await self.with_timeout(inv, job, timeout)
                    elif not is_async:
                        value = await self.in_thread(inv, frame, fn, args, kwargs, timeout)
                    elif timeout is None:
                        value = await fn(*args, **kwargs)
                    else:
                        value = await self.with_timeout(inv, fn(*args, **kwargs), timeout)
                except Skip as exc:
                    for b in admitted:
                        b.release()
                    inv.error = exc
                    self.settle(inv, SKIPPED)
                    return
                except asyncio.CancelledError as exc:
                    if inv.stop or self.cancelling:
                        for b in admitted:
                            b.release()
                        self.settle(inv, CANCELLED)
                        return
                    # the body raised CancelledError itself (nobody cancelled it): a failure
                    if await self.failed_attempt(inv, exc, retry, admitted):
                        continue
                    return
                except Exception as exc:
                    if await self.failed_attempt(inv, exc, retry, admitted):
                        continue
                    return
                else:
                    for b in admitted:
                        self.emit_circuit(b, b.on_success())
                    if inv.cache_key is not None:  # on disk before SUCCEEDED goes out
                        local = (await materialize(value)) if isinstance(value, Remote) else value
                        inv.size = await asyncio.to_thread(self.cache.save, inv.cache_key, inv.name, local)
                        if inv.size is None:
                            inv.cache_key = None
                    inv.value = value
                    self.results[inv.name] = value
                    if isinstance(value, Remote):
                        self.remotes += 1
                    self.settle(inv, SUCCEEDED)
                    return
        except asyncio.CancelledError:
            if not inv.state.is_final:
                self.settle(inv, CANCELLED)
        except BaseException as exc:  # KeyboardInterrupt/SystemExit from a task, or a bug here
            if not inv.state.is_final:
                self.fail(inv, exc)
            if isinstance(exc, KeyboardInterrupt):  # the user's interrupt: stop the whole run
                self.fatal = exc
                self.cancel()
            elif not isinstance(exc, Exception | SystemExit):
                raise

    async def from_cache(self, inv: Inv, fn: Any, args: Any, kwargs: Any) -> bool:
        """Compute the task's cache key; on a hit, settle it SUCCEEDED (cached) and say so."""
        ups = [self.invs[u.name].cache_key for u in inv.spec.up if u.name in self.invs]
        if self.remotes and has_remote((args, kwargs)):
            args, kwargs = await self.fingerprinted(args, kwargs)
        inv.cache_key = await asyncio.to_thread(self.cache.key, fn, args, kwargs, [k for k in ups if k])
        if inv.cache_key is None or self.force:
            return False
        hit, value, size = await asyncio.to_thread(self.cache.load, inv.cache_key)
        if not hit:
            return False
        inv.value, inv.cached, inv.size = value, True, size
        self.results[inv.name] = value
        self.settle(inv, SUCCEEDED)
        return True

    async def fingerprinted(self, args: Any, kwargs: Any) -> tuple[Any, Any]:
        """Arguments for a cache key: a Remote already fetched (a cached upstream's) as its value,
        the same key a local run computes; any other as a hash of its value computed on the
        cluster, so the value does not come back for that."""
        from .executors import _collect, _replace

        found: list[Remote] = []
        _collect((args, kwargs), found)
        prints = {
            id(r): r.value if r.fetched else ("nborch-remote-value", await r.executor.fingerprint(r))
            for r in found
        }
        return _replace(args, lambda r: prints[id(r)]), _replace(kwargs, lambda r: prints[id(r)])

    async def with_timeout(self, inv: Inv, coro: Any, timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout) as scope:
                return await coro
        except TimeoutError:
            if scope.expired():
                raise TaskTimeoutError(inv.name, timeout) from None
            raise

    async def in_thread(
        self, inv: Inv, frame: Frame, fn: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None
    ) -> Any:
        pool = self.worker_pool()
        ctx = contextvars.copy_context()
        if timeout is None:
            job = pool.submit_job(ctx, fn, args, kwargs)
        else:  # the timeout counts from when the body starts, not from the queue
            job = pool.submit_job(ctx, fn, args, kwargs, on_start=self.loop.create_future())
        fut = job.fut
        try:
            if timeout is None:
                return await fut
            await asyncio.wait((fut, job.on_start), return_when=asyncio.FIRST_COMPLETED)
            if not fut.done():
                done, _ = await asyncio.wait((fut,), timeout=timeout)
                if not done:
                    pool.abandon(job)  # it keeps its thread until it returns, but not a slot
                    raise TaskTimeoutError(inv.name, timeout)
            return fut.result()
        except BaseException:
            # the thread cannot be stopped: tell it (nborch.cancelled()) and drop its result;
            # a call still queued never starts
            frame.cancelled = True
            if not fut.done():
                fut.cancel()
                pool.abandon(job)
            for call in list(frame.calls or ()):  # the child tasks it is blocked on stop too
                call.cancel()
            raise

    async def failed_attempt(
        self, inv: Inv, exc: BaseException, retry: Any, admitted: list[CircuitBreaker]
    ) -> bool:
        """Record a failed attempt; True if the task should try again."""
        refused = isinstance(exc, CircuitOpenError) and len(admitted) < len(inv.breakers)
        for b in admitted:  # a breaker that refused the call records nothing
            if refused:
                b.release()
            else:
                self.emit_circuit(b, b.on_failure())
        inv.error = exc
        if retry is not None and not refused and retry.should_retry(exc, inv.attempts):
            delay = retry.delay_for(inv.attempts)
            inv.state = RETRYING
            self.emit(inv, RETRYING, delay=delay)
            if delay > 0:
                self.release(inv)
                await self.clock.sleep(delay)
                await self.reacquire(inv)
            else:
                await asyncio.sleep(0)
            inv.state = RUNNING
            return True
        self.fail(inv, exc)
        return False

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
