"""nborch: a notebook-native orchestrator.

Map of the package: the core (``task``, ``workflow``, ``graph``, ``engine``, ``workers``,
``policies``, ``state``, ``eventbus``, ``record``, ``runner``, ``clock``, ``errors``,
``executors``) imports only the standard library and cloudpickle; ``executors`` imports Dask
on first use. ``display/`` renders graphs and progress (graphviz, ipywidgets and rich are
imported lazily, inside it), and ``notebook/`` holds the IPython magics, loaded by
``%load_ext nborch``.
"""

from __future__ import annotations

from typing import Any

from .core.clock import Clock, SystemClock
from .core.errors import (
    CircuitOpenError,
    CycleError,
    DefinitionError,
    GraphError,
    InvalidTaskError,
    NborchError,
    RunTimeoutError,
    Skip,
    TaskTimeoutError,
)
from .core.executors import Executor, ProcessExecutor, Remote
from .core.eventbus import CircuitEvent, EventBus, RunEvent, TaskEvent, TaskOutput, TaskProgress, TaskWaiting, events
from .core.policies import BreakerState, CircuitBreaker, RetryPolicy
from .core.record import ErrorRecord, Run
from .core.registry import register, workflows
from . import cache
from . import frontends as _frontends  # registers the display and the store with nborch.hooks
from .core.progress import progress
from .runtime.runner import RunHandle, cancelled, last_run, register_display, register_wait_hook, run, run_async
from .runtime.schedule import Schedule, schedule
from .core.state import TRIGGER_RULES, TaskState
from .core.task import Node, Task, TaskFunction, task
from .core.workflow import DAG, CircuitGroup, Parallel, Sequence

__version__ = "0.1.0"

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitEvent",
    "CircuitGroup",
    "CircuitOpenError",
    "Clock",
    "CycleError",
    "DAG",
    "DaskExecutor",
    "DefinitionError",
    "ErrorRecord",
    "EventBus",
    "Executor",
    "GraphError",
    "InvalidTaskError",
    "NborchError",
    "Node",
    "Parallel",
    "ProcessExecutor",
    "Remote",
    "RetryPolicy",
    "Run",
    "RunEvent",
    "RunHandle",
    "RunTimeoutError",
    "Schedule",
    "Sequence",
    "Skip",
    "SystemClock",
    "TRIGGER_RULES",
    "Task",
    "TaskEvent",
    "TaskFunction",
    "TaskOutput",
    "TaskProgress",
    "TaskState",
    "TaskTimeoutError",
    "TaskWaiting",
    "cache",
    "cancelled",
    "history",
    "events",
    "last_run",
    "load_ipython_extension",
    "progress",
    "register",
    "register_display",
    "register_wait_hook",
    "run",
    "run_async",
    "schedule",
    "task",
    "workflows",
]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":  # imported on first use: most runs never need it
        from .runtime.dask_executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'nborch' has no attribute {name!r}")


def __dir__() -> list[str]:  # tab completion sees the lazy name too
    return sorted({*globals(), "DaskExecutor"})


def history(limit: int | None = 20) -> list[Run]:
    """Recorded runs, newest first (from the store at $NBORCH_HOME or ./.nborch)."""
    from .store import history as _history

    return _history(limit)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nborch``: register the %%task / %orch magics and the live display."""
    from .notebook.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nborch``."""
    from .notebook.extension import unload_ipython_extension as unload

    unload(ipython)
