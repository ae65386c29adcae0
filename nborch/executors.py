"""Where a sync task body runs when not in the engine's worker threads: a process pool or Dask.

The engine always stays on its asyncio loop; an executor only *submits* a call and resolves an
asyncio future on that loop when it ends (no thread waits per task):

* ``"thread"`` (the default for sync functions): the engine's ``WorkerPool`` threads.
* ``"process"`` / ``ProcessExecutor()``: a ``concurrent.futures.ProcessPoolExecutor`` started
  with the **forkserver** method (spawn where there is none): forking a process that runs an
  event loop and worker threads can copy a held lock into the child and hang it. Functions,
  arguments, values and errors travel with cloudpickle, so functions defined in a notebook cell
  work (ipython/ipython#10894). What the function prints is sent back and filed under the task.
* ``DaskExecutor(address=None, client=None, **cluster_options)``: a dask.distributed cluster
  (a ``LocalCluster`` of worker processes when given neither). Dask is imported on first use.

**Data stays on the cluster.** A task that ran on Dask leaves its value there: the engine
records a ``Remote`` (the Dask future) as its result. A downstream task on the same
``DaskExecutor`` receives the future itself, so Dask hands the value from worker to worker;
a value is pulled back only when a local task (thread, loop or another executor), a child-task
call, the cache or the ``Run`` record needs it, each Remote at most once. At the end of a run the
values still remote are gathered in one batch for the ``Run`` record (``run.value``,
``run.results``), unless the executor was built with ``gather=False``: then ``run.results``
holds the ``Remote`` handles (``.result()`` fetches one) and nothing comes back at all.

**Child tasks.** Code running in a process or on Dask is outside the run: the engine, its
limits and its events live in the notebook's process. A child-task call there
(``fib(n - 1).result`` or ``await fib(n - 1)``) raises ``NborchError`` saying what to do:
run the parent on threads (its children may still go to a process pool or Dask through their
own ``executor=``), or put the calls in the workflow itself.

**Async functions** run on the loop unless their own ``@task(executor=...)`` sends them to a
process or to Dask (where they run under ``asyncio.run``); a run's ``executor=`` applies to sync
tasks only.

A function already running in a process or on a Dask worker cannot be interrupted: on a timeout
or a cancelled run its future is cancelled (Dask forgets it on the scheduler), the function
finishes on its own and its result is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import itertools
import logging
import multiprocessing
import os
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ProcessPoolExecutor
from types import MappingProxyType, TracebackType
from typing import Any

from .errors import DefinitionError, NborchError

__all__ = [
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "Remote",
    "RemoteTraceback",
    "get_executor",
    "remote_task",
]

# (task name, where) while a task body runs in a worker process or on a Dask worker
_remote: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("nborch_remote", default=None)
remote_task = _remote.get


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process (set as its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def child_call_error(what: Any) -> NborchError:
    """The error a child-task call raises inside a task running in a process or on Dask."""
    name, where = _remote.get() or ("?", "another process")
    return NborchError(
        f"task {name!r} runs on {where}, outside its run, so it cannot start child task {what!r}. "
        f"Run {name!r} on threads (executor='thread'; the child's own @task(executor=...) may still "
        "send it to a process pool or Dask), or make the call a step of the workflow (DAG, Sequence)."
    )


class Executor:
    """Runs one task body somewhere else than the loop or the engine's threads.

    ``submit`` returns an asyncio future on ``loop`` that gets the value (or a ``Remote``) or
    the task's own exception; cancelling that future cancels the remote work where possible.
    """

    name = "executor"
    gather = True  # the Run record gets plain values (see the module docstring)
    ahead = False  # True: has submit_remote(), and takes work before its inputs exist

    async def start(self) -> None:
        """Get ready to accept work (called on the loop before the first submission of a run)."""

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until cancellations sent so far have taken effect."""

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        task: str,
        output: Callable[[str, str, str], Any] | None = None,
    ) -> asyncio.Future[Any]:
        raise NotImplementedError

    def owns(self, remote: Remote) -> bool:
        """True if ``remote`` can be passed to this executor's tasks as it is."""
        return False

    async def fetch(self, remotes: list[Remote]) -> list[Any]:
        """The values of ``remotes`` (all of this executor), brought back in one batch."""
        raise NotImplementedError

    async def fingerprint(self, remote: Remote) -> str | None:
        """A hash of a remote value, computed where it is (for cache keys)."""
        from .store.cache import fingerprint

        return fingerprint((await self.fetch([remote]))[0])


