"""``DaskExecutor``: task bodies on a dask.distributed cluster (see ``nborch.executors``).

Dask is imported on first use. The worker side (``_DaskCall``) runs each call with the task's
name at hand and sends back what it prints as a Dask event; the client side submits, watches
completions on the client's loop and hands them to the engine's loop in batches.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import itertools
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future as ConcurrentFuture
from types import TracebackType
from typing import Any

from ..core.errors import DefinitionError, NborchError, safe_str
from ..core.executors import Executor, Remote, _call, _remote, resolve, type_name

__all__ = ["OUTPUT_TOPIC", "DaskExecutor"]

log = logging.getLogger("nborch.dask")

# -- the worker side (these travel by reference) --------------------------------------------------

OUTPUT_TOPIC = "nborch-output"  # the Dask event topic that carries what tasks print
# True in a process that made a DaskExecutor: a LocalCluster(processes=False) runs its
# workers as threads in there, and its sys.stdout (the notebook's) must not be replaced.
_client_process = False
_printed: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "nborch_printed", default=None
)


class _WorkerStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a Dask worker process once it ran an nborch task: what a
    task writes (in its own thread: a context variable) is kept for it; the rest goes through."""

    def __init__(self, original: Any, stream: str) -> None:
        self.original, self.stream = original, stream

    def write(self, text: str) -> int:
        kept = _printed.get()
        if kept is None or not text:
            return self.original.write(text)
        kept.append((self.stream, text))
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def _send_printed(key: str, task: str, printed: list[tuple[str, str]]) -> None:
    """Send what a task printed to the client, as a Dask event it subscribed to (it reaches
    the client before the task's result does: both travel the scheduler's ordered streams)."""
    merged: list[list[str]] = []
    for stream, text in printed:
        if merged and merged[-1][0] == stream:
            merged[-1][1] += text
        else:
            merged.append([stream, text])
    try:
        from distributed import get_worker

        get_worker().log_event(OUTPUT_TOPIC, {"key": key, "task": task, "output": merged})
    except Exception:  # not on a worker after all: print it here
        for stream, text in merged:
            out = getattr(sys, stream)
            getattr(out, "original", out).write(text)


class _DaskCall:
    """What Dask runs for one task: ``fn(*args, **kwargs)``, with the task's name at hand for the
    error a child call raises there, and what it prints kept and sent to the client (as a
    process pool's output is). Positional arguments travel flat, as in a plain
    ``client.submit(fn, *args)``, so Dask finds the futures among them without building a
    nested task for a tuple; keyword arguments, when there are any, travel as one last dict
    (their names could clash with ``client.submit``'s own: key, workers, pure...)."""

    __slots__ = ("fn", "key", "keywords", "pickled", "task")

    def __init__(self, fn: Callable[..., Any], task: str, keywords: bool, key: str) -> None:
        self.fn, self.task, self.keywords, self.key = fn, task, keywords, key
        self.pickled: bytes | None = None

    def __reduce__(self) -> Any:
        # The function travels with nborch's pickling (its code keeps its file names, see
        # nborch.pickling), once: distributed may pickle a task twice (pickle, then cloudpickle).
        if self.pickled is None:
            from ..core.pickling import dumps

            self.pickled = dumps(self.fn)
        return _unpickle_call, (self.pickled, self.task, self.keywords, self.key)

    def __call__(self, *args: Any) -> Any:
        kwargs: dict[str, Any] = {}
        if self.keywords:
            args, kwargs = args[:-1], args[-1]
        printed: list[tuple[str, str]] = []
        if not _client_process:  # a worker process (in-process workers leave the streams alone)
            if not isinstance(sys.stdout, _WorkerStream):  # once per worker process
                sys.stdout = _WorkerStream(sys.stdout, "stdout")
            if not isinstance(sys.stderr, _WorkerStream):
                sys.stderr = _WorkerStream(sys.stderr, "stderr")
        token, kept = _remote.set((self.task, "a Dask worker")), _printed.set(printed)
        try:
            return _call(self.fn, args, kwargs)
        finally:
            _printed.reset(kept)
            _remote.reset(token)
            if printed:
                _send_printed(self.key, self.task, printed)


def _unpickle_call(pickled: bytes, task: str, keywords: bool, key: str) -> _DaskCall:
    from ..core.pickling import loads

    return _DaskCall(loads(pickled), task, keywords, key)


