"""The notebook's workflow: the task cells defined so far, turned into a DAG when it runs.

No IPython import: the magics and the headless CLI both use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.errors import GraphError, did_you_mean
from ..core.record import Run
from ..core.reuse import Memory, Plan
from ..core.task import Task
from ..core.workflow import DAG
from .cells import CellTask

__all__ = ["NotebookWorkflow"]


class NotebookWorkflow:
    """Task cells by name (a re-run cell replaces its task), what incremental runs remember
    (``memory``: the key and value of each task's last success, every task's last state), and
    the last run's record.

    A front end that sends cell ids (JupyterLab, Notebook 7, VS Code) lets a renamed cell
    replace the task it defined before: ``define(cell, cell_id=...)``. Without one, a renamed
    cell defines a new task beside the old one; ``remove(OLD)`` (``%orch clear OLD``) drops it.
    """

    def __init__(self) -> None:
        self.cells: dict[str, CellTask] = {}
        self.last_run: Run | None = None
        self.stale: set[str] = set()
        self.memory = Memory()
        self.cell_ids: dict[str, str] = {}  # front end's cell id -> the task it defines
        self.title = "notebook"  # runs are recorded under this name (the notebook's file)

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

    def claim(self, cell_id: str | None, name: str) -> str | None:
        """The front end's cell ``cell_id`` now defines task ``name``: the task it defined before
        under another name is removed (returned), so a renamed cell leaves no ghost behind."""
        if not cell_id:
            return None
        before = self.cell_ids.get(cell_id)
        self.cell_ids[cell_id] = name
        if before is not None and before != name and before in self.cells:
            self.remove(before)
            return before
        return None

    def remove(self, name: str | None = None) -> list[str]:
        """Remove one task cell (or all with None); returns the names removed."""
        if name is None:
            removed = list(self.cells)
            self.cells.clear()
            self.stale.clear()
            self.cell_ids.clear()
            self.memory.forget()
            return removed
        if name not in self.cells:
            raise GraphError(f"no task cell is named {name!r}.{did_you_mean(name, self.cells)}")
        del self.cells[name]
        self.stale.discard(name)
        self.memory.forget(name)
        for cell_id in [c for c, n in self.cell_ids.items() if n == name]:
            del self.cell_ids[cell_id]
        return [name]

    def plan(self, namespace: dict[str, Any], targets: Iterable[str] | None = None,
             flow: str | None = None) -> Plan:
        """What an incremental run of these targets would do now (nothing runs)."""
        from ..core.graph import build_graph
        from ..core.reuse import plan_reuse

        return plan_reuse(build_graph(self.build(namespace, targets, flow)), self.memory)

    def dependencies(self, name: str) -> list[str]:
        """Upstream task names of a cell (in its flow): what it reads, then its --after names."""
        cell = self.cells[name]
        deps = cell.dependencies(n for n, c in self.cells.items() if c.flow == cell.flow)
        return deps + [a for a in cell.after if a not in deps]

    def all_dependencies(self) -> dict[str, list[str]]:
        """``dependencies`` of every cell, with each flow's names gathered once (linear)."""
        by_flow: dict[str, set[str]] = {}
        for n, c in self.cells.items():
            by_flow.setdefault(c.flow, set()).add(n)
        out = {}
        for n, c in self.cells.items():
            deps = c.dependencies(by_flow[c.flow])
            out[n] = deps + [a for a in c.after if a not in deps]
        return out

    def downstream(self, name: str) -> list[str]:
        """Every task that depends on ``name``, directly or not (in definition order)."""
        users: dict[str, list[str]] = {}
        for other, deps in self.all_dependencies().items():
            for d in deps:
                users.setdefault(d, []).append(other)
        found: set[str] = set()
        frontier = [name]
        while frontier:
            for other in users.get(frontier.pop(), ()):
                if other not in found:
                    found.add(other)
                    frontier.append(other)
        return [n for n in self.cells if n in found]

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
        dag = DAG(name=self.title + (f":{flow}" if flow else ""))
        nodes: dict[str, Any] = {}
        for name in self._mapped_last(names):
            cell = self.cells[name]
            # the task a --map cell maps over is an upstream but not a parameter, unless the
            # cell reads it too (then every item gets its whole value)
            deps = [d for d in cell.dependencies(names) if d in cell.reads]
            fn = cell.function(deps, namespace)
            if cell.map_over is None:
                node: Any = Task(fn, name=name, **cell.options)
            else:  # once per element of SOURCE; its upstream values are the same for every item
                node = self._mapped(cell, fn, deps, nodes, namespace)
            nodes[name] = node
        for name in names:  # in definition order
            dag.add(nodes[name], after=list(self.cells[name].after))
        return dag

    def _mapped_last(self, names: list[str]) -> list[str]:
        """``names`` with each --map cell after the cells it depends on (it needs their nodes)."""
        import graphlib

        deps = {n: [d for d in self.cells[n].dependencies(names) if d in names] for n in names}
        try:
            return list(graphlib.TopologicalSorter(deps).static_order())
        except graphlib.CycleError:  # reported by the run's own graph check
            return names

    def _mapped(self, cell: CellTask, fn: Any, deps: list[str], nodes: dict[str, Any],
                namespace: dict[str, Any]) -> Any:
        from ..core.task import TaskFunction
        from ..core.task_options import make_options

        assert cell.map_over is not None
        item, source = cell.map_over
        if source in self.cells:
            iterable = nodes.get(source)
            if iterable is None:
                raise GraphError(f"task {cell.name!r} maps over task {source!r}, which is not in this run")
        elif source in namespace:
            iterable = namespace[source]
        else:
            raise GraphError(
                f"task {cell.name!r} maps over {source!r}, which is neither a task cell nor a variable of "
                f"the notebook.{did_you_mean(source, [*self.cells, *namespace])}"
            )
        fixed = {d: nodes[d] for d in deps if d != item}
        return TaskFunction(fn, make_options(None, name=cell.name, **cell.options)).map(iterable, **fixed)
