"""What nborch needs to know about a task's function, learned once per function.

``fn_info(fn)`` reads a callable's signature into an ``FnInfo`` (async or not, a generator
function or not, its parameters by kind), cached by the function itself, so that ``Task()``
pays a dict lookup per node. ``check_callable`` rejects what cannot be a task's function (a
coroutine object, a generator function, a non-callable) with a message that shows the fix;
``fn_name`` names a task after its function.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

from .errors import InvalidTaskError

__all__ = ["INJECTED", "FnInfo", "cached_info", "check_callable", "fn_info", "fn_name", "info_by_id"]

INJECTED = frozenset({"context", "state"})
"""Parameter names the engine fills itself: upstream values and the shared state object."""


@dataclass(frozen=True, slots=True)
class FnInfo:
    """Signature facts about a function (``fn_info``): what a task's calls and the graph need."""

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
info_by_id: dict[int, tuple[weakref.ref[Any], FnInfo]] = {}


def _remember(fn: Any, info: FnInfo) -> None:
    key = id(fn)

    def forget(ref: weakref.ref[Any]) -> None:
        entry = info_by_id.get(key)
        if entry is not None and entry[0] is ref:
            del info_by_id[key]

    info_by_id[key] = (weakref.ref(fn, forget), info)


def cached_info(fn: Any) -> FnInfo | None:
    """``fn``'s FnInfo if it was made already: by id for functions, else by weak key."""
    entry = info_by_id.get(id(fn))
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
    info = cached_info(fn)
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



def check_callable(fn: Any, where: str) -> None:
    """Raise InvalidTaskError, naming ``where``, if ``fn`` cannot be a task's function."""
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

