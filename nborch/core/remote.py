"""Running a task body elsewhere: the ``Executor`` protocol, and what comes back from it.

An executor (``nborch.core.process_pool``, ``nborch.runtime.dask_executor``) submits a call and
settles an asyncio future on the engine's loop with its outcome (``resolve``). What comes back
is the value, or a ``Remote`` (a value left on the cluster, fetched only when something here
needs it: ``materialize``, ``prepare_for``), or the task's own exception; one that cannot be
brought back becomes a ``RemoteError``. While a body runs in a worker, ``remote_task()`` names
it, so that a child-task call there fails with ``child_call_error``. How a user picks an
executor, and what each does, is in ``nborch.core.executors``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

from .errors import NborchError

__all__ = [
    "Executor",
    "Remote",
    "RemoteError",
    "RemoteTraceback",
    "call_in_worker",
    "child_call_error",
    "collect_remotes",
    "fetch_all",
    "has_remote",
    "materialize",
    "prepare_for",
    "remote_call",
    "remote_task",
    "replace_remotes",
    "resolve",
    "type_name",
]

# (task name, where) while a task body runs in a worker process or on a Dask worker
remote_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "nborch_remote", default=None
)
remote_task = remote_call.get


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
    name, where = remote_call.get() or ("?", "another process")
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


def collect_remotes(value: Any, out: list[Remote]) -> None:
    if isinstance(value, Remote):
        out.append(value)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            collect_remotes(v, out)
    elif isinstance(value, dict | MappingProxyType):
        for v in value.values():
            collect_remotes(v, out)


def replace_remotes(value: Any, swap: Callable[[Remote], Any]) -> Any:
    if isinstance(value, Remote):
        return swap(value)
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(replace_remotes(v, swap) for v in value)
    if isinstance(value, MappingProxyType):
        return MappingProxyType({k: replace_remotes(v, swap) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: replace_remotes(v, swap) for k, v in value.items()}
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
    collect_remotes(value, found)
    if not found:
        return value
    await fetch_all(found)
    return replace_remotes(value, lambda r: r.value)


async def prepare_for(executor: Executor | None, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """Arguments as ``executor`` takes them: its own Remotes stay remote (``.future``),
    every other Remote is fetched. ``executor=None``: a local call, everything fetched."""
    found: list[Remote] = []
    collect_remotes((args, kwargs), found)
    if not found:
        return args, kwargs
    await fetch_all([r for r in found if executor is None or not executor.owns(r)])

    def swap(r: Remote) -> Any:
        if executor is not None and executor.owns(r):
            return r.future
        return r.value

    return replace_remotes(args, swap), replace_remotes(kwargs, swap)


def call_in_worker(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Call ``fn`` where an executor sent it (a pool process, a Dask worker): an async one's
    coroutine runs to its end under ``asyncio.run``."""
    value = fn(*args, **kwargs)
    if asyncio.iscoroutine(value):  # an async task sent to a process or to Dask
        value = asyncio.run(value)
    return value
