"""``%%task`` and ``%orch``: the notebook's workflow, driven from cells.

Bad input becomes IPython's ``UsageError`` (one line, no traceback, the cell fails); a failed
run raises ``CellTaskFailed``, which the extension shows as a short block (task, exception,
the failing line of the cell) instead of pages of engine frames.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import uuid
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments

from ..core.errors import DefinitionError, NborchError, did_you_mean
from ..core.mapping import item_base
from ..core.record import Run
from ..runtime.runner import last_run
from ..runtime.runner import run as run_node
from .cells import compile_cell
from .header import TASK_ARGUMENTS, parse_task_line
from .reports import HistoryTable, TaskList, explain, failure_message
from .workflow import NotebookWorkflow

__all__ = ["CellTaskFailed", "OrchMagics"]


class CellTaskFailed(NborchError):
    """``%orch run`` (or ``%%task --run``) ended with a failed task; ``.run`` holds the record."""

    def __init__(self, message: str, run: Run, error: BaseException | None) -> None:
        super().__init__(message)
        self.run = run
        self.error = error


def _task_arguments(fn: Any) -> Any:
    """``@magic_arguments()`` with an ``@argument`` per ``TASK_ARGUMENTS`` entry: ``%%task?``."""
    for flags, spec in reversed(TASK_ARGUMENTS):  # decorators apply bottom-up
        fn = argument(*flags, **spec)(fn)
    return magic_arguments()(fn)


def _orch_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%orch", description="Run and inspect the notebook's task cells.")
    sub = p.add_subparsers(dest="command", parser_class=MagicArgumentParser)
    r = sub.add_parser("run", help="run what is not up to date among the targets and their upstream "
                                   "(all tasks by default), and what depends on it")
    r.add_argument("targets", nargs="*")
    r.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    r.add_argument("--no-display", action="store_true", help="no live display")
    r.add_argument("--flow", default=None, metavar="FLOW", help="run this named workflow (default: all task cells)")
    r.add_argument("--all", action="store_true", help="run every task, also those that are up to date")
    r.add_argument("--force", action="store_true", help="run every task and ignore the disk cache")
    r.add_argument("--resume", nargs="?", const="last", default=None, metavar="RUN_ID",
                   help="re-run what did not succeed in that run (default: the last %%orch run)")
    g = sub.add_parser("graph", help="show the task graph")
    g.add_argument("--flow", default=None, metavar="FLOW")
    mm = sub.add_parser("mermaid", help="print the task graph as Mermaid text")
    mm.add_argument("--flow", default=None, metavar="FLOW")
    s = sub.add_parser("schedule", help="run the targets (all by default) every S seconds or on a cron")
    s.add_argument("targets", nargs="*")
    s.add_argument("--every", type=float, default=None, metavar="S")
    s.add_argument("--cron", default=None, metavar="EXPR")
    s.add_argument("--times", type=int, default=None, metavar="N")
    s.add_argument("--flow", default=None, metavar="FLOW")
    s.add_argument("--cancel", action="store_true", help="cancel this notebook's schedules")
    h = sub.add_parser("history", help="recorded runs, newest first")
    h.add_argument("--limit", type=int, default=20, metavar="N")
    sub.add_parser("list", help="tasks, dependencies, trigger rules, last states, durations and runs")
    why = sub.add_parser("why", help="why a task will run, or will be reused, by the next %%orch run")
    why.add_argument("name")
    show = sub.add_parser("show", help="print a task cell's source, or draw a past run (a run id)")
    show.add_argument("name", metavar="NAME_OR_RUN_ID")
    clear = sub.add_parser("clear", help="remove one task cell, or all of them")
    clear.add_argument("name", nargs="?")
    return p


@magics_class
class OrchMagics(Magics):
    """The magics; the notebook's workflow lives on this instance (one per shell)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.workflow = NotebookWorkflow()
        self.workflow.title = notebook_title(shell)
        self.parser = _orch_parser()
        self.schedules: list[Any] = []
        self.cell_id: str | None = None  # the id the front end sent with the running cell
        self._flows_registered: set[str] = set()  # this notebook's flows in nborch.workflows()

    def pre_run_cell(self, info: Any) -> None:
        """IPython's pre_run_cell event: remember the running cell's id (None if not sent)."""
        self.cell_id = getattr(info, "cell_id", None)

    @property
    def namespace(self) -> dict[str, Any]:
        """The notebook's namespace (the shell's ``user_ns``)."""
        assert self.shell is not None, "the magics are not registered with a shell"
        return self.shell.user_ns

    # -- %%task -------------------------------------------------------------------------------

    @_task_arguments
    @cell_magic
    def task(self, line: str, cell: str) -> None:
        """Define this cell as task NAME of the notebook's workflow. See ``%%task?``."""
        try:
            spec = parse_task_line(line)
        except DefinitionError as err:
            raise UsageError(f"%%task: {err}") from err
        name, options = spec.name, spec.options
        try:
            cell_task = compile_cell(name, cell, options=options, after=spec.after, flow=spec.flow,
                                     map_over=spec.map)
        except SyntaxError as err:  # the previous definition stays; lines count within the body
            err._nborch_cell = True  # type: ignore[attr-defined]  # shown short by the extension
            raise err.with_traceback(None) from None
        renamed = self.workflow.claim(self.cell_id, name)
        stale = self.workflow.define(cell_task)
        self._register_flows()
        deps = self.workflow.dependencies(name)
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        line_out = f"task {name}" + (f" <- {', '.join(deps)}" if deps else "")
        if spec.map is not None:
            line_out += f" [map {spec.map[0]} in {spec.map[1]}]"
        if spec.flow != "default":
            line_out += f" [flow {spec.flow}]"
        line_out += f" ({described})" if described else ""
        if renamed:
            line_out += f"; replaces task {renamed} (this cell defined it)"
            self.namespace.pop(renamed, None)
        if stale:
            line_out += f"; stale until re-run: {', '.join(stale)}"
        print(line_out)
        if spec.run:
            self.run_targets([name], flow=spec.flow)

    # -- %orch --------------------------------------------------------------------------------

    @line_magic
    def orch(self, line: str) -> Any:
        """``%orch run|graph|mermaid|list|show|clear``: see ``%orch -h``."""
        try:
            args = self.parser.parse_args(shlex.split(line))
        except SystemExit as exc:  # -h prints help and exits: not an error
            if exc.code in (0, None):
                return None
            raise
        if args.command is None:
            raise UsageError(
                "%orch: expected a command: run, graph, mermaid, list, why, show, clear, schedule or history. "
                "See '%orch -h'."
            )
        return getattr(self, f"cmd_{args.command}")(args)

    def cmd_run(self, args: Any) -> None:
        resume = args.resume
        if resume == "last":
            if self.workflow.last_run is None:
                raise UsageError("%orch run --resume: no earlier %orch run in this session; pass a run id "
                                 "(see %orch history)")
            resume = self.workflow.last_run.id
        memory = self.workflow.memory
        if args.all or args.force or resume:  # everything runs; what it did is still remembered
            memory = memory.without_reuse()
        self.run_targets(
            args.targets, flow=args.flow, max_concurrency=args.max_concurrency,
            display=not args.no_display, force=args.force or None, resume=resume, reuse=memory,
        )

    def cmd_graph(self, args: Any) -> Any:
        dag = self.dag(flow=args.flow)
        try:
            from ..display.dot import status_digraph
            from ..display.state import KnownTask
        except ImportError:  # a display that does not draw states: the plain graph
            return dag.graph()
        return status_digraph(dag, self.known(KnownTask, flow=args.flow))

    def known(self, make: Any, flow: str | None = None) -> dict[str, Any]:
        """Each task's last known state, and why it is stale (for %orch graph), made by ``make``."""
        KnownTask = make  # noqa: N806
        plan = self.plan(flow=flow)
        out: dict[str, Any] = {}
        memory = self.workflow.memory
        for name in self.workflow.cells:
            seen = memory.seen.get(name)
            out[name] = KnownTask(
                state=seen.state if seen else None, duration=seen.duration if seen else None,
                run_id=seen.run_id if seen else None, stale=plan.stale.get(name) if plan else None,
                reused=bool(seen and seen.reused), cached=bool(seen and seen.cached),
            )
        for name, seen in memory.seen.items():  # the items of --map cells (NAME:0...), counted on them
            head = item_base(name)
            if head is not None and head in out and seen.run_id == getattr(out[head], "run_id", None):
                out[name] = KnownTask(state=seen.state, duration=seen.duration, run_id=seen.run_id,
                                      reused=seen.reused, cached=seen.cached)
        return out

    def plan(self, targets: list[str] | None = None, flow: str | None = None) -> Any:
        """What the next incremental run would do (None when the workflow cannot be built)."""
        try:
            return self.workflow.plan(self.namespace, targets, flow)
        except DefinitionError:
            return None

    def cmd_mermaid(self, args: Any) -> None:
        print(self.dag(flow=args.flow).to_mermaid())

    def cmd_schedule(self, args: Any) -> Any:
        from ..runtime.schedule import schedule

        if args.cancel:
            active = [h for h in self.schedules if h.running]
            for h in active:
                h.cancel()
            self.schedules.clear()
            print(f"cancelled {len(active)} schedule(s)")
            return None
        if (args.every is None) == (args.cron is None):
            raise UsageError("%orch schedule: give exactly one of --every S or --cron EXPR (or --cancel)")
        dag = self.dag(args.targets, args.flow)
        try:
            handle = schedule(dag, every=args.every, cron=args.cron, times=args.times, name=args.flow or "notebook")
        except DefinitionError as err:
            raise UsageError(f"%orch schedule: {err}") from err
        self.schedules.append(handle)
        self.namespace["_orch_schedule"] = handle
        print(f"scheduled {', '.join(args.targets) or 'all tasks'} "
              f"{'every ' + format(args.every, 'g') + 's' if args.every is not None else 'on ' + repr(args.cron)}"
              f"{f' ({args.times} runs)' if args.times else ''}; the handle is _orch_schedule, "
              "%orch schedule --cancel stops it")
        return None

    def cmd_history(self, args: Any) -> Any:
        from ..store import history_rows

        return HistoryTable(history_rows(args.limit))

    def cmd_list(self, args: Any) -> Any:
        return TaskList(self.workflow, self.plan())

    def cmd_why(self, args: Any) -> None:
        name = args.name
        if name not in self.workflow.cells:
            raise UsageError(f"%orch why: no task cell is named {name!r}.{did_you_mean(name, self.workflow.cells)}")
        plan = self.plan([name])
        if plan is None:
            raise UsageError("%orch why: the workflow cannot be built; %orch run says why")
        print(explain(name, plan, self.workflow))

    def cmd_show(self, args: Any) -> Any:
        cell = self.workflow.cells.get(args.name)
        if cell is not None:
            print(cell.source.rstrip("\n"))
            return None
        try:
            record = Run.load(args.name)
        except NborchError as err:
            raise UsageError(
                f"%orch show: {args.name!r} is neither a task cell nor a recorded run ({err})"
            ) from err
        return record  # displayed as the past run: its graph in the recorded states, the table

    def cmd_clear(self, args: Any) -> None:
        try:
            removed = self.workflow.remove(args.name)
        except DefinitionError as err:
            raise UsageError(f"%orch clear: {err}") from err
        self._register_flows()
        print(f"removed {', '.join(removed)}" if removed else "no task cells to remove")

    def _register_flows(self) -> None:
        """Keep ``nborch.workflows()`` listing this notebook's flows (each built as it is now)."""
        from ..core.registry import register, unregister

        for flow in self.workflow.flows():
            try:
                register(flow, self.workflow.build(self.namespace, flow=flow))
            except DefinitionError:  # not buildable yet (an --after name still to come)
                pass
        for name in self._flows_registered - set(self.workflow.flows()):
            unregister(name)
        self._flows_registered = set(self.workflow.flows())

    # -- running ------------------------------------------------------------------------------

    def dag(self, targets: list[str] | None = None, flow: str | None = None) -> Any:
        if not self.workflow.cells:
            raise UsageError("%orch: no task cells yet. Define one with %%task NAME at the top of a cell.")
        try:
            return self.workflow.build(self.namespace, targets, flow)
        except DefinitionError as err:
            raise UsageError(f"%orch: {err}") from err

    def run_targets(self, targets: list[str], flow: str | None = None, **options: Any) -> Run:
        dag = self.dag(targets, flow)
        options = {k: v for k, v in options.items() if v is not None}
        run_id = options.setdefault("run_id", uuid.uuid4().hex[:12])
        options.setdefault("reuse", self.workflow.memory)  # incremental unless told otherwise
        try:
            record = run_node(dag, **options)
        except DefinitionError as err:
            raise UsageError(f"%orch run: {err}") from err
        except (KeyboardInterrupt, asyncio.CancelledError) as stop:  # stopped: its record still counts
            stopped = last_run()
            if stopped is not None and stopped.id == run_id:
                self.workflow.last_run = stopped
                self.namespace["_orch_run"] = stopped
                if isinstance(stop, asyncio.CancelledError):  # the Cancel button: one short line
                    stop._nborch_run = True  # type: ignore[attr-defined]
                    stop.args = (failure_message(stopped, self.workflow.cells).split("\n")[0]
                                 + "; the record is _orch_run",)
            raise
        except SystemExit:
            # A task called sys.exit(): the engine records it FAILED, then re-raises it. It fails
            # the run like any task error, instead of ending the command (with status 0 for
            # sys.exit(0)) or reaching the cell without the run's record.
            record = last_run()  # type: ignore[assignment]
            if record is None or record.id != run_id:
                raise
        self.workflow.last_run = record
        cells = self.workflow.cells
        for name, value in record.results.items():  # child tasks are not pushed
            if name in cells:
                self.namespace[name] = value
                self.workflow.stale.discard(name)
        self.namespace["_orch_run"] = record
        if not record.ok:
            raise CellTaskFailed(failure_message(record, cells), record, record.error)
        return record


def notebook_title(shell: Any) -> str:
    """The name runs of this notebook are recorded under: its file's name when the kernel knows
    it (Jupyter servers pass the session's path as JPY_SESSION_NAME), else "notebook"."""
    path = os.environ.get("JPY_SESSION_NAME") or getattr(shell, "user_ns", {}).get("__session__")
    if isinstance(path, str) and path.strip():
        return Path(path).stem or "notebook"
    return "notebook"
