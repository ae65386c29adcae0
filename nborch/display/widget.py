"""The notebook's live widget as a display factory: what a run in a Jupyter kernel shows.

``widget_factory`` (registered with ``nborch.register_display`` by the extension) gives a run
in a kernel a ``LiveDisplay`` (``live_display.py``, importable from here as before) that
``kernel_publisher`` shows in the running cell; in a kernel without ipywidgets, console
progress after saying once what to install; elsewhere (a terminal IPython, a script), nothing.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from ..runtime.runner import RunHandle
from .dot import NOTEBOOK_EXTRA
from .live_display import STOP_TEXT, LiveDisplay

__all__ = ["STOP_TEXT", "WIDGET_VIEW", "LiveDisplay", "kernel_publisher", "widget_factory"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # a widget's part of a display bundle


def kernel_publisher(bundle: dict[str, Any], display_id: str, update: bool) -> None:
    """Show ``bundle`` in the cell that runs (``update``: replace the output ``display_id``)."""
    from IPython.display import display, update_display

    if update:
        update_display(bundle, raw=True, display_id=display_id)
    else:
        display(bundle, raw=True, display_id=display_id)


@functools.cache
def _warn_no_ipywidgets() -> None:
    """Say once per process that the live display needs ipywidgets."""
    print(
        "nborch: the live display needs ipywidgets, which comes with nborch's notebook extra: "
        f"{NOTEBOOK_EXTRA}; showing console progress instead",
        file=sys.stderr, flush=True,
    )


def widget_factory(handle: RunHandle) -> Any:
    """A display factory for ``nborch.register_display``: inside an IPython kernel, a
    ``LiveDisplay`` that shows itself in the running cell; elsewhere (a terminal IPython, a
    script) None. In a kernel without ipywidgets: console progress, after saying once what to
    install."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from rich.console import Console

        from .console import ConsoleProgress

        _warn_no_ipywidgets()
        # plain text on the cell's stderr: rich's own Jupyter output would need ipywidgets too
        return ConsoleProgress(handle.graph, console=Console(stderr=True, force_jupyter=False))
    return LiveDisplay(handle, publish=kernel_publisher)
