"""Tasks: the ``Node`` base every workflow piece shares, ``Task``, and the ``@task`` decorator.

Building a node runs nothing. Running goes through ``nborch.runner`` (``node.run()``,
``await node.run_async()``, ``await node``); inside a running task, awaiting a node (or
reading ``.result`` from a sync task) runs it as a child task of the same run.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import FunctionType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from . import hooks
from .errors import DefinitionError, InvalidTaskError
from .limits import Rate, parse_rate
from .policies import CircuitBreaker, RetryPolicy, is_seconds
from .state import check_trigger_rule

if TYPE_CHECKING:
    from .record import Run

__all__ = ["Node", "Task", "TaskFunction", "TaskOptions", "task"]

INJECTED = frozenset({"context", "state"})
"""Parameter names the engine fills itself: upstream values and the shared state object."""


# -- what nborch needs to know about a function, computed once per function --------------------


@dataclass(frozen=True, slots=True)
class FnInfo:
    is_async: bool
    generator: str  # "generator", "async generator" or "" (not one)
    signature: inspect.Signature | None
    params: tuple[str, ...]  # named parameters, in order
    required: tuple[str, ...]  # required, not counting *args/**kwargs
    positional: tuple[str, ...]  # parameters that can take a positional argument
    var_positional: bool
    var_keyword: bool
    # (number of arguments, keywords) -> the parameters such a call leaves open (graph.open_params)
    open_by_shape: dict[tuple[int, tuple[str, ...]], list[str]] = field(default_factory=dict, compare=False, repr=False)


_info_cache: weakref.WeakKeyDictionary[Any, FnInfo] = weakref.WeakKeyDictionary()
# id(function) -> (a weak reference to it, its FnInfo): a plain dict lookup for what Task()
# does per node (WeakKeyDictionary's lookup is Python code, and makes a weakref each time)
_info_by_id: dict[int, tuple[weakref.ref[Any], FnInfo]] = {}


def _remember(fn: Any, info: FnInfo) -> None:
    key = id(fn)

    def forget(ref: weakref.ref[Any]) -> None:
        entry = _info_by_id.get(key)
        if entry is not None and entry[0] is ref:
            del _info_by_id[key]

    _info_by_id[key] = (weakref.ref(fn, forget), info)


def _cached_info(fn: Any) -> FnInfo | None:
    """``fn``'s FnInfo if it was made already: by id for functions, else by weak key."""
    entry = _info_by_id.get(id(fn))
    if entry is not None and entry[0]() is fn:
        return entry[1]
    try:
        info = _info_cache[fn]
    except (KeyError, TypeError):
        return None
    if type(fn) is FunctionType:
        _remember(fn, info)
    return info


def fn_info(fn: Callable[..., Any]) -> FnInfo:
    """Signature facts about ``fn`` (cached)."""
    info = _cached_info(fn)
    if info is not None:
        return info
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )
    generator = (
        "async generator" if inspect.isasyncgenfunction(fn) else "generator" if inspect.isgeneratorfunction(fn) else ""
    )
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is None:
        info = FnInfo(is_async, generator, None, (), (), (), True, True)
    else:
        ps = list(sig.parameters.values())
        P = inspect.Parameter
        info = FnInfo(
            is_async=is_async,
            generator=generator,
            signature=sig,
            params=tuple(p.name for p in ps if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)),
            required=tuple(
                p.name
                for p in ps
                if p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
            ),
            positional=tuple(p.name for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)),
            var_positional=any(p.kind is P.VAR_POSITIONAL for p in ps),
            var_keyword=any(p.kind is P.VAR_KEYWORD for p in ps),
        )
    try:
        _info_cache[fn] = info
    except TypeError:
        pass
    if type(fn) is FunctionType:  # not bound methods: a new object at every attribute access
        _remember(fn, info)
    return info


def fn_name(fn: Callable[..., Any]) -> str:
    """A task name derived from a callable."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "task" if name == "<lambda>" else name


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Everything ``@task(...)`` / ``Task(..., **options)`` can set, validated."""

    name: str | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    trigger_rule: str = "all_success"
    limit: int | None = None
    limit_by: tuple[str, ...] = ()
    rate: Rate | None = None  # starts per period, evenly spaced (nborch.limits)
    rate_by: tuple[str, ...] = ()
    slots: int = 1  # slots it takes of its pool
    pool: str | None = None  # a pool of max_concurrency={...}; None: "default"
    breaker: CircuitBreaker | None = None
    skip_if: Callable[..., Any] | None = None
    dedupe: bool = False
    cache: bool = False
    reuse: bool = True  # False: never reused by an incremental run (it reads the outside world)
    executor: Any = None  # None (threads for sync, the loop for async), "thread", "process", an Executor
    extra: Mapping[str, Any] = field(default_factory=dict)


