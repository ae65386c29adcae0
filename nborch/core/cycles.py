"""The cycle check of a graph's new tasks: in-degree counting finds that there is a cycle (as the
engine's scheduler will count), and only then does ``graphlib`` name one."""

from __future__ import annotations

import graphlib

from .errors import CycleError
from .specs import Spec

__all__ = ["check_cycles"]


def check_cycles(new: list[Spec], is_new: set[Spec], extends_run: bool) -> None:
    """Raise CycleError naming a cycle among ``new`` (``is_new`` is the same specs as a set).

    Kahn's algorithm over the new specs: a spec never freed is on a cycle or below one.
    ``extends_run``: the specs are child tasks of a running graph, whose upstreams already in
    the run are no constraint."""
    indeg: dict[Spec, int] = {}
    ready: list[Spec] = []
    for spec in new:
        n = sum(1 for u in spec.up if u in is_new) if extends_run else len(spec.up)
        if n:
            indeg[spec] = n
        else:
            ready.append(spec)
    freed = len(ready)
    while ready:
        for d in ready.pop().down:
            left = indeg.get(d)
            if left is not None:
                if left == 1:
                    del indeg[d]
                    ready.append(d)
                    freed += 1
                else:
                    indeg[d] = left - 1
    if freed == len(new):
        return
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for spec in new:
        sorter.add(spec.name, *(u.name for u in spec.up))
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = list(err.args[1])  # graphlib lists it upstream -> downstream already
        raise CycleError(cycle) from None
