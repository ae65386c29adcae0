"""The ``nborch`` command (also ``python -m nborch``).

``run`` and ``graph`` work on a notebook file (``notebook/headless.py``), ``history`` lists the
recorded runs, ``demo`` runs the built-in workflow. Exit status: 0 success, 1 a task or a cell
failed, 2 bad usage or a notebook that does not exist or cannot be read (argparse already
exits 2 on bad options). Expected failures print one short message, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_param"]

GRAPH_SUFFIXES = (".svg", ".png", ".mmd")


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
        description="Run a notebook without Jupyter: the ordinary cells in order (an IPython shell), "
        "then the %%task graph with console progress, then the cells that read task values.",
    )
    run.add_argument("notebook", metavar="NOTEBOOK.ipynb")
    run.add_argument(
        "targets", nargs="*", default=[], metavar="TARGET",
        help="run these tasks and their upstream (default: all)",
    )
    run.add_argument("--flow", default=None, metavar="FLOW", help="run this named workflow only")
    run.add_argument(
        "-p", "--parameter", dest="params", action="append", type=parse_param, default=[],
        metavar="NAME=VALUE",
        help="override a value of the cell tagged 'parameters' (a Python literal, else a string); repeatable",
    )
    run.add_argument("--max-concurrency", type=_positive, default=None, metavar="N")

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


def cmd_run(args: argparse.Namespace) -> int:
    from .notebook.headless import run_notebook

    run_notebook(
        args.notebook, args.targets,
        flow=args.flow, params=dict(args.params), max_concurrency=args.max_concurrency,
    )
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
    from .errors import NborchError
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
