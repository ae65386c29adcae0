"""Static snapshots: how a Run draws itself (also one reloaded in a fresh process), and the
markers that let nbval blank them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import nborch
from nborch import DAG, Task, TaskState, task
from nborch.core import record as record_module
from nborch.display.snapshot import (
    SNAPSHOT_CLOSE, SNAPSHOT_OPEN, run_snapshot_html, snapshot_text, starting_html, starting_text,
)
from nborch.display.state import RunView

from .images import SVG, graph_svg, nodes

S = TaskState
ROOT = Path(__file__).resolve().parents[2]


def parse(html: str) -> ET.Element:
    assert html.startswith(SNAPSHOT_OPEN) and html.endswith(SNAPSHOT_CLOSE)
    return ET.fromstring(html[len(SNAPSHOT_OPEN) : -len(SNAPSHOT_CLOSE)])


def node_fills(html: str) -> dict[str, str]:
    """Each node's fill colour in the snapshot's graph image (parsed whole first: valid XHTML)."""
    parse(html)
    return {nid: g.find(f"{SVG}path").get("fill") for nid, g in nodes(graph_svg(html)).items()}


def failing_dag() -> DAG:
    @task
    def extract():
        return [1, 2]

    @task
    def transform(extract):
        raise KeyError("price")

    @task
    def load(transform):
        return transform

    return DAG(extract, transform, load)


def test_a_run_draws_its_graph_by_state_with_the_table():
    run = nborch.run(failing_dag(), store=False)

    html = run._repr_html_()

    assert node_fills(html) == {"task-extract": "#43a047", "task-transform": "#e53935", "task-load": "#fb8c00"}
    assert "KeyError: &#x27;price&#x27;" in html and "Traceback (most recent call last)" in html
    assert f"run <code>{run.id}</code>" in html and "3/3 tasks settled" in html


def test_without_the_display_a_run_shows_its_plain_table(monkeypatch):
    monkeypatch.setattr(record_module, "_html_renderer", None)
    run = nborch.run(failing_dag(), store=False)

    html = run._repr_html_()

    assert html.startswith("<div class='nborch-run'>") and "<svg" not in html


def test_a_renderer_that_fails_leaves_the_plain_table(monkeypatch, caplog):
    def broken(run):
        raise RuntimeError("no")

    monkeypatch.setattr(record_module, "_html_renderer", broken)
    run = nborch.run(failing_dag(), store=False)

    assert run._repr_html_().startswith("<div class='nborch-run'>")
    assert "drawing run" in caplog.text


def test_the_core_does_not_import_the_display():
    code = "import sys, nborch; r = nborch.Run('x', states={}); r._repr_html_(); print('nborch.display' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_past_run_is_drawn_in_a_fresh_process_from_the_store(tmp_path):
    """What ``nborch.Run.load(run_id)`` shows after a kernel restart: the recorded states,
    edges, errors and durations, with nothing of the first process left."""
    home = tmp_path / "home"
    write = textwrap.dedent(f"""
        import json, nborch
        from nborch import DAG, task

        @task
        def extract():
            return [1, 2]

        @task
        def transform(extract):
            raise KeyError("price")

        @task
        def load(transform):
            return transform

        run = nborch.run(DAG(extract, transform, load), store={str(home)!r})
        print(json.dumps(run.id))
    """)
    run_id = json.loads(subprocess.run([sys.executable, "-c", write], capture_output=True, text=True,
                                       check=True, cwd=tmp_path).stdout)
    read = textwrap.dedent(f"""
        import nborch, nborch.display
        from nborch.store import SqliteStore
        run = nborch.Run.load({run_id!r}, store=SqliteStore({str(home)!r}))
        print(run._repr_html_())
    """)
    proc = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = proc.stdout.strip()

    assert node_fills(html) == {"task-extract": "#43a047", "task-transform": "#e53935", "task-load": "#fb8c00"}
    edges = [g.find(f"{SVG}title").text for g in graph_svg(html).iter(f"{SVG}g") if g.get("class") == "edge"]
    assert sorted(edges) == ["extract->transform", "transform->load"]
    assert "KeyError: &#x27;price&#x27;" in html  # its own type, as recorded
    assert "Traceback (most recent call last)" in html and "in transform" in html  # as recorded, folded
    assert re.search(r"<td class='nborch-duration'>\d", html)  # durations as recorded


def test_a_crashed_run_says_so():
    run = nborch.Run("r9", states={"a": S.SUCCEEDED, "b": S.RUNNING}, upstreams={"b": ["a"]})
    run.recorded_state = "crashed"

    html = run_snapshot_html(run)

    assert "[its process died before it ended]" in html


def test_without_recorded_edges_the_tasks_are_drawn_unconnected():
    run = nborch.Run("r8", states={"a": S.SUCCEEDED, "b": S.FAILED}, upstreams={})

    html = run_snapshot_html(run)

    assert set(node_fills(html)) == {"task-a", "task-b"}
    assert not [g for g in graph_svg(html).iter(f"{SVG}g") if g.get("class") == "edge"]


def sanitize(text: str) -> str:
    """``text`` as nbval compares it: the example notebooks' sanitize file applied in order."""
    lines = (ROOT / "notebooks" / "nbval_sanitize.cfg").read_text().splitlines()
    pairs = [(a[len("regex: "):], b[len("replace: "):]) for a, b in zip(lines, lines[1:])
             if a.startswith("regex: ") and b.startswith("replace: ")]
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    return text


