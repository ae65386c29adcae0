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

This module turns an ``executor=`` value into an executor (``get_executor``) and checks it;
the protocol and ``Remote`` values are in ``nborch.core.remote``, the process pool in
``nborch.core.process_pool``. Their public names are importable from here too.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from . import hooks
from .errors import DefinitionError
from .process_pool import ProcessExecutor
from .remote import Executor, Remote, RemoteError, RemoteTraceback, remote_task

__all__ = [
    "Executor",
    "ProcessExecutor",
    "Remote",
    "RemoteError",
    "RemoteTraceback",
    "get_executor",
    "remote_task",
]


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
