"""Composites: Sequence, Parallel, DAG and CircuitGroup. They only describe work.

``nborch.graph`` flattens any of them (nested freely) into one graph of leaf tasks, so a
Sequence inside a Parallel inside a DAG runs under one scheduler with one set of limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .errors import DefinitionError
from .introspection import check_callable
from .node import Node
from .policies import CircuitBreaker
from .task import Task, TaskFunction, iter_nodes

__all__ = ["CircuitGroup", "Composite", "DAG", "Parallel", "Sequence"]


class Composite(Node):
    """A node made of other nodes."""

    __slots__ = ("children", "name")
    kind = "composite"

    def __init__(self, *children: Any, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise DefinitionError(f"{type(self).__name__}(name=...) expects a non-empty string, got {name!r}")
        self.name = name
        self.children: list[Node] = iter_nodes(_flatten_args(children), f"{type(self).__name__}()")
        self._after = ()

    def __iter__(self) -> Iterator[Node]:
        return iter(self.children)

    def __len__(self) -> int:
        return len(self.children)

    def __repr__(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__}{named} of {len(self.children)}>"


def _flatten_args(children: tuple[Any, ...]) -> list[Any]:
    # Sequence([a, b, c]) reads as naturally as Sequence(a, b, c)
    if len(children) == 1 and isinstance(children[0], list | tuple):
        return list(children[0])
    return list(children)


class Sequence(Composite):
    """Steps one after another; a step whose function lacks a positional argument gets the
    previous step's value. The value is the list of step values. Stops at the first failure:
    later steps end UPSTREAM_FAILED."""

    __slots__ = ()
    kind = "sequence"


class Parallel(Composite):
    """Jobs side by side, at most ``limit`` at once; the value is the list of job values.

    By default every job finishes even when one fails (its failure is raised after);
    ``fail_fast=True`` cancels the unfinished siblings at the first failure instead.
    """

    __slots__ = ("limit", "fail_fast")
    kind = "parallel"

    def __init__(self, *jobs: Any, limit: int | None = None, name: str | None = None, fail_fast: bool = False) -> None:
        super().__init__(*jobs, name=name)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise DefinitionError(f"Parallel(limit=...) expects an integer >= 1 or None, got {limit!r}")
        self.limit = limit
        self.fail_fast = bool(fail_fast)


class CircuitGroup(Composite):
    """Steps side by side (as in a Parallel) guarded by one circuit breaker, ``.breaker``.

    The group is guarded as one call, as the seed systems' breakers wrapped a whole group:
    one run of the group is one call of its breaker, admitted when its first step starts, a
    failure when any step fails and a success only when every step succeeds. ``fail_max``
    failing runs in a row open it; while it is open every step fails at once with
    ``CircuitOpenError`` without running. The breaker outlives runs, so a group that keeps
    failing fails fast on the next run too. (``@task(breaker=b)`` counts every call.)
    """

    __slots__ = ("breaker",)
    kind = "circuit"

    def __init__(
        self,
        *steps: Any,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        name: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(*steps, name=name)
        self.breaker = breaker or CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=name)


class DAG(Composite):
    """Tasks wired by their parameters, their arguments and explicit ordering.

    A parameter named after another task of the DAG receives that task's value; a Task
    passed as an argument is an upstream; ``a >> b`` and ``dag.add(t, after=[...])`` order
    without passing data. ``context`` receives a read-only mapping of all upstream values
    and ``state`` the object given as ``run(..., state=obj)``. The value is ``{name: value}``.
    """

    __slots__ = ()
    kind = "dag"

    def add(self, item: Any, after: Iterable[Any] | Any = ()) -> Node:
        """Add a task (or composite, or function) that runs after ``after`` (nodes or names)."""
        if not isinstance(item, Node):
            if not isinstance(item, TaskFunction):
                check_callable(item, "DAG.add()")
            item = Task(item)
        # (type() first: isinstance against a union is slow on 3.11, and a list is the common case)
        ups = after if type(after) is list or isinstance(after, list | tuple | set) else [after]
        item._add_afters(ups, "DAG.add(after=...)")
        self.children.append(item)  # a node added twice is still one task: the graph dedupes by identity
        return item
