"""Where a sync task body runs when not in the engine's worker threads: a process pool or Dask.

The engine always stays on its asyncio loop; an executor only *submits* a call and resolves an
asyncio future on that loop when it ends (no thread waits per task):

* ``"thread"`` (the default for sync functions): the engine's ``WorkerPool`` threads.
* ``"process"`` / ``ProcessExecutor()``: a ``concurrent.futures.ProcessPoolExecutor`` started
  with the **forkserver** method (spawn where there is none): forking a process that runs an
  event loop and worker threads can copy a held lock into the child and hang it. Functions,
  arguments, values and errors travel with cloudpickle, so functions defined in a notebook cell
  work (ipython/ipython#10894), their code under its own file names (``nborch.pickling``).
  What the function prints is sent back and filed under the task. An exception that cannot be
  brought back (its class does not pickle or unpickle) fails the task as ``RemoteError`` with
  its type name, message and remote traceback. Workers ignore SIGINT (an interrupt is for the
  run) and exit with the process that started them, even when it is killed.
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
import atexit
import contextlib
import contextvars
import io
import logging
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ConcurrentFuture
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import hooks
from .errors import DefinitionError, NborchError, safe_str

if TYPE_CHECKING:  # multiprocessing is imported when a ProcessExecutor is made: most runs never need it
    from concurrent.futures import ProcessPoolExecutor

__all__ = [
    "Executor",
    "ProcessExecutor",
    "Remote",
    "RemoteError",
    "RemoteTraceback",
    "get_executor",
    "remote_task",
]

log = logging.getLogger("nborch.executors")

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


class RemoteError(NborchError):
    """Stands in for a task's exception that could not be brought back from its worker process
    (its class does not pickle, or does not unpickle: an ``__init__`` with several required
    arguments, common in HTTP libraries). ``type_name`` and ``message`` are the original's; its
    traceback is the ``__cause__`` (a ``RemoteTraceback``)."""

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name, self.message, self.reason = type_name, message, reason
        if reason:
            self.add_note(f"nborch: the task's {type_name} could not be unpickled here ({reason})")

    def __reduce__(self) -> Any:  # its own arguments; the state restores the notes as they were
        return type(self), (self.type_name, self.message, self.reason), dict(self.__dict__)


def type_name(obj: Any) -> str:
    """``obj``'s type as a traceback names it (module-qualified, except builtins and __main__)."""
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in (None, "builtins", "__main__") else f"{module}.{qualname}"


def resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Settle ``fut`` with a task's outcome, whatever it is (nothing happens if it is done already).

    asyncio refuses ``StopIteration`` in a future (the await would end a generator): as in a
    coroutine (PEP 479), it becomes a ``RuntimeError`` whose ``__cause__`` it is."""
    if fut.done():  # cancelled or timed out meanwhile: the late result is discarded
        return
    if ok:
        fut.set_result(value)
        return
    if isinstance(value, StopIteration) or not isinstance(value, BaseException):
        error = RuntimeError(f"task raised {type_name(value)}")
        error.__cause__ = value if isinstance(value, BaseException) else None
        value = error
    fut.set_exception(value)


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
        from .keys import fingerprint

        return fingerprint((await self.fetch([remote]))[0])

    async def split(self, remote: Remote, who: str = "map", what: str = "the mapped value") -> list[Remote] | None:
        """A remote sequence as one ``Remote`` per element, made where it is (only its length
        comes back), for mapping over it; None: this executor cannot, fetch it instead. ``who``
        and ``what`` name the map and the value in the error raised when it is not iterable."""
        return None


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
        return type(value)(_replace(v, swap) for v in value)
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


def _run_in_process(payload: bytes) -> tuple[bool, bytes | None, str, str, str, tuple[str, str, str]]:
    """Unpickle and run one call in a pool process: (ok, pickled value or error, traceback, out,
    err, (type name, message, why the error is not pickled)); the type name and message let the
    client name an error (or a value) it cannot unpickle."""
    from .pickling import dumps, loads

    fn, args, kwargs, task = loads(payload)
    out, err = io.StringIO(), io.StringIO()
    token = _remote.set((task, f"a process pool (pid {os.getpid()})"))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = _call(fn, args, kwargs)
        return True, dumps(value), "", out.getvalue(), err.getvalue(), (type_name(value), "", "")
    except BaseException as exc:  # sent back to the engine, which raises it in the run
        tb = _user_traceback(exc)
        blob: bytes | None = None
        reason = ""
        try:
            blob = dumps(exc)
            loads(blob)  # one that pickles but does not unpickle would fail in the client
        except Exception as why:
            blob, reason = None, f"{type_name(why)}: {safe_str(why)}"
        return False, blob, tb, out.getvalue(), err.getvalue(), (type_name(exc), safe_str(exc), reason)
    finally:
        _remote.reset(token)


def _user_traceback(exc: BaseException) -> str:
    """The traceback text of ``exc`` from the task's own code on (nborch's frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in (_run_in_process.__code__, _call.__code__):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _exit_with_parent(watched: Any, inherited: Any) -> None:
    """A pool worker's initializer: exit as soon as the pool's process is gone (see ``pool()``),
    and ignore SIGINT. A kernel interrupt (jupyter_client signals the kernel's whole process
    group) or a Ctrl-C in a terminal is for the run, which cancels its tasks: it would kill an
    idle worker (breaking the pool) and fail a busy one's task with KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if inherited is not None:
        inherited.close()

    def watch() -> None:
        try:
            watched.recv_bytes()  # nothing is ever sent: this returns at end of file
        except (EOFError, OSError):
            pass
        os._exit(0)  # what runs here was for a process that no longer waits for it

    threading.Thread(target=watch, name="nborch-exit-with-parent", daemon=True).start()


# -- process pool ---------------------------------------------------------------------------------


class ProcessExecutor(Executor):
    """Sync task bodies in a process pool (``executor="process"`` uses a shared default one).

    ``max_workers`` defaults to the number of CPUs; ``start_method`` to ``"forkserver"``
    (``"spawn"`` where there is no forkserver). As with any process pool (and Dask's
    LocalCluster), a script must guard its entry point with ``if __name__ == "__main__":``.
    """

    name = "process"

    def __init__(self, max_workers: int | None = None, start_method: str | None = None) -> None:
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise DefinitionError(
                f"ProcessExecutor: start_method={start_method!r} is not available here; "
                f"choose one of {', '.join(methods)}"
            )
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._alive: Any = None  # the write end of the pipe whose end tells the workers to exit
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers}, start_method={self.start_method!r})"

    def pool(self) -> ProcessPoolExecutor:
        """The pool, started on first use.

        Its workers exit when this process does, even when it is killed (SIGKILL) and cannot
        shut them down: each worker watches the read end of a pipe whose only write end is here,
        and the end of file that comes when it closes ends the worker. Without that, workers
        outlive the process forever (blocked on a queue whose write end they hold themselves),
        and so does the forkserver, which stays alive as long as any process it started."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context(self.start_method)
                watched, self._alive = ctx.Pipe(duplex=False)
                # a forked worker inherits the write end too: it closes it first thing
                inherited = self._alive if self.start_method == "fork" else None
                self._pool = ProcessPoolExecutor(
                    self.max_workers, mp_context=ctx, initializer=_exit_with_parent,
                    initargs=(watched, inherited),
                )
            return self._pool

    def _discard(self, wait: bool) -> None:
        with self._lock:
            pool, alive, self._pool, self._alive = self._pool, self._alive, None, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
        if alive is not None:  # any worker still there exits now
            alive.close()

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        task: str,
        output: Callable[[str, str, str], Any] | None = None,
    ) -> asyncio.Future[Any]:
        from .pickling import dumps

        try:
            payload = dumps((fn, args, kwargs, task))
        except Exception as exc:
            raise NborchError(
                f"task {task!r} cannot be sent to a process pool: its function or arguments do not "
                f"pickle ({type_name(exc)}: {safe_str(exc)}); run it on threads (executor='thread')"
            ) from exc
        fut = loop.create_future()
        try:
            cf = self.pool().submit(_run_in_process, payload)
        except RuntimeError:  # a broken pool (a worker was killed): start a fresh one once
            self._discard(wait=False)
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
        """Settle ``fut`` from the pool's future: whatever goes wrong here fails the task, it never
        leaves ``fut`` pending (the run would wait for it forever)."""
        if fut.done():  # cancelled or timed out meanwhile: the late result is discarded
            return
        if cf.cancelled():
            fut.cancel()
            return
        try:
            ok, value = self._outcome(cf, task, output)
        except Exception as exc:  # pragma: no cover - a last resort: _outcome handles what we know
            ok, value = False, exc
        resolve(fut, ok, value)

    def _outcome(self, cf: ConcurrentFuture[Any], task: str, output: Any) -> tuple[bool, Any]:
        failure = cf.exception()
        if failure is not None:  # the pool itself failed (BrokenProcessPool)
            return False, failure
        from .pickling import loads

        ok, blob, tb, out, err, (name, message, reason) = cf.result()
        if output is not None:  # what the function printed, filed under the task
            for stream, text in (("stdout", out), ("stderr", err)):
                if text:
                    try:
                        output(task, stream, text)
                    except Exception:  # the output is lost, not the result
                        log.exception("nborch: what task %r printed could not be filed", task)
        if ok:
            try:
                return True, loads(blob)
            except Exception as exc:
                error = NborchError(
                    f"task {task!r} returned a value of type {name} that cannot be unpickled here: "
                    f"{type_name(exc)}: {safe_str(exc)}"
                )
                error.__cause__ = exc
                return False, error
        value: Any = None
        if blob is not None:
            try:
                value = loads(blob)
            except Exception as exc:  # unpickled in the worker, not here (a class only it has)
                reason = f"{type_name(exc)}: {safe_str(exc)}"
        if not isinstance(value, BaseException):
            value = RemoteError(name, message, reason)
        if value.__cause__ is None:
            value.__cause__ = RemoteTraceback(tb)
        return False, value

    async def fetch(self, remotes: list[Remote]) -> list[Any]:  # pragma: no cover - no Remotes
        return [r.result() for r in remotes]

    def shutdown(self, wait: bool = True) -> None:
        """Stop the worker processes (``wait=False``: at once, calls still running included)."""
        self._discard(wait)


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
                # let it go at exit, while concurrent.futures.process (imported after this module,
                # on first use) still stands: its pool's finalizer needs that module
                atexit.register(_default_process.clear)
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


hooks.check_executor.register(check_executor)  # nborch.task checks executor= through it
