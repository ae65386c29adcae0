"""Finding a graph's tasks by name inside a DAG scope: a parameter named after a task, and
``after="name"``, look among the tasks of the node's own DAG (outside any DAG: the whole graph)."""

from __future__ import annotations

from .specs import Graph, Spec
from .task import Node, Task
from .workflow import DAG

__all__ = ["ScopeIndex"]


class ScopeIndex:
    """The tasks of each DAG scope of one graph by name, indexed on the first lookup in a scope
    (ask once the graph's new tasks are named)."""

    __slots__ = ("graph", "index")

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.index: dict[int, dict[str, list[Spec]]] = {}  # id(scope) -> name/base -> specs

    def scope_of(self, node: Node) -> DAG | None:
        """The DAG ``node`` was collected in (its first leaf's, for a composite)."""
        if isinstance(node, Task):
            return self.graph.by_task[id(node)].scope
        leaves = self.graph.leaves(node)
        return leaves[0].scope if leaves else None

    def scope_specs(self, scope: DAG | None) -> list[Spec]:
        """The tasks of ``scope`` (None: of the whole graph)."""
        if scope is not None and id(scope) in self.graph.members:
            return self.graph.members[id(scope)]
        return list(self.graph.specs.values())

    def scope_names(self, scope: DAG | None) -> list[str]:
        """Their names, for "did you mean"."""
        return [s.name for s in self.scope_specs(scope)]

    def match_name(self, name: str, scope: DAG | None) -> list[Spec]:
        """The tasks in ``scope`` that ``name`` stands for."""
        index = self.index.get(id(scope))
        if index is None:
            index = {}
            for s in self.scope_specs(scope):
                index.setdefault(s.base, []).append(s)
                if s.name != s.base:
                    index.setdefault("\0" + s.name, []).append(s)
            self.index[id(scope)] = index
        # a base name matches every call of that function (so a parameter named 'fetch' is
        # ambiguous when fetch ran twice); a full name like 'fetch[2]' matches that call only
        return index.get(name) or index.get("\0" + name, [])
