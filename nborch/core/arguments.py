"""A task's call: its arguments with the values of the upstream tasks they name, and what the
engine injects (``context``, ``state``). ``call_of`` is on the hot path: a call whose arguments
are all upstream tasks is one ``map`` over their names (``Spec.argnames``); one with upstream
tasks among other arguments, one lookup each (``Spec.argplan``); only nodes inside lists and
dicts, composites and mapped nodes are resolved in full."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .specs import _COLLECTIONS
from .invocation import Inv
from .task import Node, fn_info

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["call_injected", "call_of", "context_of", "resolve", "value_of"]


def value_of(engine: Engine, node: Node, results: Any = None) -> Any:
    """The value of ``node`` from the upstream values in ``results`` (default: the run's)."""
    return engine.graph.value(node, engine.results if results is None else results)

def resolve(engine: Engine, value: Any, results: Any = None) -> Any:
    """``value`` with every node in it (inside lists, tuples, sets, dicts) replaced by its value."""
    if isinstance(value, Node):
        return value_of(engine, value, results)
    if isinstance(value, _COLLECTIONS):
        return type(value)(resolve(engine, v, results) for v in value)
    if isinstance(value, dict):
        return {k: resolve(engine, v, results) for k, v in value.items()}
    return value

def call_of(engine: Engine, inv: Inv, results: Any = None) -> tuple[Any, dict[str, Any]]:
    """The call of ``inv`` from the upstream values in ``results`` (default: the run's)."""
    spec = inv.spec
    task = spec.task
    names = spec.argnames
    plan = spec.argplan
    if names is not None:  # every argument is an upstream task: their values, in order
        args: Any = tuple(map((engine.results if results is None else results).get, names))
        kwargs = task.kwargs
    elif plan is not None:  # upstream tasks among the arguments: one lookup each (Spec.argplan)
        got = (engine.results if results is None else results).get
        positional, keywords = plan
        if positional:
            args = list(task.args)
            for i, up in positional:
                args[i] = got(up)
            args = tuple(args)
        else:
            args = task.args
        if keywords:
            kwargs = dict(task.kwargs)
            for key, up in keywords:
                kwargs[key] = got(up)
        else:
            kwargs = task.kwargs
    elif spec.refs:
        args = tuple(resolve(engine, a, results) for a in task.args)
        kwargs = {k: resolve(engine, v, results) for k, v in task.kwargs.items()}
    else:
        args, kwargs = task.args, task.kwargs
    if spec.pipe is not None:
        args = (value_of(engine, spec.pipe, results), *args)
        if spec.pipe_names is not None:
            kwargs = {**kwargs, **dict(zip(spec.pipe_names, args, strict=False))}
            args = ()
    if spec.named or spec.wants_context or spec.wants_state:
        kwargs = dict(kwargs)
        if spec.named:
            for param, node in spec.named.items():
                kwargs[param] = value_of(engine, node, results)
        if spec.wants_context:
            kwargs["context"] = context_of(engine, inv)
        if spec.wants_state:
            kwargs["state"] = engine.state
    return args, kwargs

def context_of(engine: Engine, inv: Inv) -> MappingProxyType[str, Any]:
    """Read-only values of every upstream (transitively) that succeeded."""
    seen: dict[str, Any] = {}
    stack = list(inv.spec.up)
    while stack:
        spec = stack.pop()
        if spec.name in seen:
            continue
        seen[spec.name] = engine.results.get(spec.name)
        stack.extend(spec.up)
    ordered = {name: seen[name] for name in engine.invs if name in seen}
    return MappingProxyType(ordered)

def call_injected(engine: Engine, fn: Callable[..., Any], inv: Inv) -> Any:
    """Call ``fn`` (a ``skip_if=``) with the ``state`` and ``context`` parameters it names."""
    info = fn_info(fn)
    kwargs: dict[str, Any] = {}
    if "state" in info.params:
        kwargs["state"] = engine.state
    if "context" in info.params:
        kwargs["context"] = context_of(engine, inv)
    return fn(**kwargs)