OPTION_NAMES = frozenset(
    {"name", "retries", "retry_delay", "retry", "timeout", "trigger_rule", "limit", "limit_by",
     "rate", "rate_by", "slots", "pool", "breaker", "skip_if", "dedupe", "cache", "reuse", "executor"}
)


def make_options(base: TaskOptions | None = None, **given: Any) -> TaskOptions:
    """Validate ``given`` options on top of ``base`` (raises DefinitionError, naming the option)."""
    opts = base or TaskOptions()
    changes: dict[str, Any] = {}
    who = f"task {given.get('name') or opts.name!r}: " if (given.get("name") or opts.name) else ""
    if "name" in given and given["name"] is not None:
        name = given["name"]
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"{who}name= expects a non-empty string, got {name!r}")
        changes["name"] = name
    retry_delay = given.get("retry_delay")
    if retry_delay is not None and not is_seconds(retry_delay, zero=True):
        raise DefinitionError(f"{who}retry_delay= expects a finite number of seconds >= 0, got {retry_delay!r}")
    if given.get("retry") is not None:
        if not isinstance(given["retry"], RetryPolicy):
            raise DefinitionError(
                f"{who}retry= expects a RetryPolicy, got {given['retry']!r}. "
                "Write retry=RetryPolicy(max_attempts=3, delay=1.0)."
            )
        if given.get("retries") is not None or retry_delay is not None:
            raise DefinitionError(
                f"{who}give either retry=RetryPolicy(...) or retries=/retry_delay=, not both "
                "(put the delay in RetryPolicy(delay=...))"
            )
        changes["retry"] = given["retry"]
    elif given.get("retries") is not None:
        changes["retry"] = RetryPolicy.from_retries(given["retries"], retry_delay or 0.0)
    elif retry_delay is not None:
        if opts.retry is None:
            raise DefinitionError(
                f"{who}retry_delay= has no effect without retries=N. "
                f"Write retries=3, retry_delay={retry_delay!r}."
            )
        changes["retry"] = replace(opts.retry, delay=float(retry_delay))
    if given.get("timeout") is not None:
        t = given["timeout"]
        if not is_seconds(t):
            raise DefinitionError(
                f"{who}timeout= expects seconds > 0, got {t!r}"
                + (" (leave it out for no timeout)" if t == float("inf") else "")
            )
        changes["timeout"] = float(t)
    if given.get("trigger_rule") is not None:
        changes["trigger_rule"] = check_trigger_rule(given["trigger_rule"], task=given.get("name") or opts.name)
    if given.get("limit") is not None:
        lim = given["limit"]
        if isinstance(lim, bool) or not isinstance(lim, int) or lim < 1:
            raise DefinitionError(f"{who}limit= expects an integer >= 1, got {lim!r}")
        changes["limit"] = lim
    if given.get("limit_by") is not None:
        by = given["limit_by"]
        by = (by,) if isinstance(by, str) else tuple(by)
        if not all(isinstance(b, str) for b in by):
            raise DefinitionError(f"{who}limit_by= expects parameter names, got {given['limit_by']!r}")
        changes["limit_by"] = by
    if given.get("rate") is not None:
        try:
            changes["rate"] = parse_rate(given["rate"], who)
        except DefinitionError:
            if who:
                raise
            changes["rate"] = given["rate"]  # check_for raises, naming the task
    if given.get("rate_by") is not None:
        by = given["rate_by"]
        by = (by,) if isinstance(by, str) else tuple(by)
        if not all(isinstance(b, str) for b in by):
            raise DefinitionError(f"{who}rate_by= expects parameter names, got {given['rate_by']!r}")
        changes["rate_by"] = by
    if given.get("slots") is not None:
        changes["slots"] = given["slots"]  # checked by check_for, which can name the task
    if given.get("pool") is not None:
        changes["pool"] = given["pool"]
    if given.get("breaker") is not None:
        if not isinstance(given["breaker"], CircuitBreaker):
            raise DefinitionError(f"{who}breaker= expects a CircuitBreaker, got {given['breaker']!r}")
        changes["breaker"] = given["breaker"]
    if given.get("skip_if") is not None:
        if not callable(given["skip_if"]):
            raise DefinitionError(f"{who}skip_if= expects a callable, got {given['skip_if']!r}")
        changes["skip_if"] = given["skip_if"]
    if given.get("dedupe") is not None:
        changes["dedupe"] = bool(given["dedupe"])
    if given.get("cache") is not None:
        changes["cache"] = bool(given["cache"])
    if given.get("reuse") is not None:
        if not isinstance(given["reuse"], bool):
            raise DefinitionError(f"{who}reuse= expects True or False, got {given['reuse']!r}")
        changes["reuse"] = given["reuse"]
    if given.get("executor") is not None:
        changes["executor"] = hooks.check_executor(given["executor"], who)
    opts = replace(opts, **changes) if changes else opts
    if opts.limit_by and opts.limit is None:
        raise DefinitionError(f"{who}limit_by= needs limit=N as well (at most N at once per key)")
    if opts.rate_by and opts.rate is None:
        raise DefinitionError(f"{who}rate_by= needs rate= as well (rate='10/s': at most 10 starts a second per key)")
    return opts


