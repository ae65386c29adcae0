"""``nborch run`` / ``nborch graph``: a notebook without Jupyter, in a plain IPython shell.

``run_notebook`` runs the cells, then the task graph, then the cells that read task values
(``execution.py``), and writes the executed notebook when asked (``executed.py``).
``notebook_graph`` builds the task graph from the ``%%task`` cells without executing any cell.
Failures are raised as ``NotebookFailed`` with a short message and the exit status to use.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..display.dot import NOTEBOOK_EXTRA
from ..errors import DefinitionError, NborchError, did_you_mean, safe_str
from .header import TaskLine, parse_task_line
from .ipynb import Cell, read_notebook, read_notebook_data

__all__ = ["NotebookFailed", "TaskCell", "notebook_graph", "run_notebook", "task_cells"]

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


def run_notebook(
    path: str | os.PathLike[str],
    targets: list[str] | tuple[str, ...] = (),
    *,
    flow: str | None = None,
    params: dict[str, Any] | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    output: str | os.PathLike[str] | None = None,
    log_output: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    resume: str | None = None,
    rerun_from: str | None = None,
    force: bool = False,
) -> Any:
    """Run a notebook headless (see ``execution.py``); returns the task run's ``Run`` (None
    without task cells). ``output``: write the executed notebook there (``"-"``: stdout), also
    when the run fails. ``timeout``: seconds for the whole run (cells and graph). ``cwd``: the
    cells and tasks run in that folder (paths given here, and the store, stay the caller's).
    ``resume``: a run id, or "last" (the newest run of this notebook file): only the tasks that
    did not succeed run again (``rerun_from``: also that task and its downstream; alone, it
    resumes the last run), with the earlier run's parameters, flow and targets unless given
    (see ``resume.py``). ``force``: ignore the disk cache. Raises NotebookError (unreadable
    notebook), NotebookFailed (exit_code 1, 2 for bad usage, 3 when the deadline passed) or
    KeyboardInterrupt."""
    import uuid

    from .deadline import Deadline
    from .execution import STOPPED, NotebookRun, echo_streams
    from .executed import RunInfo, executed_notebook, write_notebook
    from .outputs import Transcript
    from .params import injected_source

    data, cells = read_notebook_data(path)
    try:
        import IPython  # noqa: F401
    except ImportError:
        raise NotebookFailed(
            "nborch run needs IPython (it runs the notebook's cells in an IPython shell), which comes with "
            f"nborch's notebook extra: {NOTEBOOK_EXTRA}"
        ) from None
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
    from ..store import default_home

    home = default_home().resolve()
    run_options: dict[str, Any] = {"force": True} if force else {}
    if cwd is not None:
        if not Path(cwd).is_dir():
            problem = "is not a folder" if Path(cwd).exists() else "does not exist"
            raise NotebookFailed(f"--cwd {str(cwd)!r}: the folder {problem}", 2)
        run_options["store"] = home  # the caller's store, not one in DIR
        output = output if output is None or str(output) == "-" else Path(output).resolve()
    earlier = None
    if resume is not None or rerun_from is not None:
        from .resume import prepare

        previous, earlier = prepare(home, str(path), resume, rerun_from, names)
        run_options["resume"] = previous
        if not params and earlier.params:
            params = dict(earlier.params)  # the namespace the standing tasks' values were made in
        if not targets and flow is None:
            targets, flow = earlier.targets, earlier.flow
    transcript = Transcript(*echo_streams(output, log_output))
    run_id = uuid.uuid4().hex[:12]
    info = RunInfo(run_id, str(path), None if output is None else str(output), params, time.time(),
                   injected=injected_source(params) if params else None)
    job = NotebookRun(
        path, cells, targets=targets, flow=flow, params=params, max_concurrency=max_concurrency,
        run_id=run_id, deadline=Deadline(timeout), transcript=transcript,
        shows_output=output is not None or log_output, run_options=run_options,
        rerun_from=rerun_from, earlier_outputs=earlier.outputs if earlier is not None else {},
    )
    status = "failed"
    try:
        with _working_directory(cwd):
            record = job.run()
        status = "succeeded"
        return record
    except NotebookFailed as err:
        status = STOPPED.get(err.exit_code, "failed")
        raise
    except KeyboardInterrupt:
        if job.deadline.expired:  # the deadline stopped a cell
            status = "timed out"
            raise NotebookFailed(job.timeout_message(_running_cell(job)), 3) from None
        status = "interrupted"
        raise
    finally:
        record = job.record
        if record is not None and run_options.get("store", True) is not False:
            _keep_for_resume(home, job, str(path), params, flow, targets)
        if output is not None:
            info.finished, info.status = time.time(), status
            if record is not None:
                info.snapshot = _snapshot(record)
                info.extra["tasks"] = {name: state.value for name, state in record.states.items()}
                if earlier is not None:
                    info.extra["resumed_from"] = earlier.run_id
                    info.extra["reused"] = sorted(record.reused)
            nb = executed_notebook(data, cells, transcript, info, snapshot_cell=_orch_run_cell(cells, job))
            write_notebook(nb, output)


def _keep_for_resume(home: Path, job: Any, path: str, params: dict[str, Any], flow: str | None,
                     targets: list[str]) -> None:
    """What a later ``--resume`` of this run needs: the task cells' values and outputs."""
    from .resume import save_run

    record = job.record
    cells = job.transcript.task_cells
    values = {n: v for n, v in record.results.items() if n in cells and record.states.get(n) is not None
              and record.states[n].value == "succeeded"}
    outputs = {n: job.transcript.cells[c].outputs for n, c in cells.items() if c in job.transcript.cells}
    try:
        save_run(home, record.id, notebook=path, params=params, flow=flow, targets=targets, values=values,
                 outputs=outputs)
    except OSError as err:  # a store folder that cannot be written: the run stands, --resume re-runs more
        _warn(f"could not keep this run's values for --resume in {home}: {err.strerror or err}")


@contextlib.contextmanager
def _working_directory(cwd: str | os.PathLike[str] | None) -> Iterator[None]:
    """Run in ``cwd`` (first on sys.path too, as a kernel started there has it), then come back."""
    if cwd is None:
        yield
        return
    before = os.getcwd()
    folder = str(Path(cwd).resolve())
    os.chdir(folder)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        os.chdir(before)
        if folder in sys.path:
            sys.path.remove(folder)


def _running_cell(job: Any) -> str:
    stopped = [n for n, r in job.transcript.cells.items() if r.failed]
    return f"cell {max(stopped)} was running" if stopped else "the run was stopped"


def _orch_run_cell(cells: list[Cell], job: Any) -> int | None:
    """The number of the first ordinary cell with a ``%orch run`` line (it shows the run's snapshot)."""
    for cell in cells:
        if cell.is_code and cell.number not in job.task_lines:
            if any(line.strip().startswith("%orch run") for line in cell.source.split("\n")):
                return cell.number
    return None


def _snapshot(record: Any) -> dict[str, Any]:
    """The run's final graph and table as a static mime bundle (HTML when the display can draw it)."""
    text = f"{record.summary()}\n\n{record.report()}"
    try:
        from ..display.snapshot import run_snapshot_html
    except ImportError:
        return {"text/plain": text}
    try:
        return {"text/html": run_snapshot_html(record), "text/plain": text}
    except Exception:  # a drawing that fails must not lose the notebook
        return {"text/plain": text}
