"""Mapping: one item task per element of data known at definition or only at run time.

``fetch.map(urls)`` is a ``Mapped`` node. Building it runs nothing; in a run it is a
placeholder that *expands* into item tasks ``fetch:0``, ``fetch:1``... once its inputs are
known: at once for concrete sequences, when an upstream has succeeded for a node given as
the iterable (dynamic mapping), when the source map expanded for a mapped node (element-wise:
item i depends on item i only, so items stream through the stages). Item tasks are full
tasks: own state, attempts, retries, timeout, breaker, limits, events, output, cache key.

Passing a mapped node to a task gives it the list of the values of the items that
succeeded, in input order (a reduce); every item counts as an upstream for its trigger rule.
The placeholder itself ends SUCCEEDED when every item did (or there were none),
UPSTREAM_FAILED when an item failed, CANCELLED when the run was stopped; its value is the
list of its succeeded items' values.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import hooks
from .errors import DefinitionError, InvalidTaskError
from .introspection import INJECTED, FnInfo, fn_info, fn_name
from .node import Node
from .task import Task
from .task_options import TaskOptions

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MapError", "MapTask", "Mapped", "as_items", "item_tasks"]


class MapError(DefinitionError):
    """A mapped node's inputs cannot be mapped at run time: not iterable, or zipped sequences
    of different lengths. The placeholder fails with it; its downstream ends UPSTREAM_FAILED."""


_NO_INFO = FnInfo(False, "", None, (), (), (), True, True)


class Mapped(Node):
    """``fn.map(*iterables, **fixed)`` or ``fn.product(**iterables)``: a task per element.

    ``mode`` is "zip" (several iterables are zipped; their lengths must be equal) or
    "product" (``itertools.product`` order). Each source is a concrete list (materialized at
    definition), a node whose value is iterable (dynamic), or another ``Mapped`` node
    (element-wise in "zip" mode; its list of values in "product" mode).
    """

    __slots__ = ("fn", "options", "sources", "fixed", "mode", "name", "info", "seq")

    def __init__(
        self,
        fn: Callable[..., Any],
        options: TaskOptions,
        sources: list[tuple[str, Any]],
        fixed: Mapping[str, Any],
        mode: str,
    ) -> None:
        self.fn = fn
        self.options = options
        self.mode = mode
        self.info = info = fn_info(fn)
        self.name = options.name
        self._after = ()
        self.seq = next(_sequence())
        who = f"{fn_name(fn)}.{'map' if mode == 'zip' else 'product'}()"
        if info.signature is not None and not info.params and not info.var_positional and not info.var_keyword:
            raise InvalidTaskError(f"{who}: {fn_name(fn)}() takes no parameters, so there is nothing to map over")
        names = [p for p, _ in sources]
        # positional iterables bind the first positional parameters, as a call's arguments do
        bound = [p for p in info.positional if p not in INJECTED][: sum(n.startswith("#") for n in names)]
        clash = sorted((set(names) | set(bound)) & set(fixed))
        if clash:
            raise DefinitionError(
                f"{who}: {clash[0]!r} is both mapped and fixed; give it either as an iterable or as a "
                "fixed keyword"
            )
        if info.signature is not None and not info.var_keyword:
            unknown = [k for k in (*fixed, *(n for n in names if not n.startswith("#"))) if k not in info.params]
            if unknown:
                raise InvalidTaskError(
                    f"{who}: {fn_name(fn)}() has no parameter {unknown[0]!r}; its parameters are "
                    f"{', '.join(info.params) or '(none)'}"
                )
        self.sources = [(name, _concrete(src, who, name)) for name, src in sources]
        self.fixed = dict(fixed)
        if not self.sources:
            raise DefinitionError(f"{who} needs at least one iterable to map over")
        if mode == "zip":
            lengths = {name: len(src) for name, src in self.sources if isinstance(src, list)}
            if len(set(lengths.values())) > 1:
                raise DefinitionError(_length_message(who, lengths))
        self._check_parameters(who)

    def _check_parameters(self, who: str) -> None:
        """Every required parameter is mapped, fixed or filled by the engine (checked once here,
        so no item can fail for it)."""
        info = self.info
        if info.signature is None:
            return
        positional = [n for n, _ in self.sources if n.startswith("#")]
        given = set(self.fixed) | {n for n, _ in self.sources if not n.startswith("#")}
        slots = [p for p in info.positional if p not in INJECTED]
        taken = set(slots[: len(positional)])
        if len(positional) > len(slots) and not info.var_positional:
            raise InvalidTaskError(
                f"{who} maps over {_count(len(positional), 'iterable')}, but {fn_name(self.fn)}() takes "
                f"{_count(len(slots), 'positional parameter')}"
            )
        missing = [p for p in info.required if p not in given and p not in taken and p not in INJECTED]
        if missing:
            raise InvalidTaskError(
                f"{who}: {fn_name(self.fn)}() needs {missing[0]!r}, which is neither mapped nor fixed. "
                f"Map over it, or give it as a keyword: .map(..., {missing[0]}=...)"
            )

    @property
    def base_name(self) -> str:
        return self.name or fn_name(self.fn)

    def __repr__(self) -> str:
        kind = "map" if self.mode == "zip" else "product"
        sources = ", ".join(
            f"{len(s)} items" if isinstance(s, list) else repr(s) for _, s in self.sources
        )
        return f"<Mapped {fn_name(self.fn)}.{kind}({sources})>"

    def map(self, *iterables: Any, **fixed: Any) -> Mapped:
        """Map another function over this one's items: see ``TaskFunction.map``."""
        raise InvalidTaskError(
            f"{self!r} is a mapped node: map a task function over it instead, "
            f"e.g. clean.map({fn_name(self.fn)}.map(...))"
        )


