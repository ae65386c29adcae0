"""Tasks: ``Task`` (one call of a function, its arguments bound), ``TaskFunction`` and ``@task``.

Building a task runs nothing: it is a ``Node`` (``nborch.core.node``), run by ``node.run()``,
``await node.run_async()`` or ``await node``; inside a running task, awaiting one (or reading
``.result`` from a sync task) runs it as a child task of the same run. What nborch learns of
the function is in ``nborch.core.introspection``, the options and their checks in
``nborch.core.task_options``; their names stay importable from here, where pickles made
before they moved look for them.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from . import hooks
from .errors import DefinitionError, InvalidTaskError
from .introspection import (
    INJECTED,  # noqa: F401 - imported from here by graph.py
    FnInfo,  # noqa: F401 - a Task's .info, found here by pickles made before it moved
    cached_info,
    check_callable,
    fn_info,
    fn_name,
    info_by_id,
)
from .node import Node
from .task_options import (
    CHECKED_WITHOUT_FN,
    DEFAULT_OPTIONS,
    OPTION_NAMES,
    TaskOptions,
    check_for,
    make_options,
)

if TYPE_CHECKING:
    from .record import Run

__all__ = ["Node", "Task", "TaskFunction", "TaskOptions", "task"]

_sequence = itertools.count()
_NO_KWARGS: dict[str, Any] = {}  # shared and never mutated: most tasks bind no keywords


P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Task(Node, Generic[R_co]):
    """One call of a function, with its arguments bound; nothing runs until the node is run.

    ``Task(fn, *args, name=None, **options)``: keywords that are task options (``retries``,
    ``timeout``, ``trigger_rule``...) configure the task; any other keyword is bound as an
    argument of ``fn``. Arguments may be other nodes: their values are passed in when this
    task runs, and running this task runs them first.
    """

    __slots__ = ("fn", "args", "kwargs", "options", "seq", "info", "own_name", "node_name")
    node_name: str | None  # the name given to this node (Task(fn, name=...)), else None

    @overload
    def __init__(self, fn: TaskFunction[..., R_co], /, *args: Any, **keywords: Any) -> None: ...
    @overload
    def __init__(self, fn: Callable[..., Coroutine[Any, Any, R_co]], /, *args: Any, **keywords: Any) -> None: ...
    @overload
    def __init__(self, fn: Callable[..., R_co], /, *args: Any, **keywords: Any) -> None: ...

    def __init__(self, fn: Any, /, *args: Any, **keywords: Any) -> None:
        base: TaskOptions | None = None
        if isinstance(fn, TaskFunction):
            base, fn = fn.options, fn.fn
        entry = info_by_id.get(id(fn))  # a function seen before was checked then: inline, since
        info = entry[1] if entry is not None and entry[0]() is fn else cached_info(fn)  # once per node
        if info is None or info.generator:
            check_callable(fn, "Task()")
            info = fn_info(fn)
        if len(keywords) == 1 and (given := keywords.get("name")) is not None:  # Task(fn, *args,
            # name=...), the common case, done here: nothing else to sort, check or copy
            if not isinstance(given, str) or not given:
                raise DefinitionError(f"task {given!r}: name= expects a non-empty string, got {given!r}")
            self.fn, self.args, self.kwargs, self.options = fn, args, _NO_KWARGS, base or DEFAULT_OPTIONS
            self.node_name, self.own_name, self.seq, self.info, self._after = given, True, next(_sequence), info, ()
            return
        if keywords:
            option_kw = {k: keywords.pop(k) for k in list(keywords) if k in OPTION_NAMES}
            kwargs = keywords.pop("kwargs", None) or _NO_KWARGS
            if keywords:
                kwargs = {**kwargs, **keywords}
        else:
            option_kw, kwargs = _NO_KWARGS, _NO_KWARGS
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # A name given to this node must be unique in its run; a task function's name
        # (@task(name=...)) names every call of it, numbered like an unnamed function's.
        name = option_kw.get("name")
        if name is not None and len(option_kw) == 1:  # only a name: the options stay shared
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"task {name!r}: name= expects a non-empty string, got {name!r}")
            self.options = base or DEFAULT_OPTIONS
        else:
            self.options = make_options(base, **option_kw) if option_kw else (base or DEFAULT_OPTIONS)
        self.node_name = name
        self.own_name = name is not None
        self.seq = next(_sequence)
        self.info = info
        self._after = ()
        if option_kw and not CHECKED_WITHOUT_FN.issuperset(option_kw):  # options that need the function
            check_for(fn, self.options, self.info)
        if kwargs and self.info.signature is not None and not self.info.var_keyword:
            unknown = [k for k in kwargs if k not in self.info.params]
            if unknown:
                raise InvalidTaskError(
                    f"{fn_name(fn)}() has no parameter {unknown[0]!r}; "
                    f"its parameters are {', '.join(self.info.params) or '(none)'}"
                )

    @property
    def name(self) -> str | None:  # type: ignore[override]
        """The explicit name, or None when the run derives one from the function."""
        return self.node_name if self.node_name is not None else self.options.name

    @property
    def base_name(self) -> str:
        """The explicit name, else the function's name."""
        return self.name or fn_name(self.fn)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        call = f"{fn_name(self.fn)}({', '.join(parts)})"
        if len(call) > 80:
            call = call[:77] + "...)"
        named = f", name={self.name!r}" if self.name else ""
        return f"<Task {call}{named}>"

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function, bypassing the engine."""
        return self.fn(*args, **kwargs)

    def map(self, *iterables: Any, **fixed: Any) -> Any:
        """``Task(fn).map(...)``: as ``TaskFunction.map``, with this task's options and its
        keyword arguments fixed for every item (it must bind no positional argument)."""
        if self.args:
            raise InvalidTaskError(
                f"{self!r}.map(): the task binds positional arguments; map the function instead "
                f"(Task({fn_name(self.fn)}).map(...)) and pass fixed values as keywords"
            )
        return TaskFunction(self.fn, self.options).map(*iterables, **{**self.kwargs, **fixed})

    def product(self, **iterables: Any) -> Any:
        """``Task(fn).product(...)``: as ``TaskFunction.product``."""
        if self.args or self.kwargs:
            raise InvalidTaskError(f"{self!r}.product(): the task binds arguments; use the function's .product()")
        return TaskFunction(self.fn, self.options).product(**iterables)

    if TYPE_CHECKING:  # what type checkers see: a Task's value is its function's result

        def run(self, **options: Any) -> R_co: ...

        async def run_async(self, **options: Any) -> R_co: ...

        def __await__(self) -> Generator[Any, None, R_co]: ...

        @property
        def result(self) -> R_co: ...


class TaskFunction(Generic[P, R_co]):
    """A function turned into a task factory by ``@task``: calling it builds a ``Task``.

    Typed for checkers: ``@task def f(x: int) -> str`` is a ``TaskFunction[[int], str]``,
    ``f(1)`` a ``Task[str]``, and ``f(1).run()`` a ``str`` (for an async function, what it
    returns when awaited)."""

    fn: Callable[P, Any]
    """The plain function, with its own signature."""

    def __init__(self, fn: Callable[P, Any], options: TaskOptions) -> None:
        check_callable(fn, "@task")
        self.fn = fn
        self.options = options
        self.info = fn_info(fn)
        check_for(fn, options, self.info)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """The task's base name (explicit ``name=`` or the function's name)."""
        return self.options.name or fn_name(self.fn)

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``nborch.task.<name>``."""
        return logging.getLogger(f"nborch.task.{self.name}")

    # Any argument may be a node standing for its value (``transform(extract())``), which
    # ParamSpec cannot say: checkers show the parameters (the first overload, for signature
    # help) and the result type, but accept nodes in place of values (the second).
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Task[R_co]: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> Task[R_co]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Task[R_co]:
        return Task(self, *args, kwargs=kwargs)

    def map(self, *iterables: Any, **fixed: Any) -> Any:
        """A task per element: ``fetch.map(urls)``, ``score.map(xs, ys, scale=2)``.

        Several iterables are zipped (their lengths must be equal), in the order of the
        function's positional parameters; ``fixed`` keywords go to every item. An iterable may
        be a list (or any iterable: it is read now), a node whose value is iterable (read when
        it has run), or another mapped node (element-wise: item i depends on its item i only).
        Nothing runs until the node is run; its value is the list of the items' values."""
        return hooks.mapped_node(self.fn, self.options, [(f"#{i}", it) for i, it in enumerate(iterables)], fixed, "zip")

    def product(self, **iterables: Any) -> Any:
        """A task per combination of the named iterables (a parameter sweep), in
        ``itertools.product`` order: ``train.product(lr=[0.1, 0.01], depth=[2, 4])``."""
        return hooks.mapped_node(self.fn, self.options, list(iterables.items()), {}, "product")

    def with_options(self, **options: Any) -> TaskFunction[P, R_co]:
        """A copy with some options changed: ``fetch.with_options(retries=5)``."""
        return TaskFunction(self.fn, make_options(self.options, **options))

    def __repr__(self) -> str:
        return f"<task function {self.name}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return TaskFunction(self.fn.__get__(obj, objtype), self.options)


