"""A notebook's cells in a headless IPython shell: which are task cells, what a cell reads and
assigns, and how a failing cell reads (``NotebookFailed``).

The pieces ``headless.py`` (the entry: ``run_notebook``, ``notebook_graph``),
``execution.py`` (one run's phases) and ``resume.py`` share; this module imports neither.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

from ..core.errors import DefinitionError, NborchError, safe_str
from .header import TaskLine, parse_task_line
from .ipynb import Cell

__all__ = ["NotebookFailed", "TaskCell", "describe_failure", "task_cells"]

_ORCH_RUN = "_orch_run"  # the run record run_targets pushes; cells after `%orch run` read it


class NotebookFailed(NborchError):
    """The notebook could not be run (or drawn): ``str(err)`` is the short message for stderr,
    ``exit_code`` is 1 when a cell or a task failed, 2 for bad usage, 3 when ``--timeout`` passed."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- reading the %%task cells without running them -----------------------------------------------


@dataclass
class TaskCell:
    """A ``%%task`` cell found by scanning: its parsed magic line, or why that line is invalid."""

    cell: Cell
    line: str
    body: str
    spec: TaskLine | None = None
    error: str | None = None

    @property
    def name(self) -> str | None:
        return self.spec.name if self.spec is not None else None

    @property
    def flow(self) -> str:
        return self.spec.flow if self.spec is not None else "default"


def split_task_cell(source: str) -> tuple[str, str] | None:
    """``(magic line, body)`` for a ``%%task`` cell, else None (IPython skips leading blank lines)."""
    lines = source.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    first = lines[0].strip()
    if first != "%%task" and not first.startswith(("%%task ", "%%task\t")):
        return None
    return first[len("%%task"):].strip(), "\n".join(lines[1:])


def task_cells(cells: list[Cell]) -> list[TaskCell]:
    """Every ``%%task`` cell, its line parsed as the magic parses it (so options never drift)."""
    found = []
    for cell in cells:
        split = split_task_cell(cell.source) if cell.is_code else None
        if split is None:
            continue
        found_cell = TaskCell(cell, *split)
        try:
            found_cell.spec = parse_task_line(found_cell.line)
        except DefinitionError as err:
            found_cell.error = f"%%task: {err}"
        found.append(found_cell)
    return found


# -- running cells ----------------------------------------------------------------------------------------


def _shell(transcript: Any) -> tuple[Any, Any]:
    """An InteractiveShell with the extension loaded, and its OrchMagics. Results, displays and
    errors go to ``transcript`` (outputs.py): errors are reported once, short, on stderr by
    ``run_notebook``, never as IPython's pages of frames."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from .extension import load_ipython_extension
    from .outputs import attach

    config = Config()
    config.HistoryManager.enabled = False  # a headless run must not write the user's IPython history
    shell = InteractiveShell.instance(config=config)
    attach(shell, transcript)
    # IPython 9 formats each failed cell's traceback for its (disabled) history, with str(error):
    # an exception whose __str__ raises would be replaced by that error. Nothing reads it here.
    setattr(shell, "_format_exception_for_storage", lambda error, *args, **kwargs: {  # noqa: B010
        "ename": type(error).__name__, "evalue": safe_str(error), "traceback": [],
    })
    # A cell calling sys.exit() fails like any cell; IPython's "To exit: use 'exit'..." is for a REPL.
    warnings.filterwarnings("ignore", message="To exit: use", category=UserWarning, module="IPython")
    load_ipython_extension(shell)
    return shell, shell.magics_manager.registry["OrchMagics"]


def _strip_orch(source: str) -> str:
    """The cell without its ``%orch`` lines (the CLI runs and shows the graph itself): "" when
    nothing else is in it, else each such line becomes ``pass`` so line numbers stay right."""
    lines = source.split("\n")
    orch = [line.lstrip().startswith("%orch") for line in lines]
    if all(is_orch or not line.strip() for line, is_orch in zip(lines, orch, strict=True)):
        return ""
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if is_orch else line
        for line, is_orch in zip(lines, orch, strict=True)
    )


def _reads_waited(source: str, shell: Any, waits_for: set[str]) -> bool:
    """Whether a cell reads, as it runs, a name that only the task graph will define. Reads the
    AST cannot see (a function defined earlier reading a task's value) still stop the cell with
    a NameError, and it waits then."""
    from .cells import eager_reads

    try:
        reads = eager_reads(shell.transform_cell(source))
    except SyntaxError:  # reported when the cell runs
        return False
    return any(name in waits_for and name not in shell.user_ns for name in reads)


def _assigned(source: str, shell: Any) -> set[str]:
    """Names a cell binds at its top level, also through ``global`` in a function it defines and
    by a top-level ``await`` (so cells reading them wait too when it waits)."""
    from .cells import parse_cell
    from .scopes import bind_scopes

    try:
        module, scopes = bind_scopes(parse_cell(shell.transform_cell(source), "<cell>"))
    except SyntaxError:
        return set()
    names = set(module.bound)
    for scope in scopes.values():
        names |= scope.bound & scope.globals
    return names


def _syntax_where(err: SyntaxError, offset: int = 0) -> str:
    """Where a SyntaxError is: its line (``offset``: lines above the parsed text) and text."""
    if not err.lineno:
        return ""
    text = (err.text or "").strip()
    return f"\n  line {err.lineno + offset}: {text}" if text else f" (line {err.lineno + offset})"


def _failing_line(err: BaseException, cell: Cell) -> str:
    """``line N: text`` of the cell where ``err`` came out of it (the deepest frame in the cell)."""
    import IPython

    ipython_dir = os.path.dirname(IPython.__file__)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(ipython_dir)]
    if not frames:
        return ""
    cell_file = frames[0].filename  # IPython runs the cell's code first, below its own frames
    frame = [f for f in frames if f.filename == cell_file][-1]
    text = (frame.line or "").strip()
    if not text:
        lines = cell.source.split("\n")
        text = lines[frame.lineno - 1].strip() if frame.lineno and 0 < frame.lineno <= len(lines) else ""
    return f"line {frame.lineno}: {text}" if text else f"line {frame.lineno}"


def describe_failure(cell: Cell, err: BaseException, task_line: str | None = None) -> str:
    """The short error of a failed cell: which cell, the exception, the failing line."""
    from IPython.core.error import UsageError

    from .magics import CellTaskFailed

    where = f"cell {cell.number}" + (f" (%%task {task_line})" if task_line is not None else "")
    if isinstance(err, CellTaskFailed):  # `%%task NAME --run`: already the short task block
        return f"{where} failed: {err}"
    if isinstance(err, UsageError):  # a magic's own one-line message; its "line" is IPython's call
        return f"{where} failed: UsageError: {err}"
    if isinstance(err, SyntaxError):
        # a task body's line numbers count below the %%task line
        offset = 1 if getattr(err, "_nborch_cell", False) else 0
        return f"{where} failed: {type(err).__name__}: {err.msg}{_syntax_where(err, offset)}"
    text = " ".join(safe_str(err).split())
    head = f"{where} failed: {type(err).__name__}" + (f": {text}" if text else "")
    line = _failing_line(err, cell)
    return head + (f"\n  {line}" if line else "")


def _warn(message: str) -> None:
    print(f"nborch: warning: {message}", file=sys.stderr, flush=True)


