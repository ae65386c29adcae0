"""Running one task through its attempts: retries with back-off, timeouts, circuit breakers,
the cache, executors. The slow path of the engine (the fast path is ``Engine.launch``), kept
apart from the scheduler proper; each ``Engine`` has one."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import CircuitOpenError, Skip, TaskTimeoutError
from .executors import Remote, has_remote, materialize, prepare_for
from .invocation import AS_BOUND, CANCELLED, FAILED, RETRYING, RUNNING, SKIPPED, SUCCEEDED, Frame, Inv, _frame

if TYPE_CHECKING:
    from .engine import Engine
    from .policies import CircuitBreaker

__all__ = ["Attempts"]


class Attempts:
    """Runs one task's attempts for an ``Engine`` (its slow path: retries, timeouts, breakers,
    the cache, executors); the engine's scheduling state is reached through ``engine``."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- running one task ------------------------------------------------------------------------

    async def run_task(self, inv: Inv) -> None:
        engine = self.engine
        spec = inv.spec
        task = spec.task
        fn = task.fn
        opts = task.options
        retry = opts.retry
        timeout = opts.timeout
        is_async = task.info.is_async
        args, kwargs = (task.args, task.kwargs) if inv.call is AS_BOUND else inv.call  # type: ignore[misc]
        inv.started = self.engine.now()
        # the key hashes remote arguments where they are, before they are prepared
        if opts.cache and self.engine.cache is not None and await self.from_cache(inv, fn, args, kwargs):
            return
        exe = inv.executor
        ahead, inv.ahead = inv.ahead, None
        if ahead is not None:
            pass  # submitted already, with its arguments (submit_ahead)
        elif exe is not None or self.engine.remotes:
            try:  # Remotes stay remote for their own executor, are fetched for anyone else
                if exe is not None:
                    await exe.start()
                args, kwargs = await prepare_for(exe, args, kwargs)
            except asyncio.CancelledError:
                self.engine.settle(inv, CANCELLED)
                return
            except Exception as exc:
                self.engine.fail(inv, exc)
                return
        if inv.circuits:
            refused = self.engine.admit(inv)
            if refused is not None:  # a CircuitGroup's circuit is open: fail without running
                self.engine.fail(inv, refused)
                return
        rate = engine.rates.limiter(inv, args, kwargs) if opts.rate is not None else None
        try:
            while True:
                if rate is not None:  # every attempt starts when its rate allows (nborch.limits)
                    await engine.rates.turn(inv, rate)
                inv.attempts += 1
                frame = inv.frame = Frame(engine, inv, inv.attempts)
                _frame.set(frame)
                self.engine.emit(inv, RUNNING)
                admitted: list[CircuitBreaker] = []
                job: Any = None
                try:
                    for b in inv.breakers:
                        self.engine.emit_circuit(b, b.before_call())  # raises CircuitOpenError when open
                        admitted.append(b)
                    if ahead is not None:
                        job, ahead = ahead, None
                    elif exe is not None and exe.ahead:
                        job, remote = exe.submit_remote(
                            self.engine.loop, fn, args, kwargs, inv.name, self.engine.offload.remote_output
                        )
                        if retry is None and self.engine.global_limit is None:
                            self.engine.offload.submit_ahead(inv, remote)
                        del remote  # a failure's traceback keeps this frame: not the Dask future
                    elif exe is not None:
                        job = exe.submit(self.engine.loop, fn, args, kwargs, inv.name, self.engine.offload.remote_output)
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
                    self.engine.settle(inv, SKIPPED)
                    return
                except asyncio.CancelledError as exc:
                    if inv.stop or self.engine.cancelling:
                        for b in admitted:
                            b.release()
                        self.engine.settle(inv, CANCELLED)
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
                        self.engine.emit_circuit(b, b.on_success())
                    cache = self.engine.cache
                    if inv.cache_key is not None and cache is not None:  # on disk before SUCCEEDED goes out
                        local = (await materialize(value)) if isinstance(value, Remote) else value
                        inv.size = await asyncio.to_thread(cache.save, inv.cache_key, inv.name, local)
                        if inv.size is None:
                            inv.cache_key = None
                    inv.value = value
                    self.engine.results[inv.name] = value
                    if isinstance(value, Remote):
                        self.engine.remotes += 1
                    self.engine.settle(inv, SUCCEEDED)
                    return
        except asyncio.CancelledError:
            if not inv.state.is_final:
                self.engine.settle(inv, CANCELLED)
        except BaseException as exc:  # KeyboardInterrupt/SystemExit from a task, or a bug here
            if not inv.state.is_final:
                self.engine.fail(inv, exc)
            if isinstance(exc, KeyboardInterrupt):  # the user's interrupt: stop the whole run
                self.engine.fatal = exc
                self.engine.cancel()
            elif not isinstance(exc, Exception | SystemExit):
                raise

    async def from_cache(self, inv: Inv, fn: Any, args: Any, kwargs: Any) -> bool:
        """Compute the task's cache key; on a hit, settle it SUCCEEDED (cached) and say so."""
        ups = [self.engine.invs[u.name].cache_key for u in inv.spec.up if u.name in self.engine.invs]
        if self.engine.remotes and has_remote((args, kwargs)):
            args, kwargs = await self.fingerprinted(args, kwargs)
        engine = self.engine
        key = await asyncio.to_thread(engine.cache.call_key, fn, args, kwargs, [k for k in ups if k])
        inv.cache_key = key.digest if key is not None else None
        if key is None:
            inv.cache_miss = "its key cannot be computed"
            return False
        before = engine.memory.cache_keys.get(inv.name) if engine.memory is not None else None
        if engine.memory is not None:
            engine.memory.cache_keys[inv.name] = key
        if engine.force:
            inv.cache_miss = "the cache was ignored (force)"
            return False
        hit, value, size = await asyncio.to_thread(engine.cache.load, key.digest)
        if not hit:
            from .reuse import describe_changes

            changed = describe_changes(inv.spec, key, before) if before is not None else None
            inv.cache_miss = (f"no value stored for its key: {changed}" if changed
                              else "no value stored for its key (first run with this code and these inputs)")
            return False
        inv.value, inv.cached, inv.size = value, True, size
        self.engine.results[inv.name] = value
        self.engine.settle(inv, SUCCEEDED)
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
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await coro
        except TimeoutError:
            if scope.expired():
                raise TaskTimeoutError(inv.name, timeout) from None
            raise

    async def in_thread(
        self, inv: Inv, frame: Frame, fn: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None
    ) -> Any:
        pool = self.engine.worker_pool()
        ctx = contextvars.copy_context()
        started: asyncio.Future[None] | None = None
        if timeout is not None:  # the timeout counts from when the body starts, not from the queue
            started = asyncio.get_running_loop().create_future()
        job = pool.submit_job(ctx, fn, args, kwargs, on_start=started)
        fut = job.fut
        try:
            if timeout is None or started is None:
                return await fut
            await asyncio.wait((fut, started), return_when=asyncio.FIRST_COMPLETED)
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
                self.engine.emit_circuit(b, b.on_failure())
        inv.error = exc
        if retry is not None and not refused and retry.should_retry(exc, inv.attempts):
            delay = retry.delay_for(inv.attempts, exc)
            inv.state = RETRYING
            self.engine.emit(inv, RETRYING, delay=delay)
            if delay > 0:
                self.engine.release(inv)
                await self.engine.clock.sleep(delay)
                await self.engine.reacquire(inv)
            else:
                await asyncio.sleep(0)
            inv.state = RUNNING
            return True
        self.engine.fail(inv, exc)
        return False