_counter: list[Any] = []


def _sequence() -> Any:
    if not _counter:
        from .task import _sequence as seq

        _counter.append(seq)
    return _counter[0]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _length_message(who: str, lengths: dict[str, int]) -> str:
    (first, n), *_ = lengths.items()
    other, m = next((k, v) for k, v in lengths.items() if v != n)
    return (
        f"{who} zips iterables of different lengths: {_label(first)} has {n} items and "
        f"{_label(other)} has {m}. Give them equal lengths, or use .product() for every combination."
    )


def item_base(name: str) -> str | None:
    """The mapped node an item's name names (``fetch`` for ``fetch:3``), or None for a name
    that is not ``NAME:<digits>``; callers check that the node is a map of theirs."""
    base, colon, index = name.rpartition(":")
    return base if colon and index.isdigit() else None


def _label(name: str) -> str:
    return f"iterable {int(name[1:]) + 1}" if name.startswith("#") else f"{name!r}"


def _concrete(source: Any, who: str, name: str) -> Any:
    """A source as it is kept: a node as it is, anything else materialized into a list."""
    if isinstance(source, Node):
        return source
    return as_items(source, who, _label(name))


def as_items(value: Any, who: str, what: str) -> list[Any]:
    """``value`` as a list of items, or a clear error; a string maps over its characters, which
    is rarely meant: it warns."""
    if isinstance(value, str | bytes):
        warnings.warn(
            f"{who}: {what} is a string, so it maps over its {len(value)} characters; "
            "pass a list (e.g. [text]) to map over the string itself",
            UserWarning,
            stacklevel=4,
        )
        return list(value)
    if isinstance(value, Mapping):
        return list(value)
    if not isinstance(value, Iterable):
        raise MapError(
            f"{who}: {what} is not iterable (got {type(value).__name__}); map over a list, a tuple, "
            "a range, or a task whose value is one"
        )
    return list(value)


class MapTask(Task):
    """The placeholder task of a mapped node in a run's graph: its arguments are the nodes it
    waits for (the dynamic sources and the nodes among the fixed keywords); it runs no body
    but expands into item tasks."""

    __slots__ = ("mapped",)

    def __init__(self, mapped: Mapped, waits_for: list[Node]) -> None:
        self.fn = mapped.fn
        self.args = tuple(waits_for)
        self.kwargs = {}
        self.options = mapped.options
        self.own_name = False  # named after its function (or @task(name=...)), numbered like its calls
        self.node_name = None
        self.seq = mapped.seq
        self.info = _NO_INFO
        self._after = mapped._after
        self.mapped = mapped

    def __repr__(self) -> str:
        return repr(self.mapped)


def item_tasks(mapped: Mapped, resolved: list[tuple[str, list[Any]]], fixed: dict[str, Any]) -> list[tuple[Task, dict[str, Any]]]:
    """The item tasks of ``mapped`` given each source's items (element-wise sources as their
    item Task nodes) and the fixed keywords' values: (task, its mapped parameters) per item."""
    who = f"{fn_name(mapped.fn)}.{'map' if mapped.mode == 'zip' else 'product'}()"
    if mapped.mode == "zip":
        lengths = {name: len(items) for name, items in resolved}
        if len(set(lengths.values())) > 1:
            raise MapError(_length_message(who, lengths))
        rows = zip(*(items for _, items in resolved), strict=True) if resolved else iter(())
    else:
        rows = itertools.product(*(items for _, items in resolved))
    names = [n for n, _ in resolved]
    positional = [i for i, n in enumerate(names) if n.startswith("#")]
    info = mapped.info
    open_params = [p for p in info.positional if p not in INJECTED]  # what positional items bind
    out = []
    fn, options, new = mapped.fn, mapped.options, Task.__new__
    seq = _sequence()
    for row in rows:
        args = tuple(row[i] for i in positional)
        kwargs = {**fixed, **{names[i]: row[i] for i in range(len(names)) if i not in positional}}
        task = new(Task)  # built without Task.__init__: the options and checks are the map's
        task.fn, task.args, task.kwargs, task.options = fn, args, kwargs, options
        task.own_name, task.node_name, task.seq, task.info, task._after = False, None, next(seq), info, ()
        params = {**dict(zip(open_params, args, strict=False)), **{k: v for k, v in kwargs.items() if k not in fixed}}
        out.append((task, params))
    return out


hooks.mapped_node.register(Mapped)  # fn.map() and fn.product() in nborch.task build a Mapped
