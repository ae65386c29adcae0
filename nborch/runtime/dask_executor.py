"""``DaskExecutor``: task bodies on a dask.distributed cluster (see ``nborch.executors``).

Dask is imported on first use. This is the client side: it submits each call, watches the
completions on the client's loop and hands them to the engine's loop in batches, with what
the tasks printed. What runs on the workers is in ``dask_worker``; starting a LocalCluster
whose workers never receive SIGINT, in ``dask_cluster``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future as ConcurrentFuture
from types import TracebackType
from typing import Any

from ..core.errors import DefinitionError, NborchError, safe_str
from ..core.remote import Executor, Remote, resolve, type_name
from .dask_cluster import start_local_cluster
from .dask_worker import OUTPUT_TOPIC, DaskCall, count_items, mark_client_process, take_item

__all__ = ["OUTPUT_TOPIC", "DaskExecutor"]

log = logging.getLogger("nborch.dask")


class DaskExecutor(Executor):
    """Task bodies on a dask.distributed cluster.

    ``DaskExecutor()`` starts a ``LocalCluster`` of worker processes on first use
    (``**cluster_options`` go to it, e.g. ``n_workers=2, threads_per_worker=1``);
    ``DaskExecutor("tcp://scheduler:8786")`` connects to a running scheduler;
    ``DaskExecutor(client=client)`` uses a client you made (it is not closed here).
    ``gather=False`` leaves every value on the cluster: ``run.results`` then holds ``Remote``
    handles. ``close()`` (or ``with DaskExecutor() as dx:``) shuts down what it started.
    The LocalCluster's worker processes never receive SIGINT: a kernel interrupt or a Ctrl-C
    cancels the run, not the workers (see ``dask_cluster``).

    Each attempt is a new submission (``pure=False``, a unique key ``<function>-<token>-<n>``), so a retry
    never gets Dask's memoized result of the failed one.
    """

    name = "dask"
    ahead = True

    def __init__(
        self, address: str | None = None, client: Any = None, *, gather: bool = True, **cluster_options: Any
    ) -> None:
        if address is not None and client is not None:
            raise DefinitionError("DaskExecutor: give an address or a client, not both")
        if cluster_options and (address is not None or client is not None):
            raise DefinitionError(
                "DaskExecutor: cluster options only apply to the LocalCluster it starts; "
                f"got {', '.join(sorted(cluster_options))} with an address or a client"
            )
        try:  # here, not at the first task: the one line to read is the one that made it
            import distributed  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "nborch.DaskExecutor needs Dask (dask.distributed), which is not installed here: "
                'pip install "nborch[dask]"'
            ) from exc
        mark_client_process()
        self.address = address
        self.gather = gather
        self.cluster_options = cluster_options
        self.cluster: Any = None  # the LocalCluster this executor started, if any
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()
        self._cancelling: set[ConcurrentFuture[Any]] = set()
        self._handover: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., Any], tuple[Any, ...]]]] = {}
        self._handover_lock = threading.Lock()
        self._watching: list[tuple[Any, Callable[[Any], None]]] = []
        self._watchers: set[asyncio.Future[Any]] = set()  # the coroutines waiting on Dask futures
        # a running task's Dask key -> its run's loop and output callback (for what it prints)
        self._routes: dict[str, tuple[asyncio.AbstractEventLoop, Callable[..., Any]]] = {}
        self._subscribed: Any = None  # the client whose output events come to _on_output
        self._token = uuid.uuid4().hex
        self._counter = itertools.count()

    def __repr__(self) -> str:
        where = self.address or ("client" if not self._own_client else "LocalCluster")
        return f"DaskExecutor({where})"

    # -- connecting --

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connecting, or starting a LocalCluster, on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        if self.address is not None:
            from distributed import Client

            return Client(self.address, set_as_default=False)
        self.cluster, client = start_local_cluster(self.cluster_options)
        return client

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address (None without a dashboard)."""
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    def _repr_html_(self) -> str:
        import html

        link = self.dashboard_link
        where = html.escape(repr(self))
        if not link:
            return f"<b>{where}</b>"
        return f'<b>{where}</b>, dashboard: <a href="{html.escape(link)}" target="_blank">{html.escape(link)}</a>'

    async def start(self) -> None:
        if self._client is None:  # starting a cluster blocks for a second or two: not on the loop
            await asyncio.to_thread(lambda: self.client)

    def close(self) -> None:
        """Close the client and the LocalCluster this executor started (not a client you gave)."""
        with self._lock:
            client, cluster = self._client, self.cluster
            if self._own_client:
                self._client = None
            self.cluster = None
        if client is not None and self._own_client:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running --

    def _on_client_loop(self, coro: Any) -> asyncio.Future[Any]:
        """Run a coroutine of the client on the client's own loop; awaitable from ours."""
        cf = asyncio.run_coroutine_threadsafe(coro, self.client.loop.asyncio_loop)
        return asyncio.wrap_future(cf)

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        task: str,
        output: Callable[[str, str, str], Any] | None = None,
    ) -> asyncio.Future[Any]:
        return self.submit_remote(loop, fn, args, kwargs, task, output)[0]

    def submit_remote(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        task: str,
        output: Callable[[str, str, str], Any] | None = None,
    ) -> tuple[asyncio.Future[Any], Remote]:
        """``submit``, also returning the Remote of the (still running) result. ``output(task,
        stream, text)`` gets what the task prints on its worker, on ``loop``."""
        client = self.client
        # The key's prefix is the function's name, as dask.delayed does, not the task's name: the
        # scheduler keeps duration estimates and groups per prefix, so 400 leaves named leaf0..
        # leaf399 of one function would be 400 prefixes of unknown duration, placed worse and
        # shown as 400 bars on the dashboard (a 400-task fan ran 1.45x plain submits, 1.2x after).
        # Unique per executor (a random token) and per submission (a counter): every retry is new.
        key = f"{dask_prefix(fn)}-{self._token}-{next(self._counter)}"
        if output is not None:
            self._routes[key] = (loop, output)
            if self._subscribed is not client:  # before the first submission: the scheduler
                client.subscribe_topic(OUTPUT_TOPIC, self._on_output)  # keeps the order
                self._subscribed = client
        extra = (kwargs,) if kwargs else ()
        try:
            dfut = client.submit(DaskCall(fn, task, bool(extra), key), *args, *extra, key=key, pure=False)
        except Exception as exc:  # serialized at once: say which task, and what did not pickle
            self._routes.pop(key, None)
            root: BaseException = exc
            while root.__cause__ is not None or root.__context__ is not None:
                root = root.__cause__ or root.__context__  # type: ignore[assignment]
            raise NborchError(
                f"task {task!r} cannot be sent to Dask: its function or arguments do not pickle "
                f"({type_name(root)}: {safe_str(root)}); run it on threads (executor='thread')"
            ) from exc
        fut = loop.create_future()
        remote = Remote(self, dfut, task)

        def done(dfut: Any) -> None:  # on the client's loop, once the future is settled
            try:
                status = dfut.status
                if status == "finished":
                    outcome: tuple[str, Any] = ("ok", remote)
                elif status == "error":
                    outcome = ("error", _remote_error(dfut))
                else:
                    outcome = ("cancelled", None)
            except Exception as exc:  # the task must still end, or its run waits forever
                outcome = ("error", exc)
            self._routes.pop(key, None)
            self._hand_over(loop, _deliver_dask, fut, outcome)

        def cancelled(f: asyncio.Future[Any]) -> None:
            if f.cancelled():  # a timeout or a cancelled run: the scheduler forgets the key
                self.cancel([dfut])

        self._watch(client, dfut, done)
        fut.add_done_callback(cancelled)
        return fut, remote

    def _watch(self, client: Any, dfut: Any, done: Callable[[Any], None]) -> None:
        """Call ``done(dfut)`` on the client's loop once ``dfut`` is settled.

        Dask's own ``add_done_callback`` runs each callback through a thread pool: a thread hop
        per task, contending for the GIL with the scheduler of a LocalCluster, which shares this
        process. Here the wait is distributed's own coroutine on the client's loop, started for
        all the futures submitted in one burst with one wake-up of that loop, not one each (a
        400-task fan: 1.33x plain submits with the thread hop, ~1.2x without). A distributed
        without that coroutine falls back to the method."""
        waiter = _dask_done_callback()
        if waiter is None:  # pragma: no cover - an unknown distributed version
            dfut.add_done_callback(done)
            return
        with self._handover_lock:
            first = not self._watching
            self._watching.append((dfut, done))
        if first:
            client.loop.add_callback(self._start_watching, waiter)

    def _start_watching(self, waiter: Any) -> None:
        with self._handover_lock:
            batch, self._watching = self._watching, []
        for dfut, done in batch:  # on the client's loop, which alone touches _watchers
            watcher = asyncio.ensure_future(waiter(dfut, done))
            self._watchers.add(watcher)  # the loop holds tasks weakly: held here until they end
            watcher.add_done_callback(self._watchers.discard)

    def _hand_over(self, loop: asyncio.AbstractEventLoop, call: Callable[..., Any], *args: Any) -> None:
        """Have ``call(*args)`` run on the engine's loop (a completion, or output a task printed),
        in order. What arrives together (a fan-out finishing) goes over in one wake-up of the
        loop, not one each."""
        with self._handover_lock:
            batch = self._handover.get(loop)
            if batch is not None:
                batch.append((call, args))
                return
            self._handover[loop] = [(call, args)]
        try:
            loop.call_soon_threadsafe(self._deliver_batch, loop)
        except RuntimeError:  # the loop is closed: the run is over
            with self._handover_lock:
                self._handover.pop(loop, None)

    def _deliver_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._handover_lock:
            batch = self._handover.pop(loop, [])
        for call, args in batch:
            try:
                call(*args)
            except Exception as exc:  # one bad hand-over must not lose the completions behind it
                log.exception("nborch: a Dask completion could not be delivered")
                if call is _deliver_dask:  # and its own task still ends
                    resolve(args[0], False, exc)

    def _on_output(self, event: tuple[float, Any]) -> None:
        """A task printed on a worker (a Dask event, on the client's loop): file it in its run."""
        msg = event[1]
        route = self._routes.get(str(msg.get("key"))) if isinstance(msg, dict) else None
        if route is None:  # its run is over, or it is someone else's
            return
        loop, output = route
        for stream, text in msg["output"]:
            self._hand_over(loop, output, msg["task"], stream, text)

    def cancel(self, futures: list[Any]) -> None:
        """Cancel Dask futures without waiting (the scheduler forgets them)."""
        try:
            coro = self.client.cancel(futures, asynchronous=True)
            cf = asyncio.run_coroutine_threadsafe(coro, self.client.loop.asyncio_loop)
        except Exception:  # the client is closing: nothing left to cancel
            return
        self._cancelling.add(cf)
        cf.add_done_callback(self._cancelling.discard)

    async def settle(self, timeout: float) -> None:
        pending = [asyncio.wrap_future(cf) for cf in list(self._cancelling)]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def owns(self, remote: Remote) -> bool:
        return remote.executor is self

    async def fetch(self, remotes: list[Remote]) -> list[Any]:
        futures = [r.future for r in remotes]
        return list(await self._on_client_loop(self.client.gather(futures, asynchronous=True)))

    async def fingerprint(self, remote: Remote) -> str | None:
        from ..core.keys import fingerprint

        if remote.fetched:
            return fingerprint(remote.value)
        hashed = self.client.submit(fingerprint, remote.future, pure=False)
        return (await self._on_client_loop(self.client.gather([hashed], asynchronous=True)))[0]

    async def split(self, remote: Remote, who: str = "map", what: str = "the mapped value") -> list[Remote] | None:
        """Map over a value on the cluster: its length is computed there and each element
        becomes a future of its own there; the items' tasks then take them worker to worker."""
        if remote.fetched or not self.owns(remote):
            return None
        client = self.client
        key = f"nborch-len-{self._token}-{next(self._counter)}"
        counted = client.submit(count_items, remote.future, who, what, pure=False, key=key)
        n = (await self._on_client_loop(client.gather([counted], asynchronous=True)))[0]
        if not n:
            return []
        token = f"{self._token}-{next(self._counter)}"
        futures = client.map(take_item, [remote.future] * n, range(n), pure=False,
                             key=[f"{remote.task}-item-{token}-{i}" for i in range(n)])
        return [Remote(self, f, f"{remote.task}[{i}]") for i, f in enumerate(futures)]


