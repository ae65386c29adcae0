"""How the core reaches the layers above it without importing them.

nborch is built in layers: the core (nodes, composites, graph, engine, records) below the
runtime (``nborch.runner``: driving the loop from anywhere) below the front ends (display,
store, notebook, cli). A lower layer never imports a higher one. A few conveniences need one
all the same: ``Node.run()`` needs the runner, a node's notebook repr needs the display,
``Run.load()`` and the runner's recording need the store. Each is a ``Hook`` here, and the
layer that can serve it registers a function when it is imported: ``nborch.runner`` its
entry points, ``nborch.frontends`` (imported by ``nborch/__init__.py``) the display and the
store, each imported on its first call. Importing any ``nborch`` module imports the package
first, so every hook is registered before user code runs. A hook nobody registered raises
``NborchError`` naming what to import.

Two hooks serve the core itself: ``fn.map()`` builds a node of ``nborch.core.mapping``, and
``executor=`` is checked by ``nborch.core.executors`` (called from ``nborch.core.task_options``);
both build on ``nborch.core.task`` and register with it through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import NborchError

__all__ = ["HOOKS", "Hook"]


class Hook:
    """One function a lower layer needs from a higher one, called through the hook."""

    __slots__ = ("name", "need", "provider", "fn")

    def __init__(self, name: str, need: str, provider: str) -> None:
        self.name = name  # this hook's name in nborch.hooks
        self.need = need  # what needs it, as the user meets it: "Node.run()"
        self.provider = provider  # the module that registers it
        self.fn: Callable[..., Any] | None = None

    def register(self, fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """Serve this hook with ``fn`` (None: nobody); returns the function registered before."""
        previous, self.fn = self.fn, fn
        return previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.fn
        if fn is None:
            raise NborchError(
                f"{self.need} needs {self.provider}, which has not registered nborch.hooks.{self.name}: "
                f"import nborch (that registers every hook), or import {self.provider}"
            )
        return fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Hook {self.name} for {self.need}: {'served' if self.fn else 'not registered'}>"


def _hook(name: str, need: str, provider: str) -> Hook:
    made = Hook(name, need, provider)
    HOOKS[name] = made
    return made


HOOKS: dict[str, Hook] = {}  # every hook by name: what the lower layers need from the higher

# the core: nodes, composites
mapped_node = _hook("mapped_node", "fn.map() and fn.product()", "nborch.mapping")
check_executor = _hook("check_executor", "the executor= option", "nborch.executors")
# the core: Node's conveniences (the runtime)
run_node = _hook("run_node", "Node.run()", "nborch.runner")
run_node_async = _hook("run_node_async", "Node.run_async()", "nborch.runner")
await_node = _hook("await_node", "await node", "nborch.runner")
blocking_result = _hook("blocking_result", "Node.result", "nborch.runner")
# the core: Node's drawings (the display)
node_digraph = _hook("node_digraph", "Node.graph()", "nborch.display")
node_mermaid = _hook("node_mermaid", "Node.to_mermaid()", "nborch.display")
visualize = _hook("visualize", "Node.visualize()", "nborch.display")
node_html = _hook("node_html", "a node's notebook repr", "nborch.display")
# the core and the runtime: recorded runs (the store)
load_run = _hook("load_run", "Run.load() and resume=", "nborch.store")
open_store = _hook("open_store", "run(store=...)", "nborch.store")
start_recording = _hook("start_recording", "recording a run", "nborch.store")
open_cache = _hook("open_cache", "the cache of a run", "nborch.store")
# the runtime: run(display=True) without a notebook display
console_progress = _hook("console_progress", "run(display=True)", "nborch.display")
