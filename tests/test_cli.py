"""The ``nborch`` command over notebooks, in real subprocesses (``python -m nborch``).

Each notebook run is a fresh interpreter that imports IPython (about a second), so the module
starts them all up front, a few at a time, and the tests read their results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("IPython")

from nborch.cli import main, parse_param  # noqa: E402
from nborch.notebook.ipynb import NotebookError, read_notebook  # noqa: E402
from nborch.store import SqliteStore, history, load_run  # noqa: E402

DATA = Path(__file__).parent / "data"
PIPELINE = DATA / "pipeline.ipynb"
NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
EXAMPLES = ["01_quickstart", "02_cell_magics", "03_resilience", "04_seed_gallery"]
def _notebook_json(cells: list[object], **top: object) -> bytes:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells, **top}).encode()


# name -> file content (None: a directory), each with the one line `nborch run` / `graph` must print
BAD_NOTEBOOKS: dict[str, bytes | None] = {
    "not_json": b"just some notes\n",
    "not_a_notebook": b"[1, 2, 3]",
    "no_cells": b'{"nbformat": 4, "metadata": {}}',
    "cells_not_a_list": _notebook_json({"a": 1}),  # type: ignore[arg-type]
    "cell_not_an_object": _notebook_json([42]),
    "cell_without_source": _notebook_json([{"cell_type": "code", "metadata": {}, "outputs": []}]),
    "source_not_text": _notebook_json([{"cell_type": "code", "metadata": {}, "source": 7}]),
    "directory": None,
    "unreadable": b"{}",
    "empty": b"",
    "nbformat_3": b'{"nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}]}',
    "not_utf8": b'{"cells": "\xff"}',
    "deeply_nested": b"[" * 100_000 + b"]" * 100_000,
}
BAD_NOTEBOOK_MESSAGES = {
    "not_json": "is not a notebook: invalid JSON at line 1, column 1 (Expecting value)",
    "not_a_notebook": "is not a notebook: JSON without a 'cells' list",
    "no_cells": "is not a notebook: JSON without a 'cells' list",
    "cells_not_a_list": "is not a notebook: JSON without a 'cells' list",
    "cell_not_an_object": "is not a valid notebook: cell 1 has no cell_type",
    "cell_without_source": "is not a valid notebook: cell 1 has no 'source'",
    "source_not_text": "is not a valid notebook: cell 1: a source must be a string or a list of strings, got int",
    "directory": "is a directory, not a notebook file",
    "unreadable": "cannot read",
    "empty": "is not a notebook: the file is empty",
    "nbformat_3": "is an nbformat 3 notebook; nborch reads nbformat 4",
    "not_utf8": "is not a notebook: it is not UTF-8 text",
    "deeply_nested": "is not a notebook: its JSON is nested too deeply",
}
BAD_USAGE: list[list[object]] = [
    [],
    ["run"],
    ["frobnicate"],
    ["run", PIPELINE, "-p", "novalue"],
    ["run", PIPELINE, "--max-concurrency", "0"],
    ["graph", PIPELINE],
    ["history", "--limit", "x"],
]


@dataclass
class Result:
    code: int
    out: str
    err: str
    cwd: Path

    @property
    def home(self) -> Path:
        return self.cwd / ".nborch"

    def runs(self) -> list:
        """The runs this invocation recorded, newest first."""
        return history(None, store=SqliteStore(self.home))


# Root reads and writes through any permission bits: drop that power so "unreadable" means it.
_NO_OVERRIDE = "-dac_override,-dac_read_search"
AS_USER = (["setpriv", f"--inh-caps={_NO_OVERRIDE}", f"--bounding-set={_NO_OVERRIDE}"]
           if os.geteuid() == 0 and shutil.which("setpriv") else [])
CAN_TEST_PERMISSIONS = os.geteuid() != 0 or bool(AS_USER)


def nborch(*args: object, cwd: Path) -> Result:
    """``python -m nborch ARGS`` in ``cwd``, with its own store (NBORCH_HOME=cwd/.nborch)."""
    env = {**os.environ, "NBORCH_HOME": str(cwd / ".nborch"), "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [*AS_USER, sys.executable, "-m", "nborch", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, cwd)


def jobs(tmp: Path) -> dict[str, list[object]]:
    text_file = tmp / "notes.ipynb"
    text_file.write_text("just some notes\n")
    json_file = tmp / "data.ipynb"
    json_file.write_text(json.dumps({"rows": [1, 2, 3]}))
    deferred = tmp / "deferred.ipynb"
    deferred.write_text(json.dumps(notebook(
        "%load_ext nborch",
        "%%task total\n21 * 2",
        "print('report starts')\nprint('total is', total)",
        "def late():\n    return total\nprint('calling late')\nprint('late says', late())",
        "print('after the report')",
    )))
    builtin_name = tmp / "builtin_name.ipynb"
    builtin_name.write_text(json.dumps(notebook(
        "%load_ext nborch",
        "print('FIRST CELL RAN')",
        "%%task len\n[1]",
        "%%task total\nlen([1, 2])",
    )))
    binds = tmp / "binds.ipynb"
    binds.write_text(json.dumps(notebook(
        "%load_ext nborch",
        "%%task total\n21 * 2",
        "import asyncio\nx = await asyncio.sleep(0, total)",
        "print('x is', x)",
        "def setup():\n    global cfg\n    cfg = total + 1\nsetup()",
        "print('cfg is', cfg)",
    )))
    exits = tmp / "exits.ipynb"
    exits.write_text(json.dumps(notebook(
        "%load_ext nborch",
        "%%task fine\n1",
        "%%task quits\nimport sys\nsys.exit(0)",
        "%%task after_quit\nquits",
        "%orch run",
        "print('AFTER THE RUN', fine)",
    )))
    exiting_cell = tmp / "exiting_cell.ipynb"
    exiting_cell.write_text(json.dumps(notebook("print('FIRST')", "import sys\nsys.exit(0)", "print('NEVER')")))
    unprintable = "class Unprintable(Exception):\n    def __str__(self):\n        raise KeyError('no str')"
    unprintable_cell = tmp / "unprintable_cell.ipynb"
    unprintable_cell.write_text(json.dumps(notebook(unprintable, "x = 1\nraise Unprintable()")))
    unprintable_task = tmp / "unprintable_task.ipynb"
    unprintable_task.write_text(json.dumps(notebook(
        "%load_ext nborch", unprintable, "%%task bad\nraise Unprintable()"
    )))
    keyword_name = tmp / "keyword_name.ipynb"
    keyword_name.write_text(json.dumps(notebook("%%task for\n1")))
    for name, content in BAD_NOTEBOOKS.items():
        path = tmp / f"{name}.ipynb"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
            if name == "unreadable":
                path.chmod(0)
    readonly = tmp / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    (tmp / "taken.mmd").mkdir()
    out = {
        "default": ["run", PIPELINE],
        "deferred": ["run", deferred],
        "params": ["run", PIPELINE, "-p", "n=5", "-p", "label=hello", "-p", "extra=[1, 2]"],
        "target": ["run", PIPELINE, "numbers"],
        "flow": ["run", PIPELINE, "--flow", "report"],
        "failing_task": ["run", DATA / "failing_task.ipynb"],
        "failing_cell": ["run", DATA / "failing_cell.ipynb", "-p", "q=1"],
        "missing": ["run", tmp / "nope.ipynb"],
        "bad_option": ["run", PIPELINE, "--bogus"],
        "text_file": ["run", text_file],
        "json_file": ["graph", json_file, "-o", "dag.mmd"],
        "unknown_target": ["run", PIPELINE, "nosuchtask"],
        "unknown_flow": ["run", PIPELINE, "--flow", "nosuchflow"],
        "graph_mmd": ["graph", PIPELINE, "-o", "dag.mmd"],
        "graph_flow": ["graph", PIPELINE, "-o", "report.mmd", "--flow", "report"],
        "graph_svg": ["graph", PIPELINE, "-o", "dag.svg"],
        "graph_png": ["graph", PIPELINE, "-o", "dag.png"],
        "builtin_name_run": ["run", builtin_name],
        "binds": ["run", binds],
        "task_exits": ["run", exits],
        "cell_exits": ["run", exiting_cell],
        "unprintable_cell": ["run", unprintable_cell],
        "unprintable_task": ["run", unprintable_task],
        "builtin_name_graph": ["graph", builtin_name, "-o", "dag.mmd"],
        "keyword_name_graph": ["graph", keyword_name, "-o", "dag.mmd"],
    }
    for name in BAD_NOTEBOOKS:
        out[f"bad_run_{name}"] = ["run", tmp / f"{name}.ipynb"]
        out[f"bad_graph_{name}"] = ["graph", tmp / f"{name}.ipynb", "-o", "dag.mmd"]
    out["out_directory"] = ["graph", PIPELINE, "-o", tmp / "taken.mmd"]
    out["out_no_folder"] = ["graph", PIPELINE, "-o", tmp / "nofolder" / "dag.svg"]
    out["out_readonly"] = ["graph", PIPELINE, "-o", readonly / "dag.mmd"]
    out["out_suffix"] = ["graph", PIPELINE, "-o", "dag.txt"]
    for name in EXAMPLES:
        if (NOTEBOOKS / f"{name}.ipynb").exists():
            out[name] = ["run", NOTEBOOKS / f"{name}.ipynb"]
    return out


def notebook(*sources: str) -> dict[str, object]:
    cells = [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": None}
             for src in sources]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    tmp = tmp_path_factory.mktemp("cli")
    todo = jobs(tmp)
    cwds = {key: tmp_path_factory.mktemp(key) for key in todo}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(nborch, *args, cwd=cwds[key]) for key, args in todo.items()}
        return {key: f.result() for key, f in futures.items()}


def no_traceback(r: Result) -> None:
    assert "Traceback" not in r.err and "Traceback" not in r.out, r.err


# -- run --------------------------------------------------------------------------------------------


def test_run_executes_cells_then_the_task_graph(results):
    r = results["default"]
    assert r.code == 0, r.err
    assert "RESULT total=5 label=base" in r.out  # a cell after %orch run reads the task values
    assert "SUMMARY AGAIN total=5 label=base True None" in r.out
    assert "3 succeeded" in r.err  # the summary table (rich, on stderr)
    no_traceback(r)


def test_cells_that_read_task_values_wait_for_the_graph_and_run_once(results):
    r = results["deferred"]
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    # a read seen in the code: the cell waits before anything in it runs
    assert lines.count("report starts") == 1 and "total is 42" in lines
    # a read inside a function it calls: it stops on the NameError, waits, runs again
    assert "late says 42" in lines
    # cells that do not read task values run in order, before the graph
    assert lines.index("after the report") < lines.index("report starts")


def test_cells_reading_what_a_waiting_cell_binds_wait_too(results):
    r = results["binds"]
    assert r.code == 0, r.err
    # bound by a top-level await, and through `global` in a function the waiting cell calls
    assert r.out.splitlines()[-2:] == ["x is 42", "cfg is 43"]


def test_parameters_override_the_parameters_cell(results):
    r = results["params"]
    assert r.code == 0, r.err
    assert "RESULT total=30 label=hello" in r.out
    # a name the parameters cell does not assign: a warning, and it is set anyway (as papermill does)
    assert "-p extra" in r.err and "does not assign 'extra'" in r.err
    assert "SUMMARY AGAIN total=30 label=hello True [1, 2]" in r.out


def test_the_run_is_recorded_with_the_parameter_applied(results):
    runs = results["params"].runs()
    assert [run.name for run in runs] == ["pipeline"]
    run = runs[0]
    assert run.recorded_state == "succeeded"
    assert {name: state.value for name, state in run.states.items()} == {
        "numbers": "succeeded", "total": "succeeded", "caption": "succeeded",
    }
    # `total --cache`: its value is stored with the run, and Run.load brings it back
    assert load_run(run.id, SqliteStore(results["params"].home)).results["total"] == 30


def test_targets_run_with_their_upstream_only(results):
    r = results["target"]
    assert r.code == 0, r.err
    assert set(r.runs()[0].states) == {"numbers"}
    # the cells reading `total` wait for it, then are skipped with a note: it was not run
    assert "cell 10 skipped" in r.err and "RESULT" not in r.out


def test_flow_runs_one_named_workflow(results):
    r = results["flow"]
    assert r.code == 0, r.err
    run = r.runs()[0]
    assert run.name == "pipeline:report" and set(run.states) == {"caption"}


def test_failing_task_exits_1_with_the_short_block(results):
    r = results["failing_task"]
    assert r.code == 1
    assert "task 'boom' failed: ValueError: bad value 2" in r.err
    assert "line 2: raise ValueError" in r.err
    assert "not run (upstream failed): after_boom" in r.err
    assert "_orch_run" not in r.err  # the notebook hint means nothing on a command line
    assert "AFTER" not in r.out
    no_traceback(r)
    assert r.runs()[0].recorded_state == "failed"


def test_a_task_calling_sys_exit_fails_the_run_and_exits_1(results):
    r = results["task_exits"]
    assert r.code == 1, r.err
    assert "nborch: task 'quits' failed: SystemExit: 0\n" in r.err
    assert "  cell 'quits', line 2: sys.exit(0)\n" in r.err
    assert "not run (upstream failed): after_quit" in r.err
    assert "AFTER THE RUN" not in r.out
    no_traceback(r)
    run = r.runs()[0]
    assert run.recorded_state == "failed" and run.states["fine"].value == "succeeded"


def test_an_ordinary_cell_calling_sys_exit_fails_like_any_cell(results):
    r = results["cell_exits"]
    assert r.code == 1, r.err
    assert r.out == "FIRST\n"
    assert r.err == "nborch: cell 2 failed: SystemExit: 0\n  line 2: sys.exit(0)\n"  # no IPython hint on exit()


def test_an_exception_whose_str_raises_is_reported_as_traceback_shows_it(results):
    r = results["unprintable_cell"]
    assert r.code == 1
    assert r.err == "nborch: cell 2 failed: Unprintable: <exception str() failed>\n  line 2: raise Unprintable()\n"
    r = results["unprintable_task"]
    assert r.code == 1
    assert "nborch: task 'bad' failed: Unprintable: <exception str() failed>\n  cell 'bad', line 1" in r.err


def test_failing_cell_exits_1_with_cell_exception_and_line(results):
    r = results["failing_cell"]
    assert r.code == 1
    assert "FIRST CELL RAN" in r.out and "NEVER" not in r.out
    assert "cell 2 failed: ZeroDivisionError: division by zero" in r.err
    assert "line 2: return 10 / v" in r.err
    assert "no cell is tagged 'parameters'" in r.err  # -p q=1 with no parameters cell
    no_traceback(r)


def test_a_builtin_task_name_fails_its_cell_headless_as_in_a_notebook(results):
    r = results["builtin_name_run"]
    assert r.code == 1, r.err
    assert "FIRST CELL RAN" in r.out  # the cells before it ran, as Run All does
    assert ("nborch: cell 3 (%%task len) failed: UsageError: %%task: 'len' is a built-in name: a task named "
            "'len' would shadow the built-in") in r.err
    assert not r.home.exists()  # no task ran
    no_traceback(r)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("builtin_name_graph", "nborch: cell 3 (%%task len): %%task: 'len' is a built-in name"),
        ("keyword_name_graph", "nborch: cell 1 (%%task for): %%task: 'for' is a Python keyword"),
    ],
)
def test_graph_refuses_keyword_and_builtin_task_names(results, key, message):
    r = results[key]
    assert r.code == 1, r.err
    assert r.err.startswith(message) and len(r.err.splitlines()) == 1, r.err
    assert not (r.cwd / "dag.mmd").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "does not exist"),
        ("text_file", "is not a notebook: invalid JSON"),
        ("json_file", "is not a notebook"),
        ("unknown_target", "no task cell is named 'nosuchtask'"),
        ("unknown_flow", "no task cell is in flow 'nosuchflow'"),
    ],
)
def test_unreadable_notebooks_and_bad_names_exit_2(results, key, message):
    r = results[key]
    assert r.code == 2, r.err
    assert message in r.err
    assert r.out == ""
    no_traceback(r)


def one_line(r: Result) -> str:
    assert r.err.endswith("\n") and r.err.count("\n") == 1, r.err
    assert r.err.startswith("nborch: "), r.err
    return r.err[len("nborch: "):-1]


@pytest.mark.parametrize("command", ["run", "graph"])
@pytest.mark.parametrize("name", list(BAD_NOTEBOOKS))
def test_a_bad_notebook_is_one_line_and_exit_2(results, command, name):
    if name == "unreadable" and not CAN_TEST_PERMISSIONS:
        pytest.skip("running as root without setpriv: permission bits do not apply")
    r = results[f"bad_{command}_{name}"]
    assert r.code == 2, r.err
    line = one_line(r)
    assert f"{name}.ipynb" in line and BAD_NOTEBOOK_MESSAGES[name] in line, line  # the file, and why
    assert r.out == "" and not r.home.exists()  # nothing ran
    assert not (r.cwd / "dag.mmd").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("out_directory", r"^cannot write '.*taken\.mmd': it is a directory$"),
        ("out_no_folder", r"^cannot write '.*dag\.svg': the folder '.*nofolder' does not exist$"),
        ("out_readonly", r"^cannot write '.*readonly/dag\.mmd': Permission denied$"),
        ("out_suffix", (r"^cannot write 'dag\.txt': nborch graph writes \.svg, \.png or \.mmd files, and "
                        r"'dag\.txt' has suffix '\.txt'$")),
    ],
)
def test_a_bad_output_path_is_one_line_and_exit_2(results, key, message):
    if key == "out_readonly" and not CAN_TEST_PERMISSIONS:
        pytest.skip("running as root without setpriv: permission bits do not apply")
    r = results[key]
    assert r.code == 2, r.err
    assert re.match(message, one_line(r)), r.err
    assert r.out == ""


def test_bad_option_exits_2(results):
    r = results["bad_option"]
    assert r.code == 2
    assert "usage: nborch" in r.err and "--bogus" in r.err
    assert not r.home.exists()  # nothing ran


@pytest.mark.parametrize("args", BAD_USAGE)
def test_bad_usage_exits_2(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # in process: argparse exits before anything is imported or run
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    assert "usage: nborch" in capsys.readouterr().err
    assert not (tmp_path / ".nborch").exists()


# -- graph ------------------------------------------------------------------------------------------


def test_graph_mmd_runs_no_cell(results):
    r = results["graph_mmd"]
    assert r.code == 0, r.err
    text = (r.cwd / "dag.mmd").read_text()
    assert text.startswith("flowchart")
    assert "numbers --> total" in text and "caption" in text
    assert r.out.strip() == "wrote dag.mmd"  # no `task ...` lines: no cell was executed
    assert not r.home.exists()


def test_graph_of_one_flow(results):
    r = results["graph_flow"]
    assert r.code == 0, r.err
    text = (r.cwd / "report.mmd").read_text()
    assert "caption" in text and "numbers" not in text


@pytest.mark.parametrize(("key", "magic"), [("graph_svg", b"<svg"), ("graph_png", b"\x89PNG")])
def test_graph_images(results, key, magic):
    r = results[key]
    if r.code == 1 and "Graphviz" in r.err:
        pytest.skip("Graphviz's dot is not installed")
    assert r.code == 0, r.err
    data = (r.cwd / f"dag.{key[6:]}").read_bytes()
    assert magic in data[:400]


# -- history ----------------------------------------------------------------------------------------


def test_history_lists_runs_newest_first(results, tmp_path):
    source = results["params"]
    run_id = source.runs()[0].id
    r = nborch("history", cwd=source.cwd)
    assert r.code == 0, r.err
    assert run_id in r.out and "pipeline" in r.out and "3 succeeded" in r.out
    r = nborch("history", cwd=tmp_path)  # an empty folder: says so, creates nothing
    assert r.code == 0 and "no runs recorded" in r.out
    assert not (tmp_path / ".nborch").exists()


# -- the committed example notebooks ----------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_notebooks_run_headless(results, name):
    if name not in results:
        pytest.skip(f"notebooks/{name}.ipynb does not exist yet")
    r = results[name]
    assert r.code == 0, r.err
    no_traceback(r)


def test_cell_magics_example_runs_its_task_graph(results):
    if "02_cell_magics" not in results:
        pytest.skip("notebooks/02_cell_magics.ipynb does not exist yet")
    r = results["02_cell_magics"]
    assert r.code == 0, r.err
    task_runs = [run for run in r.runs() if run.name == "02_cell_magics"]
    assert len(task_runs) == 1 and task_runs[0].recorded_state == "succeeded"


# -- pieces, in process -----------------------------------------------------------------------------


def test_parse_param_reads_literals_else_strings():
    assert parse_param("n=5") == ("n", 5)
    assert parse_param("ratio=0.5") == ("ratio", 0.5)
    assert parse_param("items=[1, 'a']") == ("items", [1, "a"])
    assert parse_param("flag=True") == ("flag", True)
    assert parse_param("city=Oslo") == ("city", "Oslo")
    assert parse_param("expr=1 + ") == ("expr", "1 + ")
    assert parse_param("empty=") == ("empty", "")
    for bad in ("novalue", "1x=2", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_param(bad)


def test_describe_failure_survives_an_exception_whose_str_raises():
    from nborch.notebook.headless import describe_failure
    from nborch.notebook.ipynb import Cell

    class Unprintable(Exception):
        def __str__(self):
            raise KeyError("no str")

    assert describe_failure(Cell(4, "code", "boom()"), Unprintable()) == (
        "cell 4 failed: Unprintable: <exception str() failed>"
    )


def test_read_notebook_cells_and_errors(tmp_path):
    cells = read_notebook(PIPELINE)
    assert [c.type for c in cells[:3]] == ["markdown", "code", "code"]
    assert cells[2].tags == ("parameters",) and cells[2].number == 3
    assert cells[4].source.startswith("%%task numbers\n")
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    cases = [(tmp_path / "missing.ipynb", "does not exist"), (tmp_path, "is a directory"),
             (old, "nbformat 3")]
    for path, message in cases:
        with pytest.raises(NotebookError, match=message):
            read_notebook(path)
