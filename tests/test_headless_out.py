"""``nborch run IN.ipynb OUT.ipynb`` (and ``-o OUT``, ``-`` for stdout): the executed notebook.

Real subprocesses over real notebooks, started up front a few at a time (each imports IPython);
the tests read what they wrote. The reference for the layout is papermill itself, run on the
same notebook when it is installed (it is in the test extra).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from headless_support import (
    ROOT, Result, by_source, code_cells, env_for, nborch, notebook, outputs, read, text, traceback_text, write,
)

DATA = ROOT / "tests" / "data"

PLAIN = notebook(
    ("md", "# A notebook without task cells"),
    ("n = 3\nlabel = 'x'\nratio = 0.5", ["parameters"]),
    "print('hi', n, label)\nimport sys\nprint('to stderr', file=sys.stderr)",
    "from IPython.display import HTML, Markdown, display\ndisplay(HTML('<b>bold</b>'))\ndisplay(Markdown('*m*'))\nn * 2",
    "value = {'n': n, 'ratio': ratio}\nvalue",
    "x = 1;  # a trailing semicolon: no result",
    "x;",
)
FAILING = notebook(
    ("md", "# fails in the third code cell"),
    "print('first')",
    "def helper(v):\n    return 10 / v",
    "print('about to fail')\nhelper(0)",
    ("md", "after the failure"),
    "print('never')",
)
RICH_TASKS = notebook(
    "%load_ext nborch",
    ("rows = 3", ["parameters"]),
    "%%task table\nfrom IPython.display import HTML, display\nprint('building', rows, 'rows')\n"
    "display(HTML('<i>shown by the task</i>'))\nlist(range(rows))",
    "%%task quiet\nNone",
    "%%task total\nsum(table)",
    "print('total is', total)",
)


def jobs(tmp: Path) -> dict[str, tuple[list[object], Path]]:
    plain = write(tmp / "plain.ipynb", PLAIN)
    failing = write(tmp / "failing.ipynb", FAILING)
    rich = write(tmp / "rich.ipynb", RICH_TASKS)
    old = write(tmp / "old_minor.ipynb", notebook("print('no cell ids')", minor=4))
    return {
        "plain": (["run", plain, "plain.out.ipynb", "-p", "n=5", "-p", "label=hello"], tmp / "plain"),
        "plain_stdout": (["run", plain, "-", "-p", "n=5"], tmp / "stdout"),
        "plain_none": (["run", plain], tmp / "none"),
        "failing": (["run", failing, "-o", "failing.out.ipynb"], tmp / "failing"),
        "pipeline": (["run", DATA / "pipeline.ipynb", "pipe.out.ipynb", "-p", "n=4"], tmp / "pipeline"),
        "failing_task": (["run", DATA / "failing_task.ipynb", "boom.out.ipynb"], tmp / "failing_task"),
        "rich": (["run", rich, "rich.out.ipynb"], tmp / "rich"),
        "old_minor": (["run", old, "old.out.ipynb"], tmp / "old_minor"),
        "no_folder": (["run", plain, tmp / "nofolder" / "out.ipynb"], tmp / "no_folder"),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    tmp = tmp_path_factory.mktemp("out")
    todo = jobs(tmp)
    for _, cwd in todo.values():
        cwd.mkdir()
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(nborch, *args, cwd=cwd) for key, (args, cwd) in todo.items()}
        return {key: f.result() for key, f in futures.items()}


def nb_run_id(r: Result) -> str:
    return read(r.cwd / "pipe.out.ipynb")["metadata"]["nborch"]["run_id"]


def counts(nb: dict) -> list[int | None]:
    return [c["execution_count"] for c in code_cells(nb)]


# -- a notebook without task cells: what papermill writes ------------------------------------------


def test_the_executed_notebook_has_every_output_in_its_cell(results):
    r = results["plain"]
    assert r.code == 0, r.err
    assert r.out == ""  # the outputs are in the notebook, not on stdout
    nb = read(r.cwd / "plain.out.ipynb")
    cells = code_cells(nb)
    assert [text(c["source"]).split("\n")[0] for c in cells][:2] == ["n = 3", "# Parameters"]
    assert outputs(cells[2]) == [("stdout", "hi 5 hello\n"), ("stderr", "to stderr\n")]
    shown = outputs(cells[3])
    assert shown == [("display_data", "<IPython.core.display.HTML object>"),
                     ("display_data", "<IPython.core.display.Markdown object>"), ("execute_result", "10")]
    assert cells[3]["outputs"][0]["data"]["text/html"] == ["<b>bold</b>"]
    assert outputs(cells[4]) == [("execute_result", "{'n': 5, 'ratio': 0.5}")]
    assert outputs(cells[5]) == [] and outputs(cells[6]) == []
    assert counts(nb) == [1, 2, 3, 4, 5, 6, 7]
    assert cells[3]["outputs"][-1]["execution_count"] == 4


def test_the_injected_parameters_cell_is_written_as_papermill_writes_it(results):
    nb = read(results["plain"].cwd / "plain.out.ipynb")
    cells = nb["cells"]
    params_at = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    injected = cells[params_at + 1]
    assert injected["metadata"]["tags"] == ["injected-parameters"]
    assert injected["source"] == ["# Parameters\n", "n = 5\n", 'label = "hello"\n']
    assert injected["outputs"] == [] and injected["execution_count"] == 2


def test_notebook_metadata_has_the_run_under_nborch_and_papermill(results):
    nb = read(results["plain"].cwd / "plain.out.ipynb")
    meta = nb["metadata"]
    ours = meta["nborch"]
    assert ours["status"] == "succeeded" and ours["parameters"] == {"n": 5, "label": "hello"}
    assert len(ours["run_id"]) == 12 and ours["duration"] >= 0
    assert ours["start_time"] <= ours["end_time"]
    pm = meta["papermill"]
    assert pm["parameters"] == {"n": 5, "label": "hello"} and pm["exception"] is False
    assert pm["output_path"] == "plain.out.ipynb" and pm["input_path"].endswith("plain.ipynb")
    assert meta["kernelspec"]["name"] == "python3" and meta["language_info"]["name"] == "python"
    for cell in code_cells(nb):
        assert cell["metadata"]["papermill"]["status"] == "completed"


def test_nothing_is_written_without_out(results):
    r = results["plain_none"]
    assert r.code == 0, r.err
    assert "hi 3 x" in r.out  # today's behaviour: the cells' output on stdout
    assert sorted(p.name for p in r.cwd.iterdir()) == []


def test_dash_writes_the_notebook_to_stdout_and_nothing_else(results):
    r = results["plain_stdout"]
    assert r.code == 0, r.err
    nb = json.loads(r.out)  # stdout is exactly the notebook
    assert outputs(code_cells(nb)[2])[0] == ("stdout", "hi 5 x\n")
    assert "hi 5" not in r.err


def test_a_folder_that_does_not_exist_is_bad_usage(results):
    r = results["no_folder"]
    assert r.code == 2
    assert r.err.startswith("nborch: cannot write ") and "nofolder' does not exist" in r.err
    assert r.out == ""


def test_an_nbformat_4_4_notebook_stays_without_cell_ids(results):
    r = results["old_minor"]
    assert r.code == 0, r.err
    nb = read(r.cwd / "old.out.ipynb")
    assert nb["nbformat_minor"] == 4 and all("id" not in c for c in nb["cells"])


@pytest.mark.skipif(shutil.which("papermill", path=str(Path(sys.executable).parent)) is None,
                    reason="papermill is not installed")
def test_the_same_cells_outputs_and_injected_cell_as_papermill(results, tmp_path):
    """papermill, on the same notebook with the same parameters, in a real kernel."""
    plain = write(tmp_path / "plain.ipynb", PLAIN)
    papermill = str(Path(sys.executable).parent / "papermill")
    proc = subprocess.run([papermill, str(plain), "pm.ipynb", "-p", "n", "5", "-p", "label", "hello",
                           "--no-progress-bar", "-k", "python3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env_for(tmp_path))
    assert proc.returncode == 0, proc.stderr
    theirs = read(tmp_path / "pm.ipynb")
    ours = read(results["plain"].cwd / "plain.out.ipynb")

    def layout(nb):
        return [(c["cell_type"], text(c["source"]), c["metadata"].get("tags", []), c.get("execution_count"),
                 [(o["output_type"], o.get("name"), o.get("execution_count"),
                   {k: text(v) for k, v in o.get("data", {}).items()}, text(o.get("text", "")))
                  for o in c.get("outputs", [])])
                for c in nb["cells"]]

    assert layout(ours) == layout(theirs)
    assert ours["metadata"]["papermill"]["parameters"] == theirs["metadata"]["papermill"]["parameters"]
    for key in ("default_parameters", "environment_variables", "exception", "input_path", "output_path",
                "start_time", "end_time", "duration"):
        assert key in ours["metadata"]["papermill"], key
    for mine, pm in zip(ours["cells"], theirs["cells"], strict=True):
        assert sorted(mine["metadata"]["papermill"]) == sorted(pm["metadata"]["papermill"])
        assert mine["metadata"]["papermill"]["status"] == pm["metadata"]["papermill"]["status"]


# -- failures -----------------------------------------------------------------------------------------


def test_a_failing_cell_shows_its_error_and_the_cells_after_it_stay_unexecuted(results):
    r = results["failing"]
    assert r.code == 1
    assert r.err == ("nborch: cell 4 failed: ZeroDivisionError: division by zero\n  line 2: helper(0)\n"
                     "  the executed notebook is in failing.out.ipynb\n")
    nb = read(r.cwd / "failing.out.ipynb")
    failed = by_source(nb, "print('about to fail')")
    assert outputs(failed) == [("stdout", "about to fail\n"), ("error", "ZeroDivisionError: division by zero")]
    tb = traceback_text(failed["outputs"][-1])
    assert "helper(0)" in tb and "return 10 / v" in tb  # IPython's traceback, as a kernel shows it
    never = by_source(nb, "print('never')")
    assert never["execution_count"] is None and never["outputs"] == []
    assert never["metadata"]["papermill"]["status"] == "pending"
    assert failed["metadata"]["papermill"]["status"] == "failed"
    assert nb["metadata"]["nborch"]["status"] == "failed" and nb["metadata"]["papermill"]["exception"] is True
    # papermill's markers: a banner linking to the failing cell, an anchor just before it
    marked = [c for c in nb["cells"] if "papermill-error-cell-tag" in c["metadata"].get("tags", [])]
    assert len(marked) == 2 and nb["cells"][0] is marked[0]
    assert "In [3]" in text(marked[0]["source"]) and 'href="#papermill-error-cell"' in text(marked[0]["source"])
    assert nb["cells"][nb["cells"].index(failed) - 1] is marked[1]
    assert counts(nb) == [1, 2, 3, None]


def test_a_failing_task_shows_its_error_in_its_cell_and_its_downstream_unexecuted(results):
    r = results["failing_task"]
    assert r.code == 1
    assert "task 'boom' failed: ValueError: bad value 2" in r.err
    nb = read(r.cwd / "boom.out.ipynb")
    assert outputs(by_source(nb, "%%task ok")) == [("execute_result", "1")]
    boom = by_source(nb, "%%task boom")
    assert outputs(boom) == [("error", "ValueError: bad value 2")]
    tb = traceback_text(boom["outputs"][0])
    assert "raise ValueError" in tb and "attempts.py" not in tb  # the task's own frames, not the engine's
    for start in ("%%task after_boom", "print(\"AFTER\""):
        cell = by_source(nb, start)
        assert cell["execution_count"] is None and cell["outputs"] == []
    assert nb["metadata"]["nborch"]["tasks"] == {"ok": "succeeded", "boom": "failed",
                                                 "after_boom": "upstream_failed"}


# -- task cells ---------------------------------------------------------------------------------------


def test_task_cells_hold_what_the_task_printed_displayed_and_returned(results):
    r = results["rich"]
    assert r.code == 0, r.err
    nb = read(r.cwd / "rich.out.ipynb")
    table = by_source(nb, "%%task table")
    assert outputs(table) == [("stdout", "building 3 rows\n"), ("display_data", "<IPython.core.display.HTML object>"),
                              ("execute_result", "[0, 1, 2]")]
    assert outputs(by_source(nb, "%%task quiet")) == []  # None: no result, as a cell shows it
    assert outputs(by_source(nb, "%%task total")) == [("execute_result", "3")]
    assert outputs(by_source(nb, "print('total")) == [("stdout", "total is 3\n")]
    assert counts(nb) == [1, 2, 3, 4, 5, 6, 7]  # the appended snapshot cell is the 7th
    snap = nb["cells"][-1]
    assert snap["metadata"]["tags"] == ["nborch-run"]
    assert text(snap["source"]) == f"%orch show {nb['metadata']['nborch']['run_id']}"
    assert "3 succeeded" in text(snap["outputs"][0]["data"]["text/plain"])


def test_the_orch_run_cell_shows_the_runs_final_snapshot(results):
    r = results["pipeline"]
    assert r.code == 0, r.err
    nb = read(r.cwd / "pipe.out.ipynb")
    run_id = nb["metadata"]["nborch"]["run_id"]
    cell = by_source(nb, "%orch run")
    (shown,) = cell["outputs"]
    assert shown["output_type"] == "display_data"
    assert text(shown["data"]["text/plain"]).startswith(f"run {run_id} succeeded")
    html = text(shown["data"]["text/html"])  # the final graph and table, static: no widget, no script
    assert run_id in html and "numbers" in html and "caption" in html and "<script" not in html
    if shutil.which("dot"):
        assert "data:image/svg+xml" in html or "<svg" in html  # the graph is drawn
    assert outputs(by_source(nb, "%%task total")) == [("stdout", "summing 4 numbers\n"), ("execute_result", "14")]
    assert outputs(by_source(nb, 'summary = f"')) == [("stdout", "RESULT total=14 label=base\n")]
    # in document order, as Run All numbers them (the graph ran after the cells that do not read tasks)
    numbered = [c for c in counts(nb) if c is not None]
    assert numbered == list(range(1, len(numbered) + 1))
    from nborch.store import SqliteStore, history

    (recorded,) = history(None, store=SqliteStore(r.home))
    assert recorded.id == run_id  # the notebook's run id is the recorded task run's


def test_nbconvert_renders_the_executed_notebook_to_html(results, tmp_path):
    pytest.importorskip("nbconvert")
    r = results["pipeline"]
    shutil.copy(r.cwd / "pipe.out.ipynb", tmp_path / "pipe.ipynb")
    proc = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "pipe.ipynb"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "pipe.html").read_text()
    assert "summing 4 numbers" in html and "RESULT total=14 label=base" in html
    assert nb_run_id(r) in html  # the run's snapshot is in the page


# -- writing atomically -------------------------------------------------------------------------------


WRITER = """
import sys
from nborch.notebook.executed import write_notebook
big = "x" * 4_000_000
versions = [{"cells": [], "metadata": {"v": v, "pad": big}, "nbformat": 4, "nbformat_minor": 5}
            for v in ("old", "new")]