# -- the node base ------------------------------------------------------------------------------


def _as_list(other: Any) -> list[Any]:
    return list(other) if isinstance(other, list | tuple | set) else [other]


class Node:
    """What users compose: a Task, Sequence, Parallel, DAG or CircuitGroup.

    ``a >> b`` (or ``b << a``, ``a.set_downstream(b)``) makes ``b`` start only after ``a``
    settles, by ``b``'s trigger rule. Both sides may be lists.
    """

    __slots__ = ("_after", "__weakref__")

    _after: list[Node | str] | tuple[()]
    name: str | None

    def _add_after(self, upstream: Node | str) -> None:
        if not isinstance(upstream, Node | str):
            raise InvalidTaskError(
                f"only tasks, composites or task names can be upstream of {self!r}; got {upstream!r}"
            )
        if upstream is self:
            raise DefinitionError(f"{self!r} cannot run after itself")
        if not self._after:
            self._after = []  # nodes share () until they get an upstream: less to allocate
        self._after.append(upstream)  # repeats are harmless

    def set_downstream(self, *others: Any) -> None:
        """Make each of ``others`` run after this node."""
        for group in others:
            for o in _as_list(group):
                _require_node(o, "set_downstream()")._add_after(self)

    def set_upstream(self, *others: Any) -> None:
        """Make this node run after each of ``others``."""
        for group in others:
            for o in _as_list(group):
                self._add_after(o)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __rrshift__(self, other: Any) -> Node:
        self.set_upstream(other)
        return self

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rlshift__(self, other: Any) -> Node:
        self.set_downstream(other)
        return self

    # -- running --

    def run(self, **options: Any) -> Any:
        """Run and block until done; return the value or raise the failing task's exception."""
        return hooks.run_node(self, options)

    async def run_async(self, **options: Any) -> Any:
        """Run on the caller's event loop; return the value or raise the task's exception."""
        return await hooks.run_node_async(self, options)

    def __await__(self) -> Generator[Any, None, Any]:
        return hooks.await_node(self).__await__()

    @property
    def result(self) -> Any:
        """The value, computed now: a child task inside a running sync task, else ``run()``."""
        return hooks.blocking_result(self)

    def graph(self) -> Any:
        """The workflow as a ``graphviz.Digraph`` (needs the ``graphviz`` package)."""
        return hooks.node_digraph(self)

    def to_mermaid(self) -> str:
        """The workflow as Mermaid flowchart text."""
        return hooks.node_mermaid(self)

    def visualize(self, path: str | None = None) -> str:
        """Write ``.svg``, ``.png`` or ``.mmd`` by suffix and return the path; no path: Mermaid text."""
        return hooks.visualize(self, path)

    def _repr_html_(self) -> str | None:
        return hooks.node_html(self)


def _require_node(o: Any, where: str) -> Node:
    if isinstance(o, Node):
        return o
    raise InvalidTaskError(f"{where} expects tasks or composites, got {o!r}")


