"""``ProcessExecutor``: sync task bodies in a process pool (``executor="process"``).

The pool is a ``concurrent.futures.ProcessPoolExecutor`` started with the forkserver method
(spawn where there is none), its workers ignoring SIGINT and exiting with the process that
started them. A call travels as one cloudpickle payload (``nborch.core.pickling``) to
``_run_in_process``, which runs it with what it prints captured and sends back the value or
the exception (a ``RemoteError`` when that does not pickle), with its traceback text. The
functions that run in the workers (``_run_in_process``, ``_exit_with_parent``) travel there by
reference: a worker imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future as ConcurrentFuture
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError, NborchError, safe_str
from .remote import (
    Executor,
    Remote,
    RemoteError,
    RemoteTraceback,
    call_in_worker,
    remote_call,
    resolve,
    type_name,
)

if TYPE_CHECKING:  # multiprocessing is imported when a ProcessExecutor is made: most runs never need it
    from concurrent.futures import ProcessPoolExecutor

__all__ = ["ProcessExecutor"]

log = logging.getLogger("nborch.executors")


def _run_in_process(payload: bytes) -> tuple[bool, bytes | None, str, str, str, tuple[str, str, str]]:
    """Unpickle and run one call in a pool process: (ok, pickled value or error, traceback, out,
    err, (type name, message, why the error is not pickled)); the type name and message let the
    client name an error (or a value) it cannot unpickle."""
    from .pickling import dumps, loads

    fn, args, kwargs, task = loads(payload)
    out, err = io.StringIO(), io.StringIO()
    token = remote_call.set((task, f"a process pool (pid {os.getpid()})"))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = call_in_worker(fn, args, kwargs)
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
        remote_call.reset(token)


def _user_traceback(exc: BaseException) -> str:
    """The traceback text of ``exc`` from the task's own code on (nborch's frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in (_run_in_process.__code__, call_in_worker.__code__):
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

