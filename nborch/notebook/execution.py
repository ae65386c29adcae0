"""One headless run of a notebook (``run_notebook`` in ``headless.py`` starts it).

Three phases, in a plain IPython shell:

1. the code cells in order: ``%%task`` cells define tasks, ``%orch`` lines are dropped (the
   run shows the graph itself), the cell tagged ``parameters`` is followed by the parameter
   values; an ordinary cell that reads a task's value waits: seen in its code before it runs,
   or, for reads hidden in a function it calls, when it stops on a NameError for a task's name;
2. the task graph (targets and their upstream, or everything), with console progress;
3. the cells that waited, now that the task values are in the namespace.

Every cell's outputs are kept in a ``Transcript`` (the executed notebook is made from it).
Failures are raised as ``NotebookFailed`` with a short message and the exit status to use.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..core.errors import RunTimeoutError
from .deadline import Deadline
from .executed import INJECTED
from .ipynb import Cell
from .outputs import TaskCollector, Transcript
from .shell import (
    _ORCH_RUN,
    NotebookFailed,
    _assigned,
    _reads_waited,
    _shell,
    _strip_orch,
    _warn,
    describe_failure,
    task_cells,
)

__all__ = ["NotebookRun", "STOPPED"]

STOPPED = {3: "timed out", 130: "interrupted"}  # exit status -> the run's status


class _Display:
    """The run's display: console progress on stderr, and the task outputs filed by cell.

    ``shows_output`` True keeps the engine from echoing task output to stdout: it is in the
    executed notebook (and on stderr with ``--log-output``)."""

    def __init__(self, progress: Any, collector: TaskCollector, shows_output: bool) -> None:
        self.progress = progress
        self.collector = collector
        self.shows_output = shows_output

    def __call__(self, event: Any) -> None:
        self.collector(event)
        self.progress(event)

    def close(self, run: Any) -> None:
        self.progress.close(run)


class NotebookRun:
    """The state of one headless run: the shell, the transcript, the deadline, the record."""

    def __init__(self, path: Any, cells: list[Cell], *, targets: list[str], flow: str | None,
                 params: dict[str, Any], max_concurrency: int | None, run_id: str,
                 deadline: Deadline, transcript: Transcript, shows_output: bool,
                 run_options: dict[str, Any] | None = None, rerun_from: str | None = None,
                 earlier_outputs: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.path = path
        self.cells = cells
        self.targets = targets
        self.flow = flow
        self.params = params
        self.max_concurrency = max_concurrency
        self.run_id = run_id
        self.deadline = deadline
        self.transcript = transcript
        self.shows_output = shows_output
        self.run_options = run_options or {}
        self.rerun_from = rerun_from  # --from TASK: it and its downstream run again
        self.earlier_outputs = earlier_outputs or {}  # a resumed run's tasks that stand show these
        self.record: Any = None  # the task run's Run
        self.specs = task_cells(cells)
        self.task_lines = {s.cell.number: s.line for s in self.specs}
        self.shell: Any = None
        self.magics: Any = None

    # -- the phases ----------------------------------------------------------------------------

    def run(self) -> Any:
        """Run the notebook; returns the task run's ``Run`` (None without task cells). Raises
        NotebookFailed (exit status 1, or 3 for the deadline) or KeyboardInterrupt."""
        self.shell, self.magics = _shell(self.transcript)
        shell = self.shell
        names = [s.name for s in self.specs if s.name]
        for s in self.specs:
            if s.name:
                self.transcript.task_cells[s.name] = s.cell.number
        waits_for = set(names) | {_ORCH_RUN}
        deferred: list[tuple[Cell, str]] = []
        code = [c for c in self.cells if c.is_code]
        param_cell = next((c for c in code if "parameters" in c.tags), None)
        if param_cell is None:
            self._inject(None)
        for cell in code:
            if self.params and "injected-parameters" in cell.tags:
                continue  # a cell papermill injected on an earlier run: the new values replace it
            is_task = cell.number in self.task_lines
            source = cell.source if is_task else _strip_orch(cell.source)
            if not source.strip():
                continue
            if not is_task and cell is not param_cell and _reads_waited(source, shell, waits_for):
                deferred.append((cell, source))  # decided before it runs: nothing in it runs twice
                waits_for |= _assigned(source, shell)
                continue
            err = self._execute(cell, source)
            if err is None:
                if cell is param_cell:
                    self._inject(cell)
                if is_task:  # its definition line is not what the notebook keeps: the task's output is
                    self.transcript.reset(cell.number)
                continue
            if not is_task and cell is not param_cell and isinstance(err, NameError) and err.name in waits_for:
                self.transcript.reset(cell.number)  # it runs again once the task values exist
                deferred.append((cell, source))
                waits_for |= _assigned(source, shell)
                continue
            raise NotebookFailed(describe_failure(cell, err, self.task_lines.get(cell.number)))

        if self.magics.workflow.cells:
            self._run_graph()

        for cell, source in deferred:
            failure = self._execute(cell, source)
            if failure is None:
                continue
            if isinstance(failure, NameError) and failure.name in waits_for and failure.name not in shell.user_ns:
                # it reads a task this run did not produce (targets or --flow left it out)
                self.transcript.reset(cell.number)
                _warn(f"cell {cell.number} skipped: it reads {failure.name!r}, which this run did not produce")
                continue
            raise NotebookFailed(describe_failure(cell, failure))
        return self.record

    def _run_graph(self) -> None:
        from IPython.core.error import UsageError

        from ..display.console import ConsoleProgress
        from ..runtime.runner import register_display
        from .magics import CellTaskFailed

        self.deadline.check()
        collector = TaskCollector(self.shell, self.transcript, echo=self.shows_output)

        def factory(handle: Any) -> Any:
            if handle.run_id != self.run_id:
                return None
            return _Display(ConsoleProgress(handle.graph), collector, self.shows_output)

        unregister = register_display(factory)
        run_name = Path(self.path).stem + (f":{self.flow}" if self.flow else "")
        previous = self.run_options.get("resume")
        if previous is not None and self.rerun_from is not None:
            from .resume import rerun_from

            rerun_from(previous, [self.rerun_from, *self.magics.workflow.downstream(self.rerun_from)])
        try:
            self.record = self.magics.run_targets(
                self.targets, flow=self.flow, display=True, max_concurrency=self.max_concurrency,
                name=run_name, run_id=self.run_id, timeout=self.deadline.remaining(), **self.run_options,
            )
        except CellTaskFailed as err:
            self.record = err.run
            lines = [line for line in str(err).splitlines() if _ORCH_RUN not in line]  # a notebook hint
            raise NotebookFailed("\n".join(lines)) from None
        except RunTimeoutError as err:
            self.record = err.run
            self.deadline.expired = True
            self._mark_stopped("TimeoutError", f"the run's deadline of {self.deadline.seconds:g}s passed")
            raise NotebookFailed(self.timeout_message(f"the task run {err.run.id} was cancelled"), 3) from None
        except KeyboardInterrupt:
            self.record = self.magics.workflow.last_run
            self._mark_stopped("KeyboardInterrupt", "the run was interrupted")
            raise
        except UsageError as err:  # a bad graph (a cycle): drop the magic's prefix
            raise NotebookFailed(str(err).removeprefix("%orch run: ").removeprefix("%orch: ")) from None
        finally:
            unregister()
            self._show_reused()

    def _show_reused(self) -> None:
        """Tasks of a resumed run that stand as they were show what they showed then."""
        import copy

        record = self.record
        if record is None:
            return
        for name in record.reused:
            number = self.transcript.task_cells.get(name)
            if number is None:
                continue
            run = self.transcript.cell(number)
            run.executed = True
            run.started = run.started or time.time()
            run.finished = run.finished or run.started
            if name in self.earlier_outputs:
                run.outputs[:] = copy.deepcopy(self.earlier_outputs[name])

    def timeout_message(self, what: str) -> str:
        return f"timed out after {self.deadline.seconds:g}s (--timeout): {what}"

    def _mark_stopped(self, ename: str, evalue: str) -> None:
        """Task cells whose task was running when the run stopped show why it stopped."""
        record = self.record
        if record is None:
            return
        for name, number in self.transcript.task_cells.items():
            state = record.states.get(name)
            run = self.transcript.cells.get(number)
            if state is not None and state.value == "cancelled" and run is not None and run.executed:
                run.finished = run.finished or time.time()
                self.transcript.error(number, ename, evalue, [f"\x1b[31m{ename}\x1b[39m: {evalue}"])

    # -- cells ---------------------------------------------------------------------------------

    def _execute(self, cell: Cell, source: str) -> BaseException | None:
        """Run one cell like Jupyter does (Out, history, top-level await); return its error."""
        with self.transcript.running(cell.number):
            try:
                with self.deadline.interrupting():
                    result = self.shell.run_cell(source, store_history=True)
            except KeyboardInterrupt:  # the deadline passed as the cell started or ended
                self._stop_cell(cell)
                raise
        sys.stdout.flush()  # keep cell output ahead of the progress and errors on stderr
        error = result.error_before_exec or result.error_in_exec
        if isinstance(error, KeyboardInterrupt):
            self._stop_cell(cell)
            raise error
        return error

    def _stop_cell(self, cell: Cell) -> None:
        """The cell was stopped: by the deadline, its error says so; by Ctrl-C, it shows KeyboardInterrupt."""
        run = self.transcript.cell(cell.number)
        if not self.deadline.expired:
            if not run.failed:
                self.transcript.error(cell.number, "KeyboardInterrupt", "", ["\x1b[31mKeyboardInterrupt\x1b[39m"])
            return
        evalue = f"the run's deadline of {self.deadline.seconds:g}s passed while this cell ran (--timeout)"
        line = f"\x1b[31mTimeoutError\x1b[39m: {evalue}"
        errors = [o for o in run.outputs if o["output_type"] == "error"]
        if errors:
            errors[-1].update(ename="TimeoutError", evalue=evalue, traceback=[*errors[-1]["traceback"][:-1], line])
        else:
            self.transcript.error(cell.number, "TimeoutError", evalue, [line])

    def _inject(self, cell: Cell | None) -> None:
        """Set the parameter values, warning about names the parameters cell does not assign."""
        if not self.params:
            return
        if cell is None:
            _warn("no cell is tagged 'parameters'; the -p values are set before the first cell")
        else:
            known = _assigned(cell.source, self.shell)
            for name in self.params:
                if name not in known:
                    _warn(f"-p {name}: the parameters cell (cell {cell.number}) does not assign {name!r}; "
                          "set anyway")
        self.shell.user_ns.update(self.params)
        run = self.transcript.cell(INJECTED)
        run.executed, run.started, run.finished = True, time.time(), time.time()


def echo_streams(output: Any, log_output: bool) -> tuple[TextIO | None, TextIO | None]:
    """Where cell and task output is echoed as it happens: stderr with ``--log-output``; nowhere
    when it goes into an executed notebook; else stdout and stderr, as a terminal would show it."""
    if log_output:
        return sys.stderr, sys.stderr
    if output is not None:
        return None, None
    return sys.stdout, sys.stderr
