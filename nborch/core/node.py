"""``Node``: the base of everything users compose (a Task, Sequence, Parallel, DAG or CircuitGroup).

A node knows what runs after what (``a >> b``) and how to run itself; running goes through
``nborch.core.hooks`` to the runner (``node.run()``, ``await node.run_async()``, ``await
node``), which the runtime registers: the core never imports it. Inside a running task,
awaiting a node (or reading ``.result`` from a sync task) runs it as a child task of the
same run. Its notebook repr and its drawings reach the display the same way.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from . import hooks
from .errors import DefinitionError, InvalidTaskError

__all__ = ["Node", "require_node"]


def _as_list(other: Any) -> list[Any]:
    return list(other) if isinstance(other, list | tuple | set) else [other]


class Node:
    """What users compose: a Task, Sequence, Parallel, DAG or CircuitGroup.

    ``a >> b`` (or ``b << a``, ``a.set_downstream(b)``) makes ``b`` start only after ``a``
    settles, by ``b``'s trigger rule. Both sides may be lists.
    """

    __slots__ = ("_after", "__weakref__")

    _after: list[Node | str] | tuple[()]
    name: str | None

    def _add_after(self, upstream: Node | str) -> None:
        if not isinstance(upstream, Node | str):
            raise InvalidTaskError(
                f"only tasks, composites or task names can be upstream of {self!r}; got {upstream!r}"
            )
        if upstream is self:
            raise DefinitionError(f"{self!r} cannot run after itself")
        if not self._after:
            self._after = []  # nodes share () until they get an upstream: less to allocate
        self._after.append(upstream)  # repeats are harmless

    def _add_afters(self, upstreams: list[Any] | tuple[Any, ...] | set[Any], where: str) -> None:
        """``_add_after`` for each of ``upstreams``, nodes or names (anything else is refused,
        naming ``where``). Other nodes only, the common case (``DAG.add(after=[...])``), are
        added at once."""
        for u in upstreams:
            if u is self or not isinstance(u, Node):  # a name, or one to refuse: one by one
                for upstream in upstreams:
                    self._add_after(upstream if isinstance(upstream, str) else require_node(upstream, where))
                return
        if upstreams:
            self._after = [*self._after, *upstreams]

    def set_downstream(self, *others: Any) -> None:
        """Make each of ``others`` run after this node."""
        for group in others:
            for o in _as_list(group):
                require_node(o, "set_downstream()")._add_after(self)

    def set_upstream(self, *others: Any) -> None:
        """Make this node run after each of ``others``."""
        for group in others:
            for o in _as_list(group):
                self._add_after(o)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __rrshift__(self, other: Any) -> Node:
        self.set_upstream(other)
        return self

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rlshift__(self, other: Any) -> Node:
        self.set_downstream(other)
        return self

    # -- running --

    def run(self, **options: Any) -> Any:
        """Run and block until done; return the value or raise the failing task's exception."""
        return hooks.run_node(self, options)

    async def run_async(self, **options: Any) -> Any:
        """Run on the caller's event loop; return the value or raise the task's exception."""
        return await hooks.run_node_async(self, options)

    def __await__(self) -> Generator[Any, None, Any]:
        return hooks.await_node(self).__await__()

    @property
    def result(self) -> Any:
        """The value, computed now: a child task inside a running sync task, else ``run()``."""
        return hooks.blocking_result(self)

    def graph(self) -> Any:
        """The workflow as a ``graphviz.Digraph`` (needs the ``graphviz`` package)."""
        return hooks.node_digraph(self)

    def to_mermaid(self) -> str:
        """The workflow as Mermaid flowchart text."""
        return hooks.node_mermaid(self)

    def visualize(self, path: str | None = None) -> str:
        """Write ``.svg``, ``.png`` or ``.mmd`` by suffix and return the path; no path: Mermaid text."""
        return hooks.visualize(self, path)

    def _repr_html_(self) -> str | None:
        return hooks.node_html(self)


def require_node(o: Any, where: str) -> Node:
    """``o`` itself if it is a node; else InvalidTaskError, naming ``where``."""
    if isinstance(o, Node):
        return o
    raise InvalidTaskError(f"{where} expects tasks or composites, got {o!r}")
