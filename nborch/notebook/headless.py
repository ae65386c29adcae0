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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..display.dot import NOTEBOOK_EXTRA
from ..core.errors import DefinitionError, did_you_mean
from .ipynb import Cell, read_notebook, read_notebook_data
from .shell import NotebookFailed, TaskCell, _syntax_where, _warn, describe_failure, task_cells

__all__ = ["NotebookFailed", "TaskCell", "describe_failure", "notebook_graph", "run_notebook", "task_cells"]


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
    from .executed import RunInfo, executed_notebook, write_notebook
    from .execution import STOPPED, NotebookRun, echo_streams
    from .interrupts import relay_interrupts
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
        with _working_directory(cwd), relay_interrupts():  # a Ctrl-C is never slept through
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
