"""Named workflows (pyorchestration's registry): ``nborch.register(name, node)``."""

from __future__ import annotations

from .errors import DefinitionError
from .node import Node

__all__ = ["register", "unregister", "workflows"]

_workflows: dict[str, Node] = {}


def register(name: str, node: Node) -> Node:
    """Register ``node`` under ``name`` (replacing an earlier one of that name); returns it."""
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"register() expects a non-empty name, got {name!r}")
    if not isinstance(node, Node):
        raise DefinitionError(f"register({name!r}, ...) expects a task or composite, got {node!r}")
    _workflows[name] = node
    return node


def workflows() -> dict[str, Node]:
    """The registered workflows by name (a copy)."""
    return dict(_workflows)


def unregister(name: str) -> None:
    """Forget the workflow registered under ``name`` (nothing happens if there is none)."""
    _workflows.pop(name, None)