# -- remote values --------------------------------------------------------------------------------

_MISSING: Any = object()


class Remote:
    """A task's value left where it was computed (a Dask future) until something here needs it."""

    __slots__ = ("executor", "future", "task", "value")

    def __init__(self, executor: Executor, future: Any, task: str = "") -> None:
        self.executor = executor
        self.future = future
        self.task = task  # the name of the task that computed it
        self.value = _MISSING  # set once fetched: a Remote travels back at most once

    @property
    def fetched(self) -> bool:
        return self.value is not _MISSING

    def result(self) -> Any:
        """Fetch the value (blocking; from async code ``await materialize(remote)``)."""
        if self.value is _MISSING:
            self.value = self.future.result()
        return self.value

    def __repr__(self) -> str:
        of = f" of {self.task}" if self.task else ""
        if self.future is None:
            return f"<Remote{of} fetched from {self.executor.name}: {self.value!r:.60}>"
        return f"<Remote{of} on {self.executor.name}, key {self.future.key!s}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a nborch Remote (a value left on the cluster) cannot be pickled; "
            "call .result() to fetch the value first"
        )


def has_remote(value: Any) -> bool:
    """True if ``value`` is, or contains (in lists, tuples, sets, dicts), a ``Remote``."""
    if isinstance(value, Remote):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_remote(v) for v in value)
    if isinstance(value, dict | MappingProxyType):
        return any(has_remote(v) for v in value.values())
    return False


def _collect(value: Any, out: list[Remote]) -> None:
    if isinstance(value, Remote):
        out.append(value)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _collect(v, out)
    elif isinstance(value, dict | MappingProxyType):
        for v in value.values():
            _collect(v, out)


