"""Incremental runs: a task whose key is unchanged since its last success is not run again.

A task is *up to date* when none of its upstreams will run and its key (``nborch.keys``: its
code and the helpers, closures and globals it reads by value, its arguments, the keys of its
upstreams) equals the key of its last successful run remembered by a ``Memory``. An
incremental run (``nborch.run(node, reuse=True)``, ``%orch run`` in a notebook) runs only the
tasks that are not up to date, plus whatever depends on them; the others stand as SUCCEEDED
with ``reused=True``, and their remembered values feed their downstream. A task with
``reuse=False`` (``%%task NAME --always``) runs every time, and so does its downstream.

The memory lives in this process (a kernel): ``default_memory`` for ``reuse=True``, the
notebook's own for ``%orch run``. It keeps, per task name, the key and value of its last
success, and the last known state of every task it saw (for ``%orch list``).
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .mapping import item_base
from .state import TaskState

if TYPE_CHECKING:
    from .graph import Graph, Spec
    from .keys import CallKey
    from .record import Run

__all__ = ["Memory", "Plan", "Seen", "default_memory", "plan_reuse"]


@dataclass(slots=True)
class Success:
    """A task's last successful run: its key and its value."""

    key: CallKey
    value: Any
    run_id: str


@dataclass(frozen=True, slots=True)
class Seen:
    """A task's last known state, from the last run it was part of."""

    state: TaskState
    duration: float | None
    run_id: str
    reused: bool = False
    cached: bool = False


class Memory:
    """What incremental runs remember in this process, by task name."""

    def __init__(self) -> None:
        self.succeeded: dict[str, Success] = {}
        self.seen: dict[str, Seen] = {}
        self.cache_keys: dict[str, CallKey] = {}  # each cache=True task's last disk-cache key
        self.items: dict[str, dict[str, Success]] = {}  # a map's succeeded items by key digest
        self.reuses = True  # False: a view that remembers but reuses nothing (``%orch run --all``)

    def without_reuse(self) -> Memory:
        """This memory, seen by a run that reuses nothing but still remembers what it did."""
        view = Memory()
        view.succeeded, view.seen, view.cache_keys, view.items = self.succeeded, self.seen, self.cache_keys, self.items
        view.reuses = False
        return view

    def __repr__(self) -> str:
        return f"<nborch Memory of {len(self.succeeded)} successes, {len(self.seen)} tasks seen>"

    def forget(self, name: str | None = None) -> None:
        """Forget one task (or everything): it runs next time."""
        if name is None:
            self.succeeded.clear()
            self.seen.clear()
            self.items.clear()
        else:
            self.succeeded.pop(name, None)
            self.seen.pop(name, None)
            self.items.pop(name, None)

    def record(self, run: Run, keys: dict[str, CallKey | None]) -> None:
        """Remember what ``run`` left: every task's state; the key and value of each task that
        succeeded with a key (a task that did not succeed is forgotten: it runs next time)."""
        durations, cached, reused = run.durations, run.cached, run.reused
        items: dict[str, dict[str, Success]] = {}
        for name, state in run.states.items():
            duration = durations.get(name)
            if name in reused and name in self.seen:  # it did not run: its last run's duration
                duration = self.seen[name].duration
            self.seen[name] = Seen(state, duration, run.id, name in reused, name in cached)
            key = keys.get(name)
            if state is TaskState.SUCCEEDED and key is not None and name in run.results:
                success = self.succeeded[name] = Success(key, run.results[name], run.id)
                base = item_base(name)
                if base is not None:  # an item: also found by its key, wherever it moves
                    items.setdefault(base, {})[key.digest] = success
            elif state is not TaskState.SUCCEEDED:
                self.succeeded.pop(name, None)
        for base, found in items.items():  # a map's items as of this run (older ones are dropped)
            self.items[base] = found


default_memory = Memory()
"""The process's memory, used by ``run(node, reuse=True)``."""


@dataclass(slots=True)
class Plan:
    """What an incremental run will do: each task's key now, the tasks it reuses (with their
    remembered success), and why each other task runs (``%orch why``)."""

    keys: dict[str, CallKey | None] = field(default_factory=dict)
    reused: dict[str, Success] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # succeeded before, key changed since: why

    def presets(self) -> dict[str, tuple[Any, str | None, bool, bool]]:
        """The engine's presets: name -> (value, cache key, has a value, cached)."""
        return {name: (s.value, None, True, False) for name, s in self.reused.items()}


