"""The notebook's workflow: the task cells defined so far, turned into a DAG when it runs.

No IPython import: the magics and the headless CLI both use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import GraphError, did_you_mean
from ..record import Run
from ..task import Task
from ..workflow import DAG
from .cells import CellTask

__all__ = ["NotebookWorkflow"]


class NotebookWorkflow:
    """Task cells by name (a re-run cell replaces its task), and the last run's record."""

    def __init__(self) -> None:
        self.cells: dict[str, CellTask] = {}
        self.last_run: Run | None = None
        self.stale: set[str] = set()

    def define(self, cell: CellTask) -> list[str]:
        """Add or replace a cell; returns the downstream tasks whose last values are now stale."""
        replaced = cell.name in self.cells
        self.cells[cell.name] = cell
        self.stale.discard(cell.name)
        if not replaced:
            return []
        stale = [n for n in self.downstream(cell.name) if n != cell.name]
        self.stale.update(stale)
        return stale

    def remove(self, name: str | None = None) -> list[str]:
        """Remove one task cell (or all with None); returns the names removed."""
        if name is None:
            removed = list(self.cells)
            self.cells.clear()
            self.stale.clear()
            return removed
        if name not in self.cells:
            raise GraphError(f"no task cell is named {name!r}.{did_you_mean(name, self.cells)}")
        del self.cells[name]
        self.stale.discard(name)
        return [name]

    def dependencies(self, name: str) -> list[str]:
        """Upstream task names of a cell (in its flow): what it reads, then its --after names."""
        cell = self.cells[name]
        deps = cell.dependencies(n for n, c in self.cells.items() if c.flow == cell.flow)
        return deps + [a for a in cell.after if a not in deps]

    def downstream(self, name: str) -> list[str]:
        """Every task that depends on ``name``, directly or not."""
        out: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for other in self.cells:
                if other not in out and current in self.dependencies(other):
                    out.append(other)
                    frontier.append(other)
        return out

    def closure(self, targets: Iterable[str]) -> list[str]:
        """The targets and everything upstream of them, in definition order."""
        wanted: set[str] = set()
        stack = []
        for t in targets:
            if t not in self.cells:
                raise GraphError(
                    f"no task cell is named {t!r}.{did_you_mean(t, self.cells)} "
                    f"Defined: {', '.join(self.cells) or '(none yet)'}."
                )
            stack.append(t)
        while stack:
            name = stack.pop()
            if name in wanted:
                continue
            wanted.add(name)
            for dep in self.dependencies(name):
                if dep in self.cells:
                    stack.append(dep)
        return [n for n in self.cells if n in wanted]

    def flows(self) -> list[str]:
        """The flows that have task cells, in definition order."""
        return list(dict.fromkeys(c.flow for c in self.cells.values()))

    def build(
        self, namespace: dict[str, Any], targets: Iterable[str] | None = None, flow: str | None = None
    ) -> DAG:
        """A DAG of the target cells and their upstream (all cells of ``flow`` when no targets)."""
        targets = list(targets or [])
        names = self.closure(targets) if targets else list(self.cells)
        if flow is not None:
            if flow not in self.flows():
                raise GraphError(
                    f"no task cell is in flow {flow!r}.{did_you_mean(flow, self.flows())} "
                    f"Flows: {', '.join(self.flows()) or '(none yet)'}."
                )
            names = [n for n in names if self.cells[n].flow == flow]
        dag = DAG(name=flow or "notebook")
        for name in names:
            cell = self.cells[name]
            deps = cell.dependencies(names)
            fn = cell.function(deps, namespace)
            node = Task(fn, name=name, **cell.options)
            dag.add(node, after=list(cell.after))
        return dag
