"""A bare ``pip install nborch`` (no extras): what works without IPython, ipywidgets and graphviz,
and how the rest says, in one line, which extra to install.

Each check runs in a fresh interpreter where ``sys.modules[NAME] = None`` makes ``import NAME``
fail exactly as it does when the package is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXTRA = 'pip install "nborch[notebook]"'
NOTEBOOK_EXTRAS = ("IPython", "ipywidgets", "graphviz")


def python_without(
    missing: tuple[str, ...], code: str, *args: object, cwd: Path
) -> subprocess.CompletedProcess:
    prelude = f"import sys\nfor _name in {missing!r}:\n    sys.modules[_name] = None\n"
    env = {**os.environ, "NBORCH_HOME": str(cwd / ".nborch"), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120, check=False,
    )


def nborch_without(missing: tuple[str, ...], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    code = "from nborch.cli import main\nsys.exit(main(sys.argv[1:]))"
    return python_without(missing, code, *args, cwd=cwd)


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    cells = ["%load_ext nborch", "%%task extract\n[1, 2, 3]", "%%task total --retries 1\nsum(extract)",
             "%orch run", "print('total', total)"]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                    for c in cells]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_graph_to_mermaid_needs_no_extra(notebook, tmp_path):
    proc = nborch_without(NOTEBOOK_EXTRAS, "graph", notebook, "-o", "dag.mmd", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    text = (tmp_path / "dag.mmd").read_text()
    assert text.startswith("flowchart TD") and "extract --> total" in text


def test_run_without_ipython_says_which_extra_to_install(notebook, tmp_path):
    proc = nborch_without(("IPython",), "run", notebook, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "nborch: nborch run needs IPython (it runs the notebook's cells in an IPython shell), which comes "
        f"with nborch's notebook extra: {EXTRA}\n"
    )
    assert proc.stdout == ""


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_graph_image_without_graphviz_says_which_extra_to_install(notebook, tmp_path, suffix):
    proc = nborch_without(("graphviz",), "graph", notebook, "-o", f"dag{suffix}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"nborch: writing 'dag{suffix}' needs the graphviz package, which comes with nborch's notebook extra: "
        f"{EXTRA} (a .mmd file needs nothing)\n"
    )
    assert not (tmp_path / f"dag{suffix}").exists()


def test_node_graph_without_graphviz_says_which_extra_and_mermaid_still_works(tmp_path):
    proc = python_without(NOTEBOOK_EXTRAS, """
        import nborch
        from nborch import DAG, task

        @task
        def extract():
            return 1

        @task
        def load(extract):
            return extract

        dag = DAG(extract, load)
        print(dag.to_mermaid(), end="")
        print(dag.visualize(), end="")
        try:
            dag.graph()
        except nborch.NborchError as err:
            print("ERROR", err)
        print("HTML", dag._repr_html_())
    """, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count("    extract --> load") == 2  # to_mermaid() and visualize() with no path
    assert (f"ERROR node.graph() needs the graphviz package, which comes with nborch's notebook extra: {EXTRA} "
            "(node.to_mermaid() needs nothing)") in lines
    html = next(line for line in lines if line.startswith("HTML"))
    assert "<code>extract</code>" in html and EXTRA.replace('"', "&quot;") in html


# -- a real kernel without ipywidgets --------------------------------------------------------------------


class Kernel:
    """A real IPython kernel (jupyter_client); ``execute`` returns the cell's outputs."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client import KernelManager

        env = {**os.environ, "NBORCH_HOME": str(cwd / ".nborch")}
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str) -> list[dict]:
        outputs: list[dict] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
                outputs.append({"type": msg["msg_type"], **msg["content"]})

        reply = self.kc.execute_interactive(textwrap.dedent(code), output_hook=hook, timeout=60)
        errors = [o for o in outputs if o["type"] == "error"]
        assert reply["content"]["status"] == "ok", errors
        return outputs

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def stream(outputs: list[dict], name: str) -> str:
    return "".join(o["text"] for o in outputs if o["type"] == "stream" and o["name"] == name)


def test_a_kernel_without_ipywidgets_says_so_once_and_shows_console_progress(tmp_path):
    pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    kernel = Kernel(tmp_path)
    try:
        kernel.execute("import sys\nsys.modules['ipywidgets'] = None")
        assert kernel.execute("%load_ext nborch") == []
        kernel.execute("%%task extract\n[1, 2, 3]")
        first = kernel.execute("%orch run")
        second = kernel.execute("%orch run")
        kernel.execute("assert extract == [1, 2, 3]")
    finally:
        kernel.close()
    warning = ("nborch: the live display needs ipywidgets, which comes with nborch's notebook extra: "
               f"{EXTRA}; showing console progress instead\n")
    assert stream(first, "stderr").startswith(warning)
    assert warning not in stream(second, "stderr")  # once per kernel
    for outputs in (first, second):
        assert not [o for o in outputs if o["type"] == "display_data"]  # no widget
        assert "1 succeeded" in stream(outputs, "stderr")  # the console summary
