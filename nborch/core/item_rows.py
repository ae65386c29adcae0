"""The items of a run's mapped nodes, as rows (``Run.items``): an item's index, the parameters
its body got, its state, value, duration, attempts and error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NborchError, did_you_mean, error_line
from .mapping import MapTask, item_base
from .state import TaskState

if TYPE_CHECKING:
    from .record import Run

__all__ = ["ItemRow", "ItemRows", "item_params", "item_rows"]


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One item of a mapped node in a run (``Run.items``)."""

    task: str
    index: int
    params: dict[str, Any]
    state: TaskState
    value: Any
    duration: float | None
    attempts: int
    error: BaseException | None


class ItemRows(list[ItemRow]):
    """``Run.items(name)``: a list of ``ItemRow``; ``.to_pandas()`` when pandas is installed."""

    def to_pandas(self) -> Any:
        """A DataFrame with one row per item: index, each mapped parameter, state, value,
        duration, attempts, error (needs pandas, which nborch does not depend on)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.items(...).to_pandas() needs pandas: pip install pandas") from None
        records = [
            {"index": r.index, **r.params, "state": r.state.value, "value": r.value, "duration": r.duration,
             "attempts": r.attempts, "error": error_line(r.error) or None}
            for r in self
        ]
        return pd.DataFrame.from_records(records, index="index") if records else pd.DataFrame(
            columns=["state", "value", "duration", "attempts", "error"])


def item_rows(run: Run, name: str) -> ItemRows:
    """The items of the mapped node ``name``, in input order: one row per item with its
    ``index``, ``params`` (the mapped parameters' values), ``state``, ``value``,
    ``duration``, ``attempts`` and ``error``. ``.to_pandas()`` makes a DataFrame of them."""
    if name not in run.states:
        raise NborchError(f"no task {name!r} in run {run.id}.{did_you_mean(name, run.states)}")
    items = [task for task in run.states if item_base(task) == name]
    if not items and not _is_map(run, name):
        raise NborchError(f"task {name!r} of run {run.id} is not a mapped node: it has no items "
                          "(a mapped node is made by fn.map(...) or fn.product(...))")
    prefix = name + ":"
    rows = ItemRows()
    for task in items:
        state = run.states[task]
        inv = run._invs.get(task)
        spec = getattr(inv, "spec", None)
        item = getattr(spec, "item", None)
        params = _item_params(run, spec, item[2]) if item else run.recorded_params.get(task, {})
        rows.append(ItemRow(
            task=task, index=int(task[len(prefix):]), params=params,
            state=state, value=run.results.get(task), duration=run.durations.get(task),
            attempts=run.attempts.get(task, 0), error=run.errors.get(task),
        ))
    rows.sort(key=lambda r: r.index)
    return rows


def _is_map(run: Run, name: str) -> bool:
    """``name`` is a mapped node (perhaps with no items: an empty input)."""
    inv = run._invs.get(name)
    return inv is not None and type(getattr(inv.spec, "task", None)) is MapTask


def item_params(run: Run) -> dict[str, dict[str, Any]]:
    """Each item's mapped parameters, as its body got them (what the store keeps). The same as
    ``_item_params`` per item, inline (a run's end pays it for every item)."""
    out = dict(run.recorded_params)
    invs, results = run._invs, run.results
    for name in run.item_names if run.item_names is not None else list(invs):
        spec = getattr(invs.get(name), "spec", None)
        item = getattr(spec, "item", None)
        if not item:
            continue
        params, up = item[2], spec.up  # type: ignore[union-attr]
        if len(up) == 1:  # an element-wise stage: one upstream item, whose value stands for its task
            (u,) = up
            key, value = id(u.task), results.get(u.name)
            params = {k: value if id(v) == key else v for k, v in params.items()}
        else:  # (a copy even with no upstream: the caller may change what it is given)
            params = _item_params(run, spec, params) if up else dict(params)
        out[name] = params
    return out


def _item_params(run: Run, spec: Any, params: dict[str, Any]) -> dict[str, Any]:
    """An item's mapped parameters as its body got them: a parameter zipped from another
    map's item (``clean.map(fetch.map(urls))``) is that item's value, not its task."""
    ups = {id(u.task): u.name for u in getattr(spec, "up", ())}
    return {k: run.results.get(ups[id(v)]) if id(v) in ups else v for k, v in params.items()}
