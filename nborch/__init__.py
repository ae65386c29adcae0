"""nborch: a notebook-native orchestrator.

Map of the package, in layers that each import only those below them (tests/test_layers.py):
``core/`` (nodes and composites: ``node``, ``task`` with ``introspection`` and ``task_options``,
``workflow``, ``mapping``; ``graph``, the scheduler ``engine`` with ``attempts``, ``children``,
``offload``, ``workers``; ``policies``, ``limits``, ``state``, ``eventbus``, ``record``, ``clock``,
``errors``, ``executors`` with ``remote`` and ``process_pool``) imports only the
standard library and cloudpickle; ``runtime/`` (``runner``: driving the loop from anywhere;
``capture``, ``schedule``, ``dask_executor``, which imports Dask on first use) builds on it; the
front ends sit above: ``display/`` renders graphs and progress (graphviz, ipywidgets and rich
are imported lazily, inside it), ``store/`` records runs in SQLite, ``notebook/`` holds the
IPython magics, loaded by ``%load_ext nborch``, and ``cli``. The core reaches the layers above
through ``nborch.core.hooks``. The old flat paths (``nborch.engine``, ``nborch.runner``, ...)
are aliases of the moved modules (see the end of this file).
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, cast

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
from .core.node import Node
from .core.task import Task, TaskFunction, task
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
    if name in _MOVED:  # an old module path that nothing has imported yet: nborch.keys
        return importlib.import_module(f"{__name__}.{name}")
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


# -- old module paths --------------------------------------------------------------------------
# The core and the runtime were flat modules of the package before they had folders of their
# own: nborch.engine is nborch.core.engine now, nborch.runner is nborch.runtime.runner. Every
# old path stays an alias of the SAME module object, in sys.modules and as an attribute of the
# package, so that `import nborch.engine`, `from nborch.graph import build_graph`, pickles that
# name an old path and mock.patch("nborch.engine.X") all reach the module the package runs.
# The modules imported above are aliased here; the others (keys, reuse, pickling,
# dask_executor: imported on first use) on their first import under the old path, by _OldPaths.
_MOVED: dict[str, str] = {
    **dict.fromkeys(
        ("attempts", "children", "clock", "engine", "errors", "eventbus", "executors", "expansion", "graph",
         "hooks", "invocation", "keys", "limits", "mapping", "offload", "pickling", "policies", "progress",
         "record", "registry", "reuse", "state", "task", "workers", "workflow"),
        "core",
    ),
    **dict.fromkeys(("capture", "dask_executor", "runner", "schedule"), "runtime"),
}


class _OldPaths:
    """A finder for ``nborch.X`` where ``X`` moved: the module is ``nborch.<layer>.X`` itself."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        return ModuleSpec(fullname, cast(Any, self)) if package == __name__ and name in _MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        name = spec.name.rpartition(".")[2]
        module = importlib.import_module(f"{__name__}.{_MOVED[name]}.{name}")
        spec.loader_state = module.__spec__  # the import system sets the alias's spec on it:
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = getattr(module.__spec__, "loader_state", None)  # its own spec again


def _alias_old_paths() -> None:
    for name, layer in _MOVED.items():
        module = sys.modules.get(f"{__name__}.{layer}.{name}")
        if module is not None:
            sys.modules.setdefault(f"{__name__}.{name}", module)
            globals().setdefault(name, module)  # nborch.progress and nborch.schedule stay the functions
    sys.meta_path.append(_OldPaths())


_alias_old_paths()
