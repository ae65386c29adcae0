"""Where task bodies run when not on the loop or the worker threads: process pools and Dask.

Results on a cluster stay there as ``Remote`` futures until something local needs them, and
plain downstream tasks are submitted ahead so Dask chains them worker to worker. Kept apart
from the scheduler proper: the engine holds one (``engine.offload``).
"""

from __future__ import annotations

import collections
import sys
from typing import TYPE_CHECKING, Any

from .arguments import call_of
from .executors import get_executor
from .remote import Remote, collect_remotes, fetch_all, replace_remotes
from .state import TaskState

if TYPE_CHECKING:
    from .engine import Engine, Inv

PENDING, SUCCEEDED = TaskState.PENDING, TaskState.SUCCEEDED

__all__ = ["Offload"]


class Offload:
    """A run's executors (process pools, Dask): where bodies run off the loop, results left on
    a cluster, and downstream tasks submitted ahead. One per engine (``engine.offload``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.invs = engine.invs
        self.results = engine.results
        self.pending = engine.pending  # tasks running on Dask, by name: their futures

    def executor_for(self, task: Any) -> Any:
        """Where ``task``'s body runs: None for the loop (async) or the worker threads (sync).

        A task's own ``executor=`` wins; the run's applies to sync functions only."""
        spec = task.options.executor
        if spec is None:
            if task.info.is_async:
                return None
            spec = self.engine.executor
        if spec == "thread" or spec is None:
            return None
        return get_executor(spec)

    async def materialize_results(self) -> None:
        """Replace the Remote results by their values (one batch per executor) for the Run
        record, except those of executors built with ``gather=False``."""
        remotes = [v for v in self.results.values() if isinstance(v, Remote) and v.executor.gather]
        if not remotes:
            return
        await fetch_all(remotes)
        for name, value in self.results.items():
            if isinstance(value, Remote) and value.fetched:
                self.results[name] = value.value
                inv = self.invs.get(name)
                if inv is not None:
                    inv.value = value.value
        for r in remotes:  # the value is here now: let the cluster forget it (events keep the Remote)
            r.future = None

    def submit_ahead(self, inv: Inv, remote: Remote) -> None:
        """``inv`` was just submitted to Dask: submit now the downstream tasks that can only run
        on the same executor, with ``inv``'s future as their argument, so that Dask starts each
        as soon as its inputs exist, worker to worker, as plain ``client.submit`` chains do,
        instead of waiting for a round trip through this loop. Only plain tasks qualify: the
        default trigger rule, no retry, timeout, breaker, limit, cache, skip_if or context, and
        upstreams that are done or on Dask without retries. Their states still follow the
        engine (RUNNING once the upstreams succeeded); if an upstream fails, the engine decides
        as usual and the early submission is cancelled."""
        self.pending[inv.name] = remote
        exe = inv.executor
        stack = [inv]
        while stack:
            u = stack.pop()
            for dspec in u.spec.down:
                d = self.invs.get(dspec.name)
                if (
                    d is None or d.ahead is not None or d.state is not PENDING or d.call is not None
                    or d.executor is not exe or d.limits or d.breakers or d.rule != "all_success"
                    or not self.plain(d) or not all(self.done_or_pending(up.name) for up in dspec.up)
                ):
                    continue
                try:
                    args, kwargs = call_of(self.engine, d, collections.ChainMap(self.pending, self.results))
                except Exception:  # let the engine report it when the task starts
                    continue
                found: list[Remote] = []
                collect_remotes((args, kwargs), found)
                if any(not exe.owns(r) or r.future is None for r in found):
                    continue
                args, kwargs = replace_remotes(args, lambda r: r.future), replace_remotes(kwargs, lambda r: r.future)
                try:
                    d.ahead, self.pending[d.name] = exe.submit_remote(
                        self.engine.loop, d.spec.task.fn, args, kwargs, d.name, self.remote_output
                    )
                except Exception:  # not ``inv``'s failure: ``d`` reports it when it starts
                    continue
                stack.append(d)

    def plain(self, inv: Inv) -> bool:
        opts = inv.spec.task.options
        return (
            opts.retry is None and opts.timeout is None and opts.skip_if is None and not opts.cache
            and not opts.limit_by and opts.rate is None and not inv.spec.wants_context
        )

    def done_or_pending(self, name: str) -> bool:
        u = self.invs.get(name)
        if u is None:
            return False
        if u.state is SUCCEEDED:
            return True
        return name in self.pending and u.spec.task.options.retry is None

    def drop_ahead(self, inv: Inv) -> None:
        """``inv`` settled: it no longer runs on Dask; an unused early submission is cancelled."""
        self.pending.pop(inv.name, None)
        ahead, inv.ahead = inv.ahead, None
        if ahead is not None:
            if ahead.done():
                if not ahead.cancelled():
                    ahead.exception()  # retrieved: its upstream's failure, already reported
            else:
                ahead.cancel()

    def remote_output(self, name: str, stream: str, text: str) -> None:
        """File what a task printed in a worker process, as if it had printed it here."""
        through = self.engine.output.capture(name, stream, text)
        if through:
            out = getattr(sys, stream)
            getattr(out, "original", out).write(through)