@functools.cache
def _dask_done_callback() -> Any:
    """distributed's coroutine that waits for a future on the client's loop and calls back."""
    try:
        from distributed.client import done_callback
    except ImportError:  # pragma: no cover
        return None
    return done_callback


def _remote_error(dfut: Any) -> BaseException:
    """A failed Dask future's exception with its remote traceback, read without blocking (this
    runs on the client's loop, where ``dfut.exception()`` would wait on itself)."""
    state = getattr(dfut, "_state", None)
    exc = getattr(state, "exception", None)
    if not isinstance(exc, BaseException):  # pragma: no cover - a distributed we do not know
        return NborchError(f"Dask task {dfut.key!s} failed and its error could not be read")
    tb = getattr(state, "traceback", None)
    return exc.with_traceback(tb) if isinstance(tb, TracebackType) else exc


def dask_prefix(fn: Callable[..., Any]) -> str:
    """The Dask key prefix for ``fn``'s calls: its name (``<lambda>`` and partials get ``task``)."""
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else "task"


def _deliver_dask(fut: asyncio.Future[Any], outcome: tuple[str, Any]) -> None:
    kind, value = outcome
    if kind == "cancelled":
        if not fut.done():
            fut.cancel()
    else:  # a late result is discarded; a StopIteration becomes a RuntimeError
        resolve(fut, kind == "ok", value)
