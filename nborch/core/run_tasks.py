"""Adding tasks to a run: an ``Inv`` per ``Spec`` (the graph's at the start, child calls' and
mapped items' as they come), with what decides the path each takes: its limits, executor,
breakers and circuits (any of these, or a mapped placeholder: not the fast path). And the
tasks that do not run at all: an earlier run's successes (``settle_presets``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .invocation import AS_BOUND, SUCCEEDED, Inv
from .mapping import MapTask
from .slots import check_pool
from .task_options import DEFAULT_OPTIONS

if TYPE_CHECKING:
    from .engine import Engine
    from .specs import Spec

__all__ = ["add_specs", "settle_presets"]


def add_specs(engine: Engine, specs: list[Spec], parent: Inv | None) -> list[Inv]:
    """Add the tasks of ``specs``; a DefinitionError, before any is added, for a task in a
    pool the run does not have or that takes more slots than its pool has."""
    for spec in specs:
        opts = spec.task.options
        if opts.pool is not None or opts.slots != 1:
            check_pool(engine.slots.pools, spec)
    new = []
    slots = engine.slots
    pooled = slots.default is not None  # max_concurrency=N: every task is under its pool
    invs = engine.invs
    bare = not pooled and engine.executor is None  # a task with no option set has nothing to add
    for spec in specs:
        inv = Inv(spec, parent)
        task = spec.task
        if bare and task.options is DEFAULT_OPTIONS and not spec.groups and type(task) is not MapTask:
            invs[spec.name] = inv
            new.append(inv)
            continue
        if type(spec.task) is MapTask:  # a mapped placeholder: no body, no slot; it expands
            inv.simple = False
            engine.invs[spec.name] = inv
            engine.expansions.added(inv)
            new.append(inv)
            continue
        opts = spec.task.options
        if pooled or opts.limit or opts.pool is not None or spec.groups:
            inv.limits = slots.limits_for(inv)
        if opts.executor is not None or engine.executor is not None:
            inv.executor = engine.offload.executor_for(spec.task)
            if inv.executor is not None:
                inv.simple = False
        if opts.breaker is not None:
            inv.breakers = (opts.breaker,)
            inv.simple = False
        if spec.groups and any(g.breaker for g in spec.groups):
            inv.circuits = tuple(engine.circuits.call_for(g) for g in spec.groups if g.breaker is not None)
            inv.simple = False
        engine.invs[spec.name] = inv
        new.append(inv)
    engine.unsettled += len(new)
    return new


def settle_presets(engine: Engine) -> None:
    """Settle the tasks an earlier run's success stands for (``resume=``, an incremental run:
    ``engine.preset``) SUCCEEDED, with ``reused=True``, before anything starts; mapped items
    are preset as their placeholder expands."""
    presets = [(engine.invs[n], p) for n, p in engine.preset.items() if n in engine.invs]
    for inv, _ in presets:  # decided, all of them, before any settles and starts its downstream
        inv.call = AS_BOUND
    for inv, (value, key, has_value, cached) in presets:
        inv.reused = True
        if has_value:  # a value stored (resume) or remembered (reuse): it feeds the downstream
            inv.value, inv.cache_key, inv.cached = value, key, cached
            engine.results[inv.name] = value
        engine.settle(inv, SUCCEEDED)