# -- tasks --------------------------------------------------------------------------------------

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
        entry = _info_by_id.get(id(fn))  # a function seen before was checked then: inline, since
        info = entry[1] if entry is not None and entry[0]() is fn else _cached_info(fn)  # once per node
        if info is None or info.generator:
            _check_callable(fn, "Task()")
            info = fn_info(fn)
        if len(keywords) == 1 and "name" in keywords:  # Task(fn, *args, name=...): the common case
            option_kw, kwargs = keywords, _NO_KWARGS
        elif keywords:
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
            self.options = base or _DEFAULTS
        else:
            self.options = make_options(base, **option_kw) if option_kw else (base or _DEFAULTS)
        self.node_name = name
        self.own_name = name is not None
        self.seq = next(_sequence)
        self.info = info
        self._after = ()
        if option_kw and not _CHECKED.issuperset(option_kw):  # options that need the function
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


_DEFAULTS = TaskOptions()


_CHECKED = OPTION_NAMES - {"limit_by", "rate_by", "rate", "slots", "pool"}  # by make_options alone


def check_for(fn: Callable[..., Any], options: TaskOptions, info: FnInfo) -> None:
    """The checks of ``options`` that need the function: ``limit_by=``/``rate_by=`` name its
    parameters, and ``rate=``/``slots=``/``pool=`` errors name the task."""
    if options.rate is not None and not isinstance(options.rate, Rate):
        parse_rate(options.rate, f"task {options.name or fn_name(fn)!r}: ")  # raises: make_options kept it
    if type(options.slots) is not int or options.slots != 1 or options.pool is not None:
        name = options.name or fn_name(fn)
        slots = options.slots
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise DefinitionError(
                f"task {name!r}: slots= expects an integer >= 1 (how many slots of its pool one call "
                f"takes), got {slots!r}. Write slots=2."
            )
        if not isinstance(options.pool, str | None) or options.pool == "":
            raise DefinitionError(
                f"task {name!r}: pool= expects a pool's name, got {options.pool!r}. Write pool=\"gpu\" "
                "and run with max_concurrency={\"default\": 8, \"gpu\": 1}."
            )
    for option, names in (("limit_by", options.limit_by), ("rate_by", options.rate_by)):
        if names and info.signature is not None and not info.var_keyword:
            missing = [p for p in names if p not in info.params]
            if missing:
                from .errors import did_you_mean

                name = options.name or fn_name(fn)
                raise DefinitionError(
                    f"task {name!r}: {option}= names {missing[0]!r}, but {fn_name(fn)}() has no such "
                    f"parameter.{did_you_mean(missing[0], info.params)} "
                    f"Its parameters: {', '.join(info.params) or '(none)'}."
                )


def _check_callable(fn: Any, where: str) -> None:
    if inspect.iscoroutine(fn):
        label = getattr(fn, "__qualname__", "coroutine")
        fn.close()  # we will never run it; close it so Python does not warn "never awaited"
        raise InvalidTaskError(
            f"{where} expected a function, got a coroutine object {label}(...). "
            f"Pass the function and its arguments instead: Task({label}, ...), or decorate it with @task."
        )
    if not callable(fn):
        raise InvalidTaskError(f"{where} expected a callable, got {fn!r} ({type(fn).__name__})")
    generator = fn_info(fn).generator
    if generator:
        kind = f"an {generator}" if generator.startswith("a") else f"a {generator}"
        name = fn_name(fn)
        raise InvalidTaskError(
            f"{where}: {name}() is {kind} function, so calling it would not run its body. "
            f"A task returns its value: collect the items and return them "
            f"(`return list(...)`, or `return [x async for x in ...]`)."
        )


class TaskFunction(Generic[P, R_co]):
    """A function turned into a task factory by ``@task``: calling it builds a ``Task``.

    Typed for checkers: ``@task def f(x: int) -> str`` is a ``TaskFunction[[int], str]``,
    ``f(1)`` a ``Task[str]``, and ``f(1).run()`` a ``str`` (for an async function, what it
    returns when awaited)."""

    fn: Callable[P, Any]
    """The plain function, with its own signature."""

    def __init__(self, fn: Callable[P, Any], options: TaskOptions) -> None:
        _check_callable(fn, "@task")
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
            _check_callable(item, where)
            out.append(Task(item))
    return out


if TYPE_CHECKING:
    _run: Run
