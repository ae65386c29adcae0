"""``%load_ext nborch``: the magics, the live display hook and the short failure block."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from ..core.errors import safe_str
from ..runtime.runner import register_display

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_state: dict[int, dict[str, Any]] = {}


def _show_failure(
    shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None
) -> list[str] | None:
    """Show nborch's cell errors short: a failed run as task, exception and failing line; a
    syntax error in a task cell as the cell line and caret, not the frames that compiled it."""
    red, reset = "\x1b[0;31m", "\x1b[0m"
    if isinstance(value, asyncio.CancelledError) and not getattr(value, "_nborch_run", False):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)  # not a run we stopped
        return None
    if isinstance(value, SyntaxError):
        if not getattr(value, "_nborch_cell", False):  # not ours: IPython's usual display
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        stb = [line.rstrip("\n") for line in traceback.format_exception_only(etype, value)]
        stb[-1] = f"{red}{stb[-1].split(':', 1)[0]}{reset}:{stb[-1].split(':', 1)[1]}" if ":" in stb[-1] else stb[-1]
    else:
        lines = safe_str(value).splitlines() or [""]
        stb = [f"{red}{etype.__name__}{reset}: {lines[0]}", *lines[1:]]
    shell._showtraceback(etype, value, stb)
    return stb


def load_ipython_extension(ipython: Any) -> None:
    """Register %%task / %orch, the live display for runs in this kernel, the widget pump that
    keeps its Cancel button working during a blocking run, and the failure block."""
    if id(ipython) in _state:  # %load_ext twice: keep the workflow defined so far
        return
    from .magics import CellTaskFailed, OrchMagics

    magics = OrchMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.pre_run_cell)  # the running cell's id
    state: dict[str, Any] = {"magics": magics}
    try:
        from ..display.widget import widget_factory
    except ImportError:  # ipywidgets missing: runs still work, without the live widget
        pass
    else:
        state["unregister"] = register_display(widget_factory)
    from .uipoll import install as install_widget_pump

    unpump = install_widget_pump(ipython)  # None in a terminal IPython or an unknown ipykernel
    if unpump is not None:
        state["unpump"] = unpump
    if not ipython.custom_exceptions:  # never take over another extension's handler
        ipython.set_custom_exc((CellTaskFailed, SyntaxError, asyncio.CancelledError), _show_failure)
        state["custom_exc"] = True
    _state[id(ipython)] = state


def unload_ipython_extension(ipython: Any) -> None:
    """Undo ``load_ipython_extension`` (the magics stay registered, as IPython does)."""
    state = _state.pop(id(ipython), None)
    if state is None:
        return
    if "unregister" in state:
        state["unregister"]()
    if "unpump" in state:
        state["unpump"]()
    try:
        ipython.events.unregister("pre_run_cell", state["magics"].pre_run_cell)
    except ValueError:  # already gone
        pass
    if state.get("custom_exc"):
        ipython.set_custom_exc((), None)
