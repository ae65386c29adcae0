"""``nborch run`` / ``nborch graph``: a notebook without Jupyter, in a plain IPython shell.

``run_notebook`` works in three phases:

1. the code cells in order: ``%%task`` cells define tasks, ``%orch`` lines are dropped (the CLI
   runs the graph itself), the cell tagged ``parameters`` is followed by the ``-p`` values; an
   ordinary cell that reads a task's value waits: seen in its code before it runs, or, for
   reads hidden in a function it calls, when it stops on a NameError for a task's name;
2. the task graph (targets and their upstream, or everything), with console progress;
3. the cells that waited, now that the task values are in the namespace.

``notebook_graph`` builds the task graph from the ``%%task`` cells without executing any cell.
Failures are raised as ``NotebookFailed`` with a short message and the exit status to use.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..display.dot import NOTEBOOK_EXTRA
from ..errors import DefinitionError, NborchError, did_you_mean, safe_str
from .header import TaskLine, parse_task_line
from .ipynb import Cell, read_notebook

__all__ = ["NotebookFailed", "TaskCell", "notebook_graph", "run_notebook", "task_cells"]

_ORCH_RUN = "_orch_run"  # the run record run_targets pushes; cells after `%orch run` read it


class NotebookFailed(NborchError):
    """The notebook could not be run (or drawn): ``str(err)`` is the short message for stderr,
    ``exit_code`` is 1 when a cell or a task failed and 2 for bad usage."""

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


def notebook_graph(path: str | os.PathLike[str], flow: str | None = None) -> Any:
    """The notebook's task graph as a DAG (``flow``: that named workflow only). No cell runs:
    each task function is compiled, never called. Raises NotebookError or NotebookFailed."""
    from .cells import compile_cell
    from .workflow import NotebookWorkflow

    cells = read_notebook(path)
    workflow = NotebookWorkflow()
    for found in task_cells(cells):
        where = f"cell {found.cell.number} (%%task {found.line})"
        if found.spec is None:
            raise NotebookFailed(f"{where}: {found.error}")
        spec = found.spec
        try:
            compiled = compile_cell(
                spec.name, found.body, options=spec.options, after=spec.after, flow=spec.flow,
                map_over=spec.map,
            )
        except SyntaxError as err:
            raise NotebookFailed(f"{where}: SyntaxError: {err.msg}{_syntax_where(err, 1)}") from None
        workflow.define(compiled)
    if not workflow.cells:
        raise NotebookFailed(f"{str(path)!r} has no %%task cells: there is no task graph to draw", 2)
    _check_flow(flow, workflow.flows())
    try:
        return workflow.build({}, None, flow)
    except DefinitionError as err:
        raise NotebookFailed(str(err)) from None


def _check_flow(flow: str | None, flows: list[str]) -> None:
    if flow is not None and flow not in flows:
        known = ", ".join(flows) or "(none)"
        hint = did_you_mean(flow, flows)
        raise NotebookFailed(f"no task cell is in flow {flow!r}.{hint} Flows: {known}.", 2)


# -- running ----------------------------------------------------------------------------------------


def _shell() -> tuple[Any, Any]:
    """An InteractiveShell with the extension loaded, and its OrchMagics."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import nborch

    config = Config()
    config.HistoryManager.enabled = False  # a headless run must not write the user's IPython history
    shell = InteractiveShell.instance(config=config)
    # Errors are reported once, short, by run_notebook: never IPython's pages of frames.
    for name in ("showtraceback", "_showtraceback", "showsyntaxerror", "showindentationerror"):
        setattr(shell, name, lambda *args, **kwargs: None)
    # IPython 9 formats each failed cell's traceback for its (disabled) history, with str(error):
    # an exception whose __str__ raises would be replaced by that error. Nothing reads it here.
    setattr(shell, "_format_exception_for_storage", lambda error, *args, **kwargs: {  # noqa: B010
        "ename": type(error).__name__, "evalue": safe_str(error), "traceback": [],
    })
    # A cell calling sys.exit() fails like any cell; IPython's "To exit: use 'exit'..." is for a REPL.
    warnings.filterwarnings("ignore", message="To exit: use", category=UserWarning, module="IPython")
    nborch.load_ipython_extension(shell)
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


