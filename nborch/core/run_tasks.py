"""Adding tasks to a run: an ``Inv`` per ``Spec`` (the graph's at the start, child calls' and
mapped items' as they come), with what decides the path each takes: its limits, executor,
breakers and circuits (any of these, or a mapped placeholder: not the fast path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .invocation import Inv
from .mapping import MapTask
from .slots import check_pool

if TYPE_CHECKING:
    from .engine import Engine
    from .specs import Spec

__all__ = ["add_specs"]


def add_specs(engine: Engine, specs: list[Spec], parent: Inv | None) -> list[Inv]:
    """Add the tasks of ``specs``; a DefinitionError, before any is added, for a task in a
    pool the run does not have or that takes more slots than its pool has."""
    for spec in specs:
        opts = spec.task.options
        if opts.pool is not None or opts.slots != 1:
            check_pool(engine.slots.pools, spec)
    new = []
    for spec in specs:
        inv = Inv(spec, parent)
        if type(spec.task) is MapTask:  # a mapped placeholder: no body, no slot; it expands
            inv.simple = False
            engine.invs[spec.name] = inv
            engine.expansions.added(inv)
            new.append(inv)
            continue
        opts = spec.task.options
        inv.limits = engine.slots.limits_for(inv)
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