def _replace(value: Any, swap: Callable[[Remote], Any]) -> Any:
    if isinstance(value, Remote):
        return swap(value)
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_replace(v, swap) for v in value)  # type: ignore[call-arg]
    if isinstance(value, MappingProxyType):
        return MappingProxyType({k: _replace(v, swap) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: _replace(v, swap) for k, v in value.items()}
    return value


async def fetch_all(remotes: Iterable[Remote]) -> None:
    """Bring back every value of ``remotes`` not fetched yet: one batch per executor."""
    by_exe: dict[int, tuple[Executor, list[Remote]]] = {}
    seen: set[int] = set()
    for r in remotes:
        if r.fetched or id(r) in seen:
            continue
        seen.add(id(r))
        by_exe.setdefault(id(r.executor), (r.executor, []))[1].append(r)
    for exe, group in by_exe.values():
        for r, v in zip(group, await exe.fetch(group), strict=True):
            r.value = v


async def materialize(value: Any) -> Any:
    """``value`` with every ``Remote`` in it replaced by its value (fetched as needed)."""
    found: list[Remote] = []
    _collect(value, found)
    if not found:
        return value
    await fetch_all(found)
    return _replace(value, lambda r: r.value)


async def prepare_for(executor: Executor | None, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """Arguments as ``executor`` takes them: its own Remotes stay remote (``.future``),
    every other Remote is fetched. ``executor=None``: a local call, everything fetched."""
    found: list[Remote] = []
    _collect((args, kwargs), found)
    if not found:
        return args, kwargs
    await fetch_all([r for r in found if executor is None or not executor.owns(r)])

    def swap(r: Remote) -> Any:
        if executor is not None and executor.owns(r):
            return r.future
        return r.value

    return _replace(args, swap), _replace(kwargs, swap)


# -- running a call in a worker (these functions travel by reference) -----------------------------


def _call(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    value = fn(*args, **kwargs)
    if asyncio.iscoroutine(value):  # an async task sent to a process or to Dask
        value = asyncio.run(value)
    return value


def _run_in_process(payload: bytes) -> tuple[bool, bytes, str, str, str]:
    """Unpickle and run one call in a pool process: (ok, pickled value or error, tb, out, err)."""
    import cloudpickle

    fn, args, kwargs, task = cloudpickle.loads(payload)
    out, err = io.StringIO(), io.StringIO()
    token = _remote.set((task, f"a process pool (pid {os.getpid()})"))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = _call(fn, args, kwargs)
        return True, cloudpickle.dumps(value, protocol=5), "", out.getvalue(), err.getvalue()
    except BaseException as exc:  # sent back to the engine, which raises it in the run
        tb = traceback.format_exc()
        try:
            blob = cloudpickle.dumps(exc, protocol=5)
        except Exception:  # an exception that does not pickle: keep its type name and message
            blob = cloudpickle.dumps(RuntimeError(f"{type(exc).__qualname__}: {exc}"), protocol=5)
        return False, blob, tb, out.getvalue(), err.getvalue()
    finally:
        _remote.reset(token)


OUTPUT_TOPIC = "nborch-output"  # the Dask event topic that carries what tasks print
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

    __slots__ = ("fn", "key", "keywords", "task")

    def __init__(self, fn: Callable[..., Any], task: str, keywords: bool, key: str) -> None:
        self.fn, self.task, self.keywords, self.key = fn, task, keywords, key

    def __call__(self, *args: Any) -> Any:
        kwargs: dict[str, Any] = {}
        if self.keywords:
            args, kwargs = args[:-1], args[-1]
        if not isinstance(sys.stdout, _WorkerStream):  # once per worker process
            sys.stdout = _WorkerStream(sys.stdout, "stdout")
        if not isinstance(sys.stderr, _WorkerStream):
            sys.stderr = _WorkerStream(sys.stderr, "stderr")
        printed: list[tuple[str, str]] = []
        token, kept = _remote.set((self.task, "a Dask worker")), _printed.set(printed)
        try:
            return _call(self.fn, args, kwargs)
        finally:
            _printed.reset(kept)
            _remote.reset(token)
            if printed:
                _send_printed(self.key, self.task, printed)


# -- process pool ---------------------------------------------------------------------------------


class ProcessExecutor(Executor):
    """Sync task bodies in a process pool (``executor="process"`` uses a shared default one).

    ``max_workers`` defaults to the number of CPUs; ``start_method`` to ``"forkserver"``
    (``"spawn"`` where there is no forkserver). As with any process pool (and Dask's
    LocalCluster), a script must guard its entry point with ``if __name__ == "__main__":``.
    """

    name = "process"

    def __init__(self, max_workers: int | None = None, start_method: str | None = None) -> None:
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise DefinitionError(
                f"ProcessExecutor: start_method={start_method!r} is not available here; "
                f"choose one of {', '.join(methods)}"
            )
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers}, start_method={self.start_method!r})"

    def pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context(self.start_method)
                self._pool = ProcessPoolExecutor(self.max_workers, mp_context=ctx)
            return self._pool

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        task: str,
        output: Callable[[str, str, str], Any] | None = None,
    ) -> asyncio.Future[Any]:
        import cloudpickle

        payload = cloudpickle.dumps((fn, args, kwargs, task), protocol=5)
        fut = loop.create_future()
        try:
            cf = self.pool().submit(_run_in_process, payload)
        except RuntimeError:  # a broken pool (a worker was killed): start a fresh one once
            with self._lock:
                self._pool = None
            cf = self.pool().submit(_run_in_process, payload)

        def done(cf: ConcurrentFuture[Any]) -> None:
            try:
                loop.call_soon_threadsafe(self._deliver, fut, cf, task, output)
            except RuntimeError:  # the loop is closed: nobody wants this result
                pass

        cf.add_done_callback(done)
        fut.add_done_callback(lambda f: cf.cancel() if f.cancelled() else None)
        return fut

    def _deliver(
        self, fut: asyncio.Future[Any], cf: ConcurrentFuture[Any], task: str, output: Any
    ) -> None:
        if fut.done():  # cancelled or timed out meanwhile: the late result is discarded
            return
        if cf.cancelled():
            fut.cancel()
            return
        failure = cf.exception()
        if failure is not None:  # the pool itself failed (BrokenProcessPool)
            fut.set_exception(failure)
            return
        import cloudpickle

        ok, blob, tb, out, err = cf.result()
        if output is not None:  # what the function printed, filed under the task
            for stream, text in (("stdout", out), ("stderr", err)):
                if text:
                    output(task, stream, text)
        value = cloudpickle.loads(blob)
        if ok:
            fut.set_result(value)
        else:
            if value.__cause__ is None:
                value.__cause__ = RemoteTraceback(tb)
            fut.set_exception(value)

    async def fetch(self, remotes: list[Remote]) -> list[Any]:  # pragma: no cover - no Remotes
        return [r.result() for r in remotes]

    def shutdown(self, wait: bool = True) -> None:
        """Stop the worker processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


_default_process: list[ProcessExecutor] = []
_default_lock = threading.Lock()


def get_executor(spec: Any) -> Executor | None:
    """The executor for an ``executor=`` value: None for ``"thread"`` (the engine's threads)."""
    if spec is None or spec == "thread":
        return None
    if spec == "process":
        # One shared pool for executor="process": starting processes for every run would cost
        # more than most tasks. It shuts down with the interpreter.
        with _default_lock:
            if not _default_process:
                _default_process.append(ProcessExecutor())
            return _default_process[0]
    if isinstance(spec, Executor):
        return spec
    raise DefinitionError(check_executor_message(spec))


def check_executor_message(spec: Any) -> str:
    return (
        f"executor= expects 'thread', 'process' or an executor such as nborch.DaskExecutor(), got {spec!r}"
    )


def check_executor(spec: Any, who: str = "") -> Any:
    """Validate an ``executor=`` option (raises DefinitionError)."""
    if spec is None or spec in ("thread", "process") or isinstance(spec, Executor):
        return spec
    raise DefinitionError(who + check_executor_message(spec))


# -- Dask -----------------------------------------------------------------------------------------


class DaskExecutor(Executor):
    """Task bodies on a dask.distributed cluster.

    ``DaskExecutor()`` starts a ``LocalCluster`` of worker processes on first use
    (``**cluster_options`` go to it, e.g. ``n_workers=2, threads_per_worker=1``);
    ``DaskExecutor("tcp://scheduler:8786")`` connects to a running scheduler;
    ``DaskExecutor(client=client)`` uses a client you made (it is not closed here).
    ``gather=False`` leaves every value on the cluster: ``run.results`` then holds ``Remote``
    handles. ``close()`` (or ``with DaskExecutor() as dx:``) shuts down what it started.

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
        self.cluster = LocalCluster(**options)
        return Client(self.cluster, set_as_default=False)

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
        dfut = client.submit(_DaskCall(fn, task, bool(extra), key), *args, *extra, key=key, pure=False)
        fut = loop.create_future()
        remote = Remote(self, dfut, task)

        def done(dfut: Any) -> None:  # on the client's loop, once the future is settled
            status = dfut.status
            if status == "finished":
                outcome: tuple[str, Any] = ("ok", remote)
            elif status == "error":
                outcome = ("error", _remote_error(dfut))
            else:
                outcome = ("cancelled", None)
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
        for dfut, done in batch:
            asyncio.ensure_future(waiter(dfut, done))

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
            call(*args)

    def _on_output(self, event: tuple[float, Any]) -> None:
        """A task printed on a worker (a Dask event, on the client's loop): file it in its run."""
        msg = event[1]
        route = self._routes.get(msg.get("key")) if isinstance(msg, dict) else None
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
        from .store.cache import fingerprint

        if remote.fetched:
            return fingerprint(remote.value)
        hashed = self.client.submit(fingerprint, remote.future, pure=False)
        return (await self._on_client_loop(self.client.gather([hashed], asynchronous=True)))[0]


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
    if fut.done():  # cancelled or timed out meanwhile: the late result is discarded
        return
    kind, value = outcome
    if kind == "ok":
        fut.set_result(value)
    elif kind == "error":
        fut.set_exception(value)
    else:
        fut.cancel()