def plan_reuse(graph: Graph, memory: Memory, state: Any = None) -> Plan:
    """Decide which tasks of ``graph`` are up to date in ``memory`` (nothing runs here)."""
    from .keys import Unhashable, fingerprint

    plan = Plan()
    specs = graph.specs
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(
        {name: [u.name for u in _inputs(spec)] for name, spec in specs.items()}
    )
    state_print: str | None = None
    runs: set[str] = set()  # tasks that will run
    for name in sorter.static_order():
        spec = specs[name]
        key: CallKey | None = None
        problem = None
        if spec.wants_state and state_print is None:
            state_print = fingerprint(state) or ""
        try:
            key = key_of(graph, spec, plan.keys, state_print if spec.wants_state else None)
        except Unhashable as err:
            problem = f"its key cannot be computed: it {err.what} ({err.reason})"
        except Exception as err:  # never break a run over a key: the task just runs
            problem = f"its key cannot be computed ({type(err).__name__}: {err})"
        plan.keys[name] = key
        last = memory.succeeded.get(name)
        own = _own_change(spec, key, last, memory, problem)
        if own and last is not None and key is not None:
            plan.stale[name] = own
        upstream = next((u.name for u in _inputs(spec) if u.name in runs), None)
        if own is None and upstream and last is not None and key is not None and key.digest != last.key.digest:
            plan.stale[name] = f"upstream {upstream!r} changed"  # its key holds its upstreams' keys
        if own is None and not memory.reuses:
            own = "every task runs (--all)"
        if own is None and upstream is None and last is not None:
            plan.reused[name] = last
            plan.why[name] = f"up to date: its value from run {last.run_id} is reused"
            continue
        runs.add(name)
        reasons = [r for r in (own, f"upstream {upstream!r} will run" if upstream else None) if r]
        plan.why[name] = "; ".join(reasons)
    return plan


def _own_change(spec: Spec, key: CallKey | None, last: Success | None, memory: Memory,
                problem: str | None) -> str | None:
    """Why ``spec`` must run whatever its upstreams do, or None."""
    if not spec.task.options.reuse:
        return "it always runs (reuse=False, %%task --always)"
    if problem is not None:
        return problem
    if last is None:
        seen = memory.seen.get(spec.name)
        if seen is None:
            return "never run"
        return f"its last state was {seen.state.value} (run {seen.run_id})"
    assert key is not None
    if key.digest == last.key.digest:
        return None
    return describe_changes(spec, key, last.key)


def describe_changes(spec: Spec, now: CallKey, before: CallKey) -> str | None:
    """What changed between two keys of one task, in words: "its code changed", "helper 'f'
    changed", "global 'threshold' changed", "its arguments changed"."""
    parts: list[str] = []
    root = getattr(spec.task.fn, "__qualname__", None)
    if now.code != before.code:
        changed = [f for f in {**before.functions, **now.functions}
                   if now.functions.get(f) != before.functions.get(f)]
        if root in changed or not changed:
            is_cell = (getattr(spec.task.fn, "__doc__", None) or "").startswith("%%task")
            parts.append("its cell changed" if is_cell else "its code changed")
        parts += [f"helper {f!r} changed" for f in changed if f != root]
    for label in [*now.values, *(n for n in before.values if n not in now.values)]:
        if now.values.get(label) != before.values.get(label):
            kind, _, what = label.partition(" ")
            parts.append(f"{kind} {what!r} changed" if what else f"{label} changed")
    if now.arguments != before.arguments:
        parts.append("its arguments changed")
    # an upstream's key alone changed: that upstream runs, which says it all (None)
    return ", ".join(parts) or None


_UPSTREAM = "nborch-upstream"


def _inputs(spec: Spec) -> list[Spec]:
    """What ``spec`` depends on: its upstreams, and for a mapped placeholder the maps it zips
    item by item (no edge joins them, but its items are made from theirs)."""
    return [*spec.up, *spec.elementwise] if spec.elementwise else list(spec.up)


def key_of(graph: Graph, spec: Spec, keys: dict[str, CallKey | None], state_print: str | None) -> CallKey | None:
    """``spec``'s key now, from its code, its bound arguments (nodes in them stand for their
    upstreams' keys) and its upstreams' keys; None when an upstream has none."""
    from .keys import call_key
    from .node import Node

    items = graph.items

    def stable(name: str) -> str:  # an item by its map, not its index: its key says what it is
        base = item_base(name)
        return f"{base}:*" if base is not None and base in items else name

    ups = []
    for u in _inputs(spec):
        k = keys.get(u.name)
        if k is None:
            return None
        ups.append(f"{stable(u.name)}={k.digest}")
    task = spec.task

    def stand_in(value: Any) -> Any:
        if isinstance(value, Node):  # stands for its tasks, whose keys are among the upstream keys
            return (_UPSTREAM, tuple(stable(s.name) for s in graph.leaves(value)))
        if isinstance(value, list | tuple):
            return type(value)(stand_in(v) for v in value)
        if isinstance(value, dict):
            return {k: stand_in(v) for k, v in value.items()}
        return value

    mapped = getattr(task, "mapped", None)
    if mapped is not None:  # a mapped placeholder: what it maps over, and how, is its input
        args: Any = ("nborch-map", mapped.mode, [(n, stand_in(s)) for n, s in mapped.sources])
        kwargs = {k: stand_in(v) for k, v in mapped.fixed.items()}
    elif spec.refs:
        args = tuple(stand_in(a) for a in task.args)
        kwargs = {k: stand_in(v) for k, v in task.kwargs.items()}
    else:
        args, kwargs = task.args, dict(task.kwargs)
    if state_print is not None:
        kwargs = {**kwargs, "\0state": state_print}
    return call_key(task.fn, args, kwargs, ups)