i = 0
print("writing", flush=True)
while True:
    write_notebook(versions[i % 2], sys.argv[1])
    i += 1
"""


def test_a_kill_during_writing_leaves_the_old_notebook_or_the_new_one(tmp_path):
    out = tmp_path / "out.ipynb"
    out.write_text(json.dumps({"cells": [], "metadata": {"v": "old", "pad": ""}, "nbformat": 4,
                               "nbformat_minor": 5}))
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # a write is under way
            assert time.monotonic() < deadline
        time.sleep(attempt * 0.003)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        data = json.loads(out.read_text())  # whole JSON: never a half-written file
        assert data["metadata"]["v"] in ("old", "new")
        for left in tmp_path.glob(".out.ipynb.*.tmp"):  # what a kill leaves behind is only a temp file
            left.unlink()


def test_an_existing_out_is_replaced_whole_and_keeps_its_permissions(tmp_path):
    nb = write(tmp_path / "a.ipynb", notebook("print('fresh')"))
    out = tmp_path / "a.out.ipynb"
    out.write_text("old content")
    r = nborch("run", nb, "-o", out, cwd=tmp_path)
    assert r.code == 0, r.err
    out.chmod(0o640)
    before = os.stat(out).st_ino
    r = nborch("run", nb, out, cwd=tmp_path)  # an existing OUT an earlier run wrote: OUT again
    assert r.code == 0, r.err
    assert os.stat(out).st_ino != before  # a new file renamed over the old one
    assert out.stat().st_mode & 0o777 == 0o640
    assert outputs(code_cells(read(out))[0]) == [("stdout", "fresh\n")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".nborch") == ["a.ipynb", "a.out.ipynb"]