def _inject(shell: Any, params: dict[str, Any], cell: Cell | None) -> None:
    """Set the ``-p`` values, warning about names the parameters cell does not assign."""
    if not params:
        return
    if cell is None:
        _warn("no cell is tagged 'parameters'; the -p values are set before the first cell")
    else:
        known = _assigned(cell.source, shell)
        for name in params:
            if name not in known:
                _warn(f"-p {name}: the parameters cell (cell {cell.number}) does not assign {name!r}; "
                      "set anyway")
    shell.user_ns.update(params)


def run_notebook(
    path: str | os.PathLike[str],
    targets: list[str] | tuple[str, ...] = (),
    *,
    flow: str | None = None,
    params: dict[str, Any] | None = None,
    max_concurrency: int | None = None,
) -> Any:
    """Run a notebook headless (see the module docstring); returns the task run's ``Run`` (None
    without task cells). Raises NotebookError (unreadable notebook) or NotebookFailed."""
    cells = read_notebook(path)
    try:
        from IPython.core.error import UsageError
    except ImportError:
        raise NotebookFailed(
            "nborch run needs IPython (it runs the notebook's cells in an IPython shell), which comes with "
            f"nborch's notebook extra: {NOTEBOOK_EXTRA}"
        ) from None

    from .magics import CellTaskFailed

    specs = task_cells(cells)
    names = [s.name for s in specs if s.name]
    targets = list(targets)
    for t in targets:  # bad targets are bad usage: say so before any cell runs
        if t not in names:
            known = ", ".join(names) or "(none)"
            raise NotebookFailed(f"no task cell is named {t!r}.{did_you_mean(t, names)} Tasks: {known}.", 2)
    if flow is not None:
        _check_flow(flow, list(dict.fromkeys(s.flow for s in specs if s.spec is not None)))
    params = dict(params or {})
    task_lines = {s.cell.number: s.line for s in specs}
    shell, magics = _shell()

    # Phase 1: the cells in order; cells that read task values wait.
    waits_for = set(names) | {_ORCH_RUN}
    deferred: list[tuple[Cell, str]] = []
    code = [c for c in cells if c.is_code]
    param_cell = next((c for c in code if "parameters" in c.tags), None)
    if param_cell is None:
        _inject(shell, params, None)
    for cell in code:
        if params and "injected-parameters" in cell.tags:
            continue  # a cell papermill injected on an earlier run: the new -p values replace it
        is_task = cell.number in task_lines
        source = cell.source if is_task else _strip_orch(cell.source)
        if not source.strip():
            continue
        if not is_task and cell is not param_cell and _reads_waited(source, shell, waits_for):
            deferred.append((cell, source))  # decided before it runs: nothing in it runs twice
            waits_for |= _assigned(source, shell)
            continue
        err = _execute(shell, source)
        if err is None:
            if cell is param_cell:
                _inject(shell, params, cell)
            continue
        if not is_task and cell is not param_cell and isinstance(err, NameError) and err.name in waits_for:
            deferred.append((cell, source))
            waits_for |= _assigned(source, shell)
            continue
        raise NotebookFailed(describe_failure(cell, err, task_lines.get(cell.number)))

    # Phase 2: the task graph.
    record = None
    if magics.workflow.cells:
        run_name = Path(path).stem + (f":{flow}" if flow else "")
        try:
            record = magics.run_targets(
                targets, flow=flow, display=True, max_concurrency=max_concurrency, name=run_name
            )
        except CellTaskFailed as err:
            lines = [line for line in str(err).splitlines() if _ORCH_RUN not in line]  # a notebook hint
            raise NotebookFailed("\n".join(lines)) from None
        except UsageError as err:  # a bad graph (a cycle): drop the magic's prefix
            raise NotebookFailed(str(err).removeprefix("%orch run: ").removeprefix("%orch: ")) from None

    # Phase 3: the cells that waited for task values.
    for cell, source in deferred:
        failure = _execute(shell, source)
        if failure is None:
            continue
        if isinstance(failure, NameError) and failure.name in waits_for and failure.name not in shell.user_ns:
            # it reads a task this run did not produce (targets or --flow left it out)
            _warn(f"cell {cell.number} skipped: it reads {failure.name!r}, which this run did not produce")
            continue
        raise NotebookFailed(describe_failure(cell, failure))
    return record


def _execute(shell: Any, source: str) -> BaseException | None:
    """Run one cell like Jupyter does (Out, history, top-level await); return its error."""
    result = shell.run_cell(source, store_history=True)
    sys.stdout.flush()  # keep cell output ahead of the progress and errors on stderr
    error = result.error_before_exec or result.error_in_exec
    if isinstance(error, KeyboardInterrupt):
        raise error
    return error
