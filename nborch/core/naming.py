"""Naming a graph's new tasks: unique per run, ``fetch``, ``fetch[2]``... in call order.

Names given to a node (``Task(f, name=...)``) are used as they are and must be unique in the
run; a task function's name (``@task(name=...)``) belongs to one function; the calls of a
function are numbered after it. ``Names`` (``nborch.core.specs``) keeps a run's names for the
graphs of its child tasks too."""

from __future__ import annotations

from typing import Any

from .errors import GraphError
from .mapping import MapTask, item_base
from .specs import Names, Spec

__all__ = ["name_specs"]


def name_specs(new: list[Spec], names: Names) -> tuple[list[str], dict[str, int | None], dict[str, Any]]:
    """Give every new leaf its run-unique name. Names given to a node (``Task(f, name=)``)
    are used as they are and must be unique; the calls of a function (named after it, or
    by ``@task(name=...)``) are numbered in call order: ``sum``, ``sum[2]``, ``sum[3]``.
    Nothing is committed to the run's names unless every name is valid."""
    problems: list[str] = []
    taken, owners = names.taken, names.owners
    if len(new) == 1 and not new[0].explicit and new[0].task.options.name is None:
        spec = new[0]  # one call of a plain function: a child task, the common case
        touched: dict[str, int | None] = {}
        spec.name = names.take(spec.base, touched)
        return [spec.name], touched, {}
    explicit: dict[str, Spec] = {}
    claimed: dict[str, Any] = {}  # function-level names claimed by this build
    for spec in new:
        base = spec.base
        if spec.explicit:
            if base in explicit:
                problems.append(
                    f"two different tasks are named {base!r}: {explicit[base].task!r} and "
                    f"{spec.task!r}. Give each a unique name=."
                )
            elif base in taken or base in claimed:
                problems.append(
                    f"a task named {base!r} already exists in this run; give {spec.task!r} another name="
                )
            else:
                explicit[base] = spec
                spec.name = base
        elif spec.task.options.name is not None:  # @task(name=...): the function's name
            fn = _owner(spec.task.fn)
            other = owners.get(base, claimed.get(base, fn))
            if other is not fn or base in explicit:
                problems.append(
                    f"two different functions are named {base!r} (@task(name={base!r})): "
                    f"{_describe(other) if base not in explicit else repr(explicit[base].task)} and "
                    f"{_describe(fn)}. Give each a unique name=."
                )
            else:
                claimed[base] = fn
    maps = {s.base for s in new if type(s.task) is MapTask}
    for base in explicit if maps else ():  # `fetch:0` is how item 0 of the mapped node `fetch` is named
        stem = item_base(base)
        if stem is not None and stem in maps:
            problems.append(
                f"a task named {base!r} would clash with item {base[len(stem) + 1:]} of the mapped node {stem!r} "
                "(items are named NAME:i); give it another name="
            )
    if problems:
        raise GraphError("\n".join(problems))
    added: list[str] = list(explicit)
    touched = {}
    try:
        taken.update(explicit)
        for spec in sorted((s for s in new if not s.explicit), key=lambda s: s.order):
            name = spec.name = names.take(spec.base, touched)
            added.append(name)
    except BaseException:
        names.forget(added, touched)
        raise
    return added, touched, claimed


def _owner(fn: Any) -> Any:
    """The function behind a callable (a bound method's function), to tell functions apart."""
    return getattr(fn, "__func__", fn)


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module not in ("__main__", "builtins") else name
