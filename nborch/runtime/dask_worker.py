"""What runs on a Dask worker for nborch: a task's call (``DaskCall``) and what it prints.

These travel to the workers by reference (``nborch.runtime.dask_worker.<name>``), so this
module imports neither Dask nor the client side (``dask_executor``). A call runs with the
task's name at hand (for the error a child call raises there), and what the task prints is
kept and sent to the client as a Dask event on ``OUTPUT_TOPIC``. ``count_items`` and
``take_item`` split a mapped value where it lies, on the cluster.
"""

from __future__ import annotations

import contextvars
import io
import sys
from collections.abc import Callable
from typing import Any

from ..core.remote import call_in_worker, remote_call

__all__ = ["OUTPUT_TOPIC", "DaskCall", "count_items", "mark_client_process", "take_item"]

OUTPUT_TOPIC = "nborch-output"  # the Dask event topic that carries what tasks print
# True in a process that made a DaskExecutor: a LocalCluster(processes=False) runs its
# workers as threads in there, and its sys.stdout (the notebook's) must not be replaced.
_client_process = False
_printed: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "nborch_printed", default=None
)


def mark_client_process() -> None:
    """Note that this process made a DaskExecutor: its in-process workers keep its streams."""
    global _client_process
    _client_process = True


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


class DaskCall:
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
        token, kept = remote_call.set((self.task, "a Dask worker")), _printed.set(printed)
        try:
            return call_in_worker(self.fn, args, kwargs)
        finally:
            _printed.reset(kept)
            remote_call.reset(token)
            if printed:
                _send_printed(self.key, self.task, printed)


def _unpickle_call(pickled: bytes, task: str, keywords: bool, key: str) -> DaskCall:
    from ..core.pickling import loads

    return DaskCall(loads(pickled), task, keywords, key)


def count_items(value: Any, who: str, what: str) -> int:
    """On a worker: how many items a mapped node gets from ``value``, as the client would count
    them (``mapping.as_items``: its errors, e.g. a value that is not iterable, are raised there)."""
    from ..core.mapping import as_items

    return len(as_items(value, who, what))


def take_item(value: Any, index: int) -> Any:
    """On a worker: element ``index`` of ``value`` (a list, or any iterable, as ``as_items`` sees it)."""
    if isinstance(value, list | tuple | range):
        return value[index]
    from ..core.mapping import as_items

    return as_items(value, "map", "the mapped value")[index]
