"""The ``nborch`` command (also ``python -m nborch``).

``run`` and ``graph`` work on a notebook file (``notebook/headless.py``), ``history`` lists the
recorded runs, ``demo`` runs the built-in workflow. Exit status (``EXIT_CODES``): 0 success, 1 a
task or a cell failed, 2 bad usage or a notebook that does not exist or cannot be read (argparse
already exits 2 on bad options), 3 ``--timeout`` passed, 130 interrupted. Expected failures
print one short message, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXIT_CODES", "main", "parse_param"]

GRAPH_SUFFIXES = (".svg", ".png", ".mmd")
EXIT_CODES = {0: "success", 1: "a task or a cell failed", 2: "bad usage, or an input that cannot be read",
              3: "timed out (--timeout)", 130: "interrupted (Ctrl-C, SIGINT)"}
RUN_EPILOG = """\
positional arguments: the first is the notebook to run. Without -o and --output-dir, a second
one ending in .ipynb (or -) is OUT, the executed notebook to write, when it does not exist yet
or was written by an earlier run (nborch run or papermill); otherwise every .ipynb given is a
notebook to run. With --output-dir, every .ipynb given is a notebook to run. Several notebooks
run in order (side by side with --parallel), each in its own process with the same options,
each written to --output-dir under its own name; a failed one does not stop the others unless
--fail-fast. The exit status is then the first non-zero status in the order given. Other
positionals are task names, as --tasks.