class _Decorator(Protocol):
    """What ``@task(...)`` with options returns: a decorator as precisely typed as ``@task``."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> TaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> TaskFunction[P, R]: ...
@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...
@overload
def task(fn: None = None, /, **options: Any) -> _Decorator: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a sync or async function into a task function.

    ``@task`` or ``@task(name=, retries=, retry_delay=, retry=RetryPolicy(...), timeout=,
    trigger_rule=, limit=, limit_by=, rate=, rate_by=, slots=, pool=, breaker=, skip_if=, dedupe=,
    cache=, reuse=, executor=)``. Options are checked here, so a typo fails at definition time.
    ``rate="10/s"`` spaces the starts of its bodies (``nborch.limits``); ``slots=2`` takes two
    slots of its pool, ``pool="gpu"`` a pool of ``max_concurrency={"default": 8, "gpu": 1}``. ``executor="process"`` or
    ``executor=DaskExecutor(...)`` runs the body in a process pool or on Dask (see
    ``nborch.executors``); it also sends an async function there.
    """
    unknown = set(options) - OPTION_NAMES
    if unknown:
        from .errors import did_you_mean

        bad = sorted(unknown)[0]
        raise DefinitionError(
            f"@task got an unknown option {bad!r}.{did_you_mean(bad, OPTION_NAMES)} "
            f"Options: {', '.join(sorted(OPTION_NAMES))}."
        )
    opts = make_options(None, **options)
    if fn is None:
        return lambda f: TaskFunction(f, opts)
    return TaskFunction(fn, opts)


def iter_nodes(items: Iterable[Any], where: str) -> list[Node]:
    """Turn composite members into nodes: plain callables and task functions become Tasks."""
    out: list[Node] = []
    for item in items:
        if isinstance(item, Node):
            out.append(item)
        elif isinstance(item, TaskFunction):
            out.append(Task(item))
        else:
            check_callable(item, where)
            out.append(Task(item))
    return out


if TYPE_CHECKING:
    _run: Run
