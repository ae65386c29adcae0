"""The display and the store as the core and the runtime reach them: through ``nborch.hooks``.

``nborch/__init__.py`` imports this module, which registers one small function per hook. Each
imports its front end on its first call, so ``import nborch`` loads neither the display (DOT,
HTML, the widget) nor the store (SQLite): a script that never draws or records never pays
for them.
"""

from __future__ import annotations

from typing import Any

from .core import hooks


def node_digraph(node: Any) -> Any:
    from .display.dot import node_digraph

    return node_digraph(node)


def node_mermaid(node: Any) -> str:
    from .display.mermaid import node_mermaid

    return node_mermaid(node)


def visualize(node: Any, path: Any = None) -> str:
    from .display.files import visualize

    return visualize(node, path)


def node_html(node: Any) -> str:
    from .display.html import node_html

    return node_html(node)


def console_progress(graph: Any) -> Any:
    from .display.console import ConsoleProgress

    return ConsoleProgress(graph)


def load_run(run_id: str, store: Any = None) -> Any:
    from .store import load_run

    return load_run(run_id, store)


def open_store(option: Any) -> Any:
    from .store import open_for_run

    return open_for_run(option)


def start_recording(store: Any, run_id: str, **options: Any) -> Any:
    from .store import start_recording

    return start_recording(store, run_id, **options)


def open_cache(store: Any, run_id: str | None = None) -> Any:
    from .store.cache import Cache

    return Cache(store, run_id)


hooks.node_digraph.register(node_digraph)
hooks.node_mermaid.register(node_mermaid)
hooks.visualize.register(visualize)
hooks.node_html.register(node_html)
hooks.console_progress.register(console_progress)
hooks.load_run.register(load_run)
hooks.open_store.register(open_store)
hooks.start_recording.register(start_recording)
hooks.open_cache.register(open_cache)