def test_nbval_sees_the_same_output_at_the_start_and_at_the_end():
    """nbval compares a notebook's stored output (the final snapshot) with the first display
    of a new run (the starting one): one regex blanks either, HTML and text."""
    node = Task(lambda: 1, name="solo")
    run = nborch.run(node, store=False)
    view = RunView.from_run(run)

    final_html, final_text = run._repr_html_(), snapshot_text(view)
    assert sanitize(final_html) == sanitize(starting_html(view)) == "<nborch-snapshot/>"
    assert sanitize(final_text) == sanitize(starting_text(view)) == "nborch run <snapshot>"
    # and nothing else is blanked: a report printed by the notebook stays compared
    assert sanitize(run.report()).startswith("run <RUN_ID> succeeded in <DURATION>")


@pytest.mark.parametrize("state", ["running", "skipped"])
def test_other_recorded_states_are_named(state):
    run = nborch.Run("r7", states={"a": S.SUCCEEDED})
    run.recorded_state = state
    assert "[" in run_snapshot_html(run).split("<div class='nborch-header'>")[1][:60]


def test_in_the_cell_whose_live_display_drew_it_a_run_shows_one_line():
    """``nborch.run(dag)`` as a cell's last line: the live display ends on the snapshot, and the
    returned Run's repr is its status line, not the same drawing twice; in a later cell (or
    after ``Run.load``) it is drawn in full."""
    pytest.importorskip("ipywidgets")
    from IPython.core.interactiveshell import InteractiveShell

    from nborch.display.live_display import LiveDisplay

    shell = InteractiveShell.instance()
    unregister = nborch.register_display(lambda handle: LiveDisplay(handle, publish=lambda *a: None))
    try:
        run = nborch.run(failing_dag(), store=False)
    finally:
        unregister()

    same_cell = run._repr_html_()
    shell.execution_count += 1
    try:
        next_cell = run._repr_html_()
    finally:
        shell.execution_count -= 1

    assert "its graph and table are in the live display above" in same_cell and "<img" not in same_cell
    assert f"run <code>{run.id}</code>" in same_cell and "failed" in same_cell
    assert node_fills(next_cell) == {"task-extract": "#43a047", "task-transform": "#e53935", "task-load": "#fb8c00"}