exit status:
""" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> ``(NAME, value)``: a Python literal when VALUE parses as one, else the
    string (papermill's convention, so ``-p n=3`` is an int and ``-p city=Oslo`` a string)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME a Python identifier, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = raw
    return name, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nborch", description="A notebook-native orchestrator.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run a notebook headless: its cells, then its task graph",
        description="Run a notebook without Jupyter: the ordinary cells in order (an IPython shell),\n"
        "then the %%task graph with console progress, then the cells that read task values.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("notebook", metavar="IN.ipynb")
    run.add_argument(
        "targets", nargs="*", default=[], metavar="OUT.ipynb",
        help="where to write the executed notebook (- for stdout); see below",
    )
    run.add_argument("-o", "--output", default=None, metavar="OUT.ipynb",
                     help="write the executed notebook here (- for stdout), also when the run fails")
    run.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                     help="run these tasks and their upstream (default: all)")
    run.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                     help="a deadline for the whole run: cancelled when it passes (exit status 3)")
    run.add_argument("--resume", nargs="?", const="last", default=None, metavar="RUN_ID",
                     help="re-run only the tasks that did not succeed in that run (default: the last run of "
                     "this notebook file) and what depends on them; the others keep their values")
    run.add_argument("--from", dest="rerun_from", default=None, metavar="TASK",
                     help="re-run TASK and everything downstream of it (of the --resume run, default: the last)")
    run.add_argument("--force", action="store_true", help="ignore the disk cache: every task that runs computes")
    run.add_argument("--log-output", action="store_true",
                     help="stream cell and task output to stderr as it happens")
    run.add_argument("--cwd", default=None, metavar="DIR", help="run the notebook's code in DIR")
    run.add_argument("--flow", default=None, metavar="FLOW", help="run this named workflow only")
    run.add_argument(
        "-p", "--parameter", dest="params", action="append", type=parse_param, default=[],
        metavar="NAME=VALUE",
        help="override a value of the cell tagged 'parameters' (a Python literal, else a string); repeatable. "
        "Later sources win: -f files, then -y, then -p, then -r (papermill's order)",
    )
    run.add_argument(
        "-f", "--parameters-file", "--parameters_file", dest="param_files", action="append", default=[],
        metavar="FILE", help="parameters from a YAML or JSON file (YAML needs PyYAML: "
        'pip install "nborch[yaml]"); repeatable',
    )
    run.add_argument("-y", "--parameters-yaml", "--parameters_yaml", dest="param_yamls", action="append",
                     default=[], metavar="YAML", help="parameters as a YAML string; repeatable")
    run.add_argument("-r", "--parameters-raw", "--parameters_raw", dest="param_raws", action="append", nargs=2,
                     default=[], metavar=("NAME", "VALUE"), help="a parameter set to the string VALUE; repeatable")
    run.add_argument("--help-notebook", action="store_true",
                     help="list the notebook's parameters (its 'parameters' cell) with their defaults; run nothing")
    run.add_argument("--max-concurrency", type=_positive, default=None, metavar="N")
    run.add_argument("--output-dir", default=None, metavar="DIR",
                     help="write each notebook's executed notebook to DIR under its own file name")
    run.add_argument("--parallel", action="store_true", help="run several notebooks side by side (a process each)")
    run.add_argument("--fail-fast", action="store_true",
                     help="with several notebooks: stop at the first that fails (--parallel: interrupt the others)")

    graph = sub.add_parser(
        "graph", help="draw a notebook's task graph without running it",
        description="Write the task graph of a notebook's %%task cells to a file; no cell runs.",
    )
    graph.add_argument("notebook", metavar="NOTEBOOK.ipynb")
    graph.add_argument(
        "-o", "--output", required=True, metavar="FILE",
        help="dag.svg, dag.png or dag.mmd (Mermaid text)",
    )
    graph.add_argument("--flow", default=None, metavar="FLOW", help="draw this named workflow only")

    history = sub.add_parser("history", help="recorded runs, newest first")
    history.add_argument("--limit", type=_positive, default=20, metavar="N")

    demo = sub.add_parser("demo", help="run a built-in workflow that shows progress for a few seconds")
    demo.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    return p


def _error(message: str) -> None:
    print(f"nborch: {message}", file=sys.stderr, flush=True)


def _is_notebook_arg(text: str) -> bool:
    return text == "-" or text.lower().endswith(".ipynb")


def _written_by_a_run(path: Path) -> bool:
    """Whether ``path`` is an executed notebook an earlier ``nborch run`` or papermill wrote."""
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and (
        isinstance(meta.get("nborch"), dict) and "run_id" in meta["nborch"]
        or isinstance(meta.get("papermill"), dict) and "input_path" in meta["papermill"]
    )


def split_positionals(first: str, rest: list[str], *, output: str | None = None,
                      output_dir: str | None = None) -> tuple[list[str], str | None, list[str]]:
    """``nborch run``'s positionals -> (notebooks to run, OUT or None, task names); the rule is
    in ``RUN_EPILOG``. Raises NotebookFailed (exit status 2) for an impossible combination."""
    from .notebook.headless import NotebookFailed

    notebooks = [first, *[r for r in rest if _is_notebook_arg(r)]]
    targets = [r for r in rest if not _is_notebook_arg(r)]
    out = None
    if output is None and output_dir is None and len(notebooks) == 2:
        second = Path(notebooks[1])
        if notebooks[1] == "-" or not second.exists() or _written_by_a_run(second):
            out = notebooks.pop()
    if "-" in notebooks:
        raise NotebookFailed("'-' (stdout) can only be the executed notebook of a single run: "
                             "nborch run IN.ipynb - (or -o -)", 2)
    return notebooks, out, targets


def _output_dir(text: str) -> Path:
    """``--output-dir DIR``, created when missing (its parent must exist)."""
    from .notebook.headless import NotebookFailed

    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise NotebookFailed(f"--output-dir {text!r}: it is not a folder", 2)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise NotebookFailed(f"--output-dir {text!r}: cannot create it ({err.strerror or err})", 2) from None
    return folder


def _child_options(args: argparse.Namespace, params: dict[str, Any], targets: list[str]) -> list[str]:
    """The options each notebook of several gets: the same as this run's, parameters merged."""
    from .notebook.params import python_literal

    opts: list[str] = []
    for name, value in params.items():  # strings raw, so that they stay strings exactly
        opts += ["-r", name, value] if isinstance(value, str) else ["-p", f"{name}={python_literal(value)}"]
    if targets or args.tasks:
        opts += ["--tasks", *targets, *args.tasks]
    for flag, value in (("--flow", args.flow), ("--max-concurrency", args.max_concurrency),
                        ("--timeout", args.timeout), ("--from", args.rerun_from)):
        if value is not None:
            opts += [flag, str(value)]
    if args.cwd is not None:
        opts += ["--cwd", str(Path(args.cwd).resolve())]
    if args.resume is not None:
        opts += ["--resume"] if args.resume == "last" else ["--resume", args.resume]
    opts += [flag for flag, on in (("--force", args.force), ("--log-output", args.log_output)) if on]
    return opts


def _run_several(args: argparse.Namespace, notebooks: list[str], params: dict[str, Any], targets: list[str]) -> int:
    from .notebook.batch import Job, output_paths, run_batch
    from .notebook.headless import NotebookFailed

    if args.output is not None:
        raise NotebookFailed("-o names the executed notebook of one run; with several notebooks give "
                             "--output-dir DIR", 2)
    if args.resume not in (None, "last"):
        raise NotebookFailed(f"--resume {args.resume}: a run id names one notebook's run; with several "
                             "notebooks use --resume alone (each resumes its own last run)", 2)
    try:
        outputs = output_paths(notebooks, args.output_dir)
    except ValueError as err:
        raise NotebookFailed(str(err), 2) from None
    if args.output_dir is not None:
        _output_dir(args.output_dir)
    jobs = [Job(nb, out) for nb, out in zip(notebooks, outputs, strict=True)]
    return run_batch(jobs, _child_options(args, params, targets), parallel=args.parallel, fail_fast=args.fail_fast)