# -- the client side ----------------------------------------------------------------------------


class DaskExecutor(Executor):
    """Task bodies on a dask.distributed cluster.

    ``DaskExecutor()`` starts a ``LocalCluster`` of worker processes on first use
    (``**cluster_options`` go to it, e.g. ``n_workers=2, threads_per_worker=1``);
    ``DaskExecutor("tcp://scheduler:8786")`` connects to a running scheduler;
    ``DaskExecutor(client=client)`` uses a client you made (it is not closed here).
    ``gather=False`` leaves every value on the cluster: ``run.results`` then holds ``Remote``
    handles. ``close()`` (or ``with DaskExecutor() as dx:``) shuts down what it started.
    The LocalCluster's worker processes never receive SIGINT: a kernel interrupt or a Ctrl-C
    cancels the run, not the workers (see ``_without_sigint``).

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
        global _client_process
        _client_process = True
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
        from distributed import Client, LocalCluster

        if self.address is not None:
            return Client(self.address, set_as_default=False)
        # Task errors reach the run with their traceback; the workers' own "Compute Failed" logs
        # would only repeat them on stderr (silence_logs=logging.WARNING brings them back).
        options = {"processes": True, "silence_logs": logging.CRITICAL, "dashboard_address": ":0"}
        options.update(self.cluster_options)

        def start() -> tuple[Any, Any]:
            cluster = LocalCluster(**options)
            try:
                return cluster, Client(cluster, set_as_default=False)
            except BaseException:
                cluster.close()
                raise

        self.cluster, client = _without_sigint(start)
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
            dfut = client.submit(_DaskCall(fn, task, bool(extra), key), *args, *extra, key=key, pure=False)
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
        counted = client.submit(_length, remote.future, who, what, pure=False, key=key)
        n = (await self._on_client_loop(client.gather([counted], asynchronous=True)))[0]
        if not n:
            return []
        token = f"{self._token}-{next(self._counter)}"
        futures = client.map(_item, [remote.future] * n, range(n), pure=False,
                             key=[f"{remote.task}-item-{token}-{i}" for i in range(n)])
        return [Remote(self, f, f"{remote.task}[{i}]") for i, f in enumerate(futures)]


def _length(value: Any, who: str, what: str) -> int:
    """On a worker: how many items a mapped node gets from ``value``, as the client would count
    them (``mapping.as_items``: its errors, e.g. a value that is not iterable, are raised there)."""
    from ..core.mapping import as_items

    return len(as_items(value, who, what))


def _item(value: Any, index: int) -> Any:
    """On a worker: element ``index`` of ``value`` (a list, or any iterable, as ``as_items`` sees it)."""
    if isinstance(value, list | tuple | range):
        return value[index]
    from ..core.mapping import as_items

    return as_items(value, "map", "the mapped value")[index]


def _without_sigint(start: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """``start()`` (a LocalCluster and its client), run in a thread of its own that blocks SIGINT.

    A kernel interrupt is a SIGINT to the kernel's whole process group (jupyter_client), and a
    Ctrl-C in a terminal one to the foreground group: the worker processes of a LocalCluster,
    children of this process, would get it too, die with KeyboardInterrupt and be restarted
    by their nannies, losing their tasks and data while the interrupted run cancels them (the
    next run then hung). A blocked signal stays blocked in the threads a thread starts and
    across fork and exec: the cluster's threads, and every worker process they spawn, now or
    when a nanny restarts one, never receive SIGINT. This process still does (in its main
    thread, where Python handles it), and the cluster stops as usual with ``close()``."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows: no process groups
        return start()
    done = threading.Event()
    box: dict[str, Any] = {}
    abandoned = threading.Event()

    def target() -> None:
        # multiprocessing starts its resource tracker with SIGINT blocked, then *unblocks* it
        # (whatever the mask was before): start it first, so that nothing undoes the mask below
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            box["value"] = start()
        except BaseException as exc:
            box["error"] = exc
        done.set()
        if abandoned.is_set() and "value" in box:  # interrupted meanwhile: nobody will use it
            cluster, client = box.pop("value")
            client.close()
            cluster.close()

    threading.Thread(target=target, name="nborch-dask-cluster", daemon=True).start()
    try:
        done.wait()  # not join(): an interrupted join may report a live thread finished
    except BaseException:
        abandoned.set()
        raise
    if "error" in box:
        raise box.pop("error")
    return box.pop("value")


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