def _check_notebook_output(text: str) -> None:
    """OUT (the executed notebook) is writable in principle: not a directory, in a folder that exists."""
    from .notebook.headless import NotebookFailed

    if text == "-":
        return
    target = Path(text)
    if target.is_dir():
        raise NotebookFailed(f"cannot write {text!r}: it is a directory", 2)
    folder = target.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise NotebookFailed(f"cannot write {text!r}: the folder {str(folder)!r} {problem}", 2)


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    from .notebook.headless import NotebookFailed
    from .notebook.params import ParameterError, collect_parameters

    try:
        return collect_parameters(args.param_files, args.param_yamls, args.params,
                                  [tuple(pair) for pair in args.param_raws])
    except ParameterError as err:
        raise NotebookFailed(str(err), 2) from None


def cmd_help_notebook(path: str) -> int:
    from .notebook.ipynb import read_notebook
    from .notebook.params import notebook_help

    cells = read_notebook(path)
    cell = next((c for c in cells if c.is_code and "parameters" in c.tags), None)
    print(notebook_help(path, cell.source if cell is not None else None))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .notebook.headless import NotebookFailed, run_notebook

    if args.help_notebook:
        return cmd_help_notebook(args.notebook)
    params = _parameters(args)
    notebooks, out, targets = split_positionals(args.notebook, args.targets, output=args.output,
                                                output_dir=args.output_dir)
    if len(notebooks) > 1:
        return _run_several(args, notebooks, params, targets)
    output = args.output if args.output is not None else out
    if args.output_dir is not None:
        if args.output is not None:
            raise NotebookFailed("give -o OUT or --output-dir DIR, not both", 2)
        output = str(_output_dir(args.output_dir) / Path(notebooks[0]).name)
    if output is not None:
        _check_notebook_output(output)
    try:
        run_notebook(
            notebooks[0], [*targets, *args.tasks],
            flow=args.flow, params=params, max_concurrency=args.max_concurrency,
            timeout=args.timeout, output=output, log_output=args.log_output, cwd=args.cwd,
            resume=args.resume, rerun_from=args.rerun_from, force=args.force,
        )
    except NotebookFailed as err:
        if output not in (None, "-") and err.exit_code != 2:
            raise NotebookFailed(f"{err}\n  the executed notebook is in {output}", err.exit_code) from None
        raise
    return 0


def _check_output(text: str) -> Path:
    """The graph file to write, checked before any work: a known suffix, not a directory, in a
    folder that exists. Raises NotebookFailed (exit status 2) with the reason."""
    from .notebook.headless import NotebookFailed

    target = Path(text)
    suffix = target.suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        got = f"suffix {suffix!r}" if suffix else "no suffix"
        raise NotebookFailed(
            f"cannot write {text!r}: nborch graph writes .svg, .png or .mmd files, and {text!r} has {got}", 2
        )
    if target.is_dir():
        raise NotebookFailed(f"cannot write {text!r}: it is a directory", 2)
    folder = target.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise NotebookFailed(f"cannot write {text!r}: the folder {str(folder)!r} {problem}", 2)
    return target


def cmd_graph(args: argparse.Namespace) -> int:
    from .notebook.headless import NotebookFailed, notebook_graph

    target = _check_output(args.output)
    dag = notebook_graph(args.notebook, flow=args.flow)
    try:
        written = dag.visualize(args.output)
    except OSError as err:
        if err.filename is None or Path(err.filename) != target:
            raise
        raise NotebookFailed(f"cannot write {args.output!r}: {err.strerror or err}", 2) from None
    print(f"wrote {written}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """A table of recorded runs; reads the store's rows only (no cached value is unpickled)."""
    from rich.console import Console
    from rich.table import Table

    from .store import HISTORY_HEAD, default_home, get_store, history_rows

    home = default_home()
    if not (home / "nborch.db").exists():  # do not create a store just to say it is empty
        print(f"no runs recorded in {home}")
        return 0
    rows = history_rows(args.limit, get_store())
    if not rows:
        print(f"no runs recorded in {home}")
        return 0
    table = Table(title=f"nborch runs in {home} (newest first)", title_justify="left")
    for col in HISTORY_HEAD:
        table.add_column(col, no_wrap=col != "tasks")
    colors = {"succeeded": "green", "failed": "bold red", "cancelled": "magenta", "running": "blue"}
    for run_id, name, state, started, duration, counts in rows:
        table.add_row(run_id, name, f"[{colors.get(state, 'white')}]{state}[/]", started, duration, counts)
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: 80 columns would fold every row
        console = Console(highlight=False, width=max(console.width, 160))
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo(max_concurrency=args.max_concurrency)
    from .core.errors import NborchError
    from .notebook.headless import NotebookFailed
    from .notebook.ipynb import NotebookError

    commands = {"run": cmd_run, "graph": cmd_graph, "history": cmd_history}
    try:
        return commands[args.command](args)
    except NotebookError as err:  # missing, unreadable, not a notebook: the caller's mistake
        _error(str(err))
        return 2
    except NotebookFailed as err:
        _error(str(err))
        return err.exit_code
    except NborchError as err:  # e.g. Graphviz's dot missing, a store that cannot be opened
        _error(str(err))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    finally:
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
